"""Send pipeline benchmarks, each printed as ratios measured side by side in one run.

1. Limit accuracy: 2 worker instances x 2 processes, global 20 msg/s burst 5, 600
   messages over 50 accounts. Every window of width T must see at most 5 + 20*T (+1)
   messages at the gateway; the long-run rate within 3 % of 20/s. Then the same load on a
   bare task with Celery's own rate_limit="20/s": how far it overshoots.
2. Overhead: limits set high; full-pipeline sends/s vs a bare Celery task that only POSTs
   to the same simulator (same workers settings). Goal >= 0.85.
3. Latency: enqueue -> gateway p50 / p99 at 10 % of the measured capacity.

    python bench/send_pipeline.py [--only limit|overhead|latency]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from celery import Celery
from harness import Bench, bench, max_in_window, percentile

RATE, BURST = 20, 5
WIDTHS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)


def producer(b: Bench, settings: Any) -> Celery:
    return Celery(broker=settings.broker_url, backend=settings.redis_url)


def enqueue(app: Celery, task: str, messages: list[tuple[str, str, str]]) -> list[Any]:
    with app.producer_or_acquire() as prod:
        return [
            app.send_task(
                task, queue="send", producer=prod, kwargs={"app_id": a, "to_wxid": t, "content": c}
            )
            for a, t, c in messages
        ]


def wait_sends(b: Bench, n: int, timeout_s: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sends = b.sends()
        if len(sends) >= n:
            return sends
        time.sleep(0.5)
    return b.sends()


def envelope(times: list[float]) -> tuple[bool, list[str]]:
    ok, lines = True, []
    for w in WIDTHS:
        seen, allowed = max_in_window(times, w), BURST + RATE * w + 1
        ok &= seen <= allowed
        lines.append(f"T={w:>5}s max {seen:>4} allowed {allowed:>6.1f}")
    return ok, lines


def limit_accuracy(b: Bench) -> None:
    settings = b.settings(
        rate_per_second=RATE, burst=BURST, account_rate_per_second=1000, account_burst=1000
    )
    accounts = b.online_accounts(settings, 50)
    messages = [(accounts[i % 50], f"wxid_{i}", f"limit {i}") for i in range(600)]
    workers = b.workers(settings)
    enqueue(producer(b, settings), "wxtasks.send_text", messages)
    ours = [s["at"] for s in wait_sends(b, 600, 120)]
    b.stop_workers(workers)
    b.reset()

    settings = b.settings()
    workers = b.workers(settings, app="baseline_app")
    enqueue(producer(b, settings), "bench.post_rate_limited", messages)
    theirs = [s["at"] for s in wait_sends(b, 600, 120)]
    b.stop_workers(workers)
    b.reset()

    def long_run(times: list[float]) -> float:
        times = sorted(times)
        return (len(times) - BURST) / (times[-1] - times[0])

    ok, lines = envelope(ours)
    rate = long_run(ours)
    print("\n== limit accuracy: 600 msgs, 50 accounts, 2 instances x 2 procs, 20/s burst 5 ==")
    print(
        f"wxtasks  : {len(ours)} at gateway, long-run {rate:.2f}/s "
        f"({(rate / RATE - 1) * 100:+.1f} % of 20/s), envelope {'OK' if ok else 'BROKEN'}"
    )
    for line in lines:
        print("   " + line)
    theirs.sort()
    print(
        f"celery rate_limit='20/s': {len(theirs)} at gateway in "
        f"{theirs[-1] - theirs[0]:.1f} s; per-window peaks vs the same envelope:"
    )
    for w in WIDTHS:
        peak, allowed = max_in_window(theirs, w), BURST + RATE * w + 1
        mine = max_in_window(ours, w)
        print(
            f"   T={w:>5}s max {peak:>4} allowed {allowed:>6.1f}  overshoot "
            f"{peak / allowed:.2f}x  (wxtasks {mine / allowed:.2f}x)"
        )
    peak_1s = max_in_window(theirs, 1.0) / max_in_window(ours, 1.0)
    print(
        f"ratio celery / wxtasks, busiest second: {peak_1s:.2f}  "
        "(Celery's limit is per worker instance: 2 instances send up to 2x)"
    )


def overhead(b: Bench, n: int = 3000) -> float:
    high = dict(
        rate_per_second=100_000,
        burst=100_000,
        account_rate_per_second=100_000,
        account_burst=100_000,
    )
    settings = b.settings(**high)
    accounts = b.online_accounts(settings, 50)
    messages = [(accounts[i % 50], f"wxid_{i}", f"overhead {i}") for i in range(n)]

    def run(app: str, task: str) -> float:
        workers = b.workers(settings, app=app)
        app_ = producer(b, settings)
        enqueue(app_, task, messages[:200])  # warm-up
        wait_sends(b, 200, 60)
        b.sim("reset", {})
        started = time.time()
        enqueue(app_, task, [(a, t, c + " run") for a, t, c in messages])
        sends = wait_sends(b, n, 300)
        elapsed = max(s["at"] for s in sends) - started
        b.stop_workers(workers)
        return len(sends) / elapsed

    bare = run("baseline_app", "bench.post")
    b.reset()
    settings = b.settings(**high)
    b.online_accounts(settings, 50)
    ours = run("workers", "wxtasks.send_text")
    print(f"\n== overhead: {n} sends, limits high, 2 instances x 2 procs ==")
    print(f"bare Celery task (HTTP POST only): {bare:7.1f} sends/s")
    print(f"wxtasks full pipeline            : {ours:7.1f} sends/s")
    print(
        f"ratio wxtasks / bare: {ours / bare:.2f}  (goal >= 0.85: "
        f"{'PASS' if ours / bare >= 0.85 else 'FAIL'})"
    )
    b.reset()
    return ours


def latency(b: Bench, capacity: float, seconds: float = 15) -> None:
    rate = max(1.0, capacity * 0.10)
    settings = b.settings(
        rate_per_second=10_000, burst=10_000, account_rate_per_second=10_000, account_burst=10_000
    )
    accounts = b.online_accounts(settings, 50)
    workers = b.workers(settings)
    app = producer(b, settings)
    sent_at: dict[str, float] = {}
    n = int(rate * seconds)
    with app.producer_or_acquire() as prod:
        start = time.time()
        for i in range(n):
            target = start + i / rate
            delay = target - time.time()
            if delay > 0:
                time.sleep(delay)  # pacing the producer at a fixed rate
            content = f"latency {i}"
            sent_at[content] = time.time()
            app.send_task(
                "wxtasks.send_text",
                queue="send",
                producer=prod,
                kwargs={"app_id": accounts[i % 50], "to_wxid": "w", "content": content},
            )
    sends = wait_sends(b, n, 60)
    b.stop_workers(workers)
    lat = [(s["at"] - sent_at[s["content"]]) * 1000 for s in sends if s["content"] in sent_at]
    print(f"\n== latency at 10 % of capacity ({rate:.0f} msgs/s for {seconds:.0f} s) ==")
    print(
        f"enqueue -> gateway: p50 {percentile(lat, 0.5):.1f} ms, p99 {percentile(lat, 0.99):.1f}"
        f" ms, max {max(lat):.1f} ms over {len(lat)} messages"
    )
    b.reset()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=["limit", "overhead", "latency"])
    args = parser.parse_args()
    with bench() as b:
        if args.only in (None, "limit"):
            limit_accuracy(b)
        capacity = 0.0
        if args.only in (None, "overhead", "latency"):
            capacity = overhead(b)
        if args.only in (None, "latency"):
            latency(b, capacity)


if __name__ == "__main__":
    main()
