"""The client against a gateway somebody else wrote: a minimal stdlib HTTP server that
follows GATEWAY.md's paths and envelopes, sharing no code with wxtasks' simulator."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from wxtasks.gateway import GatewayClient

GEWE = {
    "/login/checkOnline": "online",
    "/message/postText": "text",
    "/login/reconnection": "reconnect",
}
V1 = {
    "/v1/account/checkOnline": "online",
    "/v1/account/heartbeat": "heartbeat",
    "/v1/message/sendText": "text",
}


class Foreign(BaseHTTPRequestHandler):
    routes: dict[str, str] = {}
    header = ""
    layout = ""
    received: list[dict[str, object]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append({"path": self.path, **body})
        if self.headers.get(self.header) != "T0K":
            return self.reply({"ret": 500, "msg": "token不可用或已过期", "data": None})
        op = self.routes.get(self.path)
        if op == "online":
            data: object = {"isOnline": True} if self.layout == "v1" else True
        elif op == "heartbeat":
            data = {}
        elif op == "reconnect":
            data = True
        elif op == "text":
            data = {"msgId": 7, "createTime": 1700000000}
            if self.layout != "v1":
                data.update(newMsgId=9223372036854775807, toWxid=body["toWxid"])
        else:
            return self.reply({"ret": 404, "msg": "no route", "data": None})
        self.reply({"ret": 200, "msg": "ok", "data": data})

    def reply(self, envelope: dict[str, object]) -> None:
        raw = json.dumps(envelope).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture(params=["videosapi", "gewe", "v1"])
def foreign(request: pytest.FixtureRequest) -> Iterator[tuple[str, str, type[Foreign]]]:
    profile = request.param
    handler = type(
        "H",
        (Foreign,),
        {
            "routes": V1 if profile == "v1" else GEWE,
            "header": "X-GEWE-TOKEN" if profile == "gewe" else "VideosApi-token",
            "layout": "v1" if profile == "v1" else "gewe",
            "received": [],
        },
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield profile, f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_client_works_unchanged_against_a_foreign_gateway(
    foreign: tuple[str, str, type[Foreign]],
) -> None:
    profile, url, handler = foreign
    gw = GatewayClient(url, "T0K", profile)
    assert gw.check_online("acct") is True
    assert gw.heartbeat("acct") is True
    receipt = gw.send_text("acct", "wxid_b", "hello")
    assert receipt.msg_id == "7"
    if profile != "v1":
        assert receipt.new_msg_id == "9223372036854775807"
    sent = handler.received[-1]
    to_field = "toUser" if profile == "v1" else "toWxid"
    assert sent[to_field] == "wxid_b" and sent["appId"] == "acct"
