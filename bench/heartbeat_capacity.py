"""Heartbeat capacity: how many accounts one 2-core machine keeps at a 30 s heartbeat with
p99 lateness <= 2 s, with Redis, the simulator, a control worker and beat all on it.

Side by side in one run: the shipped shape (beat sweeps the due-time sorted set every
second and dispatches batches of WXTASKS_HEARTBEAT_BATCH=50 accounts per task) against
the same sweep dispatching one task per account (batch 1), the shape of one beat entry
per account. Lateness = probe time - due time, measured by the workers; CPU = user+sys
of every process in the stack (Redis, simulator, worker and its pool, beat) per heartbeat.

    python bench/heartbeat_capacity.py [--accounts 10000] [--interval 30] [--intervals 2]
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from harness import Bench, bench, percentile

from wxtasks.runtime import redis_client

CLK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: set[int], groups: set[int]) -> float:
    total = 0.0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, pgid = int(name), int(fields[2])
        if pid in pids or pgid in groups:
            total += (int(fields[11]) + int(fields[12])) / CLK
    return total


def run(b: Bench, n: int, interval: float, intervals: int, batch: int) -> dict[str, Any]:
    settings = b.settings(heartbeat_interval_s=interval, heartbeat_batch=batch, gateway_timeout_s=5)
    b.online_accounts(settings, n)
    r = redis_client(settings.redis_url)
    workers = b.workers(settings, instances=1, concurrency=2, queues="control")
    beat = b.beat(settings)
    groups = {c.process.pid for c in workers} | {beat.process.pid}
    groups |= {c.process.pid for c in b.supervisor.children if c.name == "simulator"}
    pids = {b.redis.process.pid} if b.redis.process else set()
    time.sleep(interval)  # warm-up: one full interval so every account has been swept once
    r.delete("wx:stats:heartbeat_lateness")
    calls0 = b.sim("stats")["calls"].get("/login/checkOnline", 0)
    cpu0, t0 = cpu_seconds(pids, groups), time.monotonic()
    lateness: list[float] = []
    for _ in range(intervals):
        time.sleep(interval)  # the measurement window is wall-clock time by definition
        lateness += [float(x) for x in r.lrange("wx:stats:heartbeat_lateness", 0, -1)]
        r.delete("wx:stats:heartbeat_lateness")
    elapsed = time.monotonic() - t0
    cpu = cpu_seconds(pids, groups) - cpu0
    calls = b.sim("stats")["calls"].get("/login/checkOnline", 0) - calls0
    b.stop_workers([*workers, beat])
    r.close()
    b.reset()
    expected = n / interval * elapsed
    return {
        "batch": batch,
        "probes": calls,
        "expected": expected,
        "p50": percentile(lateness, 0.5),
        "p99": percentile(lateness, 0.99),
        "max": max(lateness, default=float("nan")),
        "samples": len(lateness),
        "cpu_ms_per_hb": cpu / max(calls, 1) * 1000,
        "cpu_cores": cpu / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--interval", type=float, default=30)
    parser.add_argument("--intervals", type=int, default=2)
    parser.add_argument("--batches", default="50,1")
    args = parser.parse_args()
    results = []
    with bench() as b:
        for batch in [int(x) for x in args.batches.split(",")]:
            results.append(run(b, args.accounts, args.interval, args.intervals, batch))
    print(
        f"\n== heartbeat capacity: {args.accounts} accounts every {args.interval:.0f} s, "
        f"1 control worker x 2 procs + beat + Redis + simulator on this machine =="
    )
    for res in results:
        ok = res["p99"] <= 2.0 and res["probes"] >= 0.95 * res["expected"]
        print(
            f"batch {res['batch']:>3}: probes {res['probes']:>6} / expected "
            f"{res['expected']:>8.0f} ({res['probes'] / res['expected']:.0%}); lateness "
            f"p50 {res['p50']:.3f} s p99 {res['p99']:.3f} s max {res['max']:.3f} s; "
            f"CPU {res['cpu_ms_per_hb']:.2f} ms/heartbeat ({res['cpu_cores']:.2f} cores)"
            f"  {'PASS' if ok else 'FAIL'}"
        )
    if len(results) == 2:
        a, z = results
        print(
            f"ratio CPU per heartbeat, batch {z['batch']} / batch {a['batch']}: "
            f"{z['cpu_ms_per_hb'] / a['cpu_ms_per_hb']:.2f}"
        )


if __name__ == "__main__":
    main()
