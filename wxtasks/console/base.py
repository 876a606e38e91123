"""What every console page stands on: the process's composition and the base handler.

``Console`` builds what the pages need from Settings once per process (the runtime's
account store and dead letters, a Celery producer, the lifecycle's follow-up, the QR
logins, the users, sessions and login throttle). ``BaseHandler`` authenticates every
request (a session in Redis, or HTTP Basic), checks the CSRF token of every
state-changing one, and then the role its handler method declares (``@requires(...)``;
undeclared: ``admin``), all before any handler code runs; only the login form is public.
A refused role gets 403 naming the role it needs. Pages live in
:mod:`wxtasks.console.pages`, :mod:`wxtasks.console.campaigns` and
:mod:`wxtasks.console.overview`, which import this module and nothing above it; a new area
adds a module with its ``ROUTES``, one line in :mod:`wxtasks.console.app` and one entry to
``NAV``. Handlers record what they change with ``self.audit(...)`` (:mod:`wxtasks.audit`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import quote

from celery import Celery
from tornado import web
from tornado.ioloop import IOLoop

from wxtasks.audit import Actor, record
from wxtasks.config import Settings
from wxtasks.console.auth import (
    User,
    Users,
    csrf_ok,
    csrf_token,
    parse_basic,
    required_role,
    role_allows,
)
from wxtasks.console.qrlogin import QrLogins
from wxtasks.console.sessions import LoginThrottle, Sessions
from wxtasks.console.views import AccountIndex
from wxtasks.netaddr import client_address, parse_networks
from wxtasks.runtime import Runtime
from wxtasks.send.outbox import LANES
from wxtasks.trends import TrendCache, minute_of

logger = logging.getLogger(__name__)

HERE = os.path.dirname(os.path.abspath(__file__))
SESSION_COOKIE = "wxtasks_console"
SESSION_DAYS = 0.5  # a browser session lasts a working day at most
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

#: (path, label) of the top navigation; an area's handlers are in its ROUTES (all of them:
#: app.ROUTES)
NAV: list[tuple[str, str]] = [
    ("/overview", "Overview"),
    ("/accounts", "Accounts"),
    ("/campaigns", "Campaigns"),
    ("/deadletters", "Dead letters"),
    ("/activity", "Activity"),
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
        server_timing: bool = False,
    ) -> None:
        from wxtasks.client import WxTasksClient

        self.settings = settings
        self.secret = (settings.console_secret or secrets.token_hex(32)).encode()
        self.users = users or Users.from_settings(settings, key=self.secret)
        self.trusted = parse_networks(settings.trusted_proxies)
        self.secure_cookies = settings.console_url.lower().startswith("https://")
        self.server_timing = server_timing  # benchmarks read how long the console took
        self.rt = Runtime(settings)  # the same composition the CLI and the workers have
        self.sessions = Sessions(self.rt.redis, self.rt.keys, settings.console_idle_s)
        self.throttle = LoginThrottle(self.rt.redis, self.rt.keys, self.rt.scripts)
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
        # password checks (~50 ms of scrypt each) queue apart: a flood of guesses never
        # holds up the pages
        self.hasher = ThreadPoolExecutor(2, thread_name_prefix="console-hash")
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

    def warm_trends(self, windows: Iterable[Any]) -> None:
        """Read and add up the trends of ``windows`` once, at start, so that no operator's
        first Overview waits for it (about 1.5 s with 50 gateways)."""
        last = minute_of(time.time())
        try:
            for window in windows:
                first = last - window.minutes + 1
                self.trends.blocks(first, last, window.step)
                self.trends.blocks(first, last, window.dl_step)
        except Exception as exc:  # Redis away: the first page reads them instead
            logger.warning("console: cannot read the trends yet: %s", exc)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.hasher.shutdown(wait=False, cancel_futures=True)
        self.celery.close()
        self.rt.fleet.close()


class TooManyLogins(web.HTTPError):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            429, "too many failed logins: try again in %d s", retry_after_s, reason="Too Many"
        )
        self.retry_after_s = retry_after_s


class BaseHandler(web.RequestHandler):
    """Authenticates every request, checks CSRF and the role on every state-changing one."""

    #: only the login form is reachable without credentials
    public = False

    def initialize(self, console: Console) -> None:
        self.console = console
        self.user: str | None = None
        self.role: str | None = None
        self.session_id: str | None = None
        self.client_ip, _proto = client_address(
            self.request.remote_ip or "", self.request.headers, console.trusted
        )
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

    def read_sid(self) -> str | None:
        """The session id the cookie carries (signed; a login session when Redis has it,
        else the anonymous one the login form's CSRF token is made of)."""
        raw = self.get_signed_cookie(SESSION_COOKIE, max_age_days=SESSION_DAYS)
        if not raw:
            return None
        try:
            session = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(session, dict) or not isinstance(session.get("sid"), str):
            return None
        return str(session["sid"])

    def write_sid(self, sid: str) -> None:
        self.set_signed_cookie(
            SESSION_COOKIE,
            json.dumps({"sid": sid}),
            expires_days=SESSION_DAYS,
            httponly=True,
            samesite="Lax",
            secure=self.console.secure_cookies,
            path="/",
        )
        self.session_id = sid

    async def start_session(self, user: User) -> None:
        """Log ``user`` in: a new session (a new id: no fixation) in Redis and the cookie."""
        sid = await self.console.run(
            self.console.sessions.create, user.name, user.fingerprint, self.client_ip
        )
        self.write_sid(sid)
        self.user, self.role = user.name, user.role

    async def end_session(self) -> None:
        if self.session_id:
            await self.console.run(self.console.sessions.delete, self.session_id)
        self.clear_cookie(SESSION_COOKIE, path="/")

    async def check_password(self, name: str, password: str, via: str) -> User | None:
        """The user when ``password`` is right; None when wrong. Raises 429 (with
        ``Retry-After``) while the name or the client address is locked out. Logged with
        the user name, never the password."""
        throttle = self.console.throttle
        attempt, wait_s = await self.console.run(throttle.attempt, name, self.client_ip)
        if wait_s:
            logger.warning(
                "console login refused (locked out %d s) user=%r from=%s via=%s",
                wait_s,
                name,
                self.client_ip,
                via,
            )
            raise TooManyLogins(wait_s)
        user = await IOLoop.current().run_in_executor(
            self.console.hasher, self.console.users.check, name, password
        )
        if user is None:
            logger.warning("console login failed user=%r from=%s via=%s", name, self.client_ip, via)
            return None
        await self.console.run(throttle.succeeded, name, self.client_ip, attempt)
        return user

    @property
    def csrf(self) -> str:
        return csrf_token(self.console.secret, self.session_id or "")

    def finish(self, chunk: Any = None) -> Any:
        if self.console.server_timing and not self._headers_written:
            took_ms = (time.monotonic() - self._started) * 1000
            self.set_header("Server-Timing", f"app;dur={took_ms:.1f}")
        return super().finish(chunk)

    async def prepare(self) -> None:
        self.session_id = self.read_sid()
        if self.session_id:
            await self._resume(self.session_id)
        if self.user is None:
            basic = parse_basic(self.request.headers.get("Authorization"))
            if basic is not None:
                user = await self.check_password(*basic, via="basic")
                if user is not None:
                    self.user, self.role = user.name, user.role
                    self.session_id = f"basic:{user.name}"
        if self.user is None and not self.public:
            self._refuse()
            return
        if self.request.method not in SAFE_METHODS:
            token = self.get_body_argument("_csrf", None) or self.request.headers.get(
                "X-CSRF-Token"
            )
            if not self.session_id or not csrf_ok(self.console.secret, self.session_id, token):
                raise web.HTTPError(403, "CSRF token missing or wrong: reload the page")
            if self.user is not None:
                method = getattr(self, (self.request.method or "").lower(), None)
                needed = required_role(method)
                if not role_allows(self.role, needed):
                    raise web.HTTPError(
                        403, "this needs the %s role (you are %s)", needed, self.role
                    )

    async def _resume(self, sid: str) -> None:
        """The login session of ``sid``, checked against the users as they are now."""
        session = await self.console.run(self.console.sessions.get, sid)
        if session is None:
            return
        user = self.console.users.get(session.user)
        if user is None or user.fingerprint != session.fingerprint:
            logger.info(
                "console session of user=%r ended: the user was removed or changed", session.user
            )
            await self.console.run(self.console.sessions.delete, sid)
            return
        self.user, self.role = user.name, user.role

    def _request_summary(self) -> str:  # the access log names the real client
        return f"{self.request.method} {self.request.uri} ({self.client_ip})"

    def can(self, role: str) -> bool:
        """May this user do what needs ``role`` (templates hide what they may not)?"""
        return role_allows(self.role, role)

    async def audit(self, action: str, kind: str, object_id: str = "", detail: str = "") -> None:
        """Record a change this user made (:mod:`wxtasks.audit`)."""
        actor = Actor(self.user or "-", "console", self.client_ip)
        rt = self.console.rt
        await self.console.run(
            lambda: record(rt.redis, rt.settings, actor, action, kind, object_id, detail)
        )

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
            role=self.role,
            can=self.can,
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
        if exc and isinstance(exc[1], TooManyLogins):
            self.set_header("Retry-After", str(exc[1].retry_after_s))
            if hasattr(self, "too_many"):  # the login form shows it in the form
                self.too_many(exc[1].retry_after_s)
                return
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
