"""The gateway registry, per-gateway buckets and gateway health, against a real Redis
(no workers: the end-to-end cases are in test_fleet_e2e.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from click.testing import CliRunner, Result

from tests.conftest import TOKEN, Simulator, _simulator, build, online, settings_for
from wxtasks.accounts.lifecycle import Lifecycle
from wxtasks.cli import context, main
from wxtasks.config import Settings
from wxtasks.dev.stack import Supervisor
from wxtasks.errors import BadInputError, ConfigError
from wxtasks.events import read_events
from wxtasks.gateway.fleet import Fleet
from wxtasks.gateway.registry import UnknownGatewayError, token_of
from wxtasks.send.gates import Answer, Lane
from wxtasks.send.pipeline import Message, SendPipeline

SECRET_TOKEN = "gw-token-9d8c7b6a"  # must never show up in Redis or in any output


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return Settings.from_env(
        {},
        redis_url=redis_url,
        gateway_base_url="http://127.0.0.1:1",
        gateway_token=TOKEN,
        rate_per_second=100,
        burst=100,
        account_rate_per_second=100,
        account_burst=100,
        gateway_down_failures=3,
        gateway_down_after_s=2,
    )


def test_registry_add_get_update_remove_and_default(r: redis.Redis, settings: Settings) -> None:
    reg = build(r, settings).gateways
    assert [g.name for g in reg.list()] == ["default"]
    assert reg.get("default").base_url == "http://127.0.0.1:1"
    g = reg.add("gw-a", base_url="http://h:2531/", profile="gewe", token_env="GW_A", rate=3)
    assert (g.base_url, g.profile, g.token_env, g.rate, g.burst) == (
        "http://h:2531",
        "gewe",
        "GW_A",
        3.0,
        settings.gateway_burst,
    )
    assert len(g.callback_secret) >= 24
    with pytest.raises(BadInputError, match="exists"):
        reg.add("gw-a", base_url="http://h", profile="gewe", token_env="GW_A")
    with pytest.raises(BadInputError, match="environment"):
        reg.add("default", base_url="http://h", profile="gewe", token_env="X")
    with pytest.raises(BadInputError, match="variable"):
        reg.add("gw-b", base_url="http://h", profile="gewe", token_env="tok-3f9a")  # a token?
    assert reg.update("gw-a", burst=7).burst == 7
    store = build(r, settings).accounts
    store.register("acct-1", gateway="gw-a")
    with pytest.raises(BadInputError, match="still serves 1 account"):
        reg.remove("gw-a", [a.app_id for a in store.on_gateway("gw-a")])
    store.update("acct-1", gateway="default")
    assert reg.remove("gw-a", [a.app_id for a in store.on_gateway("gw-a")])
    with pytest.raises(UnknownGatewayError):
        reg.get("gw-a")
    with pytest.raises(BadInputError, match="not registered"):
        store.register("acct-2", gateway="gw-a")


def test_the_token_comes_from_its_variable_or_the_secrets_dir(
    settings: Settings, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, r: redis.Redis
) -> None:
    reg = build(r, settings).gateways
    g = reg.add("gw-a", base_url="http://h", profile="v1", token_env="WX_GW_A_TOKEN")
    monkeypatch.delenv("WX_GW_A_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="WX_GW_A_TOKEN is not set"):
        token_of(g, settings)
    (tmp_path / "WX_GW_A_TOKEN").write_text(SECRET_TOKEN + "\n")
    assert token_of(g, settings.replace(secrets_dir=str(tmp_path))) == SECRET_TOKEN
    monkeypatch.setenv("WX_GW_A_TOKEN", "from-env")
    assert token_of(g, settings.replace(secrets_dir=str(tmp_path))) == "from-env"


def _admit(pipe: SendPipeline, app_id: str, i: int, now_ms: float) -> Any:
    message = Message.parse("text", {"app_id": app_id, "to_wxid": "wxid_x", "content": f"m{i}"})
    ticket = pipe.ticket(f"t-{app_id}-{i}", Lane.INTERACTIVE, now_ms / 1000)
    return pipe.admit(message, ticket, now_ms=now_ms)


def test_each_gateway_has_its_bucket_and_the_fleet_bucket_holds_the_total(
    r: redis.Redis, settings: Settings
) -> None:
    settings = settings.replace(rate_per_second=5, burst=4)
    reg = build(r, settings).gateways
    reg.add("gw-a", base_url="http://h", profile="v1", token_env="A", rate=1, burst=2)
    reg.add("gw-b", base_url="http://h", profile="v1", token_env="B", rate=2, burst=3)
    store = build(r, settings).accounts
    online(store, "a1", "b1")
    store.update("a1", gateway="gw-a")
    store.update("b1", gateway="gw-b")
    pipe = build(r, settings).pipeline
    t0 = 1_700_000_000_000.0
    a = [_admit(pipe, "a1", i, t0) for i in range(4)]
    assert [x.answer for x in a] == [Answer.ADMITTED] * 2 + [Answer.GATEWAY_TOKENS] * 2
    assert a[2].answer is Answer.GATEWAY_TOKENS and a[2].gateway == "gw-a" and a[2].wait_s == 1.0
    b = [_admit(pipe, "b1", i, t0) for i in range(4)]
    # gw-b would allow 3, but the fleet bucket (burst 4) has 2 left after gw-a's 2
    assert [x.answer for x in b] == [Answer.ADMITTED] * 2 + [Answer.GLOBAL_TOKENS] * 2
    assert b[2].answer is Answer.GLOBAL_TOKENS and b[2].gateway == "gw-b"
    # a second later: gw-a has one token more (1/s); gw-b three (its burst), the fleet 4
    later = t0 + 1000
    assert _admit(pipe, "a1", 10, later).answer is Answer.ADMITTED
    assert _admit(pipe, "a1", 11, later).answer is Answer.GATEWAY_TOKENS
    b = [_admit(pipe, "b1", 10 + i, later) for i in range(4)]
    assert [x.answer for x in b] == [Answer.ADMITTED] * 3 + [Answer.GATEWAY_TOKENS]
    assert b[3].answer is Answer.GATEWAY_TOKENS
    levels = {k: r.get(pipe.keys.gateway_bucket(k)) for k in ("gw-a", "gw-b", "default")}
    assert levels["default"] is None  # no account of the default gateway sent


def test_a_stale_gateway_guess_costs_one_more_trip_and_never_the_wrong_bucket(
    r: redis.Redis, settings: Settings
) -> None:
    reg = build(r, settings).gateways
    reg.add("gw-a", base_url="http://h", profile="v1", token_env="A", rate=1, burst=1)
    store = build(r, settings).accounts
    online(store, "a1")
    pipe = build(r, settings).pipeline
    t0 = 1_700_000_000_000.0
    assert _admit(pipe, "a1", 0, t0).gateway == "default"
    store.update("a1", gateway="gw-a")  # the process still guesses "default"
    first = _admit(pipe, "a1", 1, t0)
    assert (first.answer, first.gateway) == (Answer.ADMITTED, "gw-a")
    assert r.get(pipe.keys.gateway_bucket("gw-a")) is not None
    assert _admit(pipe, "a1", 2, t0).answer is Answer.GATEWAY_TOKENS  # gw-a's burst 1 is spent


def test_one_outage_marks_a_gateway_down_once_and_its_answer_up_once(
    r: redis.Redis, settings: Settings
) -> None:
    clock = [1000.0]
    rt = build(r, settings)
    fleet = Fleet(r, settings, rt.keys, rt.scripts, rt.gateways, clock=lambda: clock[0])
    edges = []
    for _ in range(3):  # 3 failures but within 2 s: not yet
        edges.append(fleet.failed("gw-a", "refused"))
        clock[0] += 0.5
    assert edges == ["", "", ""] and not fleet.is_down("gw-a")
    clock[0] += 1.0
    assert fleet.failed("gw-a", "refused") == "down"
    assert [fleet.failed("gw-a", "refused") for _ in range(5)] == [""] * 5  # one edge
    other = build(r, settings).fleet  # another process sees it at once
    assert other.is_down("gw-a") and not other.is_down("gw-b")
    assert other.health("gw-a")["failures"] == 9
    assert other.answered("gw-a") == "up"
    assert fleet.answered("gw-a", force=True) == ""
    assert not build(r, settings).fleet.is_down("gw-a")


def test_a_down_gateway_pauses_its_accounts_without_touching_them(
    r: redis.Redis,
    settings: Settings,
    simulator: Simulator,
    simulators: dict[str, Simulator],
    supervisor: Supervisor,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Heartbeats of a down gateway's accounts call nothing and fail nothing; one probe
    per interval watches it; its answer alerts once and brings the accounts back; the
    other gateway's accounts are probed as ever."""
    other = _simulator(simulators, supervisor, "gewe")
    monkeypatch.setenv("WX_TEST_GW_TOKEN", TOKEN)
    settings = settings.replace(
        gateway_probe_interval_s=60,
        gateway_down_after_s=0,
        gateway_base_url=other.url,
        gateway_profile="gewe",
    )
    reg = build(r, settings).gateways
    reg.add("gw-a", base_url=simulator.url, profile="videosapi", token_env="WX_TEST_GW_TOKEN")
    store = build(r, settings).accounts
    online(store, "a1", "a2", "d1")
    store.update("a1", gateway="gw-a")
    store.update("a2", gateway="gw-a")
    sent: list[tuple[str, dict[str, Any]]] = []
    rt = build(r, settings)
    life = Lifecycle(
        r, settings, rt.keys, store, rt.fleet, lambda t, kw, *a, **k: sent.append((t, kw))
    )
    simulator.faults(outage=True)
    before = simulator.calls("/login/checkOnline")
    for _ in range(3):
        report = life.heartbeat(["a1", "a2"])
        assert report.failed == []  # a gateway that does not answer says nothing of them
    assert life.fleet.is_down("gw-a")
    calls = simulator.calls("/login/checkOnline")
    for _ in range(5):
        report = life.heartbeat(["a1", "a2", "d1"])
        assert sorted(report.gateway_down) == ["a1", "a2"]
    assert simulator.calls("/login/checkOnline") - calls <= 1  # a probe per interval at most
    # 8 heartbeat rounds of 2 accounts: 4 unanswered calls marked it down, then one probe
    assert simulator.calls("/login/checkOnline") - before <= 5
    assert other.calls("/login/checkOnline") >= 5  # d1, on the default gateway: every time
    assert {a.state.value for a in store.get_many(["a1", "a2"])} == {"ONLINE"}
    alerts = [e for e in read_events(r, settings, count=50) if e.get("kind") == "alert"]
    assert [(e["alert"], e["gateway"]) for e in alerts] == [("gatewayDown", "gw-a")]
    simulator.faults(outage=False)
    r.delete(life.keys.gateway_probe("gw-a"))  # the next probe slot (interval is 60 s here)
    life.heartbeat(["a1"])
    assert not life.fleet.is_down("gw-a")
    alerts = [e for e in read_events(r, settings, count=50) if e.get("kind") == "alert"]
    assert [e["alert"] for e in alerts] == ["gatewayDown", "gatewayUp"]
    # its accounts are probed at once, not at their next heartbeat
    assert ("wxtasks.heartbeat", {"app_ids": ["a1", "a2"]}) in sent


@pytest.fixture
def cli(redis_url: str, simulator: Simulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name, value in settings_for(redis_url, simulator).environ().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("WX_CLI_GW_TOKEN", SECRET_TOKEN)
    context.runtime.cache_clear()

    def run(*args: str) -> Result:
        return CliRunner().invoke(main, list(args), catch_exceptions=False)

    yield run
    context.runtime.cache_clear()


def test_gateways_cli_never_shows_or_stores_the_token(
    cli: Any, simulator: Simulator, r: redis.Redis
) -> None:
    outputs = []
    out = cli(
        "gateways", "add", "gw-a", "--base-url", simulator.url, "--profile", "videosapi",
        "--token-env", "WX_CLI_GW_TOKEN", "--rate", "3", "--burst", "4", "--json",
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    outputs.append(out.output)
    added = json.loads(out.output)
    assert (added["name"], added["rate"], added["burst"], added["token"]) == ("gw-a", 3, 4, "set")
    out = cli("gateways", "list", "--json")
    outputs.append(out.output)
    assert [g["name"] for g in json.loads(out.output)] == ["default", "gw-a"]
    out = cli("accounts", "add", "acct-1", "--gateway", "gw-a", "--no-login")
    assert out.exit_code == 0, out.output
    out = cli("accounts", "add", "acct-2", "--gateway", "nope", "--no-login")
    assert out.exit_code == 1 and "not registered" in out.output
    out = cli("gateways", "show", "gw-a")
    outputs.append(out.output)
    assert json.loads(out.output)["app_ids"] == ["acct-1"]
    out = cli("gateways", "update", "gw-a", "--rate", "5", "--json")
    outputs.append(out.output)
    assert json.loads(out.output)["rate"] == 5
    out = cli("accounts", "list", "--json")
    assert json.loads(out.output)[0]["gateway"] == "gw-a"
    out = cli("gateways", "remove", "gw-a")
    assert out.exit_code == 1 and "still serves 1 account" in out.output
    cli("accounts", "update", "acct-1", "--gateway", "default")
    out = cli("gateways", "remove", "gw-a", "--json")
    assert json.loads(out.output) == {"gw-a": "removed"}
    outputs.append(cli("gateways", "list").output)
    for text in outputs:
        assert SECRET_TOKEN not in text
    for key in r.scan_iter("*"):
        dumped = r.dump(key) or b""
        assert SECRET_TOKEN.encode() not in dumped, key
