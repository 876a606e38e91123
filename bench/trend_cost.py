"""What the Overview's counting costs a send (goal: no extra round trip, a few µs).

A send's ending is one pipelined round trip (the claim's record, the outcome count, the
outbox forgetting it, ...). The trend adds three commands to that same pipeline (HINCRBY
the outcome and the gateway in this minute's bucket, EXPIRE it). Side by side in one run,
alternating rounds against one Redis: the ending's pipeline as it was, and with the trend
commands; wall time per ending and Redis's own CPU (INFO commandstats) per ending.

    python bench/trend_cost.py [--sends 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from harness import bench

from wxtasks.keys import Keys
from wxtasks.runtime import redis_client
from wxtasks.trends import count_send


class _Msg:
    app_id = "acct-00001"


def _redis_cpu_us(client: Any) -> float:
    stats = client.info("commandstats")
    return float(sum(v["usec"] for v in stats.values()))


def ending(client: Any, keys: Keys, with_trend: bool) -> None:
    """The shape of SendPipeline.finish for a sent message from the outbox."""
    pipe = client.pipeline(transaction=False)
    claim = keys.claim("acct-00001", "d1g3st")
    pipe.hset(claim, mapping={"status": "sent", "msgId": "1", "newMsgId": "7000000000001"})
    pipe.hincrby(keys.send_stats, "sent", 1)
    if with_trend:
        count_send(pipe, keys, "sent", _Msg(), lambda _a: "default")
    pipe.hdel(keys.outbox_messages, "task-1")
    pipe.zrem(keys.outbox_inflight, "task-1")
    pipe.execute()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sends", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    with bench() as b:
        client = redis_client(b.redis.url)
        keys = Keys("wx")
        results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for _ in range(args.rounds):
            for with_trend in (False, True):
                client.config_resetstat()
                started = time.perf_counter()
                for _ in range(args.sends):
                    ending(client, keys, with_trend)
                wall = (time.perf_counter() - started) / args.sends * 1e6
                cpu = _redis_cpu_us(client) / args.sends
                results[with_trend].append((wall, cpu))
        print(f"{args.sends} endings x {args.rounds} alternating rounds, one client, loopback\n")
        for with_trend, label in ((False, "the ending as it was"), (True, "with the trend")):
            walls = [w for w, _ in results[with_trend]]
            cpus = [c for _, c in results[with_trend]]
            print(
                f"  {label:<22} wall {statistics.median(walls):6.1f} µs per ending "
                f"(rounds {min(walls):.1f}-{max(walls):.1f})   Redis CPU "
                f"{statistics.median(cpus):5.2f} µs"
            )
        base = statistics.median([w for w, _ in results[False]])
        more = statistics.median([w for w, _ in results[True]])
        cpu_more = statistics.median([c for _, c in results[True]]) - statistics.median(
            [c for _, c in results[False]]
        )
        print(
            f"\nthe trend adds {more - base:+.1f} µs wall ({more / base:.2f}x) and "
            f"{cpu_more:+.2f} µs of Redis CPU per send; round trips per send: unchanged (1)"
        )
        client.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
