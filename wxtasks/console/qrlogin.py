"""QR login from the browser: the same gateway calls and transitions as
``wxtasks accounts login``, kept in this process while an operator watches.

``start`` asks the gateway for a QR code (after a check that the session is not already
online) and moves the account IDLE -> LOGGING_IN; ``poll`` is one ``checkLogin`` round,
which the console runs every ``poll_s`` (GATEWAY.md: about every 5 s) until the login ends:
confirmed (-> ONLINE), cancelled on the phone, expired, or failed (-> IDLE). When the
gateway asks for the security code (``本次登录需要输入安全验证码``), the login waits in
``captcha`` until the operator enters it; the next poll sends it as ``captchCode``.

Every method blocks on the gateway and Redis: the web layer runs them in a thread.
"""

from __future__ import annotations

import base64
import io
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from wxtasks.accounts.machine import Decision, Event, State
from wxtasks.accounts.store import AccountStore
from wxtasks.errors import (
    GatewayAuthError,
    GatewayBusinessError,
    GatewayError,
    GatewayUnavailableError,
)
from wxtasks.gateway.client import GatewayClient
from wxtasks.gateway.fleet import Fleet

logger = logging.getLogger(__name__)

CAPTCHA_MARKERS = ("验证码", "captcha")
EXPIRED_MARKERS = ("过期", "expired")


class Phase(StrEnum):
    WAITING = "waiting"  # QR shown, not scanned
    SCANNED = "scanned"  # scanned, waiting for the confirmation on the phone
    CAPTCHA = "captcha"  # the gateway wants the security code shown on the phone
    CONFIRMED = "confirmed"  # logged in: the account is ONLINE
    CANCELLED = "cancelled"  # cancelled on the phone (or by the operator)
    EXPIRED = "expired"  # the QR code timed out
    FAILED = "failed"  # the gateway refused

    @property
    def done(self) -> bool:
        return self in (Phase.CONFIRMED, Phase.CANCELLED, Phase.EXPIRED, Phase.FAILED)


@dataclass
class QrLogin:
    app_id: str
    uuid: str
    qr_image: str  # a data: URI (PNG)
    started_at: float
    expires_at: float
    phase: Phase = Phase.WAITING
    message: str = ""
    captcha_code: str = ""
    nick_name: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def seconds_left(self, now: float) -> int:
        return max(0, int(self.expires_at - now))


class LoginRefused(Exception):
    """The account cannot start a QR login now (its state says why)."""


class QrLogins:
    def __init__(
        self,
        accounts: AccountStore,
        gateway: GatewayClient | Fleet,
        follow_up: Callable[[str, Decision], None],
        *,
        poll_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.accounts = accounts
        #: the fleet (each account's own gateway), or one client for every account
        self.gateway = gateway
        self.follow_up = follow_up
        self.poll_s = poll_s
        self.clock = clock
        self._logins: dict[str, QrLogin] = {}

    def _client(self, app_id: str) -> GatewayClient:
        if isinstance(self.gateway, Fleet):
            return self.gateway.client_for(app_id)
        return self.gateway

    def get(self, app_id: str) -> QrLogin | None:
        return self._logins.get(app_id)

    def start(self, app_id: str) -> QrLogin:
        account = self.accounts.get(app_id)
        if account.state not in (State.IDLE, State.ERROR, State.LOGGING_IN):
            raise LoginRefused(f"{app_id} is {account.state.value}: nothing to log in")
        previous = self._logins.get(app_id)
        if previous is not None and not previous.phase.done:
            return previous  # one QR login per account: a second click shows the same one
        if account.state is State.ERROR:
            self._transition(app_id, Event.RESET, "operator QR login", [State.ERROR])
        if self._client(app_id).check_online(app_id):
            self._transition(
                app_id, Event.LOGIN_SUCCEEDED, "gateway session is online", [State.IDLE]
            )
            now = self.clock()
            login = QrLogin(app_id, "", "", now, now, Phase.CONFIRMED)
            login.message = "the gateway already had its session"
            self._logins[app_id] = login
            return login
        qr = self._client(app_id).get_login_qr(app_id)
        now = self.clock()
        login = QrLogin(
            app_id,
            qr.uuid,
            _image(qr.qr_img_base64, qr.qr_data or qr.uuid),
            now,
            now + self.accounts.settings.login_qr_ttl_s,
        )
        self.accounts.transition(
            app_id,
            Event.LOGIN_STARTED,
            reason=f"QR {qr.uuid} (console)",
            expect=[State.IDLE, State.LOGGING_IN],
            extra={"login_uuid": qr.uuid},
        )
        self._logins[app_id] = login
        logger.info("console QR login started appId=%s uuid=%s", app_id, qr.uuid)
        return login

    def submit_captcha(self, app_id: str, code: str) -> QrLogin | None:
        login = self._logins.get(app_id)
        if login is None or login.phase.done:
            return login
        login.captcha_code = code.strip()
        login.phase = Phase.SCANNED  # back to watching: the next poll sends the code
        login.message = "code sent; checking"
        return login

    def cancel(self, app_id: str) -> QrLogin | None:
        login = self._logins.get(app_id)
        if login is None or login.phase.done:
            return login
        with login.lock:
            self._finish(login, Phase.CANCELLED, "cancelled by the operator")
        return login

    def poll(self, app_id: str) -> QrLogin | None:
        """One checkLogin round; returns the login (None when there is none)."""
        login = self._logins.get(app_id)
        if login is None or login.phase.done:
            return login
        with login.lock:
            if login.phase.done:
                return login
            now = self.clock()
            if now >= login.expires_at:
                self._finish(login, Phase.EXPIRED, "QR code expired", Event.LOGIN_EXPIRED)
                return login
            code = login.captcha_code or None
            try:
                status = self._client(app_id).check_login(app_id, login.uuid, captch_code=code)
            except GatewayBusinessError as exc:
                text = exc.msg.lower()
                if any(m in text for m in CAPTCHA_MARKERS):
                    login.phase = Phase.CAPTCHA
                    login.message = (
                        "the code was not accepted: enter the code shown on the phone again"
                        if code
                        else "enter the security code shown on the phone"
                    )
                    login.captcha_code = ""
                elif any(m in text for m in EXPIRED_MARKERS):
                    self._finish(login, Phase.EXPIRED, "QR code expired", Event.LOGIN_EXPIRED)
                else:
                    self._finish(login, Phase.FAILED, f"gateway: {exc.msg}")
                return login
            except (GatewayUnavailableError, GatewayAuthError) as exc:
                if isinstance(exc, GatewayAuthError):
                    self._finish(login, Phase.FAILED, str(exc))
                else:
                    login.message = f"gateway unreachable, retrying: {exc}"
                return login
            except GatewayError as exc:
                login.message = f"no answer from the gateway, retrying: {exc}"
                return login
            if status.expired_time_s is not None and status.status in (0, 1):
                login.expires_at = now + status.expired_time_s
            if status.logged_in:
                login.nick_name = status.nick_name or status.wxid
                decision = self.accounts.transition(
                    app_id,
                    Event.LOGIN_SUCCEEDED,
                    reason="QR login (console)",
                    expect=[State.LOGGING_IN, State.IDLE],
                    extra={"wxid": status.wxid, "nick_name": status.nick_name},
                )
                self.accounts.note_first_login(app_id)  # a new device: bulk sends warm up
                if decision is not None:
                    self.follow_up(app_id, decision)
                login.phase = Phase.CONFIRMED
                login.message = f"logged in as {login.nick_name}"
            elif status.status == 4:
                self._finish(login, Phase.CANCELLED, "login cancelled on the phone")
            elif status.status == 1:
                login.phase = Phase.SCANNED
                login.message = "scanned: confirm on the phone"
            elif login.phase is not Phase.CAPTCHA:
                login.phase = Phase.WAITING
                login.message = ""
        return login

    def _finish(
        self, login: QrLogin, phase: Phase, reason: str, event: Event = Event.LOGIN_FAILED
    ) -> None:
        login.phase = phase
        login.message = reason
        self._transition(login.app_id, event, reason, [State.LOGGING_IN])
        logger.info("console QR login appId=%s ended %s: %s", login.app_id, phase.value, reason)

    def _transition(self, app_id: str, event: Event, reason: str, expect: list[State]) -> None:
        decision = self.accounts.transition(app_id, event, reason=reason, expect=expect)
        if decision is not None:
            self.follow_up(app_id, decision)


def _image(qr_img_base64: str, qr_data: str) -> str:
    """The gateway's QR image as a data: URI, or one drawn from its payload."""
    if qr_img_base64:
        if qr_img_base64.startswith("data:"):
            return qr_img_base64
        return "data:image/png;base64," + qr_img_base64
    import segno

    buf = io.BytesIO()
    segno.make(qr_data, error="m").save(buf, kind="png", scale=5)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
