"""QR login from the browser: the same gateway calls and transitions as
``wxtasks accounts login``, kept in Redis while an operator watches (any console process
serves any step of it).

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
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from redis.exceptions import LockError

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
from wxtasks.keys import Keys

logger = logging.getLogger(__name__)

CAPTCHA_MARKERS = ("验证码", "captcha")
EXPIRED_MARKERS = ("过期", "expired")
#: an ended login stays readable this long (the page shows how it ended)
KEEP_ENDED_S = 600
#: the longest one gateway round of a login may hold its lock
LOCK_S = 30.0


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
    #: when a console process last asked the gateway (0: as soon as possible)
    polled_at: float = 0.0

    def seconds_left(self, now: float) -> int:
        return max(0, int(self.expires_at - now))

    def as_fields(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_fields(cls, raw: dict[str, str]) -> QrLogin:
        return cls(
            app_id=raw["app_id"],
            uuid=raw.get("uuid", ""),
            qr_image=raw.get("qr_image", ""),
            started_at=float(raw.get("started_at") or 0),
            expires_at=float(raw.get("expires_at") or 0),
            phase=Phase(raw.get("phase") or Phase.WAITING.value),
            message=raw.get("message", ""),
            captcha_code=raw.get("captcha_code", ""),
            nick_name=raw.get("nick_name", ""),
            polled_at=float(raw.get("polled_at") or 0),
        )


class LoginRefused(Exception):
    """The account cannot start a QR login now (its state says why)."""


class QrLogins:
    """QR logins kept in Redis (``keys.qr_login``), so any console process can show,
    drive or finish one that another started: behind a round-robin proxy, the QR code
    comes from one process, the captcha goes to another and a third sees it confirmed.

    Whoever talks to the gateway for a login holds its lock (a redis-py Lock); a poll
    that finds the login polled less than ``poll_s`` ago by anyone does nothing, so two
    processes driving the same login still ask the gateway once every ``poll_s``."""

    def __init__(
        self,
        redis: Any,
        keys: Keys,
        accounts: AccountStore,
        gateway: GatewayClient | Fleet,
        follow_up: Callable[[str, Decision], None],
        *,
        poll_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.accounts = accounts
        #: the fleet (each account's own gateway), or one client for every account
        self.gateway = gateway
        self.follow_up = follow_up
        self.poll_s = poll_s
        self.clock = clock

    def _client(self, app_id: str) -> GatewayClient:
        if isinstance(self.gateway, Fleet):
            return self.gateway.client_for(app_id)
        return self.gateway

    # -- the record in Redis ----------------------------------------------------------------

    def get(self, app_id: str) -> QrLogin | None:
        raw = self.redis.hgetall(self.keys.qr_login(app_id))
        return QrLogin.from_fields(_decoded(raw)) if raw else None

    def _save(self, login: QrLogin) -> None:
        key = self.keys.qr_login(login.app_id)
        ttl_s = max(login.expires_at - self.clock(), 0) + KEEP_ENDED_S
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(key)
        pipe.hset(key, mapping=login.as_fields())
        pipe.expire(key, int(ttl_s) + 1)
        pipe.execute()

    @contextmanager
    def _locked(self, app_id: str, *, wait_s: float | None) -> Iterator[bool]:
        """Hold the login's lock (``wait_s`` None: do not wait); yields whether it is held."""
        lock = self.redis.lock(
            self.keys.qr_login_lock(app_id),
            timeout=LOCK_S,
            blocking=wait_s is not None,
            blocking_timeout=wait_s,
        )
        held = bool(lock.acquire())
        try:
            yield held
        finally:
            if held:
                try:
                    lock.release()
                except LockError:  # it ran out while we worked: nothing left to release
                    logger.warning("QR login lock of appId=%s ran out", app_id)

    # -- what operators do --------------------------------------------------------------------

    def start(self, app_id: str) -> QrLogin:
        with self._locked(app_id, wait_s=LOCK_S) as held:
            if not held:
                raise LoginRefused(f"{app_id}: another console process is busy with its login")
            return self._start(app_id)

    def _start(self, app_id: str) -> QrLogin:
        account = self.accounts.get(app_id)
        if account.state not in (State.IDLE, State.ERROR, State.LOGGING_IN):
            raise LoginRefused(f"{app_id} is {account.state.value}: nothing to log in")
        previous = self.get(app_id)
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
            self._save(login)
            return login
        qr = self._client(app_id).get_login_qr(app_id)
        now = self.clock()
        login = QrLogin(
            app_id,
            qr.uuid,
            _image(qr.qr_img_base64, qr.qr_data or qr.uuid),
            now,
            now + self.accounts.settings.login_qr_ttl_s,
            polled_at=now,
        )
        self.accounts.transition(
            app_id,
            Event.LOGIN_STARTED,
            reason=f"QR {qr.uuid} (console)",
            expect=[State.IDLE, State.LOGGING_IN],
            extra={"login_uuid": qr.uuid},
        )
        self._save(login)
        logger.info("console QR login started appId=%s uuid=%s", app_id, qr.uuid)
        return login

    def submit_captcha(self, app_id: str, code: str) -> QrLogin | None:
        with self._locked(app_id, wait_s=LOCK_S):
            login = self.get(app_id)
            if login is None or login.phase.done:
                return login
            login.captcha_code = code.strip()
            login.phase = Phase.SCANNED  # back to watching: the next poll sends the code
            login.message = "code sent; checking"
            login.polled_at = 0.0  # whichever process drives it polls now
            self._save(login)
            return login

    def cancel(self, app_id: str) -> QrLogin | None:
        with self._locked(app_id, wait_s=LOCK_S):
            login = self.get(app_id)
            if login is None or login.phase.done:
                return login
            self._finish(login, Phase.CANCELLED, "cancelled by the operator")
            return login

    def due_in(self, login: QrLogin) -> float:
        """Seconds until the next gateway poll of ``login`` is due (0: now)."""
        return max(0.0, login.polled_at + self.poll_s - self.clock())

    def poll(self, app_id: str) -> QrLogin | None:
        """One checkLogin round, when one is due and no other process is doing it;
        returns the login as it stands (None when there is none)."""
        login = self.get(app_id)
        if login is None or login.phase.done or self.due_in(login) > 0:
            return login
        with self._locked(app_id, wait_s=None) as held:
            if not held:
                return login  # another console process is asking the gateway now
            login = self.get(app_id)
            if login is None or login.phase.done or self.due_in(login) > 0:
                return login
            self._poll(login)
            login.polled_at = self.clock()
            self._save(login)
        return login

    def _poll(self, login: QrLogin) -> None:
        app_id = login.app_id
        now = self.clock()
        if now >= login.expires_at:
            self._finish(login, Phase.EXPIRED, "QR code expired", Event.LOGIN_EXPIRED)
            return
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
            return
        except GatewayAuthError as exc:
            self._finish(login, Phase.FAILED, str(exc))
            return
        except GatewayUnavailableError as exc:
            login.message = f"gateway unreachable, retrying: {exc}"
            return
        except GatewayError as exc:
            login.message = f"no answer from the gateway, retrying: {exc}"
            return
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

    def _finish(
        self, login: QrLogin, phase: Phase, reason: str, event: Event = Event.LOGIN_FAILED
    ) -> None:
        login.phase = phase
        login.message = reason
        self._save(login)
        self._transition(login.app_id, event, reason, [State.LOGGING_IN])
        logger.info("console QR login appId=%s ended %s: %s", login.app_id, phase.value, reason)

    def _transition(self, app_id: str, event: Event, reason: str, expect: list[State]) -> None:
        decision = self.accounts.transition(app_id, event, reason=reason, expect=expect)
        if decision is not None:
            self.follow_up(app_id, decision)


def _decoded(raw: dict[Any, Any]) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in raw.items()
    }


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
