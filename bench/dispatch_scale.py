"""Dispatch throughput end to end: outbox to broker with 1, 2 and 4 real dispatcher
processes (``python -m wxtasks dispatcher``), side by side in one run.

100,000 messages waiting in the interactive lane over 1,000 ONLINE accounts (all 64
shards), bucket rates so high they never bind; a throwaway redis-server is both the
state store (db 0) and the broker (db 1). Each run fills the outbox afresh, starts the
dispatchers and times until every message is on the broker's ``send`` queue (LLEN;
nothing consumes it). Rows:

- ``python -m wxtasks dispatcher`` x 1, 2, 4 (batched publishing, as shipped);
- 1 process publishing one by one (``send_task`` per message, as the beat did): the same
  loop (``wxtasks.worker.dispatcher.run``) started by this file's ``--child one_by_one``,
  which only swaps the publisher;
- RabbitMQ (amqp://guest@127.0.0.1:5672, a throwaway vhost) x 1, 2 when it answers.

msgs/s = messages / (last on the queue - first on the queue); "after split" counts only
from when every dispatcher holds its share of the shards (a process starts in ~1 s and
the leases split within a cycle or two). CPU per 1,000 msgs, from the first message on the queue
to the last (not the start-up): the dispatcher processes (psutil) and the Redis server
(INFO cpu, state + broker). "CPU ceiling" = 2 cores / (all
CPU per message): the best any number of dispatchers could do on this machine.
``--profile``: one more 1-process run under cProfile (``--child profile:PATH``), top
functions by own time.

Measured (2-core shared machine, load average 1.0; 100,000 msgs over 1,000 accounts;
Redis CPU = state + broker)::

    Redis broker, batched    x1   5,728 msgs/s  disp 0.16 ms CPU/msg  Redis 0.02 ms/msg
                             x2  11,639 msgs/s  (after split 12,214)  2/1 = 2.03 (2.13)
                             x4  10,946 msgs/s  (after split 11,415)  4/1 = 1.91: 2 cores full
    Redis broker, one by one x1   1,720 msgs/s  disp 0.50 ms CPU/msg  Redis 0.08 ms/msg
                                  batched / one by one = 3.33

Before each shard borrowed its tokens just ahead of its own dispatch call, a round
borrowed for every shard at once and the grants lapsed (REFILL_S) while the earlier
shards published: one process then managed 3,698 msgs/s at 0.66 of a core, two 7,074.
RabbitMQ (an earlier run): x1 2,338, x2 2,719 msgs/s (RabbitMQ shares the 2 cores and is
the limit). ``--quick`` (10,000 over 100 accounts) is a smoke check only: start-up and
the split dominate its 2-4 s runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import layout
from harness import (
    BENCH_DIR,
    cpu_seconds,
    dispatcher_procs,
    fill_outbox,
    high_settings,
    queue_length,
    rabbitmq_vhost,
    redis_cpu,
    table,
)

from wxtasks.config import Settings
from wxtasks.runtime import Runtime, redis_client
from wxtasks.send.leases import dispatchers_view

Supervisor = layout.stack().Supervisor


def child(mode: str) -> None:
    """A dispatcher process as ``wxtasks dispatcher`` runs it, with the old one-by-one
    publisher (``one_by_one``) or under cProfile (``profile:PATH``)."""
    from wxtasks.logs import configure_logging
    from wxtasks.worker import dispatcher, publish

    settings = Settings.from_env()
    configure_logging(settings)
    if mode == "one_by_one":
        dispatcher.batch_publisher = publish.one_by_one_publisher  # type: ignore[assignment]
        dispatcher.run(settings)
        return
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        dispatcher.run(settings)  # SIGTERM ends it cleanly
    finally:
        profiler.disable()
        profiler.dump_stats(mode.removeprefix("profile:"))


def amqp_backlog(url: str) -> Callable[[], int]:
    from kombu import Connection

    conn = Connection(url)
    channel = conn.channel()

    def count() -> int:
        nonlocal channel
        try:
            return int(channel.queue_declare("send", passive=True).message_count)
        except Exception:  # not declared yet (the passive declare closes the channel)
            channel = conn.channel()
            return 0

    return count


def run(
    settings: Settings,
    n_procs: int,
    n_accounts: int,
    n: int,
    cmd: list[str] | None = None,
    backlog: Callable[[], int] | None = None,
) -> dict[str, Any]:
    """Fill, start ``n_procs`` dispatchers, time until ``n`` are on the broker."""
    rt = Runtime(settings)
    rt.redis.flushall()
    broker = redis_client(settings.redis_url[:-1] + "1")
    broker.flushdb()
    fill_outbox(rt, n_accounts, n, "interactive")
    count = backlog or (lambda: queue_length(broker))
    sup = Supervisor(log_dir=os.path.join(BENCH_DIR, "results", "logs"))
    env = {
        **settings.environ(),
        "WXTASKS_LOG_LEVEL": "WARNING",
        "PYTHONPATH": BENCH_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    cpu0 = rcpu0 = 0.0
    t_launch = time.perf_counter()
    if cmd is None:
        procs = dispatcher_procs(sup, env, n_procs, "scale")
    else:
        procs = [sup.start(f"scale-child-{i + 1}", cmd, env) for i in range(n_procs)]
    share = rt.keys.shards // n_procs
    t_first = t_split = None
    q_first = q_split = 0
    next_view = 0.0
    try:
        while True:
            q, now = count(), time.perf_counter()
            if q and t_first is None:  # CPU from here on (not the processes' start-up)
                t_first, q_first = now, q
                cpu0 = cpu_seconds([p.process.pid for p in procs])
                rcpu0 = redis_cpu(rt.redis)
            if t_split is None and now >= next_view:
                next_view = now + 0.1
                view = dispatchers_view(rt.redis, rt.keys)
                held = [d["shards"] for d in view["dispatchers"]]
                if len(held) == n_procs and min(held) >= share and not view["unheld_shards"]:
                    t_split, q_split = time.perf_counter(), count()
            if q >= n:
                t_done = time.perf_counter()
                break
            if now - t_launch > 600 or not all(p.alive for p in procs):
                raise RuntimeError(f"stuck at {q}/{n} (see bench/results/logs)")
            time.sleep(0.02)
        cpu = cpu_seconds([p.process.pid for p in procs]) - cpu0
        rcpu = redis_cpu(rt.redis) - rcpu0
    finally:
        sup.stop_all()
        broker.close()
        rt.close()
    assert t_first is not None
    done = n - q_first  # what went out while the CPU was counted
    rate = done / max(t_done - t_first, 1e-6)
    split_rate = None
    if t_split is not None and q_split < 0.8 * n:
        split_rate = (n - q_split) / max(t_done - t_split, 1e-6)
    return {
        "n": done,
        "procs": n_procs,
        "start_s": t_first - t_launch,
        "split_s": None if t_split is None else t_split - t_launch,
        "wall": t_done - t_launch,
        "rate": rate,
        "split_rate": split_rate,
        "cpu": cpu,
        "rcpu": rcpu,
    }


def print_profile(path: str, top: int = 25) -> None:
    import pstats

    stats = pstats.Stats(path)
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    print(f"\n== cProfile of one dispatcher process (own time; total {total:.1f} s) ==")
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(
        r"dispatcher.py.*\((tick|_dispatch|_dispatch_lane|_borrow_from|_note)\)|"
        r"publish.py.*\(publish\)|scripts.py|leases.py.*\(cycle\)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--no-rabbit", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    n_accounts, n = (100, 10_000) if args.quick else (1_000, 100_000)
    me = [sys.executable, os.path.abspath(__file__), "--child"]
    results: dict[str, dict[str, Any]] = {}
    with layout.redis_server().RedisServer() as server:
        settings = high_settings(server)
        plan: list[tuple[str, int, list[str] | None]] = [
            ("redis, batched", 1, None),
            ("redis, batched", 2, None),
            ("redis, batched", 4, None),
            ("redis, one by one", 1, [*me, "one_by_one"]),
        ]
        for label, procs, cmd in plan:
            r = run(settings, procs, n_accounts, n, cmd)
            results[f"{label} x{procs}"] = r
            print(f"  {label} x{procs}: {r}", flush=True)
        if not args.no_rabbit:
            for procs in (1, 2):
                with rabbitmq_vhost() as url:  # a vhost of its own for each run
                    if url is None:
                        print("  RabbitMQ: none on 127.0.0.1:5672, skipped")
                        break
                    r = run(
                        settings.replace(broker_url=url),
                        procs,
                        n_accounts,
                        n,
                        backlog=amqp_backlog(url),
                    )
                    results[f"rabbitmq, batched x{procs}"] = r
                    print(f"  rabbitmq x{procs}: {r}", flush=True)
        if args.profile:
            path = os.path.join(BENCH_DIR, "results", "dispatcher.prof")
            run(settings, 1, n_accounts, n, [*me, f"profile:{path}"])
    rows = []
    for label, r in results.items():
        per_msg = (r["cpu"] + r["rcpu"]) / r["n"]
        rows.append(
            [
                label,
                f"{r['start_s']:.1f}",
                "-" if r["split_s"] is None else f"{r['split_s']:.1f}",
                f"{r['wall']:.1f}",
                f"{r['rate']:,.0f}",
                "-" if r["split_rate"] is None else f"{r['split_rate']:,.0f}",
                f"{r['cpu'] / r['n'] * 1000:.2f}",
                f"{r['rcpu'] / r['n'] * 1000:.2f}",
                f"{1 / per_msg:,.0f}",
                f"{2 / per_msg:,.0f}",
            ]
        )
    print(
        f"\n== dispatch throughput, outbox -> broker: {n:,} msgs over {n_accounts:,} accounts, "
        f"buckets never binding; load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores =="
    )
    print(
        table(
            rows,
            [
                "broker, publish x processes",
                "1st msg s",
                "split s",
                "wall s",
                "msgs/s",
                "msgs/s after split",
                "disp CPU s/1k",
                "Redis CPU s/1k",
                "msgs/s per core",
                "CPU ceiling",
            ],
        )
    )

    def ratio(a: str, b: str) -> str:
        ra, rb = results.get(a), results.get(b)
        if not ra or not rb:
            return "-"
        main = ra["rate"] / rb["rate"]
        split = (
            f", after split {ra['split_rate'] / rb['split_rate']:.2f}"
            if ra["split_rate"] and rb["split_rate"]
            else ""
        )
        return f"{main:.2f}{split}"

    print(f"ratio 2/1: {ratio('redis, batched x2', 'redis, batched x1')}  (goal >= 1.7)")
    print(f"ratio 4/1: {ratio('redis, batched x4', 'redis, batched x1')}")
    print(f"batched / one by one (1 process): {ratio('redis, batched x1', 'redis, one by one x1')}")
    if "rabbitmq, batched x2" in results:
        print(f"RabbitMQ 2/1: {ratio('rabbitmq, batched x2', 'rabbitmq, batched x1')}")
    if args.profile:
        print_profile(os.path.join(BENCH_DIR, "results", "dispatcher.prof"))


if __name__ == "__main__":
    main()
