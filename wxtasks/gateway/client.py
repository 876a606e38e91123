"""HTTP client for WechatApi / GeWe-style gateways.

One pooled ``requests.Session`` per client. Every call is ``POST`` with a JSON body that
carries ``appId``; the answer is the envelope ``{"ret": 200, "msg": ..., "data": ...}``.
Failures become the typed errors of :mod:`wxtasks.errors` so callers can act on them:

* the request never left (connection refused, DNS, connect timeout, HTTP 503)
  -> :class:`GatewayUnavailableError`: nothing happened at the gateway, retry freely;
* the request left and no answer came (read timeout, reset, a broken answer)
  -> :class:`GatewayOutcomeUnknownError`: a send may have gone out, do not resend blindly;
* ``ret != 200`` -> :class:`GatewayBusinessError` (``AccountOfflineError`` when the gateway
  says the account is offline, :class:`GatewayAuthError` when it refuses the token).

The token lives only in the session's headers: never in a URL, an error, a log or a repr.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError

from wxtasks.config import Settings
from wxtasks.errors import (
    AccountOfflineError,
    BadInputError,
    GatewayAuthError,
    GatewayBusinessError,
    GatewayError,
    GatewayOutcomeUnknownError,
    GatewayUnavailableError,
)
from wxtasks.gateway.profiles import Profile, get_profile

logger = logging.getLogger(__name__)

OFFLINE_MARKERS = ("离线", "掉线", "不在线", "未登录", "offline", "not online", "not logged in")
AUTH_MARKERS = ("token", "最大客户端数量")


@dataclass(frozen=True)
class SendReceipt:
    """What the gateway answered for an accepted send. Ids are strings (64-bit safe)."""

    to_wxid: str
    msg_id: str
    new_msg_id: str
    create_time: int | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "msgId": self.msg_id,
            "newMsgId": self.new_msg_id,
            "createTime": self.create_time,
        }


@dataclass(frozen=True)
class LoginQr:
    app_id: str
    uuid: str
    qr_data: str
    qr_img_base64: str


@dataclass(frozen=True)
class LoginStatus:
    """checkLogin: status 0 not scanned, 1 scanned, 2 logged in, 4 cancelled."""

    status: int
    expired_time_s: int | None
    wxid: str = ""
    nick_name: str = ""

    @property
    def logged_in(self) -> bool:
        return self.status == 2


class GatewayClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        profile: Profile | str = "videosapi",
        *,
        timeout_s: float = 10.0,
        pool_size: int = 16,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.profile = get_profile(profile) if isinstance(profile, str) else profile
        self.timeout_s = timeout_s
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers.update(
            {self.profile.token_header: token, "Content-Type": "application/json"}
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> GatewayClient:
        return cls(
            settings.gateway_base_url,
            settings.gateway_token,
            settings.gateway_profile,
            timeout_s=settings.gateway_timeout_s,
        )

    def __repr__(self) -> str:
        return f"GatewayClient({self.base_url!r}, profile={self.profile.name!r})"

    def close(self) -> None:
        self._session.close()

    # -- operations ---------------------------------------------------------------------

    def check_online(self, app_id: str) -> bool:
        return self.profile.read_online(self.call("check_online", app_id))

    def heartbeat(self, app_id: str) -> bool:
        """Liveness probe: the vendor's heartbeat call, or checkOnline where it has none.

        True when the account is alive. A ``ret != 200`` answer to a heartbeat means
        "not alive"; network failures raise.
        """
        if not self.profile.supports("heartbeat"):
            return self.check_online(app_id)
        try:
            self.call("heartbeat", app_id)
        except GatewayAuthError:
            raise
        except GatewayBusinessError:
            return False
        return True

    def reconnect(self, app_id: str) -> bool:
        """Ask the gateway to restore the session; True when the account is online after.

        Vendors without a reconnect call (``v1``) only get probed: a reconnect there means
        "the account answers again".
        """
        if self.profile.supports("reconnect"):
            try:
                self.call("reconnect", app_id)
            except AccountOfflineError:
                return False
            except GatewayAuthError:
                raise
            except GatewayBusinessError as exc:
                logger.info("reconnect refused appId=%s: %s", app_id, exc.msg)
                return False
        return self.heartbeat(app_id)

    def get_login_qr(
        self, app_id: str = "", *, region_id: str = "320000", proxy_ip: str | None = None
    ) -> LoginQr:
        body: dict[str, Any] = {"regionId": region_id, "type": "ipad"}
        if proxy_ip:
            body["proxyIp"] = proxy_ip
        data = _mapping(self.call("get_login_qr", app_id, body, allow_empty_app_id=True))
        return LoginQr(
            app_id=str(data.get("appId") or app_id),
            uuid=str(data.get("uuid", "")),
            qr_data=str(data.get("qrData", "")),
            qr_img_base64=str(data.get("qrImgBase64", "")),
        )

    def check_login(self, app_id: str, uuid: str, captch_code: str | None = None) -> LoginStatus:
        body: dict[str, Any] = {"uuid": uuid}
        if captch_code:
            body["captchCode"] = captch_code
        data = _mapping(self.call("check_login", app_id, body))
        info = data.get("loginInfo") or {}
        info = info if isinstance(info, Mapping) else {}
        expired = data.get("expiredTime")
        return LoginStatus(
            status=int(data.get("status", 0)),
            expired_time_s=int(expired) if expired is not None else None,
            wxid=str(info.get("wxid", "")),
            nick_name=str(info.get("nickName", "")),
        )

    def logout(self, app_id: str) -> None:
        self.call("logout", app_id)

    def set_callback(self, callback_url: str, token: str) -> None:
        self.call(
            "set_callback",
            "",
            {"token": token, "callbackUrl": callback_url},
            allow_empty_app_id=True,
        )

    def send_text(
        self, app_id: str, to_wxid: str, content: str, ats: str | None = None
    ) -> SendReceipt:
        body: dict[str, Any] = {"toWxid": to_wxid, "content": content}
        if ats:
            body["ats"] = ats
        return self._send("send_text", app_id, to_wxid, body)

    def send_image(self, app_id: str, to_wxid: str, img_url: str) -> SendReceipt:
        return self._send("send_image", app_id, to_wxid, {"toWxid": to_wxid, "imgUrl": img_url})

    def send_file(self, app_id: str, to_wxid: str, file_url: str, file_name: str) -> SendReceipt:
        body = {"toWxid": to_wxid, "fileUrl": file_url, "fileName": file_name}
        return self._send("send_file", app_id, to_wxid, body)

    def send_link(
        self, app_id: str, to_wxid: str, title: str, desc: str, link_url: str, thumb_url: str
    ) -> SendReceipt:
        body = {
            "toWxid": to_wxid,
            "title": title,
            "desc": desc,
            "linkUrl": link_url,
            "thumbUrl": thumb_url,
        }
        return self._send("send_link", app_id, to_wxid, body)

    # -- the one HTTP path ------------------------------------------------------------------

    def _send(self, operation: str, app_id: str, to_wxid: str, body: dict[str, Any]) -> SendReceipt:
        if not to_wxid:
            raise BadInputError(f"{operation}: toWxid is required")
        data = self.call(operation, app_id, body)
        data = data if isinstance(data, Mapping) else {}
        msg_id = data.get("msgId")
        new_msg_id = data.get("newMsgId")
        create_time = data.get("createTime")
        return SendReceipt(
            to_wxid=str(data.get("toWxid") or to_wxid),
            msg_id="" if msg_id is None else str(msg_id),
            new_msg_id="" if new_msg_id is None else str(new_msg_id),
            create_time=int(create_time) if create_time is not None else None,
        )

    def call(
        self,
        operation: str,
        app_id: str,
        body: Mapping[str, Any] | None = None,
        *,
        allow_empty_app_id: bool = False,
    ) -> Any:
        """POST one operation and return the envelope's ``data``; raise typed errors."""
        if not isinstance(app_id, str) or (not app_id and not allow_empty_app_id):
            raise BadInputError(f"{operation}: appId is required")
        path = self.profile.path(operation)
        if path is None:
            raise GatewayError(
                f"operation {operation} is not offered by profile {self.profile.name}",
                app_id=app_id,
                operation=operation,
            )
        payload = self.profile.wire({"appId": app_id, **(body or {})})
        try:
            response = self._session.post(
                self.base_url + path, json=payload, timeout=self.timeout_s
            )
        except (requests.ConnectTimeout, requests.exceptions.InvalidURL) as exc:
            raise GatewayUnavailableError(
                _describe(exc), app_id=app_id, operation=operation
            ) from exc
        except requests.ConnectionError as exc:
            if _never_sent(exc):
                raise GatewayUnavailableError(
                    _describe(exc), app_id=app_id, operation=operation
                ) from exc
            raise GatewayOutcomeUnknownError(
                _describe(exc), app_id=app_id, operation=operation
            ) from exc
        except requests.Timeout as exc:
            raise GatewayOutcomeUnknownError(
                f"no answer within {self.timeout_s}s", app_id=app_id, operation=operation
            ) from exc
        except requests.RequestException as exc:
            raise GatewayOutcomeUnknownError(
                _describe(exc), app_id=app_id, operation=operation
            ) from exc
        return self._read(response, operation, app_id)

    def _read(self, response: requests.Response, operation: str, app_id: str) -> Any:
        if response.status_code in (401, 403):
            raise GatewayAuthError(
                f"HTTP {response.status_code}: token refused", app_id=app_id, operation=operation
            )
        try:
            envelope = response.json()
        except ValueError:
            envelope = None
        if not isinstance(envelope, Mapping) or "ret" not in envelope:
            error = f"HTTP {response.status_code}: not a gateway envelope"
            if response.status_code == 503:
                raise GatewayUnavailableError(error, app_id=app_id, operation=operation)
            raise GatewayOutcomeUnknownError(error, app_id=app_id, operation=operation)
        try:
            ret = int(envelope["ret"])
        except (TypeError, ValueError):
            ret = -1
        if ret == 200:
            return envelope.get("data")
        msg = str(envelope.get("msg") or "")
        data = envelope.get("data")
        if isinstance(data, Mapping) and data.get("msg"):
            msg = f"{msg} {data['msg']}".strip()
        lowered = msg.lower()
        if ret in (401, 403) or any(m in lowered for m in AUTH_MARKERS):
            raise GatewayAuthError(
                f"gateway refused the token: ret={ret} {msg}", app_id=app_id, operation=operation
            )
        if any(m in lowered for m in OFFLINE_MARKERS):
            raise AccountOfflineError(ret, msg, app_id=app_id, operation=operation)
        raise GatewayBusinessError(ret, msg, app_id=app_id, operation=operation)


#: urllib3's errors for a request that failed before it was written (refused, DNS, no
#: route, connect timeout); NameResolutionError is a NewConnectionError
_NEVER_SENT = (NewConnectionError, ConnectTimeoutError, ConnectionRefusedError)


def _never_sent(exc: requests.ConnectionError) -> bool:
    """True when urllib3 failed before writing the request (refused, DNS, no route)."""
    cause: BaseException | None = exc
    seen = 0
    while cause is not None and seen < 8:
        if isinstance(cause, _NEVER_SENT):
            return True
        if isinstance(cause, MaxRetryError) and cause.reason is not None:
            cause = cause.reason
            seen += 1
            continue
        nested = cause.args[0] if cause.args and isinstance(cause.args[0], BaseException) else None
        cause = nested or cause.__cause__ or cause.__context__
        seen += 1
    return False


def _describe(exc: BaseException) -> str:
    """A short reason without request details (URL and headers stay out of errors)."""
    text = str(exc)
    for marker in ("Failed to establish a new connection: ", "Connection aborted.', "):
        if marker in text:
            text = text.split(marker, 1)[1]
    text = text.strip(" ()\"'")[:200]
    return f"{type(exc).__name__}: {text}"


def _mapping(data: Any) -> Mapping[str, Any]:
    return data if isinstance(data, Mapping) else {}
