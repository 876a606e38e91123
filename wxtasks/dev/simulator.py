"""A real gateway for development, tests and benchmarks: ``wxtasks simulator`` runs it.

It speaks each profile's paths, token header and envelopes over HTTP (tornado, one
process), keeps per-appId sessions, runs the QR login flow and records every accepted
send with the server's time. Faults are injected through an admin API under ``/admin``
(no token; bind it to loopback):

=====================================  ================================================
``POST /admin/accounts``               upsert ``{appId, online?, zombie?, recoverable?,
                                       fail_sends?, send_error?}`` (zombie: checkOnline
                                       says true, sends fail offline; the next fail_sends
                                       sends fail with send_error, e.g. "操作过于频繁")
``GET  /admin/accounts``               every account the simulator knows
``POST /admin/faults``                 ``{outage, latency_ms, error_rate, hang_sends,
                                       hang_s}``; outage answers HTTP 503, hang_sends
                                       records a send and then does not answer
``POST /admin/scan``                   ``{uuid}`` or ``{appId}``: scan the pending QR code;
                                       with ``captcha``, the login then asks for that code
``POST /admin/callback``               ``{url}``: where to push AddMsg / Offline events
``POST /admin/push``                   push one callback event ``{appId, typeName, data}``
``GET  /admin/sends?since=N``          accepted sends after sequence number N
``GET  /admin/stats``                  calls per path, sends, uptime
``POST /admin/reset``                  forget everything (accounts, sends, faults)
=====================================  ================================================
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
import secrets
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import asdict, dataclass, field
from typing import Any

from tornado import httpclient, web
from tornado.httpserver import HTTPServer

from wxtasks.gateway.profiles import PROFILES, Profile, get_profile

logger = logging.getLogger(__name__)

OFFLINE_SEND_MSG = "发送消息失败-微信已离线(-1)"


@dataclass
class SimAccount:
    app_id: str
    online: bool = True
    zombie: bool = False
    recoverable: bool = False
    #: the next ``fail_sends`` sends of this account fail with ``send_error`` (ret 500)
    send_error: str = ""
    fail_sends: int = 0
    wxid: str = ""
    nick_name: str = ""


@dataclass
class PendingLogin:
    uuid: str
    app_id: str
    created_at: float
    scanned_at: float | None = None
    polls_since_scan: int = 0
    captcha: str = ""  # the security code this login asks for after the scan ("" = none)


@dataclass
class Faults:
    outage: bool = False
    latency_ms: float = 0.0
    error_rate: float = 0.0
    hang_sends: bool = False
    hang_s: float = 30.0


@dataclass
class SimulatorState:
    token: str
    profile: Profile
    default_online: bool = True
    scan_after_s: float | None = None
    qr_ttl_s: float = 120.0
    accounts: dict[str, SimAccount] = field(default_factory=dict)
    logins: dict[str, PendingLogin] = field(default_factory=dict)
    sends: list[dict[str, Any]] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    faults: Faults = field(default_factory=Faults)
    callback_url: str = ""
    started_at: float = field(default_factory=time.time)
    _msg_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def account(self, app_id: str) -> SimAccount:
        acct = self.accounts.get(app_id)
        if acct is None:
            acct = SimAccount(
                app_id, online=self.default_online, wxid=f"wxid_{app_id}", nick_name=app_id
            )
            self.accounts[app_id] = acct
        return acct

    def reset(self) -> None:
        self.accounts.clear()
        self.logins.clear()
        self.sends.clear()
        self.calls.clear()
        self.faults = Faults()


def _ok(data: Any) -> dict[str, Any]:
    return {"ret": 200, "msg": "操作成功", "data": data}


def _err(msg: str, ret: int = 500) -> dict[str, Any]:
    return {"ret": ret, "msg": msg, "data": None}


class GatewayHandler(web.RequestHandler):
    """Every profile route; dispatched by path."""

    def initialize(self, state: SimulatorState) -> None:
        self.state = state

    def check_xsrf_cookie(self) -> None:  # an API, not a form
        return None

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")

    def post(self, path: str) -> Awaitable[None] | None:
        """Answer synchronously (the fast path); only injected delays return a coroutine,
        which tornado awaits."""
        state = self.state
        path = "/" + path
        state.calls[path] += 1
        faults = state.faults
        if faults.outage:
            self.set_status(503)
            self.set_header("Content-Type", "text/plain")
            self.finish("Service Unavailable")
            return None
        if faults.latency_ms > 0:
            return self._after(faults.latency_ms / 1000.0, path)
        return self._serve(path)

    async def _after(self, delay_s: float, path: str) -> None:
        await asyncio.sleep(delay_s)
        pending = self._serve(path)
        if pending is not None:
            await pending

    def _serve(self, path: str) -> Awaitable[None] | None:
        state = self.state
        operation = _ROUTES[state.profile.name].get(path)
        if operation is None:
            self.set_status(404)
            self.finish(_err(f"no such path {path}", 404))
            return None
        if self.request.headers.get(state.profile.token_header) != state.token:
            self.finish(_err("token不可用或已过期", 401))
            return None
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            self.finish(_err("请求体不是合法的JSON"))
            return None
        if not isinstance(body, dict):
            self.finish(_err("请求体不是合法的JSON"))
            return None
        app_id = body.get("appId")
        if not isinstance(app_id, str) or (not app_id and operation not in _EMPTY_APP_ID_OK):
            self.finish(_err("appId不能为空"))
            return None
        result: dict[str, Any] | Awaitable[None] = getattr(self, "op_" + operation)(app_id, body)
        if isinstance(result, dict):
            self.finish(result)
            return None
        return result  # a hanging send: tornado awaits it

    # -- login -----------------------------------------------------------------------------

    def op_check_online(self, app_id: str, body: dict[str, Any]) -> dict[str, Any]:
        acct = self.state.account(app_id)
        alive = acct.online or acct.zombie
        if self.state.profile.online_field:
            return _ok({self.state.profile.online_field: alive})
        return _ok(alive)

    def op_heartbeat(self, app_id: str, body: dict[str, Any]) -> dict[str, Any]:
        acct = self.state.account(app_id)
        if acct.online or acct.zombie:
            return _ok({"alive": True})
        return _err("微信已离线，请重新登录")

    def op_reconnect(self, app_id: str, body: dict[str, Any]) -> dict[str, Any]:
        acct = self.state.account(app_id)
        if acct.zombie:
            return _err("当前账号状态正常，无需重连")
        if acct.online:
            return _ok(True)
        if acct.recoverable:
            acct.online = True
            return _ok(True)
        return _err("重连失败，请重新登录")

    def op_get_login_qr(self, app_id: str, body: dict[str, Any]) -> dict[str, Any]:
        state = self.state
        if not app_id:  # a new device: nobody is logged in on it yet
            app_id = "wx_" + secrets.token_hex(8)
            state.accounts[app_id] = SimAccount(
                app_id, online=False, wxid=f"wxid_{app_id}", nick_name=app_id
            )
        acct = state.account(app_id)
        if acct.online:
            return _err("微信已登录，请勿重复登录。")
        uuid = secrets.token_urlsafe(12)
        state.logins[uuid] = PendingLogin(uuid, app_id, time.time())
        qr_data = f"http://weixin.qq.com/x/{uuid}"
        return _ok(
            {
                "appId": app_id,
                "uuid": uuid,
                "qrData": qr_data,
                "qrImgBase64": _qr_png_base64(qr_data),
            }
        )

    def op_check_login(self, app_id: str, body: dict[str, Any]) -> dict[str, Any]:
        state = self.state
        login = state.logins.get(str(body.get("uuid", "")))
        if login is None or login.app_id != app_id:
            return _err("uuid不存在或已过期")
        now = time.time()
        left = int(login.created_at + state.qr_ttl_s - now)
        if (
            login.scanned_at is None
            and state.scan_after_s is not None
            and now - login.created_at >= state.scan_after_s
        ):
            login.scanned_at = now
        if login.scanned_at is None:
            if left <= 0:
                state.logins.pop(login.uuid, None)
                return _err("二维码已过期")
            return _ok({"uuid": login.uuid, "status": 0, "expiredTime": left})
        login.polls_since_scan += 1
        if login.polls_since_scan < 2:
            return _ok(
                {"uuid": login.uuid, "status": 1, "expiredTime": max(left, 0), "nickName": app_id}
            )
        if login.captcha and body.get("captchCode") != login.captcha:
            # what GeWe answers when the phone shows a security code to type in
            return {
                "ret": 500,
                "msg": "检测登录失败",
                "data": {"code": "-1", "msg": "本次登录需要输入安全验证码"},
            }
        acct = state.account(app_id)
        acct.online, acct.zombie = True, False
        state.logins.pop(login.uuid, None)
        return _ok(
            {
                "uuid": login.uuid,
                "status": 2,
                "expiredTime": max(left, 0),
                "loginInfo": {
                    "wxid": acct.wxid,
                    "nickName": acct.nick_name,
                    "uin": 1000 + len(state.accounts),
                },
            }
        )

    def op_logout(self, app_id: str, body: dict[str, Any]) -> dict[str, Any]:
        acct = self.state.account(app_id)
        acct.online = acct.zombie = False
        return _ok(None)

    def op_set_callback(self, app_id: str, body: dict[str, Any]) -> dict[str, Any]:
        self.state.callback_url = str(body.get("callbackUrl") or "")
        return _ok(None)

    # -- messages --------------------------------------------------------------------------

    def _accept_send(
        self, app_id: str, body: dict[str, Any], kind: str, to_field: str
    ) -> dict[str, Any] | Awaitable[None]:
        state = self.state
        acct = state.account(app_id)
        to_wxid = body.get(to_field)
        if not to_wxid:
            return _err(f"{to_field}不能为空")
        if not acct.online or acct.zombie:
            return _err(OFFLINE_SEND_MSG)
        if acct.fail_sends > 0:
            acct.fail_sends -= 1
            return _err(acct.send_error or "发送失败")
        faults = state.faults
        if faults.error_rate > 0 and random.random() < faults.error_rate:
            return _err("发送失败，请稍后重试")
        seq = next(state._msg_ids)
        now = time.time()
        new_msg_id = 7_000_000_000_000_000_000 + seq * 7919
        record = {
            "seq": seq,
            "appId": app_id,
            "toWxid": to_wxid,
            "type": kind,
            "content": body.get("content"),
            "at": now,
            "msgId": 100_000_000 + seq,
            "newMsgId": str(new_msg_id),
        }
        for key in ("ats", "imgUrl", "fileUrl", "fileName", "title", "linkUrl"):
            if key in body:
                record[key] = body[key]
        state.sends.append(record)
        if faults.hang_sends:
            return self._hang(faults.hang_s)
        data: dict[str, Any] = {
            "toWxid": to_wxid,
            "createTime": int(now),
            "msgId": record["msgId"],
            "type": _MSG_TYPES[kind],
        }
        if state.profile.name != "v1":
            data["newMsgId"] = new_msg_id
        return _ok(data)

    async def _hang(self, seconds: float) -> None:
        """The send was accepted and recorded; the answer never comes in time."""
        await asyncio.sleep(seconds)
        self.set_status(504)
        self.finish("Gateway Timeout")

    def op_send_text(self, app_id: str, body: dict[str, Any]) -> dict[str, Any] | Awaitable[None]:
        to_field = state_to_field(self.state.profile)
        if not body.get("content"):
            return _err("content不能为空")
        return self._accept_send(app_id, body, "text", to_field)

    def op_send_image(self, app_id: str, body: dict[str, Any]) -> dict[str, Any] | Awaitable[None]:
        return self._accept_send(app_id, body, "image", "toWxid")

    def op_send_file(self, app_id: str, body: dict[str, Any]) -> dict[str, Any] | Awaitable[None]:
        return self._accept_send(app_id, body, "file", "toWxid")

    def op_send_link(self, app_id: str, body: dict[str, Any]) -> dict[str, Any] | Awaitable[None]:
        return self._accept_send(app_id, body, "link", "toWxid")

    def op_fetch_contacts(self, app_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return _ok({"friends": [], "chatrooms": [], "ghs": []})

    def op_chatroom_members(self, app_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return _ok({"memberList": []})


def state_to_field(profile: Profile) -> str:
    return profile.field_names.get("toWxid", "toWxid")


_MSG_TYPES = {"text": 1, "image": 3, "file": 6, "link": 5}
_EMPTY_APP_ID_OK = frozenset({"get_login_qr", "set_callback"})
_ROUTES = {name: {path: op for op, path in p.paths.items()} for name, p in PROFILES.items()}


class AdminHandler(web.RequestHandler):
    def initialize(self, state: SimulatorState) -> None:
        self.state = state

    def check_xsrf_cookie(self) -> None:
        return None

    def _body(self) -> dict[str, Any]:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, "body must be JSON") from None
        if not isinstance(body, dict):
            raise web.HTTPError(400, "body must be a JSON object")
        return body

    def get(self, what: str) -> None:
        state = self.state
        if what == "sends":
            since = int(self.get_argument("since", "0"))
            self.finish({"sends": [s for s in state.sends[since:]], "total": len(state.sends)})
        elif what == "accounts":
            self.finish({"accounts": [asdict(a) for a in state.accounts.values()]})
        elif what == "stats":
            self.finish(
                {
                    "calls": dict(state.calls),
                    "sends": len(state.sends),
                    "uptime_s": time.time() - state.started_at,
                    "profile": state.profile.name,
                    "faults": asdict(state.faults),
                }
            )
        else:
            raise web.HTTPError(404)

    async def post(self, what: str) -> None:
        state = self.state
        body = self._body()
        if what == "accounts":
            items = body.get("accounts", [body])
            for item in items:
                acct = state.account(str(item["appId"]))
                for key in ("online", "zombie", "recoverable"):
                    if key in item:
                        setattr(acct, key, bool(item[key]))
                if "fail_sends" in item:
                    acct.fail_sends = int(item["fail_sends"])
                    acct.send_error = str(item.get("send_error") or "")
                if item.get("online") is False and state.callback_url:
                    await _push(state, acct.app_id, "Offline", {})
            self.finish({"ok": True})
        elif what == "faults":
            for key, value in body.items():
                if not hasattr(state.faults, key):
                    raise web.HTTPError(400, f"unknown fault {key}")
                setattr(state.faults, key, type(getattr(state.faults, key))(value))
            self.finish({"ok": True, "faults": asdict(state.faults)})
        elif what == "scan":
            uuid = body.get("uuid")
            for login in state.logins.values():
                if login.uuid == uuid or login.app_id == body.get("appId"):
                    login.scanned_at = time.time()
                    login.captcha = str(body.get("captcha") or "")
                    self.finish({"ok": True, "uuid": login.uuid})
                    return
            raise web.HTTPError(404, "no pending login")
        elif what == "callback":
            state.callback_url = str(body.get("url") or "")
            self.finish({"ok": True})
        elif what == "push":
            status = await _push(
                state,
                str(body["appId"]),
                str(body.get("typeName", "AddMsg")),
                body.get("data") or {},
            )
            self.finish({"ok": True, "status": status})
        elif what == "reset":
            state.reset()
            self.finish({"ok": True})
        else:
            raise web.HTTPError(404)


async def _push(state: SimulatorState, app_id: str, type_name: str, data: dict[str, Any]) -> int:
    """POST one callback event to the configured URL, the way GeWe does."""
    if not state.callback_url:
        return 0
    acct = state.account(app_id)
    event = {"TypeName": type_name, "Appid": app_id, "Wxid": acct.wxid, "Data": data}
    client = httpclient.AsyncHTTPClient()
    try:
        response = await client.fetch(
            state.callback_url,
            method="POST",
            body=json.dumps(event),
            headers={"Content-Type": "application/json"},
            raise_error=False,
            request_timeout=3,
        )
    except OSError as exc:
        logger.warning("callback push to %s failed: %s", state.callback_url, exc)
        return 0
    return int(response.code)


def _qr_png_base64(data: str) -> str:
    import base64
    import io

    import segno

    buf = io.BytesIO()
    segno.make(data, error="m").save(buf, kind="png", scale=4)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def make_app(state: SimulatorState) -> web.Application:
    return web.Application(
        [
            (r"/admin/(\w+)", AdminHandler, {"state": state}),
            (r"/(.+)", GatewayHandler, {"state": state}),
        ],
        compress_response=False,
    )


def gateway_tokens(n: int, token: str, token_prefix: str | None) -> list[str]:
    """The token each of ``n`` simulated gateways accepts: ``<prefix><i>`` (i = 1..n) with
    a prefix, else ``token`` for all."""
    return [f"{token_prefix}{i}" if token_prefix is not None else token for i in range(1, n + 1)]


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 2531,
    profile: str = "videosapi",
    token: str = "",
    default_online: bool = True,
    scan_after_s: float | None = None,
    qr_ttl_s: float = 120.0,
    gateways: int = 1,
    token_prefix: str | None = None,
) -> None:
    """Run the simulator until SIGINT/SIGTERM: ``gateways`` independent gateways (own
    token, accounts, sends, faults and admin API) on ports ``port .. port + gateways - 1``,
    in this one process."""
    states = [
        SimulatorState(
            token=t,
            profile=get_profile(profile),
            default_online=default_online,
            scan_after_s=scan_after_s,
            qr_ttl_s=qr_ttl_s,
        )
        for t in gateway_tokens(gateways, token, token_prefix)
    ]

    async def main() -> None:
        for i, state in enumerate(states):
            server = HTTPServer(make_app(state), xheaders=False, idle_connection_timeout=300)
            server.listen(port + i, address=host, backlog=1024)
            logger.info("simulator (%s) listening on http://%s:%d", profile, host, port + i)
        last = f"..{port + len(states) - 1}" if len(states) > 1 else ""
        print(
            f"wxtasks simulator: profile={profile} http://{host}:{port}{last}"
            + (f" ({len(states)} gateways)" if len(states) > 1 else ""),
            flush=True,
        )
        await asyncio.Event().wait()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
