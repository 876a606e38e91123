"""Alerts reach the robot webhook in its format; events can be followed live."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis

from tests.conftest import Simulator, Stack, build, settings_for
from wxtasks.accounts.machine import Event
from wxtasks.client import WxTasksClient
from wxtasks.dev.stack import Supervisor, wait_until
from wxtasks.events import alert_payload
from wxtasks.runtime import redis_client


@pytest.mark.parametrize(
    ("fmt", "path"),
    [
        ("dingtalk", ("text", "content")),
        ("wecom", ("text", "content")),
        ("feishu", ("content", "text")),
        ("json", ("text",)),
    ],
)
def test_alert_payloads_follow_each_robot_format(fmt: str, path: tuple[str, ...]) -> None:
    body: Any = alert_payload(fmt, "needLogin", "shop-1", "scan a QR code", 1_700_000_000)
    for key in path:
        body = body[key]
    assert "needLogin" in body and "shop-1" in body


@pytest.fixture
def robot() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Robot(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Robot)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/robot/send?access_token=t0k", received
    server.shutdown()
    server.server_close()


@pytest.mark.timeout(120)
def test_need_login_posts_a_dingtalk_alert(
    simulator: Simulator,
    supervisor: Supervisor,
    redis_url: str,
    robot: tuple[str, list[dict[str, Any]]],
) -> None:
    url, received = robot
    settings = settings_for(
        redis_url,
        simulator,
        alert_webhook_url=url,
        alert_format="dingtalk",
        heartbeat_interval_s=3600,
    )
    stack = Stack(settings, supervisor)
    r = redis_client(redis_url)
    try:
        stack.worker("control", "alert", 1)
        build(r, settings).accounts.register("lost-phone")
        simulator.set_online("lost-phone", False)
        WxTasksClient.from_settings(settings).login("lost-phone")
        wait_until(lambda: received, 30, 0.1, "the alert at the robot")
        text = received[0]["text"]["content"]
        assert received[0]["msgtype"] == "text"
        assert "needLogin" in text and "lost-phone" in text
    finally:
        stack.stop()
        r.close()


def test_events_follow_prints_transitions_as_they_happen(
    redis_url: str, r: redis.Redis, simulator: Simulator
) -> None:
    import select

    settings = settings_for(redis_url, simulator)
    store = build(r, settings).accounts
    store.register("live")
    store.transition("live", Event.LOGIN_SUCCEEDED)
    follow = subprocess.Popen(
        [sys.executable, "-m", "wxtasks", "events", "--follow", "--json", "-n", "1"],
        env={**settings.environ(), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert follow.stdout is not None
    try:

        def next_event() -> dict[str, str]:
            ready, _, _ = select.select([follow.stdout], [], [], 20)
            assert ready, "no event line"
            return dict(json.loads(follow.stdout.readline()))  # type: ignore[union-attr]

        assert next_event()["curr"] == "ONLINE"  # the history, then it follows
        store.transition("live", Event.LIVENESS_FAILED, reason="probe failed")
        followed = next_event()
        assert (followed["app_id"], followed["prev"], followed["curr"]) == (
            "live",
            "ONLINE",
            "RECONNECTING",
        )
    finally:
        follow.terminate()
        follow.wait(10)
        follow.stdout.close()
