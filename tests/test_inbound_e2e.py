"""Gateway callbacks end to end: the simulator pushes to the receiver process, real
workers handle the events (issue: inbound, "done when")."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.conftest import SHARED_SETTINGS, Simulator, Stack, build, finished_tasks, online
from wxtasks.accounts.machine import State
from wxtasks.dev.redis_server import free_port
from wxtasks.dev.stack import Child, Supervisor, wait_until
from wxtasks.gateway import GatewayClient
from wxtasks.keys import APP_ID_RULE
from wxtasks.runtime import redis_client

pytestmark = pytest.mark.timeout(120)
SECRET = SHARED_SETTINGS["callback_secret"]  # the shared stack's receiver secret


@pytest.fixture(scope="module")
def stack(session_stack: Stack, supervisor: Supervisor) -> Iterator[tuple[Stack, str]]:
    """The suite's shared stack (its settings carry SECRET and the inbound rules) and a
    callback receiver of this module's."""
    port = free_port()
    receiver: Child = supervisor.start(
        "callbacks",
        [sys.executable, "-m", "wxtasks", "callbacks", "--port", str(port)],
        session_stack.env,
    )
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: _answers(url), 20, 0.05, "the receiver")
    yield session_stack, url
    supervisor.stop(receiver, timeout_s=5)


def _answers(url: str) -> bool:
    try:
        requests.post(url + "/callback/x", data=b"{}", timeout=0.5)
        return True
    except requests.RequestException:
        return False


def add_msg(
    new_msg_id: int, content: str, frm: str = "wxid_customer", to: str = "wxid_shop"
) -> dict[str, Any]:
    return {
        "NewMsgId": new_msg_id,
        "MsgType": 1,
        "FromUserName": {"string": frm},
        "ToUserName": {"string": to},
        "Content": {"string": content},
        "CreateTime": 1_700_000_000,
    }


@pytest.fixture
def sim(simulator: Simulator) -> Simulator:
    return simulator


@pytest.fixture
def env(stack: tuple[Stack, str], shared_stack: Stack, sim: Simulator) -> Iterator[dict[str, Any]]:
    st, url = stack
    r = redis_client(st.settings.redis_url)
    store = build(r, st.settings).accounts
    online(store, "shop", "ops")
    sim.admin("accounts", {"appId": "shop", "online": True})
    # the gateway learns where to push the way operators register it: setCallback
    GatewayClient.from_settings(st.settings).set_callback(f"{url}/callback/{SECRET}", "")
    yield {"r": r, "store": store, "url": url, "inbound": build(r, st.settings).inbound}
    r.close()


def done(env: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return finished_tasks(env["r"], name)


def push(sim: Simulator, type_name: str, data: dict[str, Any], app_id: str = "shop") -> int:
    return int(sim.admin("push", {"appId": app_id, "typeName": type_name, "data": data})["status"])


def test_the_same_message_pushed_twice_is_recorded_once(
    env: dict[str, Any], sim: Simulator
) -> None:
    big = 9_123_456_789_012_345_678  # 64-bit: must stay exact
    assert push(sim, "AddMsg", add_msg(big, "hello")) == 200
    assert push(sim, "AddMsg", add_msg(big, "hello")) == 200
    handled = wait_until(
        lambda: len(done(env, "wxtasks.on_message")) == 2 and done(env, "wxtasks.on_message"),
        20,
        what="both pushes handled",
    )
    assert sorted(t["result"]["status"] for t in handled) == ["duplicate", "handled"]
    items = env["inbound"].list()
    assert len(items) == 1 and items[0]["new_msg_id"] == str(big)


def test_wrong_secret_is_403_and_malformed_is_400(env: dict[str, Any]) -> None:
    url = env["url"]
    event = {"TypeName": "AddMsg", "Appid": "shop", "Wxid": "wxid_shop", "Data": add_msg(1, "x")}
    assert requests.post(f"{url}/callback/wrong", json=event).status_code == 403
    assert requests.post(f"{url}/callback/{SECRET}", data=b"not json").status_code == 400
    assert requests.post(f"{url}/callback/{SECRET}", json={"hello": 1}).status_code == 400
    assert (
        requests.post(
            f"{url}/callback/{SECRET}", json={**event, "Data": {"Content": "no id"}}
        ).status_code
        == 400
    )
    # lower-case keys (some deployments) are a gateway event too
    lower = {"type_name": "ModContacts", "appid": "shop", "data": {}}
    assert requests.post(f"{url}/callback/{SECRET}", json=lower).json()["handled"] is False


def test_offline_callback_moves_the_account_out_of_online_at_once(
    env: dict[str, Any], sim: Simulator
) -> None:
    store = env["store"]
    heartbeat_before = store.get("shop").last_heartbeat_at
    sim.admin("accounts", {"appId": "shop", "online": False})  # the gateway pushes Offline
    # "at once": the heartbeat is an hour away (heartbeat_interval_s=3600) and no send is
    # made, so only the callback can move it; the bound is generous for a busy machine
    wait_until(
        lambda: store.get("shop").state is not State.ONLINE, 20, 0.02, "the account to leave ONLINE"
    )
    assert "Offline" in store.get("shop").last_error
    assert store.get("shop").last_heartbeat_at == heartbeat_before  # no heartbeat did it


def test_a_keyword_message_gets_exactly_one_auto_reply(env: dict[str, Any], sim: Simulator) -> None:
    for _ in range(2):  # pushed twice: still one reply
        push(sim, "AddMsg", add_msg(5001, "请问价格多少？"))
    wait_until(lambda: len(done(env, "wxtasks.on_message")) == 2, 20, what="both handled")
    wait_until(lambda: done(env, "wxtasks.send_text"), 20, what="the auto-reply sent")
    sends = sim.sends()
    assert [(s["appId"], s["toWxid"], s["content"]) for s in sends] == [
        ("shop", "wxid_customer", "您好，价格表已发送")
    ]


def test_forward_to_another_account_and_self_messages_trigger_nothing(
    env: dict[str, Any], sim: Simulator
) -> None:
    push(
        sim,
        "AddMsg",
        add_msg(6001, "我要投诉物流", frm="room1@chatroom", to="wxid_shop")
        | {"Content": {"string": "wxid_angry:\n我要投诉物流"}},
    )
    # the account's own message comes back too: recorded, never handled
    push(sim, "AddMsg", add_msg(6002, "价格 投诉", frm="wxid_shop", to="wxid_customer"))
    wait_until(lambda: len(done(env, "wxtasks.on_message")) == 2, 20, what="both handled")
    wait_until(lambda: done(env, "wxtasks.send_text"), 20, what="the forward sent")
    sends = sim.sends()
    assert [(s["appId"], s["toWxid"]) for s in sends] == [("ops", "wxid_manager")]
    assert "wxid_angry" in sends[0]["content"] and "投诉物流" in sends[0]["content"]
    by_id = {m["new_msg_id"]: m for m in env["inbound"].list()}
    assert by_id["6001"]["is_group"] and by_id["6001"]["sender_wxid"] == "wxid_angry"
    assert by_id["6001"]["content"] == "我要投诉物流"
    assert by_id["6002"]["is_self"]


def test_the_receiver_refuses_what_it_cannot_use(env: dict[str, Any]) -> None:
    url = f"{env['url']}/callback/{SECRET}"

    def refused(body: Any, status: int) -> str:
        reply = requests.post(url, data=body, timeout=30)
        assert reply.status_code == status, reply.text
        return str(reply.json()["error"])

    assert "larger than 1048576 bytes" in refused(b"x" * 2_000_000, 413)

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(32):
            yield b" " * 65_536

    assert "larger than" in refused(chunks(), 413)
    assert "nested too deeply" in refused(b"[" * 100_000 + b"]" * 100_000, 400)
    assert "not UTF-8" in refused(b'{"TypeName": "Offline", "Appid": "\xff"}', 400)
    assert "not JSON" in refused(b"not json", 400)
    assert "not JSON" in refused(b"1" * 5_000, 400)  # a number too long to convert
    bad_id = {"TypeName": "Offline", "Appid": "a}{b:*", "Data": {}}
    assert APP_ID_RULE in refused(json.dumps(bad_id), 400)
    unreadable = {"TypeName": "AddMsg", "Appid": "shop", "Data": {"NewMsgId": 1, "MsgType": [1]}}
    assert "AddMsg cannot be read" in refused(json.dumps(unreadable), 400)
    # and it still serves
    ignored = {"TypeName": "ModContacts", "Appid": "shop", "Data": {}}
    assert requests.post(url, json=ignored, timeout=5).json() == {"ok": True, "handled": False}


def test_the_body_limit_is_a_setting(stack: tuple[Stack, str], supervisor: Supervisor) -> None:
    st, _ = stack
    port = free_port()
    receiver = supervisor.start(
        "callbacks-small",
        [sys.executable, "-m", "wxtasks", "callbacks", "--port", str(port)],
        {**st.env, "WXTASKS_CALLBACK_MAX_BODY_BYTES": "200"},
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _answers(url), 20, 0.05, "the receiver")
        event = {"TypeName": "ModContacts", "Appid": "shop", "Data": {"pad": "x" * 300}}
        assert requests.post(f"{url}/callback/{SECRET}", json=event, timeout=5).status_code == 413
        event["Data"] = {}
        assert requests.post(f"{url}/callback/{SECRET}", json=event, timeout=5).ok
    finally:
        supervisor.stop(receiver)
