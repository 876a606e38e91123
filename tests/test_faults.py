"""Faults: Redis restarts, gateway outages, undecodable messages. Each scenario prints
its figures (enqueued, sent once, sent twice, dead-lettered, lost) and loses nothing."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

from tests.conftest import Simulator, Stack, _simulator, build, online, settings_for
from wxtasks.accounts.machine import State
from wxtasks.dev.redis_server import RedisServer
from wxtasks.dev.stack import Supervisor, wait_until
from wxtasks.keys import Keys
from wxtasks.runtime import redis_client
from wxtasks.send.deadletters import DeadLetters

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]


def figures(
    name: str, messages: list[tuple[str, str, str]], sim: Simulator, dead: list[dict[str, Any]]
) -> tuple[list[Any], list[Any]]:
    at_gateway = Counter((s["appId"], s["toWxid"], s["content"]) for s in sim.sends())
    dead_keys = {(e["app_id"], e["to_wxid"], e["content"]) for e in dead}
    unknown = {(e["app_id"], e["to_wxid"], e["content"]) for e in dead if e["status"] == "unknown"}
    lost = [m for m in messages if m not in at_gateway and m not in dead_keys]
    twice = [m for m, n in at_gateway.items() if n > 1 and m not in unknown]
    once = sum(1 for m in messages if at_gateway.get(m) == 1)
    print(
        f"\n[{name}] enqueued {len(messages)}, sent once {once}, sent twice {len(twice)}, "
        f"dead-lettered {len(dead)}, lost {len(lost)}"
    )
    return lost, twice


@pytest.fixture
def aof_redis() -> Iterator[RedisServer]:
    with RedisServer(appendonly=True) as server:
        yield server


def test_redis_restart_mid_run_loses_nothing(
    aof_redis: RedisServer, simulators: dict[str, Simulator], supervisor: Supervisor
) -> None:
    sim = _simulator(simulators, supervisor, "videosapi")
    settings = settings_for(
        aof_redis.url,
        sim,
        rate_per_second=20,
        burst=5,
        account_rate_per_second=100,
        account_burst=100,
        heartbeat_interval_s=2,
    )
    stack = Stack(settings, supervisor)
    r = redis_client(aof_redis.url)
    store = build(r, settings).accounts
    accounts = [f"acct-{i:02d}" for i in range(30)]
    online(store, *accounts)
    try:
        stack.worker("send,control", "rr", 2)
        stack.beat()
        stack.dispatchers()
        stack.wait_workers(1)
        messages = [(accounts[i % 30], f"wxid_{i}", f"restart {i}") for i in range(200)]
        producer = Celery(broker=settings.broker_url, backend=settings.redis_url)
        # task ids only: an AsyncResult kept past this Redis's life would try to unsubscribe
        # from it when collected, in whichever test runs then
        task_ids = [
            producer.send_task(
                "wxtasks.send_text", queue="send", kwargs={"app_id": a, "to_wxid": t, "content": c}
            ).id
            for a, t, c in messages
        ]
        wait_until(lambda: len(sim.sends()) >= 50, 60, what="the run under way")
        aof_redis.stop()  # SIGTERM: Redis writes its append-only file and exits
        aof_redis.start()
        probes_after_restart = sim.calls("/login/checkOnline")

        # read each outcome from the result backend itself: a producer's pub/sub result
        # listener may give up reconnecting across a Redis restart (that is Celery's
        # client, and the outcome is stored whatever a listener does)
        def outcomes_now() -> list[str | None]:
            raws = r.mget([f"celery-task-meta-{task_id}" for task_id in task_ids])
            metas = [json.loads(raw) if raw else {} for raw in raws]
            return [m["result"]["status"] if m.get("status") == "SUCCESS" else None for m in metas]

        try:
            done = wait_until(lambda: all(o := outcomes_now()) and o, 240, 1.0, "every outcome")
        finally:
            dead = DeadLetters(r, Keys(settings.key_prefix)).list()
            lost, twice = figures("redis restart", messages, sim, dead)
            if lost:
                print(stack.log_tails())
        outcomes = Counter(done)
        assert lost == [] and twice == []
        assert sum(outcomes.values()) == 200
        # account states, schedules and buckets survived; beat and workers came back
        assert len(store.list(State.ONLINE)) == 30
        assert r.zcard(store.keys.heartbeat_schedule) == 30
        wait_until(
            lambda: sim.calls("/login/checkOnline") > probes_after_restart + 30,
            30,
            what="heartbeats after the restart",
        )
        producer.close()
    finally:
        stack.stop()
        r.close()


def test_gateway_outage_backs_off_then_everything_goes_out_once(
    simulators: dict[str, Simulator], supervisor: Supervisor, redis_url: str
) -> None:
    sim = _simulator(simulators, supervisor, "videosapi")
    settings = settings_for(
        redis_url,
        sim,
        heartbeat_interval_s=2,
        max_retry=10,
        backoff_max_s=4,
        rate_per_second=50,
        burst=10,
        account_rate_per_second=50,
        account_burst=10,
        gateway_down_failures=5,
        gateway_down_after_s=2,
        gateway_probe_interval_s=2,
    )
    stack = Stack(settings, supervisor)
    r = redis_client(redis_url)
    store = build(r, settings).accounts
    fleet = build(r, settings).fleet
    accounts = [f"acct-{i:02d}" for i in range(20)]
    online(store, *accounts)
    try:
        stack.worker("send,control", "go", 2)
        stack.beat()
        stack.dispatchers()
        stack.wait_workers(1)
        sim.faults(outage=True)
        before = sim.admin("stats")["calls"]
        # a gateway that does not answer says nothing about its accounts: the gateway is
        # marked down, they keep their state (no reconnect chains, no retries burnt)
        wait_until(lambda: fleet.is_down("default"), 20, 0.2, "the gateway marked down")
        marked = sim.admin("stats")["calls"]
        messages = [(accounts[i % 20], f"wxid_{i}", f"outage {i}") for i in range(40)]
        producer = Celery(broker=settings.broker_url, backend=settings.redis_url)
        results = [
            producer.send_task(
                "wxtasks.send_text", queue="send", kwargs={"app_id": a, "to_wxid": t, "content": c}
            )
            for a, t, c in messages
        ]
        # let the outage last: one probe per interval (3 in 6 s), nothing per account (20
        # accounts' heartbeats every 2 s would be 60 calls)
        outage_s = 6.0
        time.sleep(outage_s)  # the outage itself is a span of time, not a condition
        during = sim.admin("stats")["calls"]
        assert all(a.state is State.ONLINE for a in store.get_many(accounts))
        sim.faults(outage=False)

        def calls(since: dict[str, int]) -> int:
            return sum(during.values()) - sum(since.values())

        reconnects = during.get("/login/reconnection", 0) - before.get("/login/reconnection", 0)
        print(
            f"\n[gateway outage] {calls(before)} calls in all, {calls(marked)} in the "
            f"{outage_s:.0f}s after it was marked down, {reconnects} reconnects, for "
            f"{len(accounts)} accounts"
        )
        assert reconnects == 0, "reconnect chains ran against a gateway that is down"
        assert calls(marked) <= outage_s / settings.gateway_probe_interval_s + 2, "probe storm"

        wait_until(
            lambda: all(a.state is State.ONLINE for a in store.get_many(accounts)),
            30,
            0.2,
            "every account back ONLINE",
        )
        outcomes = Counter(res.get(timeout=120)["status"] for res in results)
        dead = DeadLetters(r, Keys(settings.key_prefix)).list()
        lost, twice = figures("gateway outage", messages, sim, dead)
        assert lost == [] and twice == [] and outcomes["sent"] == 40
        assert all(a.retry_count == 0 for a in store.get_many(accounts))
        producer.close()
    finally:
        stack.stop()
        r.close()


def test_malformed_payloads_fail_clearly_and_never_block_the_queue(
    shared_stack: Stack, simulator: Simulator
) -> None:
    """Messages other apps get wrong: each ends failed with a reason and a dead letter."""
    import uuid

    from kombu import Connection

    sim, stack, settings = simulator, shared_stack, shared_stack.settings
    r = redis_client(settings.redis_url)
    store = build(r, settings).accounts
    online(store, "shop")
    dl = DeadLetters(r, Keys(settings.key_prefix))
    try:

        def raw(body: bytes, task: str = "wxtasks.send_text", **extra: Any) -> str:
            task_id = str(uuid.uuid4())
            headers = {
                "lang": "py",
                "task": task,
                "id": task_id,
                "root_id": task_id,
                "parent_id": None,
                "group": None,
                "retries": 0,
                "eta": None,
                "expires": None,
                "argsrepr": "",
                "kwargsrepr": "",
                "origin": "test",
                **extra,
            }
            with Connection(settings.broker_url) as conn:
                conn.Producer().publish(
                    body,
                    exchange="",
                    routing_key="send",
                    headers=headers,
                    content_type="application/json",
                    content_encoding="utf-8",
                    serializer=None,
                )
            return task_id

        not_utf8 = raw(b'[[], {"app_id": "shop", "to_wxid": "w", "content": "\xff\xfe"}, {}]')
        not_json = raw(b"this is not json")
        kwargs_list = raw(b'[[], ["shop", "w", "x"], {}]')
        producer = Celery(broker=settings.broker_url, backend=settings.redis_url)
        table = {
            "missing fields": {"app_id": "shop"},
            "wrong types": {"app_id": ["shop"], "to_wxid": 5, "content": {"a": 1}},
            "huge content": {"app_id": "shop", "to_wxid": "w", "content": "长" * 50_000},
            "unknown appId": {"app_id": "nobody", "to_wxid": "w", "content": "x"},
            "lone surrogate": {"app_id": "shop", "to_wxid": "w", "content": "bad \ud800"},
        }
        results = {
            name: producer.send_task("wxtasks.send_text", queue="send", kwargs=kw)
            for name, kw in table.items()
        }
        for name, result in results.items():
            out = result.get(timeout=30)
            assert out["status"] == "failed" and out["error"], name
            assert dl.get(result.id) is not None, name
        for name, task_id in (
            ("not utf-8", not_utf8),
            ("not json", not_json),
            ("kwargs a list", kwargs_list),
        ):
            entry = wait_until(lambda t=task_id: dl.get(t), 30, 0.2, f"dead letter: {name}")
            assert entry["status"] == "failed" and entry["error"]
        # and the queue still flows
        ok = producer.send_task(
            "wxtasks.send_text",
            queue="send",
            kwargs={"app_id": "shop", "to_wxid": "w", "content": "fine"},
        )
        assert ok.get(timeout=30)["status"] == "sent"
        assert [s["content"] for s in sim.sends()] == ["fine"]
        assert all(child.alive for child in stack.children)
        print(
            f"\n[bad input] {len(table) + 3} malformed messages: {dl.count()} dead-lettered, "
            f"0 sent, worker alive"
        )
        producer.close()
    finally:
        r.close()
