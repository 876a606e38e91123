"""A large 群发: 20,000 recipients over 10 accounts at 10 msg/s each (issue 10).

Set-up: 10 accounts, each one ``bulk_send`` of 2,000 recipients; account bucket 10/s burst
10, global 200/s burst 200 (>= the 100/s the accounts add up to, so it never binds);
2 worker instances x 2 processes, a beat (the dispatcher). Bulk spacing
``WXTASKS_BULK_JITTER_S=0-0``: the issue measures the token bucket's pace, and the
risk-guidance spacing (1-3 s between recipients) would stretch it to ~0.5/s; quiet hours
are off for these simulated accounts so the figures do not depend on the hour. Everything
else at its default (deadlines, visibility timeout).

The campaigns are created before the beat starts, in two waves (one 1,000-recipient
``bulk_send`` per account each), so the whole backlog is in Redis when its memory is read:
``used_memory`` delta / messages waiting. Then the beat starts and the backlog drains.
Before any of it, the workers run same-size campaigns (cancelled) as a warm-up. Reported:

- every message sent once, 0 failed (campaign counts + the simulator's record);
- pace per account over the steady part (the first and last 10 % of each account's sends
  left out): goal within +-3 % of 10/s;
- worker RSS (main processes + pools, psutil) sampled while the backlog grows and while it
  drains: goal flat (nothing waits in a worker): within 1 MiB per instance while the
  second wave doubles the backlog, and while it drains;
- Redis memory per waiting message.

    python bench/large_bulk.py [--quick]      # --quick: 2,000 recipients (~20 s)
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

from harness import (
    SendLog,
    bench,
    no_quiet_hours,
    percentile,
    redis_memory,
    rss_bytes,
    table,
)

from wxtasks.campaigns.store import CampaignNotFound
from wxtasks.client import WxTasksClient
from wxtasks.runtime import Runtime

ACCOUNTS = 10
RATE = 10.0


class Sampler(threading.Thread):
    """Every ``every_s``: elapsed, phase, backlog, sends so far, RSS per worker instance."""

    def __init__(self, rt: Runtime, pids: list[int], log: SendLog, every_s: float) -> None:
        super().__init__(daemon=True)
        self.rt, self.pids, self.log, self.every_s = rt, pids, log, every_s
        self.phase = "idle"
        self.rows: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.t0 = time.monotonic()

    def backlog(self) -> int:
        r, keys = self.rt.redis, self.rt.keys
        apps = r.zrange(keys.outbox_ready("bulk"), 0, -1)
        pipe = r.pipeline(transaction=False)
        for a in apps:
            pipe.zcard(keys.outbox_lane(a, "bulk"))
        return sum(int(n) for n in pipe.execute()) if apps else 0

    def sample(self) -> None:
        self.rows.append(
            {
                "t": time.monotonic() - self.t0,
                "phase": self.phase,
                "backlog": self.backlog(),
                "sent": len(self.log.poll()),
                "rss": [rss_bytes([pid]) for pid in self.pids],
            }
        )

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(self.every_s)


def warm_up(rt: Runtime, client: WxTasksClient, accounts: list[str], per_account: int) -> None:
    """Before the idle RSS is read, every pool process has imported, connected, loaded its
    scripts and run ``bulk_send`` tasks as large as the measured ones (a 2,000-recipient
    task message and its 1,000-target chunks set the allocator's high-water mark, once):
    a few replies, then 8 campaigns of the same size, cancelled, so they leave no backlog.
    What is left to see is whether memory follows the backlog."""
    results = [client.send_text(a, f"warm_{i}", "warm-up") for i in range(2) for a in accounts]
    for r in results:
        r.get(timeout=60)
    camps = [
        client.bulk_send(accounts[i], [f"warm_{n}" for n in range(per_account // 2)], "warm").id
        for i in range(8)
    ]
    deadline = time.monotonic() + 300
    for camp in camps:
        while True:
            try:
                if rt.campaigns.show(camp)["state"] == "running":  # created and parked
                    rt.campaigns.cancel(camp)
                    break
            except CampaignNotFound:  # its task has not run yet
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("warm-up campaigns")
            time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    per_account = 200 if args.quick else 2000
    total = per_account * ACCOUNTS
    with bench() as b:
        settings = b.settings(
            rate_per_second=200,
            burst=200,
            account_rate_per_second=RATE,
            account_burst=10,
            bulk_jitter_s="0-0",
        )
        accounts = b.online_accounts(settings, ACCOUNTS)
        no_quiet_hours(settings, accounts)
        workers = b.workers(settings)
        rt = Runtime(settings)
        client = WxTasksClient.from_settings(settings)
        warm_up(rt, client, accounts, per_account)
        log = SendLog(b)
        log.poll()
        sampler = Sampler(rt, [w.process.pid for w in workers], log, 0.5)
        sampler.sample()
        time.sleep(1.0)
        mem_before = redis_memory(rt.redis)
        sampler.start()

        # two waves of one bulk_send per account each: the second doubles the backlog in
        # Redis after the workers have already run tasks of this size
        half = per_account // 2
        campaigns: list[str] = []
        enqueue_started = time.monotonic()
        for wave, phase in enumerate(("wave 1", "wave 2")):
            sampler.phase = phase
            campaigns += [
                client.bulk_send(
                    a,
                    [f"wxid_{a}_{n:05d}" for n in range(wave * half, (wave + 1) * half)],
                    f"{a} 上新",
                ).id
                for a in accounts
            ]
            while sampler.backlog() < (wave + 1) * half * ACCOUNTS:
                if time.monotonic() - enqueue_started > 300:
                    raise TimeoutError("the campaigns were not all parked within 300 s")
                time.sleep(0.2)
            time.sleep(2.0)  # a few samples at this backlog
        enqueued_s = time.monotonic() - enqueue_started
        waiting = sampler.backlog()
        mem_after = redis_memory(rt.redis)
        sampler.every_s = 0.5 if args.quick else 5.0

        sampler.phase = "drain"
        b.beat(settings)
        drain_started = time.monotonic()
        deadline = drain_started + total / (ACCOUNTS * RATE) * 1.5 + 120
        while len(log.poll()) < total and time.monotonic() < deadline:
            time.sleep(1.0)
        time.sleep(2.0)  # the last outcomes are recorded
        drained_s = time.monotonic() - drain_started
        sampler.phase = "done"
        sampler.sample()
        sampler.stop.set()
        sampler.join()

        summaries = [rt.campaigns.show(c) for c in campaigns]
        counts = {
            k: sum(s[k] for s in summaries)
            for k in ("sent", "duplicate", "failed", "unknown", "cancelled", "waiting")
        }
        sends = [s for s in log.poll() if str(s["toWxid"]).startswith("wxid_acct")]
        distinct = {(s["appId"], s["toWxid"]) for s in sends}
        twice = len(sends) - len(distinct)
        expected = {(a, f"wxid_{a}_{n:05d}") for a in accounts for n in range(per_account)}
        missing = len(expected - distinct)

        print(
            f"\n== large bulk: {total:,} recipients over {ACCOUNTS} accounts, account "
            f"{RATE:.0f}/s burst 10, global 200/s, bulk jitter 0-0, 2 workers x 2 procs =="
        )
        print(
            f"campaigns created and parked in {enqueued_s:.1f} s; drained in {drained_s:.1f} s "
            f"(ideal {per_account / RATE:.0f} s)"
        )
        print(
            "outcomes: "
            + ", ".join(f"{k} {v}" for k, v in counts.items())
            + f"; at the gateway {len(distinct):,} distinct / {len(sends):,} sends, "
            f"sent twice {twice}, missing {missing}"
        )

        rows, worst = [], 0.0
        for a in accounts:
            times = sorted(s["at"] for s in sends if s["appId"] == a)
            k = len(times)
            lo, hi = int(k * 0.1), max(int(k * 0.9) - 1, int(k * 0.1) + 1)
            steady = (hi - lo) / (times[hi] - times[lo]) if k > 2 else float("nan")
            overall = (k - 1) / (times[-1] - times[0]) if k > 1 else float("nan")
            gaps = [y - x for x, y in zip(times[lo:hi], times[lo + 1 : hi + 1], strict=False)]
            worst = max(worst, abs(steady / RATE - 1))
            rows.append(
                [
                    a,
                    k,
                    f"{steady:.3f}",
                    f"{(steady / RATE - 1) * 100:+.2f}",
                    f"{overall:.3f}",
                    f"{percentile(gaps, 0.5) * 1000:.0f}",
                    f"{max(gaps) * 1000:.0f}" if gaps else "-",
                ]
            )
        print("\npace per account (steady part: sends 10 %..90 %)")
        print(
            table(
                rows,
                ["account", "sent", "steady /s", "vs 10/s %", "overall /s", "gap p50 ms", "max"],
            )
        )

        base = sampler.rows[0]["rss"]
        srows = []
        step = max(1, len(sampler.rows) // 30)
        picked = sampler.rows[::step] + ([sampler.rows[-1]] if len(sampler.rows) % step else [])
        for row in picked:
            srows.append(
                [
                    f"{row['t']:.1f}",
                    row["phase"],
                    f"{row['backlog']:,}",
                    f"{row['sent']:,}",
                    *(f"{r / 2**20:.1f}" for r in row["rss"]),
                ]
            )
        print("\nworker RSS (main process + pool, MiB) over time")
        print(
            table(
                srows,
                ["t s", "phase", "backlog", "sent"] + [f"worker{i} MiB" for i in range(len(base))],
            )
        )

        def last(phase: str) -> list[int]:
            return [r for r in sampler.rows if r["phase"] == phase][-1]["rss"]

        wave1 = [(last("wave 1")[i] - base[i]) / 2**20 for i in range(len(base))]
        growth = [(last("wave 2")[i] - last("wave 1")[i]) / 2**20 for i in range(len(base))]
        drained = [r for r in sampler.rows if r["phase"] in ("drain", "done")]
        spread = [
            (max(r["rss"][i] for r in drained) - min(r["rss"][i] for r in drained)) / 2**20
            for i in range(len(base))
        ]
        print(
            "RSS per worker instance: wave 1 (0 -> "
            f"{half * ACCOUNTS:,} waiting, the first tasks of that size) "
            + ", ".join(f"{g:+.1f}" for g in wave1)
            + f" MiB; wave 2 ({half * ACCOUNTS:,} -> {total:,} waiting) "
            + ", ".join(f"{g:+.1f}" for g in growth)
            + " MiB; spread while it drains "
            + ", ".join(f"{s:.1f}" for s in spread)
            + " MiB"
        )

        per_msg = (mem_after - mem_before) / waiting
        print(
            f"\nRedis used_memory: {mem_before / 2**20:.1f} MiB idle -> "
            f"{mem_after / 2**20:.1f} MiB with {waiting:,} waiting: {per_msg:.0f} bytes per "
            "waiting message (outbox body + lane entry + the campaign's target and counts)"
        )
        ok_failed = counts["failed"] == 0 and counts["sent"] == total and twice == 0
        print(
            f"\ngoals: 0 failed, all sent once: {'PASS' if ok_failed else 'FAIL'}; pace within "
            f"+-3 % of 10/s (worst {worst * 100:.2f} %): {'PASS' if worst <= 0.03 else 'FAIL'}; "
            f"RSS flat while the backlog doubles and while it drains (within 1 MiB per "
            f"instance): {'PASS' if max(max(growth), max(spread)) <= 1 else 'FAIL'}"
        )
        client.app.close()


if __name__ == "__main__":
    main()
