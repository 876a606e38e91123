from __future__ import annotations

import redis
from prometheus_client import CollectorRegistry, generate_latest

from tests.conftest import build, end_sent
from wxtasks.accounts.machine import Event
from wxtasks.config import Settings
from wxtasks.metrics import RedisCollector
from wxtasks.runtime import Runtime
from wxtasks.send.gates import Answer, Lane
from wxtasks.send.outbox import Waiting
from wxtasks.send.pipeline import Message


def scrape(settings: Settings) -> str:
    """What Prometheus reads from the exporter now."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector(Runtime(settings)))
    return generate_latest(registry).decode()


def test_metrics_describe_the_fleet_from_redis(redis_url: str, r: redis.Redis) -> None:
    settings = Settings.from_env({}, redis_url=redis_url, rate_per_second=5, burst=10)
    store = build(r, settings).accounts
    store.register("a1")
    store.register("a2")
    store.transition("a1", Event.LOGIN_SUCCEEDED)
    pipe = build(r, settings).pipeline
    m = Message.parse("text", {"app_id": "a1", "to_wxid": "w", "content": "x"})
    now_s, now_us = r.time()
    now_ms = now_s * 1000 + now_us / 1000
    ticket = pipe.ticket("t1", Lane.INTERACTIVE, now_ms / 1000)
    assert pipe.admit(m, ticket, now_ms=now_ms).answer is Answer.ADMITTED
    end_sent(pipe, m, ticket)
    # one bulk message waiting in the outbox
    waiting = Waiting("b1", "wxtasks.send_text", {"app_id": "a1"}, "a1", "bulk", now_s - 30.0)
    build(r, settings).outbox.park(waiting, 0)
    r.lpush(store.keys.heartbeat_lateness, "0.5", "1.5")
    text = scrape(settings)
    assert 'wxtasks_accounts{state="ONLINE"} 1.0' in text
    assert 'wxtasks_accounts{state="IDLE"} 1.0' in text
    assert 'wxtasks_sends_total{outcome="sent"} 1.0' in text
    assert "wxtasks_heartbeat_lateness_seconds_count 2.0" in text
    assert "wxtasks_global_bucket_tokens 9." in text  # one of ten tokens taken just now
    assert 'wxtasks_outbox_backlog{lane="bulk"} 1.0' in text
    assert 'wxtasks_outbox_backlog{lane="interactive"} 0.0' in text
    age = next(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith('wxtasks_outbox_oldest_age_seconds{lane="bulk"}')
    )
    assert 29 <= age <= 40


def test_status_and_metrics_show_each_dispatchers_shards_rate_and_lag(
    redis_url: str, r: redis.Redis
) -> None:
    from wxtasks.send.leases import dispatchers_view

    settings = Settings.from_env({}, redis_url=redis_url, rate_per_second=1000, burst=1000)
    rt = build(r, settings)
    handed: list[object] = []
    one, two = (rt.dispatcher(handed.extend, me=me) for me in ("host-a:1:aa", "host-b:2:bb"))
    assert dispatchers_view(r, rt.keys)["unheld_shards"] == 64  # none runs yet
    for _ in range(2):  # both live: each takes half
        one.tick()
        two.tick()
    store = rt.accounts
    for i in range(8):
        store.register(f"a{i}")
        store.transition(f"a{i}", Event.LOGIN_SUCCEEDED)
        rt.outbox.park(Waiting(f"m{i}", "wxtasks.send_text", {}, f"a{i}", "interactive", 1.0), 0)
    one.leases._next_cycle = two.leases._next_cycle = 0  # report now
    one.tick()
    two.tick()
    view = dispatchers_view(r, rt.keys)
    assert view["unheld_shards"] == 0
    shown = {d["id"]: d for d in view["dispatchers"]}
    assert {d["shards"] for d in shown.values()} == {32}
    assert sum(d["dispatched"] for d in shown.values()) == len(handed) == 8
    assert all(0 <= d["lease_age_s"] < 4 for d in shown.values())
    text = scrape(settings)
    assert 'wxtasks_dispatcher_shards{dispatcher="host-a:1:aa"} 32.0' in text
    assert "wxtasks_shards_unheld 0.0" in text
    assert 'wxtasks_dispatcher_lag_seconds{dispatcher="host-b:2:bb"}' in text
