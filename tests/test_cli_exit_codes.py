"""Exit codes a script can trust, and campaign input checked before anything is written
(the CLI against a real Redis; real workers where a send must end)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from click.testing import CliRunner, Result

from tests.conftest import Simulator, Stack, build, online, settings_for
from wxtasks.accounts.store import AccountStore
from wxtasks.cli import context, main
from wxtasks.keys import Keys
from wxtasks.runtime import redis_client


@pytest.fixture
def cli(redis_url: str, simulator: Simulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    settings = settings_for(redis_url, simulator)
    for name, value in settings.environ().items():
        monkeypatch.setenv(name, value)
    context.runtime.cache_clear()

    def run(*args: str) -> Result:
        return CliRunner().invoke(main, list(args), catch_exceptions=False)

    yield run
    context.runtime.cache_clear()


@pytest.fixture
def store(cli: Any, redis_url: str, simulator: Simulator) -> Iterator[AccountStore]:
    client = redis_client(redis_url)
    yield build(client, settings_for(redis_url, simulator)).accounts
    client.close()


def test_send_from_an_unregistered_account_exits_1_and_enqueues_nothing(cli: Any) -> None:
    out = cli("send", "nosuch-account", "wxid_x", "hi")
    assert out.exit_code == 1
    assert out.stdout == ""
    assert "nosuch-account" in out.stderr and "not registered" in out.stderr


def test_usage_errors_stay_2(cli: Any) -> None:
    assert cli("send", "only-one-argument").exit_code == 2
    assert cli("send", "bad id!", "w", "hi").exit_code == 2


def test_send_exit_codes_follow_the_outcome(
    cli: Any, store: AccountStore, simulator: Simulator, make_stack: Any
) -> None:
    online(store, "ex-1")
    store.register("ex-idle")  # IDLE: a send from it ends failed
    # no worker yet: no result within --timeout
    out = cli("send", "ex-1", "wxid_a", "nobody listens", "--timeout", "1")
    assert out.exit_code == 4 and "no result within 1s" in out.stderr and out.stdout == ""

    stack: Stack = make_stack(simulator)
    stack.worker("send,control", "exit", 1)
    stack.beat()
    stack.dispatchers()
    stack.wait_workers(1)
    sent = cli("send", "ex-1", "wxid_a", "hello", "--timeout", "30")
    assert sent.exit_code == 0 and json.loads(sent.stdout)["status"] == "sent"
    again = cli("send", "ex-1", "wxid_a", "hello", "--timeout", "30")
    assert again.exit_code == 0 and json.loads(again.stdout)["status"] == "duplicate"
    failed = cli("send", "ex-idle", "wxid_a", "hello", "--timeout", "30")
    assert failed.exit_code == 1 and json.loads(failed.stdout)["status"] == "failed"
    simulator.faults(hang_sends=True, hang_s=4)  # past the gateway timeout: it may have gone
    unknown = cli("send", "ex-1", "wxid_b", "did it go?", "--timeout", "30")
    assert unknown.exit_code == 3 and json.loads(unknown.stdout)["status"] == "unknown"
    simulator.faults(hang_sends=False)


@pytest.mark.parametrize(
    "args",
    [
        ("campaigns", "show", "ghost"),
        ("campaigns", "report", "ghost"),
        ("campaigns", "report", "ghost", "--csv"),
        ("campaigns", "report", "ghost", "--json"),
        ("accounts", "show", "ghost"),
        ("gateways", "show", "ghost"),
        ("outbox", "cancel", "ghost-task"),
    ],
)
def test_a_missing_object_exits_1_with_the_error_on_stderr_only(cli: Any, args: Any) -> None:
    out = cli(*args)
    assert out.exit_code == 1
    assert out.stdout == ""
    assert "ghost" in out.stderr


def _targets(tmp_path: Path, text: str) -> str:
    path = tmp_path / "targets.csv"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_a_malformed_line_creates_nothing_and_is_named(
    cli: Any, store: AccountStore, tmp_path: Path
) -> None:
    online(store, "shop-1", "shop-2")
    path = _targets(tmp_path, "shop-1,wxid_a\nshop-2,wxid_b\nshop-1 wxid_c\n\nshop-2,wxid_d\n")
    out = cli("campaigns", "create", "--id", "spring", "--targets", path, "--content", "hi")
    assert out.exit_code == 1 and out.stdout == ""
    assert f"{path}:3: expected app_id,to_wxid" in out.stderr
    assert json.loads(cli("campaigns", "list", "--json").stdout) == []
    assert cli("campaigns", "show", "spring").exit_code == 1
    # fixed, it is created with every target
    Path(path).write_text("shop-1,wxid_a\nshop-2,wxid_b\nshop-1,wxid_c\n", encoding="utf-8")
    out = cli("campaigns", "create", "--id", "spring", "--targets", path, "--content", "hi")
    assert out.exit_code == 0, out.output
    assert [c["total"] for c in json.loads(cli("campaigns", "list", "--json").stdout)] == [3]


def test_every_bad_line_is_reported_up_to_20_then_counted(
    cli: Any, store: AccountStore, tmp_path: Path
) -> None:
    online(store, "shop-1")
    lines = ["shop-1,wxid_ok"] + [f"bad line {i}" for i in range(25)] + ["bad id!,wxid_x"]
    path = _targets(tmp_path, "\n".join(lines) + "\n")
    out = cli("campaigns", "create", "--id", "many", "--targets", path, "--content", "hi")
    assert out.exit_code == 1
    named = [line for line in out.stderr.splitlines() if line.startswith(f"{path}:")]
    assert len(named) == 20 and named[0].startswith(f"{path}:2:")
    assert "... and 6 more" in out.stderr
    assert "26 problem(s)" in out.stderr
    assert json.loads(cli("campaigns", "list", "--json").stdout) == []


def test_unregistered_app_ids_are_refused_unless_allowed(
    cli: Any, store: AccountStore, tmp_path: Path
) -> None:
    online(store, "shop-1")
    path = _targets(tmp_path, "shop-1,wxid_a\nghost-1,wxid_b\nghost-2,wxid_c\nghost-1,wxid_d\n")
    out = cli("campaigns", "create", "--id", "c1", "--targets", path, "--content", "hi")
    assert out.exit_code == 1 and out.stdout == ""
    assert "appId ghost-1 is not registered (2 targets)" in out.stderr
    assert "appId ghost-2 is not registered (1 target)" in out.stderr
    assert "--allow-unregistered" in out.stderr
    assert json.loads(cli("campaigns", "list", "--json").stdout) == []
    out = cli(
        "campaigns",
        "create",
        "--id",
        "c2",
        "--app-id",
        "ghost-3",
        "--to",
        "w1,w2",
        "--content",
        "hi",
    )
    assert out.exit_code == 1 and "ghost-3 is not registered" in out.stderr
    out = cli(
        "campaigns",
        "create",
        "--id",
        "c1",
        "--targets",
        path,
        "--content",
        "hi",
        "--allow-unregistered",
        "--json",
    )
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["total"] == 4


def test_the_campaign_task_refuses_the_same_way(
    store: AccountStore, simulator: Simulator, make_stack: Any, redis_url: str
) -> None:
    online(store, "shop-1")
    stack: Stack = make_stack(simulator)
    stack.worker("send", "camp", 1)
    stack.wait_workers(1)
    producer = Celery(broker=stack.settings.broker_url, backend=stack.settings.redis_url)
    try:
        refused = producer.send_task(
            "wxtasks.campaign",
            queue="send",
            kwargs={
                "campaign_id": "t1",
                "content": "hi",
                "targets": [["shop-1", "wxid_a"], ["shop-1"], ["ghost", "wxid_b"], ["shop-1", ""]],
            },
        ).get(timeout=30)
        assert refused["status"] == "failed"
        for reason in (
            "targets[1]: expected [app_id, to_wxid]",
            "targets[3]: the wxid must be a non-empty string",
            "appId ghost is not registered (1 target)",
            "allow_unregistered=True",
        ):
            assert reason in refused["error"]
        client = redis_client(redis_url)
        assert client.zcard(Keys(stack.settings.key_prefix).campaigns) == 0
        client.close()
        made = producer.send_task(
            "wxtasks.campaign",
            queue="send",
            kwargs={
                "campaign_id": "t2",
                "content": "hi",
                "targets": {"ghost": ["wxid_b"]},
                "allow_unregistered": True,
            },
        ).get(timeout=30)
        assert made["id"] == "t2" and made["total"] == 1
    finally:
        producer.close()
