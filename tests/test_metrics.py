from __future__ import annotations

import redis
from prometheus_client import CollectorRegistry, generate_latest

from tests.conftest import TOKEN
from wxtasks.accounts import AccountStore
from wxtasks.config import Settings
from wxtasks.gateway import GatewayClient
from wxtasks.machine import Event
from wxtasks.metrics import RedisCollector
from wxtasks.runtime import Runtime
from wxtasks.sending import Message, SendPipeline, Status


def test_metrics_describe_the_fleet_from_redis(redis_url: str, r: redis.Redis) -> None:
    settings = Settings.from_env({}, redis_url=redis_url, rate_per_second=5, burst=10)
    store = AccountStore(r, settings)
    store.register("a1")
    store.register("a2")
    store.transition("a1", Event.LOGIN_SUCCEEDED)
    pipe = SendPipeline(r, settings, GatewayClient("http://127.0.0.1:1", TOKEN))
    m = Message.parse("text", {"app_id": "a1", "to_wxid": "w", "content": "x"})
    pipe.admit(m, "t1")
    pipe.record(m, "t1", Status.SENT)
    pipe.count_wait(0.25)
    r.lpush(store.keys.heartbeat_lateness, "0.5", "1.5")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector(Runtime(settings)))
    text = generate_latest(registry).decode()
    assert 'wxtasks_accounts{state="ONLINE"} 1.0' in text
    assert 'wxtasks_accounts{state="IDLE"} 1.0' in text
    assert 'wxtasks_sends_total{outcome="sent"} 1.0' in text
    assert "wxtasks_token_waits_total 1.0" in text
    assert "wxtasks_token_wait_seconds_total 0.25" in text
    assert "wxtasks_heartbeat_lateness_seconds_count 2.0" in text
    assert "wxtasks_global_bucket_tokens 9." in text  # one of ten tokens taken just now
