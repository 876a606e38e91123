"""The operator CLI against a real Redis (and the simulator where a command needs one)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tests.conftest import Simulator, settings_for
from wxtasks.cli import context, main
from wxtasks.dev.redis_server import free_port


@pytest.fixture
def cli(redis_url: str, simulator: Simulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    settings = settings_for(redis_url, simulator)
    for name, value in settings.environ().items():
        monkeypatch.setenv(name, value)

    def clear() -> None:
        context.runtime.cache_clear()

    clear()

    def run(*args: str) -> Result:
        return CliRunner().invoke(main, list(args), catch_exceptions=False)

    yield run
    clear()


def test_accounts_add_list_show_update_remove(cli: Any) -> None:
    out = cli("accounts", "add", "a1", "a2", "--rate", "2", "--burst", "3", "--no-login")
    assert out.exit_code == 0 and "a1: registered" in out.output
    listed = json.loads(cli("accounts", "list", "--json").output)
    assert [a["app_id"] for a in listed] == ["a1", "a2"]
    for a in listed:
        assert {"app_id", "state", "retry_count", "last_heartbeat_at"} <= set(a)
        assert a["state"] == "IDLE" and a["rate"] == 2 and a["burst"] == 3
    shown = json.loads(cli("accounts", "show", "a1").output)
    assert shown["app_id"] == "a1"
    # no transition yet; the one event is the audit trail's: who registered it, from where
    assert [(e["kind"], e["action"], e["via"]) for e in shown["events"]] == [
        ("audit", "account.add", "cli")
    ]
    updated = json.loads(cli("accounts", "update", "a1", "--note", "VIP 客服").output)
    assert updated["note"] == "VIP 客服"
    assert cli("accounts", "remove", "a2").exit_code == 0
    assert [a["app_id"] for a in json.loads(cli("accounts", "list", "--json").output)] == ["a1"]


def test_unknown_account_is_one_clear_line(cli: Any) -> None:
    out = cli("accounts", "show", "ghost")
    assert out.exit_code == 1
    assert out.output.strip() == "error: unknown account: not registered (appId=ghost)"


def test_reset_puts_an_error_account_back_to_idle(cli: Any) -> None:
    from wxtasks.accounts.machine import Event

    cli("accounts", "add", "e1", "--no-login")
    store = context.runtime().accounts
    store.transition("e1", Event.LOGIN_SUCCEEDED)
    store.transition("e1", Event.LIVENESS_FAILED)
    for _ in range(5):
        store.transition("e1", Event.RECONNECT_FAILED)
    assert store.get("e1").state.value == "ERROR"
    out = cli("accounts", "reset", "e1")
    assert out.exit_code == 0 and "IDLE" in out.output
    assert store.get("e1").state.value == "IDLE"


def test_qr_login_ends_online(cli: Any, simulator: Simulator, tmp_path: Any) -> None:
    cli("accounts", "add", "qr1", "--no-login")
    simulator.set_online("qr1", False)
    png = tmp_path / "qr.png"
    import threading

    def scan_when_shown() -> None:
        from wxtasks.dev.stack import wait_until

        wait_until(lambda: png.exists(), 20, 0.05, "the QR code")
        simulator.admin("scan", {"appId": "qr1"})

    threading.Thread(target=scan_when_shown, daemon=True).start()
    out = cli("accounts", "login", "qr1", "--png", str(png), "--poll-s", "0.1")
    assert out.exit_code == 0, out.output
    assert "ONLINE" in out.output and png.read_bytes()[:4] == b"\x89PNG"
    assert context.runtime().accounts.get("qr1").state.value == "ONLINE"


def test_check_fails_without_workers_and_names_the_failing_part(cli: Any) -> None:
    out = cli("check", "--timeout-s", "1")
    assert out.exit_code == 1
    lines = {line.split()[1]: line.split()[0] for line in out.output.splitlines()}
    assert lines["redis"] == "ok" and lines["broker"] == "ok" and lines["gateway"] == "ok"
    assert lines["workers"] == "FAIL"
    assert lines["dispatch"] == "FAIL" and "start `wxtasks dispatcher`" in out.output


def test_redis_down_is_one_line_not_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WXTASKS_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    context.runtime.cache_clear()
    out = CliRunner().invoke(main, ["accounts", "list"])
    assert out.exit_code == 1
    assert out.output.startswith("error: cannot reach Redis") and "Traceback" not in out.output
    context.runtime.cache_clear()


def test_status_json(cli: Any) -> None:
    from wxtasks.accounts.machine import Event
    from wxtasks.send.pipeline import Message

    cli("accounts", "add", "s1", "--no-login")
    cli("accounts", "add", "bulk", "--no-login", "--rate", "1", "--burst", "1")
    rt = context.runtime()
    rt.accounts.transition("bulk", Event.LOGIN_SUCCEEDED)
    from wxtasks.send.gates import Answer, Lane

    pipe = rt.pipeline
    outcomes = [
        pipe.admit(
            Message.parse("text", {"app_id": "bulk", "to_wxid": f"w{i}", "content": "x"}),
            pipe.ticket(f"t{i}", Lane.INTERACTIVE, None),
        ).answer
        for i in range(3)
    ]
    # one sent now; the others take nothing and are told to wait (all or nothing)
    assert outcomes == [Answer.ADMITTED, Answer.ACCOUNT_TOKENS, Answer.ACCOUNT_TOKENS]
    snap = json.loads(cli("status", "--json").output)
    assert snap["accounts"]["IDLE"] == 1 and snap["accounts"]["ONLINE"] == 1
    busy = snap["busiest_account_buckets"]
    assert [b["app_id"] for b in busy] == ["bulk"] and 0 < busy[0]["next_slot_in_s"] <= 1
    assert snap["global_bucket"]["tokens"] < snap["global_bucket"]["burst"]  # one taken
    assert "send" in snap["queues"] and snap["deadletters"] == 0


def test_bad_setting_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WXTASKS_BURST", "-3")
    context.runtime.cache_clear()
    out = CliRunner().invoke(main, ["accounts", "list"])
    assert out.exit_code == 1 and out.output.strip() == ("error: WXTASKS_BURST must be > 0, got -3")
    context.runtime.cache_clear()


def test_an_app_id_outside_the_rule_is_refused_naming_the_rule(cli: Any) -> None:
    from wxtasks.keys import APP_ID_RULE

    out = cli("accounts", "add", "shop a", "--no-login")
    assert out.exit_code == 2 and APP_ID_RULE in out.output
    assert "registered" not in out.output
    assert json.loads(cli("accounts", "list", "--json").output) == []
    sent = cli("send", "shop a", "wxid_c", "hi", "--no-wait")
    assert sent.exit_code == 2 and APP_ID_RULE in sent.output


def test_check_names_an_unreachable_gateway(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WECHATAPI_BASE_URL", f"http://127.0.0.1:{free_port()}")
    context.runtime.cache_clear()
    out = cli("check", "--timeout-s", "1")
    lines = {line.split()[1]: line for line in out.output.splitlines()}
    assert out.exit_code == 1 and lines["gateway"].startswith("FAIL")
    assert "Connection refused" in lines["gateway"]
