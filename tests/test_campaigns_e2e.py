"""Campaigns end to end (issue: a 群发 you can watch, pause, resume and cancel, paced the way
accounts stay unbanned). v1 profile, real workers and beat, account rates high and jitter
0.2-0.5 s so that each runs in seconds."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import QUIET_HOURS_OFF, Simulator, Stack, _simulator, online, settings_for
from wxtasks.campaigns.store import Content
from wxtasks.client import WxTasksClient
from wxtasks.dev.stack import Supervisor, wait_until
from wxtasks.events import read_events
from wxtasks.runtime import Runtime

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

#: how long a paused or cancelled campaign must stay silent: running, its three accounts
#: send ~8 messages a second (0.2-0.5 s apart each), so this window would hold ~25
QUIET_S = 3.0


@pytest.fixture(scope="module")
def sim(simulators: dict[str, Simulator], supervisor: Supervisor) -> Simulator:
    return _simulator(simulators, supervisor, "v1")


@pytest.fixture(scope="module")
def stack(redis_server: str, sim: Simulator, supervisor: Supervisor) -> Iterator[Stack]:
    settings = settings_for(
        redis_server,
        sim,
        rate_per_second=100,
        burst=100,
        account_rate_per_second=50,
        account_burst=50,
        heartbeat_interval_s=3600,
        bulk_jitter_s="0.2-0.5",
        group_jitter_s="0.2-0.5",
        quiet_hours=QUIET_HOURS_OFF,
    )
    stack = Stack(settings, supervisor).full("camp")
    yield stack
    stack.stop()


@pytest.fixture
def rt(stack: Stack, sim: Simulator, redis_url: str) -> Iterator[Runtime]:
    sim.reset()
    runtime = Runtime(stack.settings)
    yield runtime
    runtime.redis.close()


def _create(rt: Runtime, campaign_id: str, targets: list[tuple[str, str]]) -> dict[str, Any]:
    return rt.campaigns.create(
        campaign_id, Content.parse("text", {"content": "双11 活动"}), targets
    )


def _sent_to(sim: Simulator, prefix: str) -> int:
    return sum(1 for s in sim.sends() if str(s["toWxid"]).startswith(prefix))


def _quiet_for(sim: Simulator, prefix: str, seconds: float) -> bool:
    """True when nothing more went to ``prefix…`` targets during ``seconds`` (watched)."""
    before = _sent_to(sim, prefix)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if _sent_to(sim, prefix) != before:
            return False
        time.sleep(0.25)
    return True


def test_pause_stops_sending_resume_finishes_and_the_report_adds_up(
    rt: Runtime, sim: Simulator
) -> None:
    accounts = ["c-a", "c-b", "c-c"]
    online(rt.accounts, *accounts)
    total = 90  # 30 per account: ~10 s of sends at 0.2-0.5 s apart
    targets = [(accounts[i % 3], f"p_{i:03d}") for i in range(total)]
    created = _create(rt, "spring", targets)
    assert created["state"] == "running" and created["total"] == total
    assert _create(rt, "spring", targets)["total"] == total  # idempotent by its id

    wait_until(lambda: _sent_to(sim, "p_") >= total * 0.3, 60, 0.05, what="30 % sent")
    paused = rt.campaigns.pause("spring")
    assert paused["state"] == "paused"
    time.sleep(1.0)  # the promise: pause stops new dispatches within 1 s
    assert _quiet_for(sim, "p_", QUIET_S), "sends went on while paused"
    at_pause = rt.campaigns.show("spring")
    assert at_pause["waiting"] > 0
    assert all(row.get("waiting_reason") == "paused" for row in at_pause["accounts"].values())

    rt.campaigns.resume("spring")
    done = wait_until(
        lambda: (s := rt.campaigns.show("spring"))["state"] == "done" and s, 90, what="done"
    )
    assert done["sent"] == total and done["waiting"] == 0
    assert sum(done[k] for k in ("sent", "duplicate", "failed", "unknown", "cancelled")) == total
    per_account = dict.fromkeys(accounts, total // 3)
    assert {a: row["sent"] for a, row in done["accounts"].items()} == per_account
    report = list(rt.campaigns.report("spring"))
    assert len(report) == total and len({(r["app_id"], r["to_wxid"]) for r in report}) == total
    assert all(r["status"] == "sent" and r["msgId"] for r in report)  # v1 has no newMsgId
    at_gateway = Counter((s["appId"], s["toWxid"]) for s in sim.sends())
    assert set(at_gateway) == set(targets) and max(at_gateway.values()) == 1
    finished = [e for e in read_events(rt.redis, rt.settings, count=50) if e.get("alert")]
    # the alert names its campaign in `campaign`, not in `app_id`
    assert any(
        e["alert"] == "campaignFinished" and e["campaign"] == "spring" and e["app_id"] == ""
        for e in finished
    )


def test_cancel_ends_what_is_left_as_cancelled(rt: Runtime, sim: Simulator) -> None:
    accounts = ["x-a", "x-b", "x-c"]
    online(rt.accounts, *accounts)
    total = 60
    _create(rt, "autumn", [(accounts[i % 3], f"x_{i:03d}") for i in range(total)])
    wait_until(lambda: _sent_to(sim, "x_") >= total // 2, 60, 0.05, what="50 % sent")
    rt.campaigns.cancel("autumn")
    time.sleep(1.0)  # the promise: cancel stops new dispatches within 1 s
    assert _quiet_for(sim, "x_", QUIET_S), "sends went on after cancel"
    final = wait_until(
        lambda: (s := rt.campaigns.show("autumn"))["waiting"] == 0 and s, 30, what="all ended"
    )
    sent = _sent_to(sim, "x_")
    assert final["state"] == "cancelled"
    assert final["sent"] == sent and final["cancelled"] == total - sent
    statuses = Counter(r["status"] for r in rt.campaigns.report("autumn"))
    assert statuses == {"sent": sent, "cancelled": total - sent}


def test_risk_control_pauses_that_accounts_bulk_lane_only(
    rt: Runtime, sim: Simulator, stack: Stack
) -> None:
    online(rt.accounts, "risky", "steady")
    sim.admin("accounts", {"appId": "risky", "fail_sends": 1, "send_error": "操作过于频繁"})
    _create(rt, "winter", [(a, f"w_{a}_{n:02d}") for a in ("risky", "steady") for n in range(10)])
    done = wait_until(
        lambda: (rt.campaigns.show("winter")["accounts"]["steady"]["sent"] == 10) and True,
        60,
        what="the other account's campaign to finish",
    )
    assert done
    risky = rt.campaigns.show("winter")["accounts"]["risky"]
    assert risky["sent"] == 0 and risky["waiting"] == 10
    assert "cool-off" in risky["waiting_reason"]
    alerts = [
        e
        for e in read_events(rt.redis, rt.settings, count=100)
        if e.get("alert") == "bulkCoolOff" and e["app_id"] == "risky"
    ]
    assert len(alerts) == 1 and "操作过于频繁" in alerts[0]["reason"]
    # its replies still go out
    client = WxTasksClient.from_settings(stack.settings)
    reply = client.send_text("risky", "customer", "您好").get(timeout=30)
    assert reply["status"] == "sent"
    client.app.close()
    rt.campaigns.cancel("winter")


def test_an_account_warming_up_holds_its_bulk_but_not_its_replies(
    rt: Runtime, sim: Simulator, stack: Stack
) -> None:
    rt.accounts.register("fresh", pacing={"warmup_s": "14400"})
    online(rt.accounts, "fresh")
    rt.accounts.note_first_login("fresh")  # its first QR login on a new device: just now
    _create(rt, "welcome", [("fresh", f"f_{n}") for n in range(5)])
    waiting = wait_until(
        lambda: [w for w in rt.outbox.waiting(app_id="fresh") if w.why], 20, what="a reason"
    )
    assert len(waiting) == 5 and all("warm-up" in w.why for w in waiting)
    client = WxTasksClient.from_settings(stack.settings)
    assert client.send_text("fresh", "customer", "欢迎").get(timeout=30)["status"] == "sent"
    client.app.close()
    assert _sent_to(sim, "f_") == 0
    rt.campaigns.cancel("welcome")
