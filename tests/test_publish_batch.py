"""The dispatcher's batch publisher (wxtasks.worker.publish): the same task messages as
publishing one by one, byte for byte on Redis, and run by real workers on Redis and
RabbitMQ with their campaign content and headers honored."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from celery import Celery

import wxtasks.tasks  # noqa: F401  - registers the send tasks, as in the beat's app
from tests.conftest import Simulator, Stack, build, online, settings_for
from wxtasks.campaigns.store import Content
from wxtasks.dev.stack import wait_until
from wxtasks.runtime import Runtime
from wxtasks.send.outbox import Dispatched, Waiting
from wxtasks.worker.celeryconf import SEND_QUEUE, configure
from wxtasks.worker.publish import batch_publisher, one_by_one_publisher

pytestmark = pytest.mark.timeout(120)


def beat_app(rt: Runtime) -> Celery:
    """A Celery app as the beat has it: configured, the wxtasks tasks registered."""
    app = configure(Celery("wxtasks"), rt.settings)
    app.finalize(auto=True)
    assert "wxtasks.send_text" in app.tasks
    return app


def waiting(i: int, app_id: str, **fields: Any) -> Waiting:
    values: dict[str, Any] = {
        "task_id": f"t-{i}",
        "task": "wxtasks.send_text",
        "kwargs": {"app_id": app_id, "to_wxid": f"wxid_{i}", "content": f"消息 {i}"},
        "app_id": app_id,
        "lane": "interactive",
        "enqueued_at": 1_700_000_000.5 + i,
    }
    values.update(fields)
    return Waiting(**values)


@pytest.fixture
def rt(r: redis.Redis, redis_url: str, simulator: Simulator) -> Iterator[Runtime]:
    rt = build(r, settings_for(redis_url, simulator))
    yield rt
    rt.celery.close()


def pushed(broker: redis.Redis) -> list[bytes]:
    """What is on the send queue, oldest first, each payload with its delivery tag (a
    fresh uuid per publish) blanked."""
    out = []
    for raw in reversed(broker.lrange(SEND_QUEUE, 0, -1)):
        tag = json.loads(raw)["properties"]["delivery_tag"]
        out.append(raw.replace(tag.encode(), b"TAG"))
    return out


def test_a_batch_pushes_the_very_payloads_kombu_pushes_one_by_one(rt: Runtime) -> None:
    rt.campaigns.create(
        "spring", Content.parse("text", {"content": "春季促销"}), [("shop-1", "wxid_t")]
    )
    campaign_kwargs = {"app_id": "shop-1", "to_wxid": "wxid_t", "lane": "bulk"}
    batch = [
        Dispatched(waiting(0, "shop-1"), 1_700_000_000_123.0),
        Dispatched(waiting(1, "shop-2", attempt=2), None),
        Dispatched(waiting(2, "shop-1", kwargs=campaign_kwargs, campaign="spring"), 5.0),
        Dispatched(waiting(3, "shop-1", task="wxtasks.send_link"), 7.0),
    ]
    app = beat_app(rt)
    broker = redis.Redis.from_url(rt.settings.broker_url)  # bytes, as pushed
    try:
        broker.delete(SEND_QUEUE)
        one_by_one_publisher(app, rt.campaigns)(batch)
        expected = pushed(broker)
        broker.delete(SEND_QUEUE)
        batch_publisher(app, rt.campaigns)(batch)
        got = pushed(broker)
    finally:
        broker.delete(SEND_QUEUE)  # no worker of a later test runs these
        broker.close()
        app.close()
    assert len(got) == 4 and got == expected
    message = json.loads(got[2])
    body = json.loads(__import__("base64").b64decode(message["body"]))
    assert body[1] == {"content": "春季促销", **campaign_kwargs}
    assert message["headers"]["wx_campaign"] == "spring"
    assert message["headers"]["wx_paid_at"] == 5.0 and message["headers"]["wx_outbox"] == "1"


#: the account bucket holds exactly one dispatch's worth and refills once in ~100 s: a
#: worker that did not honor the dispatcher's PAID header would find it empty and wait
BURST = 4


@pytest.mark.parametrize("broker", ["redis", "rabbitmq-quorum"])
def test_a_published_batch_runs_on_real_workers_with_its_content_and_headers(
    make_stack: Callable[..., Stack],
    simulator: Simulator,
    r: redis.Redis,
    broker: str,
    request: pytest.FixtureRequest,
) -> None:
    on_rabbit: dict[str, Any] = {}
    if broker.startswith("rabbitmq"):
        on_rabbit = {"broker_url": request.getfixturevalue("rabbitmq_url"), "quorum_queues": True}
    stack = make_stack(
        simulator,
        rate_per_second=1000,
        burst=1000,
        account_rate_per_second=0.01,
        account_burst=BURST,
        heartbeat_interval_s=3600,
        quiet_hours="",
        **on_rabbit,
    )
    stack.worker("send", "pub", 2)
    rt = build(r, stack.settings)
    for app_id in ("shop-1", "shop-2"):
        rt.accounts.register(app_id, pacing={"quiet_hours": "", "bulk_jitter": "0-0"})
    online(rt.accounts, "shop-1", "shop-2")
    now = time.time()
    rt.outbox.park(waiting(0, "shop-1", enqueued_at=now), 0.0)
    rt.outbox.park(waiting(1, "shop-1", enqueued_at=now), 0.0)
    # enqueued past the interactive deadline: the worker fails it by its ENQUEUED header
    rt.outbox.park(waiting(2, "shop-2", enqueued_at=now - 2 * rt.settings.send_deadline_s), 0.0)
    stack.wait_workers(1)

    batches: list[int] = []
    publish = batch_publisher(rt.celery, rt.campaigns)

    def counted(batch: list[Dispatched]) -> None:
        batches.append(len(batch))
        publish(batch)

    dispatcher = rt.dispatcher(counted)
    try:
        wait_until(lambda: dispatcher.tick() >= 0 and sum(batches) >= 3, 30, 0.05, "dispatch")
        results = {tid: rt.celery.AsyncResult(tid).get(timeout=30) for tid in ("t-0", "t-1", "t-2")}
        sends = wait_until(lambda: len(simulator.sends()) >= 2 and simulator.sends(), 30)
    finally:
        rt.celery.close()
    assert [results[t]["status"] for t in ("t-0", "t-1")] == ["sent", "sent"]
    assert results["t-2"]["status"] == "failed" and "deadline passed" in results["t-2"]["error"]
    assert max(batches) > 1  # published together, not one by one
    by_target = {s["toWxid"]: s["content"] for s in sends}
    assert by_target == {
        "wxid_0": "消息 0",
        "wxid_1": "消息 1",
    }
    # the worker took no tokens again for what the dispatcher paid (PAID honored)
    assert rt.outbox.waiting() == []
