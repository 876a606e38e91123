"""The console's web application: composition, authentication on every route, serving.

``Console`` builds what the pages need from Settings once per process (the runtime's
account store and dead letters, a Celery producer, the lifecycle's follow-up, the QR
logins). ``BaseHandler`` authenticates every request (session cookie or HTTP Basic) and
checks the CSRF token of every state-changing one before any handler code runs; only the
login form is public. Pages live in :mod:`wxtasks.console.pages` (campaigns in
:mod:`wxtasks.console.campaigns`); a new area adds its routes there and one entry to ``NAV``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import quote

from celery import Celery
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop

from wxtasks.config import Settings
from wxtasks.console.auth import Users, csrf_ok, csrf_token, parse_basic
from wxtasks.console.qrlogin import QrLogins
from wxtasks.console.views import AccountIndex
from wxtasks.runtime import Runtime
from wxtasks.send.outbox import LANES
from wxtasks.trends import TrendCache, minute_of

logger = logging.getLogger(__name__)

HERE = os.path.dirname(os.path.abspath(__file__))
SESSION_COOKIE = "wxtasks_console"
SESSION_DAYS = 0.5  # a browser session lasts a working day at most
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

#: (path, label) of the top navigation; an area's handlers are in pages.ROUTES
NAV: list[tuple[str, str]] = [
    ("/overview", "Overview"),
    ("/accounts", "Accounts"),
    ("/campaigns", "Campaigns"),
    ("/deadletters", "Dead letters"),
]

T = TypeVar("T")


class Console:
    """Everything the console's handlers share, built once per process."""

    def __init__(
        self,
        settings: Settings,
        *,
        users: Users | None = None,
        login_poll_s: float = 5.0,
        flower_url: str = "",
    ) -> None:
        from wxtasks.client import WxTasksClient

        self.settings = settings
        self.users = users or Users.from_settings(settings)
        self.secret = (settings.console_secret or secrets.token_hex(32)).encode()
        self.rt = Runtime(settings)  # the same composition the CLI and the workers have
        self.index = AccountIndex(self.rt.accounts)
        self.celery: Celery = self.rt.celery
        self.client = WxTasksClient(app=self.celery)
        self.logins = QrLogins(
            self.rt.redis,
            self.rt.keys,
            self.rt.accounts,
            self.rt.fleet,
            self.rt.lifecycle.follow_up,
            poll_s=login_poll_s,
        )
        self.trends = TrendCache(self.rt.redis, self.rt.keys)
        self.flower_url = flower_url
        self.executor = ThreadPoolExecutor(8, thread_name_prefix="console")
        self._driving: set[str] = set()
        #: gateway base URL -> (itself when it is the simulator, else ""; until when)
        self._simulators: dict[str, tuple[str, float]] = {}
        self._wake: dict[str, asyncio.Event] = {}

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking work (Redis, the gateway, the broker) off the event loop."""
        return await IOLoop.current().run_in_executor(self.executor, fn, *args)

    # -- QR logins: kept in Redis, polled by whichever console processes browsers watch ----

    def drive_login(self, app_id: str) -> None:
        """Poll the gateway for this login from this process too, until it ends (the
        login's lock and its last poll time keep it to one poll per ``poll_s`` in all)."""
        if app_id not in self._driving:
            self._driving.add(app_id)
            IOLoop.current().spawn_callback(self._drive, app_id)

    def wake_login(self, app_id: str) -> None:
        event = self._wake.get(app_id)
        if event is not None:
            event.set()

    async def _drive(self, app_id: str) -> None:
        event = self._wake.setdefault(app_id, asyncio.Event())
        try:
            while True:
                login = await self.run(self.logins.get, app_id)
                if login is None or login.phase.done:
                    return
                try:
                    due_s = self.logins.due_in(login)
                    await asyncio.wait_for(event.wait(), min(self.logins.poll_s, due_s + 0.05))
                except TimeoutError:
                    pass
                event.clear()
                try:
                    await self.run(self.logins.poll, app_id)
                except Exception:
                    logger.exception("console QR login poll failed appId=%s", app_id)
        finally:
            self._driving.discard(app_id)
            self._wake.pop(app_id, None)

    def simulator_url(self, app_id: str) -> str:
        """The base URL of the account's gateway when that gateway is wxtasks' simulator
        (its admin API answers), else "": the QR page then offers "simulate scan". Asked
        once a minute per gateway; a real gateway is never sent anything but that GET."""
        import requests

        base = self.rt.fleet.spec(self.rt.fleet.gateway_of(app_id)).base_url.rstrip("/")
        hit = self._simulators.get(base)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        try:
            reply = requests.get(base + "/admin/stats", timeout=1)
            stats = reply.json() if reply.ok else {}
            found = isinstance(stats, dict) and {"uptime_s", "profile", "calls"} <= set(stats)
        except (requests.RequestException, ValueError):
            found = False
        self._simulators[base] = (base if found else "", time.monotonic() + 60)
        return base if found else ""

    def warm_trends(self) -> None:
        """Read and add up the last day of trends once, at start, so that no operator's
        first Overview waits for it (about 1.5 s with 50 gateways)."""
        from wxtasks.console.overview import WINDOWS

        last = minute_of(time.time())
        try:
            for window in WINDOWS.values():
                first = last - window.minutes + 1
                self.trends.blocks(first, last, window.step)
                self.trends.blocks(first, last, window.dl_step)
        except Exception as exc:  # Redis away: the first page reads them instead
            logger.warning("console: cannot read the trends yet: %s", exc)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.celery.close()
        self.rt.fleet.close()


class BaseHandler(web.RequestHandler):
    """Authenticates every request and checks CSRF on every state-changing one."""

    #: only the login form is reachable without credentials
    public = False

    def initialize(self, console: Console) -> None:
        self.console = console
        self.user: str | None = None
        self.session_id: str | None = None
        self._started = time.monotonic()

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "same-origin")
        self.set_header(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; "
            "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        )

    def check_xsrf_cookie(self) -> None:  # replaced by the per-session token in prepare()
        return None

    # -- sessions -------------------------------------------------------------------------

    def read_session(self) -> dict[str, str] | None:
        raw = self.get_signed_cookie(SESSION_COOKIE, max_age_days=SESSION_DAYS)
        if not raw:
            return None
        try:
            session = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(session, dict) or not isinstance(session.get("sid"), str):
            return None
        return {"u": str(session.get("u") or ""), "sid": session["sid"]}

    def write_session(self, user: str) -> str:
        sid = secrets.token_urlsafe(24)
        self.set_signed_cookie(
            SESSION_COOKIE,
            json.dumps({"u": user, "sid": sid}),
            expires_days=SESSION_DAYS if user else None,
            httponly=True,
            samesite="Lax",
            secure=self.request.protocol == "https",
            path="/",
        )
        return sid

    @property
    def csrf(self) -> str:
        return csrf_token(self.console.secret, self.session_id or "")

    def finish(self, chunk: Any = None) -> Any:
        if not self._headers_written:  # how long the console took (benchmarks read it)
            took_ms = (time.monotonic() - self._started) * 1000
            self.set_header("Server-Timing", f"app;dur={took_ms:.1f}")
        return super().finish(chunk)

    async def prepare(self) -> None:
        session = self.read_session()
        if session is not None:
            self.session_id = session["sid"]
            self.user = session["u"] or None
        if self.user is None:
            basic = parse_basic(self.request.headers.get("Authorization"))
            if basic is not None and await self.console.run(self.console.users.check, *basic):
                self.user = basic[0]
                self.session_id = f"basic:{basic[0]}"
        if self.user is None and not self.public:
            self._refuse()
            return
        if self.request.method not in SAFE_METHODS:
            token = self.get_body_argument("_csrf", None) or self.request.headers.get(
                "X-CSRF-Token"
            )
            if not self.session_id or not csrf_ok(self.console.secret, self.session_id, token):
                raise web.HTTPError(403, "CSRF token missing or wrong: reload the page")

    def _refuse(self) -> None:
        wants_page = (
            self.request.method in ("GET", "HEAD")
            and "HX-Request" not in self.request.headers
            and "text/html" in self.request.headers.get("Accept", "")
        )
        if wants_page:
            self.redirect("/login?next=" + quote(self.request.uri or "/", safe=""))
            return
        self.set_status(401)
        headers = self.request.headers
        if "HX-Request" in headers:
            self.set_header("HX-Redirect", "/login")
        elif "Sec-Fetch-Dest" not in headers:
            # the challenge is for scripts; a browser's sub-request would pop up a prompt
            self.set_header("WWW-Authenticate", 'Basic realm="wxtasks console", charset="UTF-8"')
        self.finish("authentication required\n")

    # -- rendering ----------------------------------------------------------------------

    def get_template_namespace(self) -> dict[str, Any]:
        namespace = super().get_template_namespace()
        namespace.update(
            user=self.user,
            csrf=self.csrf,
            nav=NAV,
            lanes=[lane.value for lane in LANES],
            path=self.request.path,
            flower_url=self.console.flower_url,
            q=lambda s: quote(s, safe=""),
        )
        return namespace

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        reason = self._reason
        exc = kwargs.get("exc_info")
        if exc and isinstance(exc[1], web.HTTPError) and exc[1].log_message:
            reason = exc[1].log_message % exc[1].args if exc[1].args else exc[1].log_message
        if "HX-Request" in self.request.headers or self.user is None:
            self.finish(f"{status_code}: {reason}\n")
            return
        self.render("error.html", status_code=status_code, reason=reason)


class StaticHandler(BaseHandler, web.StaticFileHandler):
    """htmx and the style sheet, behind the same authentication as every page."""

    def initialize(self, console: Console, path: str) -> None:  # type: ignore[override]
        BaseHandler.initialize(self, console)
        web.StaticFileHandler.initialize(self, path)

    def set_default_headers(self) -> None:
        BaseHandler.set_default_headers(self)
        self.clear_header("Cache-Control")


def make_app(console: Console) -> web.Application:
    from wxtasks.console.pages import ROUTES

    handlers: list[Any] = [(pattern, cls, {"console": console}) for pattern, cls in ROUTES]
    handlers.append(
        (
            r"/static/(.*)",
            StaticHandler,
            {"console": console, "path": os.path.join(HERE, "static")},
        )
    )
    return web.Application(
        handlers,
        template_path=os.path.join(HERE, "templates"),
        cookie_secret=console.secret.decode(),
        static_path=None,
        compress_response=True,
        autoreload=False,
    )


def serve(settings: Settings, host: str, port: int, *, flower_url: str = "") -> None:
    """Run the console until SIGINT/SIGTERM."""
    console = Console(settings, flower_url=flower_url)
    console.executor.submit(console.warm_trends)

    async def main() -> None:
        server = HTTPServer(make_app(console), xheaders=True)
        server.listen(port, address=host)
        print(f"wxtasks console: http://{host}:{port}", flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    finally:
        console.close()
