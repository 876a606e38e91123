"""What the outbox dispatcher costs: messages dispatched per second per core.

100,000 waiting messages over 1,000 ONLINE accounts, parked in the outbox of a throwaway
Redis; bucket rates so high they never bind (1,000,000/s), so what is measured is the
dispatcher itself. ``Dispatcher.tick()`` is driven in a loop in this process, as the
a dispatcher process does, until the outbox is empty. CPU = this process (``time.process_time``)
+ the Redis server (``INFO cpu`` delta): dispatched / (process + Redis CPU seconds) is
the rate one core would sustain.

Rows: the interactive lane and the bulk lane (pacing gates read and checked per account;
spacing ``0-0`` and no quiet hours, so the gates are open) with a publish function that
only collects the batch; then the interactive lane publishing for real to a Redis broker,
one by one (``send_task`` per message, as the beat did) and batched
(``wxtasks.worker.publish.batch_publisher``, as ``wxtasks dispatcher`` does). The
Dispatcher takes all the shards' leases at its first tick (it is the only one).

Measured (2-core shared machine; 100,000 over 1,000 accounts)::

    interactive, collect            34,378 msgs/s wall   35,599 per core    28 us CPU/msg
    bulk (gates), collect            9,171               10,451             96
    interactive, one by one          1,506                1,692            591
    interactive, batched             3,624                4,630            216  (2.7x)
    longest tick 0.6-1.3 s (TICK_BUDGET_S 0.5 is checked between rounds of shards)

    python bench/dispatcher_cost.py [--quick]      # --quick: 10,000 over 100 accounts
"""

from __future__ import annotations

import argparse
import inspect
import time
from typing import Any

import layout
from harness import fill_outbox, high_settings, redis_cpu, table

from wxtasks.runtime import Runtime


def publisher(rt: Runtime, batched: bool = True) -> Any:
    """What a dispatcher process publishes dispatched messages with: the batch publisher
    (``wxtasks.worker.dispatcher``), or ``send_task`` per message as the beat did; in
    trees before batching, the beat's own publisher."""
    try:
        mod = layout.module("wxtasks.worker.publish")
    except ModuleNotFoundError:
        return layout.beat().publisher(rt.celery, rt.campaigns)
    make = mod.batch_publisher if batched else mod.one_by_one_publisher
    return make(rt.celery, rt.campaigns)


def dispatcher_for(rt: Runtime, publish: Any) -> Any:
    """A Dispatcher as a dispatcher process gets its own: from the Runtime
    (``rt.dispatcher(publish)``; it takes every shard at its first tick, being the only
    one), or, in trees before the Runtime built it, constructed as the beat did."""
    if callable(getattr(rt, "dispatcher", None)):
        return rt.dispatcher(publish)
    cls = layout.dispatcher().Dispatcher
    options = {"fleet": rt.fleet} if "fleet" in inspect.signature(cls).parameters else {}
    return cls(rt.outbox, publish, **options)


def drain(rt: Runtime, n: int, publish: Any, timeout_s: float | None = None) -> dict[str, Any]:
    """Tick until ``n`` went out (``timeout_s``: give up after so long, stuck)."""
    dispatcher = dispatcher_for(rt, publish)
    ticks, sent, longest = 0, 0, 0.0
    cpu0, rcpu0, t0 = time.process_time(), redis_cpu(rt.redis), time.perf_counter()
    while sent < n:
        t = time.perf_counter()
        got = dispatcher.tick()
        longest = max(longest, time.perf_counter() - t)
        ticks += 1
        sent += got
        late = timeout_s is not None and time.perf_counter() - t0 > timeout_s
        if ticks > 100_000 or late:
            raise RuntimeError(f"stuck at {sent}/{n} after {ticks} ticks")
    wall = time.perf_counter() - t0
    cpu, rcpu = time.process_time() - cpu0, redis_cpu(rt.redis) - rcpu0
    return {"n": sent, "ticks": ticks, "wall": wall, "cpu": cpu, "rcpu": rcpu, "longest": longest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n_accounts, n = (100, 10_000) if args.quick else (1_000, 100_000)
    rows = []
    with layout.redis_server().RedisServer() as server:
        settings = high_settings(server)
        for label, lane, real in (
            ("interactive, collect", "interactive", None),
            ("bulk (gates), collect", "bulk", None),
            ("interactive, publish one by one", "interactive", False),
            ("interactive, publish batched", "interactive", True),
        ):
            rt = Runtime(settings)
            rt.redis.flushall()
            t_fill = time.perf_counter()
            fill_outbox(rt, n_accounts, n, lane)
            fill_s = time.perf_counter() - t_fill
            collected: list[int] = []

            def collect(batch: list[Any], out: list[int] = collected) -> None:
                out.append(len(batch))

            publish = collect if real is None else publisher(rt, real)
            r = drain(rt, n, publish)
            per_core = r["n"] / (r["cpu"] + r["rcpu"])
            rows.append(
                [
                    label,
                    f"{r['n']:,}",
                    f"{fill_s:.1f}",
                    f"{r['wall']:.1f}",
                    f"{r['n'] / r['wall']:,.0f}",
                    f"{r['cpu']:.1f}",
                    f"{r['rcpu']:.1f}",
                    f"{per_core:,.0f}",
                    f"{(r['cpu'] + r['rcpu']) / r['n'] * 1e6:.0f}",
                    r["ticks"],
                    f"{r['longest']:.1f}",
                ]
            )
            print(f"  {label}: {r}", flush=True)
            if real is not None:
                rt.celery.close()
            rt.redis.close()
    print(
        f"\n== dispatcher cost: {n:,} waiting messages over {n_accounts:,} accounts, "
        "buckets never binding, Dispatcher.tick() in a loop =="
    )
    print(
        table(
            rows,
            [
                "lane, publish",
                "dispatched",
                "park s",
                "wall s",
                "msgs/s wall",
                "proc CPU s",
                "Redis CPU s",
                "msgs/s per core",
                "us CPU/msg",
                "ticks",
                "longest tick s",
            ],
        )
    )
    print(
        "per core = dispatched / (this process's CPU + Redis server CPU). One tick goes on "
        "while a lane call fills its 500, for at most TICK_BUDGET_S (compare the longest "
        "tick with the 4 s shard lease and the 60 s dispatch lease)"
    )


if __name__ == "__main__":
    main()
