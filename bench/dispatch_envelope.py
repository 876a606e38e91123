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

Measured (2-core shared machine)::

    see below (filled in from the run)

    python bench/dispatch_envelope.py [--rate 50] [--burst 10] [--n 2500]
"""

from __future__ import annotations

import argparse
import time

from harness import bench, dispatcher_procs, max_in_window, table, windows_over
from send_pipeline import enqueue, producer, wait_sends

from wxtasks.keys import shard_of
from wxtasks.send.dispatcher import REFILL_S

WIDTHS = (0.25, 0.5, 1.0, 2.0, 5.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--burst", type=int, default=10)
    parser.add_argument("--accounts", type=int, default=256)
    parser.add_argument("--n", type=int, default=2_500)
    args = parser.parse_args()
    rate, burst = args.rate, args.burst
    slack = rate * REFILL_S + 1
    with bench() as b:
        settings = b.settings(rate_per_second=rate, burst=burst)
        accounts = b.online_accounts(settings, args.accounts)
        shards = {shard_of(a, settings.shards) for a in accounts}
        workers = b.workers(settings, instances=2, concurrency=4)
        dispatcher_procs(b.supervisor, b.env(settings), 2, "envelope")
        messages = [
            (accounts[i % len(accounts)], f"wxid_{i}", f"envelope {i}") for i in range(args.n)
        ]
        t0 = time.monotonic()
        enqueue(producer(b, settings), "wxtasks.send_text", messages)
        sends = wait_sends(b, args.n, args.n / rate * 2 + 60)
        wall = time.monotonic() - t0
        b.stop_workers(workers)
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


if __name__ == "__main__":
    main()
