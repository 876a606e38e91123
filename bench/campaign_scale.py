"""A 100,000-target campaign over 100 accounts (issue 11): create time, Redis memory per
target, dispatcher CPU per message, worker memory while it runs.

Set-up: 100 ONLINE accounts at the default pacing (account bucket 1/s burst 2, bulk
spacing 1-3 s between recipients; quiet hours off for these simulated accounts so the
figures do not depend on the hour); the global bucket raised to 100/s burst 100 so that
the accounts' own pacing, not the seed's fleet-wide 5/s, sets the pace (~50 msg/s for
100 accounts); 2 send workers x 2 processes. The campaign is created in-process through
``Campaigns.create`` (targets streamed in chunks of 1,000) before the beat starts, so the
memory read is the whole campaign waiting. Then the beat (the dispatcher) runs for
``--seconds`` (60) and the campaign is cancelled; at 50 msg/s the whole campaign would
take ~35 minutes, so the per-message figures are extrapolated, as printed.

Dispatcher CPU = the beat process's CPU (psutil) over the window, less what the same beat
burns ticking with nothing due (measured for 10 s after the cancel), per dispatched
message; the Redis server's CPU over the window is shown beside it.

    python bench/campaign_scale.py [--quick] [--seconds S]   # --quick: 10,000 targets, 20 s
"""

from __future__ import annotations

import argparse
import time

from harness import SendLog, bench, cpu_seconds, redis_cpu, redis_memory, rss_bytes, table

from wxtasks.campaigns.store import Content
from wxtasks.client import WxTasksClient
from wxtasks.runtime import Runtime

ACCOUNTS = 100


def memory_parts(rt: Runtime, accounts: list[str]) -> dict[str, tuple[int, int]]:
    """MEMORY USAGE (bytes, entries) of the campaign's and the outbox's keys, and of the
    Celery results its sends leave (sampled)."""
    r, k = rt.redis, rt.keys

    def usage(key: str) -> int:
        return int(r.memory_usage(key, samples=0) or 0)

    lanes = [k.outbox_lane(a, "bulk") for a in accounts]
    metas = list(r.scan_iter("celery-task-meta-scale:*", count=1000))
    sample = metas[:200]
    meta_bytes = sum(usage(m) for m in sample) / max(1, len(sample)) * len(metas)
    return {
        "campaign targets (hash)": (
            usage(k.campaign_targets("scale")),
            r.hlen(k.campaign_targets("scale")),
        ),
        "campaign results (hash)": (
            usage(k.campaign_results("scale")),
            r.hlen(k.campaign_results("scale")),
        ),
        "outbox bodies (hash)": (usage(k.outbox_messages), r.hlen(k.outbox_messages)),
        "outbox bulk lanes (100 zsets)": (
            sum(usage(x) for x in lanes),
            sum(r.zcard(x) for x in lanes),
        ),
        "Celery results of its sends": (int(meta_bytes), len(metas)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seconds", type=float, default=None)
    args = parser.parse_args()
    total = 10_000 if args.quick else 100_000
    window = args.seconds or (20.0 if args.quick else 60.0)
    with bench() as b:
        settings = b.settings(rate_per_second=100, burst=100)
        accounts = b.online_accounts(settings, ACCOUNTS)
        rt = Runtime(settings)
        for a in accounts:
            rt.accounts.update(a, pacing={"quiet_hours": ""})
        workers = b.workers(settings)
        wpids = [w.process.pid for w in workers]
        client = WxTasksClient.from_settings(settings)
        warm = [client.send_text(a, "warm", "warm-up") for a in accounts[:40]]
        for r in warm:  # every pool process has imported, connected and sent once
            r.get(timeout=60)
        client.app.close()
        log = SendLog(b)
        time.sleep(1.0)
        warm_sends = len(log.poll())
        mem0 = redis_memory(rt.redis)
        rss0 = rss_bytes(wpids)

        t0 = time.perf_counter()
        targets = ((accounts[i % ACCOUNTS], f"wxid_{i:06d}") for i in range(total))
        created = rt.campaigns.create(
            "scale", Content.parse("text", {"content": "双12 大促，全场五折"}), targets
        )
        create_s = time.perf_counter() - t0
        mem1 = redis_memory(rt.redis)
        assert created["total"] == total and created["state"] == "running", created

        beat = b.beat(settings)
        bpid = [beat.process.pid]
        time.sleep(0.5)
        bcpu0, rcpu0, wcpu0 = cpu_seconds(bpid), redis_cpu(rt.redis), cpu_seconds(wpids)
        started = time.monotonic()
        samples = []
        while (elapsed := time.monotonic() - started) < window:
            samples.append(
                (elapsed, len(log.poll()) - warm_sends, rss_bytes(wpids), redis_memory(rt.redis))
            )
            time.sleep(min(5.0, window / 12))
        bcpu = cpu_seconds(bpid) - bcpu0
        rcpu = redis_cpu(rt.redis) - rcpu0
        wcpu = cpu_seconds(wpids) - wcpu0
        elapsed = time.monotonic() - started
        dispatched = int(rt.redis.hget(rt.keys.outbox_stats, "bulk:dispatched") or 0)
        shown = rt.campaigns.show("scale")
        sent = shown["sent"]
        samples.append(
            (elapsed, len(log.poll()) - warm_sends, rss_bytes(wpids), redis_memory(rt.redis))
        )
        mem2 = redis_memory(rt.redis)
        parts = memory_parts(rt, accounts)

        t1 = time.perf_counter()
        cancelled = rt.campaigns.cancel("scale")
        cancel_s = time.perf_counter() - t1
        time.sleep(2.0)
        idle0 = cpu_seconds(bpid)
        time.sleep(10.0)
        idle_rate = (cpu_seconds(bpid) - idle0) / 10.0

        rate = sent / elapsed
        net = max(0.0, bcpu - idle_rate * elapsed)
        per_target = (mem1 - mem0) / total
        print(
            f"\n== campaign scale: {total:,} targets over {ACCOUNTS} accounts, default pacing "
            f"(1/s burst 2, spacing 1-3 s), global 100/s, 2 workers x 2 procs; "
            f"{window:.0f} s of dispatch =="
        )
        print(
            table(
                [
                    [
                        "create (stream in + park)",
                        f"{create_s:.1f} s",
                        f"{total / create_s:,.0f} targets/s",
                    ],
                    [
                        "Redis memory, campaign waiting",
                        f"{(mem1 - mem0) / 2**20:.1f} MiB",
                        f"{per_target:.0f} bytes per target",
                    ],
                    [
                        "sent in the window",
                        f"{sent:,} ({rate:.1f}/s)",
                        f"dispatched {dispatched:,}",
                    ],
                    [
                        "beat CPU in the window",
                        f"{bcpu:.2f} s",
                        f"{bcpu / max(1, dispatched) * 1000:.2f} ms per message (raw)",
                    ],
                    [
                        "beat CPU idle (ticking, nothing due)",
                        f"{idle_rate * 100:.1f} % of a core",
                        f"net {net / max(1, dispatched) * 1000:.2f} ms per message",
                    ],
                    [
                        "Redis server CPU in the window",
                        f"{rcpu:.2f} s",
                        f"{rcpu / max(1, dispatched) * 1000:.2f} ms per message (all clients)",
                    ],
                    [
                        "worker CPU in the window",
                        f"{wcpu:.2f} s",
                        f"{wcpu / max(1, sent) * 1000:.2f} ms per message",
                    ],
                    [
                        "Redis memory after the window",
                        f"{(mem2 - mem0) / 2**20:.1f} MiB",
                        f"{(mem2 - mem1) / max(1, sent):+.0f} bytes per sent target",
                    ],
                    [
                        "cancel the rest",
                        f"{cancel_s:.1f} s",
                        f"{cancelled['cancelled']:,} cancelled, state {cancelled['state']}",
                    ],
                ],
                ["what", "measured", "per unit"],
            )
        )
        print(f"\nRedis memory by key after the window ({sent:,} sent, the rest waiting)")
        print(
            table(
                [[k, f"{v / 2**20:.2f}", f"{v / n:.0f}", f"{n:,}"] for k, (v, n) in parts.items()],
                ["key(s)", "MiB", "bytes per entry", "entries"],
            )
        )
        print("\nworker RSS (2 instances, main + pools) while it runs")
        print(
            table(
                [
                    [
                        f"{t:.0f}",
                        f"{n:,}",
                        f"{r / 2**20:.1f}",
                        f"{(r - rss0) / 2**20:+.1f}",
                        f"{m / 2**20:.1f}",
                    ]
                    for t, n, r, m in samples
                ],
                ["t s", "sent", "RSS MiB", "vs before create", "Redis MiB"],
            )
        )
        full_s = total / rate if rate else float("inf")
        print(
            f"\nextrapolated to all {total:,} targets at {rate:.1f}/s: {full_s / 60:.0f} min; "
            f"beat CPU {net / max(1, dispatched) * total:.0f} s net over that time "
            f"(+ {idle_rate * full_s:.0f} s of ticking it does anyway); Redis holds "
            f"{(mem1 - mem0) / 2**20:.0f} MiB at the start, and each sent target trades its "
            f"outbox entry for its result ({(mem2 - mem1) / max(1, sent):+.0f} bytes each)"
        )
        del workers


if __name__ == "__main__":
    main()
