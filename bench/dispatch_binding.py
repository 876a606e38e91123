"""What dispatching costs Redis while the fleet's bucket binds: commands and Redis CPU per
dispatched message.

5,000 messages waiting over 256 accounts (every shard), the global bucket at 50/s burst
10, the accounts' own buckets far above it, one in-process Dispatcher ticking every 50 ms
(as ``wxtasks dispatcher`` does) for 8 s, publishing into a list. Every waiting shard is
due at each tick, and the bucket lets ~2.5 tokens through per tick: what each message
costs is mostly the asking.

Measured (2-core shared machine; run in each tree one after the other)::

    before (each waiting shard borrows and calls every tick)   779.5 commands/msg
                                                               2.13 ms Redis CPU/msg
    after (a bucket found empty is not asked again until its    182.5 commands/msg
    next token; remembered wants borrow first)                 0.53 ms Redis CPU/msg

    python bench/dispatch_binding.py
"""

from __future__ import annotations

import time

import layout
from harness import fill_outbox

from wxtasks.config import Settings
from wxtasks.runtime import Runtime

RATE, SECONDS = 50, 8.0


def main() -> None:
    with layout.redis_server().RedisServer() as server:
        settings = Settings.from_env(
            {},
            redis_url=server.url,
            broker_url=server.url[:-1] + "1",
            rate_per_second=RATE,
            burst=10,
            account_rate_per_second=1000,
            account_burst=1000,
        )
        rt = Runtime(settings)
        fill_outbox(rt, 256, 5000, "interactive")
        got: list[object] = []
        dispatcher = rt.dispatcher(got.extend)
        dispatcher.tick()  # takes the leases, spends the burst

        def calls() -> int:
            return sum(int(v["calls"]) for v in rt.redis.info("commandstats").values())

        def cpu() -> float:
            info = rt.redis.info("cpu")
            return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])

        c0, cpu0, n0, t0 = calls(), cpu(), len(got), time.time()
        while time.time() - t0 < SECONDS:
            dispatcher.tick()
            time.sleep(0.05)
        n = len(got) - n0
        print(
            f"dispatched {n} in {SECONDS:.0f} s ({n / SECONDS:.1f}/s at a {RATE}/s bucket); "
            f"Redis commands per message {(calls() - c0) / n:.1f}; "
            f"Redis CPU per message {(cpu() - cpu0) / n * 1000:.2f} ms"
        )


if __name__ == "__main__":
    main()
