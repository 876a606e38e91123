"""Send scheduling end to end (issue: messages wait in Redis, not in workers): a 群发 of any
size runs to its end at the account's pace, replies go ahead of campaigns. Real workers,
a real beat (its dispatcher), the simulator (v1 profile); visibility timeout and deadlines
as a user gets them, except where the issue names a value."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import (
    QUIET_HOURS_OFF,
    Simulator,
    Stack,
    _simulator,
    build,
    online,
    over_envelope,
)
from wxtasks.client import WxTasksClient
from wxtasks.dev.stack import Supervisor, wait_until
from wxtasks.runtime import redis_client

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

ACCOUNT_RATE, DEADLINE_S = 20, 3


def test_a_bulk_send_longer_than_the_deadline_runs_to_its_end(
    simulators: dict[str, Simulator],
    supervisor: Supervisor,
    make_stack: Callable[..., Stack],
    redis_url: str,
) -> None:
    """A 群发 outlives the interactive deadline: account 20/s burst 2 and
    WXTASKS_SEND_DEADLINE_S=3 (issue 17's scale of the first issue's 2/s and 30 s: the same
    ratio), so 200 recipients take about 10 s, three times the deadline, and all 200 go out
    once (before the outbox: 62 of 200 sent, 138 dead-lettered)."""
    sim = _simulator(simulators, supervisor, "v1")
    stack = make_stack(
        sim,
        rate_per_second=100,
        burst=100,
        account_rate_per_second=ACCOUNT_RATE,
        account_burst=2,
        send_deadline_s=DEADLINE_S,  # the issues' own scenario: a 群发 three times this long
        heartbeat_interval_s=3600,
        # the issue measures the bucket's pace; the risk-guidance spacing (1-3 s between
        # recipients, a later issue) would stretch it to ~400 s, so it is off here
        bulk_jitter_s="0-0",
        quiet_hours=QUIET_HOURS_OFF,
    )
    r = redis_client(redis_url)
    online(build(r, stack.settings).accounts, "shop")
    stack.worker("send,control", "w", 2)
    stack.beat()
    stack.dispatchers()
    stack.wait_workers(1)
    client = WxTasksClient.from_settings(stack.settings)
    recipients = [f"wxid_{i:03d}" for i in range(200)]
    started = time.monotonic()
    report = client.bulk_send("shop", recipients, "新品上架").get(timeout=120)
    took = time.monotonic() - started
    sends = sim.sends()
    at_gateway = Counter(s["toWxid"] for s in sends)
    print(f"\n200-recipient bulk_send: {report['sent']} sent in {took:.0f}s, report {report}"[:300])
    assert report["total"] == 200 and report["sent"] == 200 and report["failed"] == 0
    assert set(at_gateway) == set(recipients) and max(at_gateway.values()) == 1
    assert {r["status"] for r in report["results"]} == {"sent"}
    # at the account's pace, not faster: burst + rate * T in every window
    times = [s["at"] for s in sends]
    assert over_envelope(times, 2, ACCOUNT_RATE, (0.25, 1.0, 5.0)) == []
    assert took >= 3 * DEADLINE_S  # three times the deadline, and nothing was lost to it
    client.app.close()
    r.close()


def test_replies_go_ahead_of_every_accounts_campaign(
    simulators: dict[str, Simulator],
    supervisor: Supervisor,
    make_stack: Callable[..., Stack],
    redis_url: str,
) -> None:
    """The seed's limits (global 5/s burst 10, account 1/s burst 2): 10 accounts each run a
    60-recipient bulk_send (120 s of sends at 5/s), dispatched by 2 dispatchers; 8 s in,
    each of 5 accounts replies to a customer, 550 campaign messages ahead of it. Each reply
    is at the gateway within 3 s (before the outbox: 98-110 s), and the gateway envelope
    holds."""
    sim = _simulator(simulators, supervisor, "v1")
    stack = make_stack(sim, heartbeat_interval_s=3600, quiet_hours=QUIET_HOURS_OFF)
    assert (stack.settings.rate_per_second, stack.settings.burst) == (5, 10)
    r = redis_client(redis_url)
    accounts = [f"shop-{i}" for i in range(10)]
    online(build(r, stack.settings).accounts, *accounts)
    stack.worker("send,control", "w", 2)
    stack.beat()
    stack.dispatchers()
    stack.wait_workers(1)
    client = WxTasksClient.from_settings(stack.settings)
    campaigns = [
        client.bulk_send(a, [f"wxid_{a}_{n:02d}" for n in range(60)], f"{a} 的新品")
        for a in accounts
    ]
    # replies come 8 s into the campaigns: 50 sent at the global 5/s after its burst of 10
    wait_until(lambda: len(sim.sends()) >= 50, 60, 0.1, what="the campaigns 8 s under way")
    enqueued: dict[str, float] = {}
    replies = []
    for a in accounts[:5]:
        enqueued[a] = time.time()
        replies.append(client.send_text(a, f"customer_of_{a}", f"{a}: 您好，马上为您查询"))
    outcomes = [res.get(timeout=30)["status"] for res in replies]
    sends = sim.sends()
    latency = {
        s["appId"]: s["at"] - enqueued[s["appId"]]
        for s in sends
        if str(s["toWxid"]).startswith("customer_of_")
    }
    print(f"\nreply latency with 10 campaigns running: {latency}")
    assert outcomes == ["sent"] * 5
    assert max(latency.values()) <= 3.0
    times = [s["at"] for s in sends]
    assert over_envelope(times, 10, 5, (0.5, 1.0, 2.0, 5.0)) == []
    rt = _runtime(stack)
    for c in campaigns:  # end them: what is left is counted cancelled
        summary = rt.campaigns.cancel(c.id)
        assert summary["state"] == "cancelled" and summary["cancelled"] > 0
    client.app.close()
    r.close()


def _runtime(stack: Stack) -> Any:
    from wxtasks.runtime import Runtime

    return Runtime(stack.settings)
