"""The console's pages: accounts, one account (options, test send, QR login, reset,
remove), dead letters, task results, activity. Handlers are thin: data comes from the
runtime's classes, run in a thread. Each state-changing method declares the role it needs
(``@requires``) and records what it changed (``self.audit``)."""

from __future__ import annotations

import logging
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from celery.result import AsyncResult
from tornado import web

from wxtasks.accounts.machine import State
from wxtasks.audit import read_audit
from wxtasks.console.auth import ADMIN, OPERATOR, VIEWER, requires
from wxtasks.console.base import BaseHandler
from wxtasks.console.qrlogin import LoginRefused
from wxtasks.console.views import accounts_page, age
from wxtasks.errors import BadInputError, GatewayError, UnknownAccountError
from wxtasks.events import read_events

logger = logging.getLogger(__name__)

STATES = [s.value for s in State]
#: where "/" and a login without a ?next= lead
LANDING = "/overview"
FAVICON = (Path(__file__).parent / "static" / "favicon.svg").read_bytes()


def _account_url(app_id: str, sub: str = "") -> str:
    return f"/accounts/{quote(app_id, safe='')}{sub}"


def safe_next(target: str, default: str = LANDING) -> str:
    """``target`` when it is a path on this site, else ``default``: no control or white
    space characters (browsers drop a tab, so ``/%09/host`` would be ``//host``), no scheme,
    no ``//`` or backslash (another host); other non-ASCII characters are percent-encoded."""
    parts = urlsplit(target)
    if (
        not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
        or any(ord(c) < 0x21 or 0x7F <= ord(c) <= 0xA0 or c.isspace() for c in target)
        or parts.scheme
        or parts.netloc
    ):
        return default
    return quote(target, safe="".join(chr(c) for c in range(0x21, 0x7F)))


class LoginHandler(BaseHandler):
    public = True

    def get(self) -> None:
        if self.user:
            self.redirect(self._next())
            return
        if self.session_id is None:
            self.write_sid(secrets.token_urlsafe(24))  # anonymous: the form's CSRF token
        self._render_form("")

    def _render_form(self, error: str) -> None:
        # self-contained: the style sheet, like every other route, needs a login
        nonce = secrets.token_urlsafe(16)
        self.set_header(
            "Content-Security-Policy",
            f"default-src 'none'; style-src 'nonce-{nonce}'; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'",
        )
        self.render("login.html", error=error, next=self._next(), nonce=nonce)

    def too_many(self, retry_after_s: int) -> None:
        """The form again, answering 429 (the status and Retry-After are set)."""
        self._render_form(f"too many failed logins: try again in {retry_after_s} s")

    @requires(VIEWER)
    async def post(self) -> None:
        name = self.get_body_argument("username", "")
        password = self.get_body_argument("password", "")
        user = await self.check_password(name, password, via="form")
        if user is None:
            self.set_status(401)
            self._render_form("wrong user name or password")
            return
        await self.start_session(user)
        logger.info("console login user=%r role=%s from=%s", user.name, user.role, self.client_ip)
        await self.audit("session.login", "session", detail=f"role {user.role}")
        self.redirect(self._next())

    def _next(self) -> str:
        return safe_next(self.get_argument("next", LANDING))


class LogoutHandler(BaseHandler):
    @requires(VIEWER)
    async def post(self) -> None:
        await self.end_session()
        await self.audit("session.logout", "session")
        self.redirect("/login")


class RootHandler(BaseHandler):
    def get(self) -> None:
        self.redirect(LANDING)


class FaviconHandler(BaseHandler):
    """The tab's icon (public: the login form shows it too)."""

    public = True

    def get(self) -> None:
        self.set_header("Content-Type", "image/svg+xml")
        self.set_header("Cache-Control", "public, max-age=86400")
        self.finish(FAVICON)


class SessionApiHandler(BaseHandler):
    """For scripts: who am I, and the CSRF token to send with POSTs (``X-CSRF-Token``)."""

    def get(self) -> None:
        self.finish({"user": self.user, "csrf_token": self.csrf})


class AccountsHandler(BaseHandler):
    async def get(self) -> None:
        state = self.get_argument("state", "")
        if state and state not in STATES:
            raise web.HTTPError(400, "unknown state %s", state)
        try:
            page_no = int(self.get_argument("page", "1"))
        except ValueError:
            page_no = 1
        page = await self.console.run(
            lambda: accounts_page(
                self.console.index,
                state=state,
                tag=self.get_argument("tag", ""),
                query=self.get_argument("q", ""),
                page=page_no,
                backlog=self.console.rt.outbox.backlog,
            )
        )
        # the live table polls ?part=rows: the counts and the rows, no page around them
        template = "accounts_rows.html" if self.get_argument("part", "") else "accounts.html"
        self.render(template, page=page, states=STATES)


class AccountHandler(BaseHandler):
    async def get(self, app_id: str) -> None:
        rt = self.console.rt
        try:
            account = await self.console.run(rt.accounts.get, app_id)
        except UnknownAccountError:
            raise web.HTTPError(404, "no account %s", app_id) from None
        events = await self.console.run(
            lambda: read_events(rt.redis, rt.settings, count=20, app_id=app_id)
        )
        self.render(
            "account.html",
            account=account,
            events=list(reversed(events)),
            now=time.time(),
            age=age,
            login=await self.console.run(self.console.logins.get, app_id),
            url=_account_url(app_id),
            message=self.get_argument("message", ""),
        )


class AccountOptionsHandler(BaseHandler):
    @requires(ADMIN)
    async def post(self, app_id: str) -> None:
        def number(name: str, kind: type) -> Any:
            raw = self.get_body_argument(name, "").strip()
            if not raw:
                return None
            try:
                return kind(raw)
            except ValueError:
                raise BadInputError(f"{name} must be a number, got {raw!r}") from None

        tags = [t.strip() for t in self.get_body_argument("tags", "").split(",") if t.strip()]
        try:
            await self.console.run(
                lambda: self.console.rt.accounts.update(
                    app_id,
                    rate=number("rate", float),
                    burst=number("burst", int),
                    note=self.get_body_argument("note", ""),
                    tags=tags,
                )
            )
            message = "options saved"
            changed = {k: self.get_body_argument(k, "").strip() for k in ("rate", "burst")}
            await self.audit(
                "account.options",
                "account",
                app_id,
                f"rate={changed['rate'] or 'default'} burst={changed['burst'] or 'default'} "
                f"tags={','.join(tags) or '-'} note={self.get_body_argument('note', '')!r}",
            )
        except UnknownAccountError:
            raise web.HTTPError(404, "no account %s", app_id) from None
        except BadInputError as exc:
            message = f"not saved: {exc}"
        self.redirect(_account_url(app_id) + "?message=" + quote(message))


class AccountResetHandler(BaseHandler):
    """Back to IDLE from any state, and a login started (``wxtasks accounts reset``)."""

    @requires(ADMIN)
    async def post(self, app_id: str) -> None:
        rt = self.console.rt
        try:
            await self.console.run(rt.accounts.get, app_id)
            decision = await self.console.run(rt.lifecycle.reset, app_id, "operator reset")
        except UnknownAccountError:
            raise web.HTTPError(404, "no account %s", app_id) from None
        state = decision.state.value if decision else "unchanged"
        await self.audit("account.reset", "account", app_id, f"now {state}")
        self.redirect(_account_url(app_id) + "?message=" + quote(f"reset: {state}, login started"))


class AccountRemoveHandler(BaseHandler):
    """Forget an account (``wxtasks accounts remove``), after a confirmation step."""

    @requires(ADMIN)
    async def post(self, app_id: str) -> None:
        rt = self.console.rt
        if self.get_body_argument("confirmed", "") != "yes":
            try:
                account = await self.console.run(rt.accounts.get, app_id)
            except UnknownAccountError:
                raise web.HTTPError(404, "no account %s", app_id) from None
            self.render("account_remove.html", account=account, url=_account_url(app_id))
            return
        removed = await self.console.run(rt.accounts.remove, app_id)
        if not removed:
            raise web.HTTPError(404, "no account %s", app_id)
        await self.audit("account.remove", "account", app_id)
        self.redirect("/accounts")


class QrLoginStartHandler(BaseHandler):
    @requires(OPERATOR)
    async def post(self, app_id: str) -> None:
        try:
            await self.console.run(self.console.logins.start, app_id)
        except UnknownAccountError:
            raise web.HTTPError(404, "no account %s", app_id) from None
        except (LoginRefused, GatewayError) as exc:
            self.redirect(_account_url(app_id) + "?message=" + quote(f"cannot log in: {exc}"))
            return
        await self.audit("account.qr_login", "account", app_id)
        self.console.drive_login(app_id)
        self.redirect(_account_url(app_id, "/login"))


class QrLoginHandler(BaseHandler):
    async def get(self, app_id: str, fragment: str | None = None) -> None:
        login = await self.console.run(self.console.logins.get, app_id)
        simulator = ""
        if login is not None and not login.phase.done:
            self.console.drive_login(app_id)  # whichever process a browser reaches polls
            simulator = await self.console.run(self.console.simulator_url, app_id)
        self.render(
            "qr_status.html" if fragment else "qr_login.html",
            login=login,
            app_id=app_id,
            url=_account_url(app_id),
            now=time.time(),
            simulator=simulator,
        )


class QrLoginSimulateScanHandler(BaseHandler):
    """The simulator only (``wxtasks dev``): scan the QR code as a phone would."""

    @requires(OPERATOR)
    async def post(self, app_id: str) -> None:
        import requests

        base = await self.console.run(self.console.simulator_url, app_id)
        if not base:
            raise web.HTTPError(404, "the gateway of %s is not the simulator", app_id)
        reply = await self.console.run(
            lambda: requests.post(base + "/admin/scan", json={"appId": app_id}, timeout=5)
        )
        if not reply.ok:
            raise web.HTTPError(409, "the simulator has no QR login waiting for %s", app_id)
        self.console.drive_login(app_id)
        self.console.wake_login(app_id)
        await self.audit("account.qr_simulate_scan", "account", app_id)
        self.redirect(_account_url(app_id, "/login"))


class QrLoginCaptchaHandler(BaseHandler):
    @requires(OPERATOR)
    async def post(self, app_id: str) -> None:
        code = self.get_body_argument("code", "").strip()
        if code:  # the code itself is a one-time secret: not recorded
            await self.console.run(self.console.logins.submit_captcha, app_id, code)
            self.console.drive_login(app_id)
            self.console.wake_login(app_id)
            await self.audit("account.qr_captcha", "account", app_id)
        self.redirect(_account_url(app_id, "/login"))


class QrLoginCancelHandler(BaseHandler):
    @requires(OPERATOR)
    async def post(self, app_id: str) -> None:
        await self.console.run(self.console.logins.cancel, app_id)
        await self.audit("account.qr_cancel", "account", app_id)
        self.redirect(_account_url(app_id, "/login"))


class TestSendHandler(BaseHandler):
    @requires(OPERATOR)
    async def post(self, app_id: str) -> None:
        to_wxid = self.get_body_argument("to_wxid", "").strip()
        content = self.get_body_argument("content", "")
        if not to_wxid or not content:
            raise web.HTTPError(400, "to_wxid and content are required")
        result = await self.console.run(
            lambda: self.console.client.send_text(app_id, to_wxid, content)
        )
        await self.audit("account.test_send", "account", app_id, f"to {to_wxid}, task {result.id}")
        self._task(str(result.id))

    def _task(self, task_id: str) -> None:
        if "HX-Request" in self.request.headers:
            self.render("task_result.html", **_task_view(self.console.celery, task_id))
        else:
            self.redirect(f"/tasks/{quote(task_id)}")


class TaskResultHandler(BaseHandler):
    async def get(self, task_id: str) -> None:
        view = await self.console.run(_task_view, self.console.celery, task_id)
        if "HX-Request" in self.request.headers:
            self.render("task_result.html", **view)
        else:
            self.render("task_page.html", **view)


def _task_view(app: Any, task_id: str) -> dict[str, Any]:
    result = AsyncResult(task_id, app=app)
    state = result.state
    value = result.result if state == "SUCCESS" else None
    if state == "SUCCESS" and isinstance(value, dict):
        outcome = str(value.get("status", "done"))
    elif state in ("FAILURE", "REVOKED"):
        outcome, value = "failed", {"error": str(result.result)}
    else:
        outcome = "waiting"  # queued, running or parked for a retry
    return {"task_id": task_id, "outcome": outcome, "value": value or {}, "state": state}


class DeadLettersHandler(BaseHandler):
    async def get(self) -> None:
        status = self.get_argument("status", "")
        app_id = self.get_argument("app_id", "").strip()
        text = self.get_argument("q", "").strip().lower()
        entries = await self.console.run(
            lambda: self.console.rt.deadletters.list(status=status or None)
        )
        if app_id:
            entries = [e for e in entries if e.get("app_id") == app_id]
        if text:
            entries = [
                e
                for e in entries
                if text in str(e.get("error", "")).lower()
                or text in str(e.get("content", "")).lower()
                or text in str(e.get("to_wxid", "")).lower()
            ]
        entries.reverse()  # newest first
        self.render(
            "deadletters.html",
            entries=entries[:500],
            total=len(entries),
            status=status,
            app_id=app_id,
            q=self.get_argument("q", ""),
            now=time.time(),
            age=age,
            message=self.get_argument("message", ""),
        )


class _DeadLettersAction(BaseHandler):
    """First what will be requeued or purged, with a button to do it; then, confirmed,
    doing it (one audit entry per dead letter)."""

    action = ""

    async def _selected(self) -> list[str] | None:
        """The task ids to act on, confirmed; None when a page was shown instead."""
        ids = self.get_body_arguments("task_id")
        if not ids:
            self.redirect("/deadletters?message=" + quote("select at least one dead letter"))
            return None
        dl = self.console.rt.deadletters
        if self.get_body_argument("confirmed", "") != "yes":
            entries = await self.console.run(lambda: [e for e in map(dl.get, ids) if e])
            self.render("deadletters_confirm.html", action=self.action, entries=entries)
            return None
        return ids


class DeadLettersRequeueHandler(_DeadLettersAction):
    action = "requeue"

    @requires(OPERATOR)
    async def post(self) -> None:
        ids = await self._selected()
        if ids is None:
            return
        client = self.console.client

        def publish(entry: dict[str, Any]) -> str:
            kwargs = {k: v for k, v in entry["kwargs"].items() if not k.startswith("_")}
            return str(client.task(entry["task"], kwargs).id)

        moved = await self.console.run(lambda: self.console.rt.deadletters.requeue(ids, publish))
        for old, new in moved:
            await self.audit("deadletter.requeue", "task", old, f"now task {new}")
        self.render(
            "deadletters_requeued.html",
            moved=moved,
            views={new: _task_view(self.console.celery, new) for _old, new in moved},
        )


class DeadLettersPurgeHandler(_DeadLettersAction):
    action = "purge"

    @requires(ADMIN)
    async def post(self) -> None:
        ids = await self._selected()
        if ids is None:
            return
        dl = self.console.rt.deadletters
        removed = 0
        for task_id in ids:
            if await self.console.run(dl.remove, task_id):
                removed += 1
                await self.audit("deadletter.purge", "task", task_id)
        self.redirect("/deadletters?message=" + quote(f"{removed} dead letter(s) purged"))


class ActivityHandler(BaseHandler):
    """Who changed what (the audit trail), newest first, by user and by object."""

    async def get(self) -> None:
        user = self.get_argument("user", "").strip()
        obj = self.get_argument("object", "").strip()
        rt = self.console.rt
        entries = await self.console.run(
            lambda: read_audit(rt.redis, rt.settings, user=user, obj=obj, count=200)
        )
        self.render(
            "activity.html",
            entries=entries,
            user_filter=user,
            object_filter=obj,
            now=time.time(),
            age=age,
            when=lambda at: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(at or 0))),
        )


_ID = r"([^/]+)"

#: every route of the console (the static files are added by make_app)
ROUTES: list[tuple[str, type[BaseHandler]]] = [
    (r"/", RootHandler),
    (r"/login", LoginHandler),
    (r"/favicon\.ico", FaviconHandler),
    (r"/logout", LogoutHandler),
    (r"/api/session", SessionApiHandler),
    (r"/accounts", AccountsHandler),
    (rf"/accounts/{_ID}", AccountHandler),
    (rf"/accounts/{_ID}/options", AccountOptionsHandler),
    (rf"/accounts/{_ID}/reset", AccountResetHandler),
    (rf"/accounts/{_ID}/remove", AccountRemoveHandler),
    (rf"/accounts/{_ID}/login/start", QrLoginStartHandler),
    (rf"/accounts/{_ID}/login(/status)?", QrLoginHandler),
    (rf"/accounts/{_ID}/login/captcha", QrLoginCaptchaHandler),
    (rf"/accounts/{_ID}/login/cancel", QrLoginCancelHandler),
    (rf"/accounts/{_ID}/login/simulate-scan", QrLoginSimulateScanHandler),
    (rf"/accounts/{_ID}/send", TestSendHandler),
    (r"/tasks/([\w-]+)", TaskResultHandler),
    (r"/deadletters", DeadLettersHandler),
    (r"/deadletters/requeue", DeadLettersRequeueHandler),
    (r"/deadletters/purge", DeadLettersPurgeHandler),
    (r"/activity", ActivityHandler),
]
