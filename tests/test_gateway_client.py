"""The gateway client against the simulator over loopback, for every profile."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time

import pytest
import requests

from tests.conftest import TOKEN, Simulator
from wxtasks.dev.redis_server import free_port
from wxtasks.errors import (
    AccountOfflineError,
    BadInputError,
    GatewayAuthError,
    GatewayError,
    GatewayOutcomeUnknownError,
    GatewayUnavailableError,
)
from wxtasks.gateway import GatewayClient


def client_for(sim: Simulator, token: str = TOKEN, timeout_s: float = 2.0) -> GatewayClient:
    return GatewayClient(sim.url, token, sim.profile, timeout_s=timeout_s)


def test_check_online_and_send_text(any_simulator: Simulator) -> None:
    gw = client_for(any_simulator)
    assert gw.check_online("app-1") is True
    receipt = gw.send_text("app-1", "wxid_friend", "你好")
    assert receipt.to_wxid == "wxid_friend"
    assert receipt.msg_id.isdigit()
    if any_simulator.profile != "v1":
        # 64-bit ids survive as exact strings
        assert receipt.new_msg_id.isdigit() and int(receipt.new_msg_id) > 2**53
    sent = any_simulator.sends()
    assert [(s["appId"], s["toWxid"], s["content"]) for s in sent] == [
        ("app-1", "wxid_friend", "你好")
    ]
    if any_simulator.profile != "v1":
        assert sent[0]["newMsgId"] == receipt.new_msg_id


def test_offline_account(any_simulator: Simulator) -> None:
    gw = client_for(any_simulator)
    any_simulator.set_online("app-2", False)
    assert gw.check_online("app-2") is False
    assert gw.heartbeat("app-2") is False
    with pytest.raises(AccountOfflineError) as err:
        gw.send_text("app-2", "wxid_friend", "hi")
    assert err.value.app_id == "app-2" and "离线" in err.value.msg


def test_a_wrong_token_is_an_auth_error_that_does_not_echo_the_token(
    any_simulator: Simulator,
) -> None:
    gw = client_for(any_simulator, token="wrong-token-xyz")
    with pytest.raises(GatewayAuthError) as err:
        gw.check_online("app-1")
    assert "wrong-token-xyz" not in str(err.value)
    assert TOKEN not in repr(client_for(any_simulator))


def test_missing_app_id_fails_before_any_network() -> None:
    gw = GatewayClient(f"http://127.0.0.1:{free_port()}", TOKEN)  # nothing listens there
    with pytest.raises(BadInputError, match="appId"):
        gw.send_text("", "wxid", "x")
    with pytest.raises(BadInputError, match="appId"):
        gw.check_online(None)  # type: ignore[arg-type]


def test_refused_connection_is_unavailable_not_unknown() -> None:
    gw = GatewayClient(f"http://127.0.0.1:{free_port()}", TOKEN, timeout_s=1)
    with pytest.raises(GatewayUnavailableError):
        gw.send_text("app-1", "wxid", "x")


def test_dns_failure_is_unavailable() -> None:
    gw = GatewayClient("http://no-such-host.invalid:2531", TOKEN, timeout_s=2)
    with pytest.raises(GatewayUnavailableError):
        gw.check_online("app-1")


def test_gateway_outage_503_is_unavailable(simulator: Simulator) -> None:
    simulator.faults(outage=True)
    with pytest.raises(GatewayUnavailableError, match="503"):
        client_for(simulator).send_text("app-1", "wxid", "x")
    assert simulator.sends() == []


def test_a_send_that_hangs_after_being_accepted_is_outcome_unknown(simulator: Simulator) -> None:
    simulator.faults(hang_sends=True, hang_s=5)
    gw = client_for(simulator, timeout_s=0.5)
    with pytest.raises(GatewayOutcomeUnknownError) as err:
        gw.send_text("app-1", "wxid_friend", "maybe sent")
    assert err.value.app_id == "app-1"
    # ... and the gateway did record it: exactly why it must not be resent blindly
    assert [s["content"] for s in simulator.sends()] == ["maybe sent"]


def test_a_reset_after_the_request_left_is_outcome_unknown() -> None:
    """A server that reads the request and then drops the connection."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    script = (
        "import socket,sys\n"
        "s=socket.socket(fileno=int(sys.argv[1]))\n"
        "c,_=s.accept(); c.recv(65536); c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,"
        " b'\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00'); c.close()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(server.fileno())], pass_fds=[server.fileno()]
    )
    try:
        gw = GatewayClient(f"http://127.0.0.1:{port}", TOKEN, timeout_s=5)
        with pytest.raises(GatewayOutcomeUnknownError):
            gw.send_text("app-1", "wxid", "x")
    finally:
        proc.wait(5)
        server.close()


def test_zombie_account_check_online_true_but_sends_fail(simulator: Simulator) -> None:
    simulator.set_online("app-z", True, zombie=True)
    gw = client_for(simulator)
    assert gw.check_online("app-z") is True
    with pytest.raises(AccountOfflineError):
        gw.send_text("app-z", "wxid", "x")
    assert gw.reconnect("app-z") is False  # "当前账号状态正常，无需重连"


def test_reconnect_brings_back_a_recoverable_account(simulator: Simulator) -> None:
    simulator.set_online("app-r", False, recoverable=True)
    assert client_for(simulator).reconnect("app-r") is True
    simulator.set_online("app-s", False, recoverable=False)
    assert client_for(simulator).reconnect("app-s") is False


def test_qr_login_flow(simulator: Simulator) -> None:
    gw = client_for(simulator)
    simulator.set_online("app-q", False)
    qr = gw.get_login_qr("app-q")
    assert qr.app_id == "app-q" and qr.uuid and qr.qr_img_base64.startswith("data:image/png")
    assert gw.check_login("app-q", qr.uuid).status == 0
    simulator.admin("scan", {"uuid": qr.uuid})
    assert gw.check_login("app-q", qr.uuid).status == 1
    done = gw.check_login("app-q", qr.uuid)
    assert done.logged_in and done.wxid
    assert gw.check_online("app-q") is True


def test_first_login_creates_a_device(simulator: Simulator) -> None:
    qr = client_for(simulator).get_login_qr("")
    assert qr.app_id.startswith("wx_")


def test_all_send_kinds(simulator: Simulator) -> None:
    gw = client_for(simulator)
    gw.send_image("app-1", "wxid", "http://img/1.png")
    gw.send_file("app-1", "wxid", "http://f/1.pdf", "1.pdf")
    gw.send_link("app-1", "wxid", "t", "d", "http://l", "http://thumb")
    gw.send_text("app-1", "chatroom@chatroom", "hi all", ats="wxid_a,wxid_b")
    kinds = [(s["type"], s.get("ats")) for s in simulator.sends()]
    assert kinds == [("image", None), ("file", None), ("link", None), ("text", "wxid_a,wxid_b")]


def test_v1_profile_has_no_reconnect_call_and_probes_instead(
    simulators: dict[str, Simulator], supervisor: object
) -> None:
    from tests.conftest import _simulator

    sim = _simulator(simulators, supervisor, "v1")  # type: ignore[arg-type]
    gw = client_for(sim)
    sim.set_online("app-1", False)
    assert gw.reconnect("app-1") is False
    sim.set_online("app-1", True)
    assert gw.reconnect("app-1") is True
    with pytest.raises(GatewayError, match="not offered"):
        gw.get_login_qr("app-1")


def test_the_token_never_reaches_logs(
    simulator: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    gw = client_for(simulator)
    gw.send_text("app-1", "wxid", "x")
    with pytest.raises(GatewayAuthError):
        client_for(simulator, token="other").check_online("a")
    assert TOKEN not in caplog.text


def test_simulator_cli_answers_check_online_with_the_envelope(simulator: Simulator) -> None:
    url = simulator.url + "/login/checkOnline"
    ok = requests.post(url, json={"appId": "a"}, headers={"VideosApi-token": TOKEN}).json()
    assert ok["ret"] == 200 and ok["data"] in (True, False) and "msg" in ok
    bad = requests.post(url, json={"appId": "a"}, headers={"VideosApi-token": "nope"}).json()
    assert bad["ret"] != 200
    missing = requests.post(url, json={}, headers={"VideosApi-token": TOKEN}).json()
    assert missing["ret"] != 200 and "appId" in missing["msg"]


def test_latency_injection_slows_answers(simulator: Simulator) -> None:
    gw = client_for(simulator)
    gw.check_online("a")
    simulator.faults(latency_ms=300)
    started = time.monotonic()
    gw.check_online("a")
    assert time.monotonic() - started >= 0.3
