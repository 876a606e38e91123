"""What the Overview's counting costs a send (goal: no extra round trip, a few µs).

A message's ending is one script, ``lua/finish.lua`` (the claim's record, the outcome
count, the dead letter, the outbox forgetting it, ...). The trend adds four commands to
that script (HINCRBY the outcome and the gateway in this minute's bucket, the dead letter
when there is one, EXPIRE). Side by side in one run, alternating rounds against one
Redis: the script as it was (``--before``, from git) and as it is now, for a sent message
from the outbox; wall time per ending and Redis's own CPU (INFO commandstats) per ending.

    python bench/trend_cost.py [--sends 20000] [--rounds 5] [--before main]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness import bench

from wxtasks.keys import Keys
from wxtasks.runtime import redis_client
from wxtasks.trends import TTL_S, minute_of

ROOT = Path(__file__).resolve().parent.parent


def _redis_cpu_us(client: Any) -> float:
    stats = client.info("commandstats")
    return float(sum(v["usec"] for v in stats.values() if "usec" in v))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sends", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before", default="main", help="the revision of finish.lua to compare")
    args = parser.parse_args(argv)
    old_text = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{args.before}:wxtasks/lua/finish.lua"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    new_text = (ROOT / "wxtasks" / "lua" / "finish.lua").read_text()
    if "KEYS[9]" in old_text and "trend" in old_text:
        raise SystemExit(f"{args.before}'s finish.lua already counts the trend: pick another")
    with bench() as b:
        client = redis_client(b.redis.url)
        keys = Keys("wx")
        scripts = {
            "before": client.register_script(old_text),
            "now": client.register_script(new_text),
        }
        base_keys = [
            keys.send_stats,
            keys.deadletters,
            keys.deadletters_order,
            keys.outbox_messages,
            keys.outbox_inflight,
            keys.outbox_campaign_of,
            keys.outbox_to_group,
            keys.events,
        ]

        def end(which: str, i: int) -> None:
            now = time.time()
            argv_ = [f"t{i}", "sent", f"{now:.3f}", "", "1", "7000000000001", "", "", "", -1]
            argv_ += ["", "0", "acct-00001", "", 10_000]
            if which == "now":
                scripts["now"](
                    keys=[*base_keys, keys.trends(minute_of(now))],
                    args=[*argv_, "default", TTL_S],
                )
            else:
                scripts["before"](keys=base_keys, args=argv_)

        results: dict[str, list[tuple[float, float]]] = {"before": [], "now": []}
        for _ in range(args.rounds):
            for which in ("before", "now"):
                client.config_resetstat()
                started = time.perf_counter()
                for i in range(args.sends):
                    end(which, i)
                wall = (time.perf_counter() - started) / args.sends * 1e6
                cpu = _redis_cpu_us(client) / args.sends
                results[which].append((wall, cpu))
        print(
            f"{args.sends} endings (a sent message) x {args.rounds} alternating rounds, "
            "one client, loopback\n"
        )
        for which, label in (("before", f"finish.lua at {args.before}"), ("now", "with the trend")):
            walls = [w for w, _ in results[which]]
            cpus = [c for _, c in results[which]]
            print(
                f"  {label:<22} wall {statistics.median(walls):6.1f} µs per ending "
                f"(rounds {min(walls):.1f}-{max(walls):.1f})   Redis CPU "
                f"{statistics.median(cpus):5.2f} µs"
            )
        med = {w: statistics.median([x for x, _ in results[w]]) for w in results}
        cpu = {w: statistics.median([c for _, c in results[w]]) for w in results}
        print(
            f"\nthe trend adds {med['now'] - med['before']:+.1f} µs wall "
            f"({med['now'] / med['before']:.2f}x) and {cpu['now'] - cpu['before']:+.2f} µs of "
            "Redis CPU per ending; round trips per ending: unchanged (1)"
        )
        client.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
