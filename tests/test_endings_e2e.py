"""One ending: a message ended each of the five ways — its send task, its deadline at
dispatch, an operator's cancel while it waits, its campaign's cancel, a requeued dead
letter's new send — writes the same kinds of record (result, count, event, dead letter,
campaign record) as every other message that ended so. Real worker and beat, the
simulator (v1), the defaults."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Simulator, Stack, _simulator, build, online
from wxtasks.accounts.machine import Event
from wxtasks.campaigns.store import Content
from wxtasks.client import WxTasksClient
from wxtasks.dev.stack import Supervisor, wait_until
from wxtasks.runtime import Runtime, redis_client
from wxtasks.send.outbox import Waiting
from wxtasks.send.outcome import CANCELLED_BY_OPERATOR

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


def records(rt: Runtime, task_id: str, campaign: str = "") -> dict[str, Any]:
    """Every record an ending writes, as an operator would look for it."""
    r = rt.redis
    meta = json.loads(r.get(f"celery-task-meta-{task_id}") or "{}")
    events = [
        e
        for _, e in r.xrange(rt.keys.events)
        if e.get("kind") == "ended" and e.get("task_id") == task_id
    ]
    out: dict[str, Any] = {
        "result": (meta.get("result") or {}).get("status"),
        "event": events[0]["status"] if events else None,
        "dead_letter": (rt.deadletters.get(task_id) or {}).get("status"),
    }
    if campaign:
        index = task_id.rpartition(":")[2]
        outcome = r.hget(rt.keys.campaign_results(campaign), index)
        out["campaign"] = json.loads(outcome)["status"] if outcome else None
    return out


def expected(status: str, campaign: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "result": status,
        "event": status if status in ("failed", "unknown", "cancelled") else None,
        "dead_letter": status if status in ("failed", "unknown") else None,
    }
    if campaign:
        out["campaign"] = status
    return out


def test_every_way_a_message_ends_writes_the_same_kinds_of_record(
    simulators: dict[str, Simulator],
    supervisor: Supervisor,
    make_stack: Callable[..., Stack],
    redis_url: str,
) -> None:
    sim = _simulator(simulators, supervisor, "v1")
    stack = make_stack(sim, heartbeat_interval_s=3600, quiet_hours="", warmup_s=0)
    r = redis_client(redis_url)
    rt = build(r, stack.settings)
    online(rt.accounts, "shop", "held")
    rt.accounts.transition("held", Event.LIVENESS_FAILED)  # RECONNECTING: its sends wait
    stack.worker("send,control", "w", 2)
    stack.beat()
    stack.dispatchers()
    stack.wait_workers(1)
    client = WxTasksClient.from_settings(stack.settings)
    counts_before = r.hgetall(rt.keys.send_stats)

    # 1. its send task: a campaign's one target goes out
    rt.campaigns.create("c-sent", Content.parse("text", {"content": "上新"}), [("shop", "w1")])
    wait_until(lambda: rt.campaigns.show("c-sent")["state"] == "done", 30, what="c-sent done")
    assert records(rt, "c-sent:0", "c-sent") == expected("sent", campaign=True)

    # 2. its deadline at dispatch: a reply that waited past its window (600 s) is failed
    #    by the send task the dispatcher hands it to, without a token
    late = Waiting(
        "late-1",
        "wxtasks.send_text",
        {"app_id": "shop", "to_wxid": "w2", "content": "too late"},
        "shop",
        "interactive",
        time.time() - stack.settings.send_deadline_s - 5,
    )
    rt.outbox.park(late, 0.0)
    wait_until(lambda: records(rt, "late-1")["result"], 30, what="the late message to end")
    assert records(rt, "late-1") == expected("failed")
    assert "deadline passed" in rt.deadletters.get("late-1")["error"]

    # 3. an operator cancels it while it waits (its account is reconnecting)
    waiting = client.send_text("held", "w3", "稍后")
    wait_until(lambda: rt.outbox.get(waiting.id), 30, what="the message to wait")
    assert rt.endings.cancel_waiting(rt.outbox, waiting.id, CANCELLED_BY_OPERATOR)
    assert waiting.get(timeout=10)["status"] == "cancelled"
    assert records(rt, waiting.id) == expected("cancelled")

    # 4. its campaign's cancel (a campaign that has not started yet)
    later = time.time() + 3600
    rt.campaigns.create(
        "c-cancel",
        Content.parse("text", {"content": "明天"}),
        [("shop", "w4"), ("shop", "w5")],
        start_at=later,
    )
    assert rt.campaigns.cancel("c-cancel")["cancelled"] == 2
    for index in (0, 1):
        assert records(rt, f"c-cancel:{index}", "c-cancel") == expected("cancelled", campaign=True)

    # 5. a requeued dead letter's new send
    def publish(entry: dict[str, Any]) -> str:
        return str(client.app.send_task(entry["task"], kwargs=entry["kwargs"], queue="send").id)

    [(old, new)] = rt.deadletters.requeue(["late-1"], publish)
    wait_until(lambda: records(rt, new)["result"], 30, what="the requeued message to end")
    assert records(rt, new) == expected("sent")
    assert rt.deadletters.get(old) is None

    # the counts moved by what ended: 2 sent, 1 failed, 3 cancelled
    after = r.hgetall(rt.keys.send_stats)
    moved = {k: int(after.get(k, 0)) - int(counts_before.get(k, 0)) for k in after}
    assert (moved["sent"], moved["failed"], moved["cancelled"]) == (2, 1, 3)
    client.app.close()
    r.close()
