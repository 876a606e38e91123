"""Prometheus metrics for what Flower cannot show, read from Redis at scrape time.

``wxtasks metrics --port 9808`` serves ``/metrics``. Every number comes from the shared
state in Redis, so one exporter describes the whole fleet, however many workers run:

=========================================  ======  ==========================================
metric                                     type    meaning
=========================================  ======  ==========================================
wxtasks_accounts{state}                    gauge   accounts in each state
wxtasks_sends_total{outcome}               counter messages by outcome: sent, duplicate,
                                                   failed, unknown
wxtasks_token_waits_total                  counter admissions that had to wait for a token
wxtasks_token_wait_seconds_total           counter time spent waiting for tokens
wxtasks_heartbeat_lateness_seconds         summary probe time - due time (recent samples)
wxtasks_deadletters                        gauge   messages waiting for an operator
wxtasks_global_bucket_tokens               gauge   tokens the global bucket could give now
wxtasks_outbox_backlog{lane}               gauge   messages waiting in the outbox
wxtasks_outbox_oldest_age_seconds{lane}    gauge   age of the oldest waiting message
wxtasks_outbox_dispatch_lag_seconds{lane}  gauge   how long the most overdue account has
                                                   been due (buckets or dispatcher behind)
wxtasks_outbox_dispatched_total{lane}      counter messages dispatched from the outbox
wxtasks_shards_unheld                      gauge   shards no dispatcher holds a lease on
wxtasks_dispatcher_shards{dispatcher}      gauge   shards each live dispatcher holds
wxtasks_dispatcher_lease_age_seconds{..}   gauge   since it last renewed its leases
wxtasks_dispatcher_rate{dispatcher}        gauge   messages it dispatched per second, lately
wxtasks_dispatcher_lag_seconds{dispatcher} gauge   how long its most overdue account waited
wxtasks_redis_memory_used_bytes            gauge   memory Redis uses
wxtasks_redis_maxmemory_bytes              gauge   Redis's maxmemory (0: none; alert at 80%)
wxtasks_gateway_up{gateway}                gauge   1 when the gateway answers, 0 marked down
wxtasks_gateway_sends_last_minute{gateway} gauge   sends that ended through it in the last
                                                   full minute (the Overview's trend bucket)
=========================================  ======  ==========================================
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from wxtasks import redismemory
from wxtasks.runtime import Runtime
from wxtasks.send.buckets import levels
from wxtasks.send.leases import dispatchers_view
from wxtasks.send.outbox import LANES
from wxtasks.trends import SAMPLED, TTL_S, minute_of, read

OUTCOMES = ("sent", "duplicate", "failed", "unknown", "cancelled")


def max_in_window(times: list[float], width_s: float) -> int:
    """The most events that fall in any window of ``width_s`` seconds (a rate envelope)."""
    ordered = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(ordered):
        while ordered[lo] < t - width_s + 1e-9:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


class RedisCollector(Collector):
    """Reads every metric from Redis at scrape time, through the exporter's Runtime."""

    def __init__(self, rt: Runtime) -> None:
        self.redis = rt.redis
        self.settings = rt.settings
        self.keys = rt.keys
        self.accounts = rt.accounts
        self.deadletters = rt.deadletters
        self.scripts = rt.scripts
        self.outbox = rt.outbox
        self.gateways = rt.gateways

    def collect(self) -> Iterator[Metric]:
        accounts = GaugeMetricFamily("wxtasks_accounts", "Accounts in each state", labels=["state"])
        for state, n in self.accounts.count_by_state().items():
            accounts.add_metric([state], n)
        yield accounts

        stats = {k: float(v) for k, v in self.redis.hgetall(self.keys.send_stats).items()}
        sends = CounterMetricFamily("wxtasks_sends", "Messages by outcome", labels=["outcome"])
        for outcome in OUTCOMES:
            sends.add_metric([outcome], stats.get(outcome, 0.0))
        yield sends
        yield CounterMetricFamily(
            "wxtasks_token_waits",
            "Admissions that waited for a token",
            value=stats.get("token_waits", 0.0),
        )
        yield CounterMetricFamily(
            "wxtasks_token_wait_seconds",
            "Time spent waiting for tokens",
            value=stats.get("token_wait_seconds", 0.0),
        )

        samples = sorted(float(x) for x in self.redis.lrange(self.keys.heartbeat_lateness, 0, -1))
        lateness = SummaryMetricFamily(
            "wxtasks_heartbeat_lateness_seconds",
            "Heartbeat probe time minus due time (recent samples)",
            count_value=len(samples),
            sum_value=sum(samples),
        )
        yield lateness
        quantiles = GaugeMetricFamily(
            "wxtasks_heartbeat_lateness_quantile_seconds",
            "Quantiles of recent heartbeat lateness",
            labels=["quantile"],
        )
        for q in (0.5, 0.9, 0.99):
            value = samples[min(len(samples) - 1, int(len(samples) * q))] if samples else 0.0
            quantiles.add_metric([str(q)], value)
        yield quantiles

        yield GaugeMetricFamily(
            "wxtasks_deadletters",
            "Messages waiting for an operator",
            value=self.deadletters.count(),
        )
        (level,) = levels(
            self.scripts,
            [(self.keys.global_bucket, self.settings.rate_per_second, self.settings.burst)],
        )
        yield GaugeMetricFamily(
            "wxtasks_global_bucket_tokens",
            "Tokens the global bucket could give now",
            value=level.tokens,
        )
        lanes = self.outbox.stats()
        for name, doc, field in (
            ("wxtasks_outbox_backlog", "Messages waiting in the outbox, per lane", "backlog"),
            (
                "wxtasks_outbox_oldest_age_seconds",
                "Age of the oldest waiting message, per lane",
                "oldest_age_s",
            ),
            (
                "wxtasks_outbox_dispatch_lag_seconds",
                "How long the most overdue account has been due, per lane",
                "dispatch_lag_s",
            ),
        ):
            family = GaugeMetricFamily(name, doc, labels=["lane"])
            for lane in LANES:
                family.add_metric([lane.value], float(lanes[lane.value][field]))
            yield family
        dispatched = CounterMetricFamily(
            "wxtasks_outbox_dispatched",
            "Messages the dispatcher moved to the send queue",
            labels=["lane"],
        )
        for lane in LANES:
            dispatched.add_metric([lane.value], float(lanes[lane.value]["dispatched"]))
        yield dispatched
        yield from self._dispatchers()
        used, limit = redismemory.usage(self.redis)
        yield GaugeMetricFamily("wxtasks_redis_memory_used_bytes", "Memory Redis uses", value=used)
        yield GaugeMetricFamily(
            "wxtasks_redis_maxmemory_bytes", "Redis maxmemory (0: no limit)", value=limit
        )

        down = {str(n) for n in self.redis.smembers(self.keys.gateways_down)}
        names = self.gateways.names()
        up = GaugeMetricFamily(
            "wxtasks_gateway_up",
            "1 when the gateway answers, 0 when marked down",
            labels=["gateway"],
        )
        for name in names:
            up.add_metric([name], 0.0 if name in down else 1.0)
        yield up
        minute = minute_of(time.time()) - 1
        last = read(self.redis, self.keys, [minute])[minute]
        per_gateway = GaugeMetricFamily(
            "wxtasks_gateway_sends_last_minute",
            "Sends that ended through the gateway in the last full minute",
            labels=["gateway"],
        )
        for name in sorted({*names, *(k[3:] for k in last if k.startswith("gw:"))}):
            per_gateway.add_metric([name], last.get(f"gw:{name}", 0.0))
        yield per_gateway

    def _dispatchers(self) -> Iterator[Metric]:
        view = dispatchers_view(self.redis, self.keys)
        yield GaugeMetricFamily(
            "wxtasks_shards_unheld",
            "Shards no dispatcher holds a lease on now",
            value=view["unheld_shards"],
        )
        families = [
            ("wxtasks_dispatcher_shards", "Shards the dispatcher holds", "shards"),
            (
                "wxtasks_dispatcher_lease_age_seconds",
                "Since the dispatcher last renewed its leases",
                "lease_age_s",
            ),
            (
                "wxtasks_dispatcher_rate",
                "Messages the dispatcher moved to the send queue per second, lately",
                "rate_per_s",
            ),
            ("wxtasks_dispatcher_lag_seconds", "How long its most overdue account waited", "lag_s"),
        ]
        for name, doc, field in families:
            family = GaugeMetricFamily(name, doc, labels=["dispatcher"])
            for one in view["dispatchers"]:
                family.add_metric([one["id"]], float(one[field] or 0))
            yield family


def serve(rt: Runtime, port: int, host: str = "127.0.0.1") -> None:
    """Serve /metrics until interrupted."""
    import threading

    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector(rt))
    start_http_server(port, addr=host, registry=registry)
    print(f"wxtasks metrics: http://{host}:{port}/metrics", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass


# -- the Overview's gauges, sampled once a minute into the trend buckets ------------------


def gauges(rt: Runtime) -> dict[str, float]:
    """What the Overview samples once a minute: backlog per lane, accounts by state,
    heartbeat lateness p99, each gateway up (1) or down (0)."""
    from wxtasks.accounts.machine import State
    from wxtasks.send.outbox import LANES

    out: dict[str, float] = {}
    lanes = rt.outbox.stats()
    for lane in LANES:
        out[f"backlog:{lane.value}"] = float(lanes[lane.value]["backlog"])
    counts = {s.value: 0 for s in State}
    for _app_id, state, _tags in rt.accounts.brief_many(rt.accounts.app_ids()):
        counts[state.value] += 1
    out.update({f"state:{s}": float(n) for s, n in counts.items()})
    lateness = sorted(float(x) for x in rt.redis.lrange(rt.keys.heartbeat_lateness, 0, 999))
    if lateness:
        out["hb_p99_ms"] = round(1000 * lateness[int(len(lateness) * 0.99)], 1)
    down = frozenset(str(n) for n in rt.redis.smembers(rt.keys.gateways_down))
    for name in rt.gateways.names():
        out[f"up:{name}"] = 0.0 if name in down else 1.0
    return out


def sample(rt: Runtime, now: float | None = None, *, force: bool = False) -> bool:
    """Write this minute's gauges unless another run already did (``force``: write them
    anyway); returns whether it wrote them."""
    key = rt.keys.trends(minute_of(time.time() if now is None else now))
    if not force and not rt.redis.hsetnx(key, SAMPLED, 1):
        return False
    pipe = rt.redis.pipeline(transaction=False)
    values: Any = {SAMPLED: 1, **{k: f"{v:g}" for k, v in gauges(rt).items()}}
    pipe.hset(key, mapping=values)
    pipe.expire(key, TTL_S)
    pipe.execute()
    return True
