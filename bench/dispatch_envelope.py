"""The gateway's rate envelope with sharded dispatch: 2 real dispatcher processes, real send
workers and the gateway simulator. Goal: 0 windows over the envelope.

Global bucket ``--rate`` (50/s) burst ``--burst`` (10); account buckets at their defaults;
``--accounts`` (256) ONLINE accounts over all 64 shards; ``--n`` (2,500) ``send_text``
tasks from a plain Celery producer (interactive lane), all at once, so every shard
borrows from the global bucket at the same time. 2 send worker instances x 4 processes,
2 ``python -m wxtasks dispatcher``. From the simulator's record of accepted sends: for
each window width T, how many windows ``[t, t + T]`` (one starting at each send) hold more
than burst + rate * T + slack sends, slack = rate * REFILL_S + 1 (a borrowed token lapses
after REFILL_S); and the long-run rate against the bucket's.

Then the cost per message of the whole path with the same processes and limits so high
they never bind (``--cost-n``, 3,000 over the same accounts; the capacity model in the
README is built from it): worker CPU (psutil, every process of both instances),
dispatcher CPU, Redis CPU (INFO cpu) and Redis commands (INFO commandstats, those inside
Lua included) per message, from the first enqueue to the last send at the gateway.

Measured (2-core shared machine)::

    see below (filled in from the run)

    python bench/dispatch_envelope.py [--rate 50] [--burst 10] [--n 2500] [--cost-n 3000]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from harness import (
    Bench,
    bench,
    cpu_seconds,
    dispatcher_procs,
    high_limits,
    max_in_window,
    redis_cpu,
    table,
    windows_over,
)
from send_pipeline import enqueue, producer, wait_sends

from wxtasks.keys import shard_of
from wxtasks.runtime import Runtime
from wxtasks.send.dispatcher import REFILL_S

WIDTHS = (0.25, 0.5, 1.0, 2.0, 5.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--burst", type=int, default=10)
    parser.add_argument("--accounts", type=int, default=256)
    parser.add_argument("--n", type=int, default=2_500)
    parser.add_argument("--cost-n", type=int, default=3_000)
    args = parser.parse_args()
    rate, burst = args.rate, args.burst
    slack = rate * REFILL_S + 1
    with bench() as b:
        settings = b.settings(rate_per_second=rate, burst=burst)
        accounts = b.online_accounts(settings, args.accounts)
        shards = {shard_of(a, settings.shards) for a in accounts}
        procs = b.workers(settings, instances=2, concurrency=4)
        procs += dispatcher_procs(b.supervisor, b.env(settings), 2, "envelope")
        messages = [
            (accounts[i % len(accounts)], f"wxid_{i}", f"envelope {i}") for i in range(args.n)
        ]
        t0 = time.monotonic()
        enqueue(producer(b, settings), "wxtasks.send_text", messages)
        sends = wait_sends(b, args.n, args.n / rate * 2 + 60)
        wall = time.monotonic() - t0
        b.supervisor.stop_many(procs)
        cost_figures = cost(b, args.accounts, args.cost_n) if args.cost_n else None
    times = sorted(s["at"] for s in sends)
    rows = []
    total_over = 0
    for w in WIDTHS:
        allowed = burst + rate * w + slack
        over = windows_over(times, w, allowed)
        total_over += over
        rows.append([w, f"{allowed:.1f}", max_in_window(times, w), over])
    long_run = (len(times) - burst) / (times[-1] - times[0]) if len(times) > 1 else 0.0
    print(
        f"\n== gateway envelope: global {rate:g}/s burst {burst}, {len(accounts)} accounts over "
        f"{len(shards)} shards, {args.n:,} msgs, 2 dispatchers, 2 x 4 send workers =="
    )
    print(table(rows, ["T s", "allowed (burst + rate*T + slack)", "max in T", "windows over"]))
    print(
        f"{len(sends):,} sends at the gateway in {wall:.1f} s; long-run {long_run:.2f}/s "
        f"({(long_run / rate - 1) * 100:+.1f} % of {rate:g}/s); slack {slack:g}; "
        f"windows over the envelope: {total_over} (goal 0)"
    )

    if cost_figures:
        c = cost_figures
        print(
            f"\n== cost per message, outbox path, limits never binding: {c['n']:,} msgs, "
            f"{c['rate']:,.0f} msgs/s at the gateway =="
        )
        print(
            table(
                [
                    ["send workers (2 x 4 procs)", f"{c['worker'] * 1000:.2f} ms"],
                    ["dispatchers (2)", f"{c['dispatcher'] * 1000:.2f} ms"],
                    ["Redis server (state + broker)", f"{c['redis'] * 1000:.2f} ms"],
                    ["Redis commands (Lua's included)", f"{c['commands']:.1f}"],
                ],
                ["per message", "CPU / commands"],
            )
        )


def cost(b: Bench, n_accounts: int, n: int) -> dict[str, Any]:
    """CPU and Redis commands per message through the whole path (admit, park, dispatch,
    send, finish), limits never binding."""
    b.reset()
    settings = b.settings(**high_limits())
    accounts = b.online_accounts(settings, n_accounts)
    workers = b.workers(settings, instances=2, concurrency=4)
    dispatchers = dispatcher_procs(b.supervisor, b.env(settings), 2, "cost")
    time.sleep(2.0)  # the dispatchers split the shards
    rt = Runtime(settings)
    state = rt.redis
    before = (
        cpu_seconds([c.process.pid for c in workers]),
        cpu_seconds([c.process.pid for c in dispatchers]),
        redis_cpu(state),
        commands(state),
    )
    messages = [(accounts[i % n_accounts], f"wxid_c{i}", f"cost {i}") for i in range(n)]
    t0 = time.time()
    enqueue(producer(b, settings), "wxtasks.send_text", messages)
    sends = wait_sends(b, n, 600)
    after = (
        cpu_seconds([c.process.pid for c in workers]),
        cpu_seconds([c.process.pid for c in dispatchers]),
        redis_cpu(state),
        commands(state),
    )
    done = len(sends)
    last = max(s["at"] for s in sends)
    b.supervisor.stop_many(workers + dispatchers)
    rt.close()
    return {
        "n": done,
        "rate": done / max(last - t0, 1e-6),
        "worker": (after[0] - before[0]) / done,
        "dispatcher": (after[1] - before[1]) / done,
        "redis": (after[2] - before[2]) / done,
        "commands": (after[3] - before[3]) / done,
    }


def commands(client: Any) -> int:
    """Commands the Redis server ran so far (INFO commandstats; inside Lua included)."""
    return sum(int(v["calls"]) for v in client.info("commandstats").values())


if __name__ == "__main__":
    main()
