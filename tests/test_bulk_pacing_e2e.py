"""Every bulk send passes every pacing gate, whichever way it arrives: the public contract
``send_text(..., lane="bulk")`` from another app, through real workers and a real beat
(its dispatcher), with the defaults except the pacing value each scenario names.

Before the gates moved into one Lua library, eight such sends from one account went out in
0.2 s whatever its spacing, and a direct bulk send inside its quiet hours went out at once.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Simulator, Stack, _simulator, build, online
from wxtasks.client import WxTasksClient
from wxtasks.dev.stack import Supervisor, wait_until
from wxtasks.runtime import redis_client
from wxtasks.send.gates import Answer

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


def _stack(
    simulators: dict[str, Simulator],
    supervisor: Supervisor,
    make_stack: Callable[..., Stack],
    **pacing: Any,
) -> tuple[Simulator, Stack, WxTasksClient]:
    sim = _simulator(simulators, supervisor, "v1")
    stack = make_stack(
        sim,
        # the buckets never bind: what is measured is the pacing
        rate_per_second=100,
        burst=100,
        account_rate_per_second=100,
        account_burst=100,
        heartbeat_interval_s=3600,
        **pacing,
    )
    stack.worker("send,control", "w", 2)
    stack.beat()
    stack.dispatchers()
    stack.wait_workers(1)
    return sim, stack, WxTasksClient.from_settings(stack.settings)


def test_eight_direct_bulk_sends_are_spaced_by_the_accounts_jitter(
    simulators: dict[str, Simulator],
    supervisor: Supervisor,
    make_stack: Callable[..., Stack],
    redis_url: str,
) -> None:
    sim, stack, client = _stack(
        simulators, supervisor, make_stack, bulk_jitter_s="0.4-0.5", quiet_hours="", warmup_s=0
    )
    r = redis_client(redis_url)
    online(build(r, stack.settings).accounts, "shop")
    results = [client.send_text("shop", f"wxid_{i}", f"上新 {i}", lane="bulk") for i in range(8)]
    assert [res.get(timeout=60)["status"] for res in results] == ["sent"] * 8
    times = sorted(s["at"] for s in sim.sends())
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(times)]
    print(f"\n8 direct bulk sends, spacing 0.4-0.5 s: gaps {gaps}")
    assert len(times) == 8
    # the dispatcher looks every 50 ms: a gap may be late by that much, never early
    assert all(0.4 - 0.01 <= g <= 0.5 + 0.15 for g in gaps), gaps
    client.app.close()
    r.close()


_NOW_CLOSED = {
    # a per-account setting that closes the gate now; the reason an operator reads
    "quiet_hours": Answer.QUIET_HOURS,
    "warmup": Answer.WARMUP,
    "daily_cap": Answer.DAILY_CAP,
    "cooloff": Answer.COOLOFF,
}


@pytest.mark.parametrize("gate", list(_NOW_CLOSED))
def test_a_closed_pacing_gate_holds_a_direct_bulk_send_and_not_a_reply(
    gate: str,
    simulators: dict[str, Simulator],
    supervisor: Supervisor,
    make_stack: Callable[..., Stack],
    redis_url: str,
) -> None:
    sim, stack, client = _stack(simulators, supervisor, make_stack)
    r = redis_client(redis_url)
    rt = build(r, stack.settings)
    online(rt.accounts, "shop")
    now = time.time()
    key = rt.keys.account("shop")
    if gate == "quiet_hours":  # the hours around now, in the fleet's time zone
        rt.accounts.update("shop", pacing={"quiet_hours": _around(rt, now), "warmup_s": "0"})
    elif gate == "warmup":  # a new-device login a minute ago, the default 4 h warm-up
        rt.accounts.update("shop", pacing={"quiet_hours": ""})
        r.hset(key, "first_login_at", f"{now - 60:.3f}")
    elif gate == "daily_cap":  # today's one bulk send is spent
        rt.accounts.update("shop", pacing={"quiet_hours": "", "warmup_s": "0"})
        rt.accounts.update("shop", pacing={"daily_bulk_cap": "1"})
        r.set(rt.keys.bulk_day("shop", rt.pacing.day(now)), 1)
    else:  # the breaker cooled the lane off
        rt.accounts.update("shop", pacing={"quiet_hours": "", "warmup_s": "0"})
        r.hset(key, "bulk_cooloff_until", f"{now + 3600:.3f}")
    bulk = client.send_text("shop", "wxid_group_buyer", "上新", lane="bulk")
    reply = client.send_text("shop", "wxid_customer", "您好")
    assert reply.get(timeout=30)["status"] == "sent"
    waiting = wait_until(
        lambda: rt.outbox.waiting(app_id="shop"), 30, what="the bulk send to be parked"
    )
    assert [w.task_id for w in waiting] == [bulk.id]
    assert waiting[0].why == _NOW_CLOSED[gate].reason
    assert bulk.state == "WAITING"
    assert [s["toWxid"] for s in sim.sends()] == ["wxid_customer"]
    client.app.close()
    r.close()


def _around(rt: Any, now: float) -> str:
    """Quiet hours from an hour ago to an hour on, in the fleet's time zone."""
    import datetime as dt

    local = dt.datetime.fromtimestamp(now, rt.pacing.timezone)
    start = (local - dt.timedelta(hours=1)).strftime("%H:%M")
    end = (local + dt.timedelta(hours=1)).strftime("%H:%M")
    return f"{start}-{end}"
