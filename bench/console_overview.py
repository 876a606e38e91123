"""The console's Overview with 10,000 accounts and a full day of trends (goal: p99 <= 300 ms
server side).

Redis holds 10,000 accounts and 1,440 per-minute trend buckets (a day: every outcome,
both lanes, every state, heartbeat lateness, 50 gateways' sends and up/down). A `wxtasks
console` process serves the Overview (last hour, last day) and the fragment its charts
poll every 10 s; the server's own time comes from its ``Server-Timing`` header. The first
request of a fresh process (nothing kept yet) is shown on its own.

Side by side in one run, in this process against the same Redis: building the page the
console's way (finished minutes kept by the process, the last two read afresh) and reading
every minute of the window afresh per request; and what the once-a-minute sampler costs
with these 10,000 accounts.

    python bench/console_overview.py [--accounts 10000] [--requests 200]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time

import requests
from console_accounts import PASSWORD, USER, fetch, fill, line, timed
from harness import bench, percentile

from wxtasks.accounts.store import AccountStore
from wxtasks.console.overview import WINDOWS, build
from wxtasks.dev.redis_server import free_port
from wxtasks.dev.stack import wait_until
from wxtasks.metrics import gauges
from wxtasks.runtime import Runtime, redis_client
from wxtasks.trends import TTL_S, TrendCache, minute_of

URLS = [
    "/overview",
    "/overview?part=charts",
    "/overview?window=day",
    "/overview?window=day&part=charts",
]
GATEWAYS = [f"gw-{i:02d}" for i in range(50)]


def fill_trends(rt: Runtime, minutes: int = 1440) -> None:
    """A day of buckets shaped like the real ones (counts and sampled gauges)."""
    rng = random.Random(7)
    last = minute_of(time.time())
    pipe = rt.redis.pipeline(transaction=False)
    for m in range(last - minutes + 1, last + 1):
        fields: dict[str, float] = {
            "send:sent": rng.randint(100, 400),
            "send:duplicate": rng.randint(0, 5),
            "send:failed": rng.randint(0, 8),
            "send:unknown": rng.randint(0, 1),
            "send:cancelled": rng.randint(0, 2),
            "deadletters": rng.randint(0, 3),
            "backlog:interactive": rng.randint(0, 20),
            "backlog:bulk": rng.randint(0, 5000),
            "state:ONLINE": 9_300 + rng.randint(0, 100),
            "state:RECONNECTING": rng.randint(0, 60),
            "state:IDLE": 300,
            "state:ERROR": rng.randint(0, 10),
            "state:LOGGING_IN": rng.randint(0, 5),
            "hb_p99_ms": rng.randint(400, 1200),
            "sampled": 1,
        }
        for g in GATEWAYS:
            fields[f"gw:{g}"] = rng.randint(0, 10)
            fields[f"up:{g}"] = 0 if rng.random() < 0.01 else 1
        pipe.hset(rt.keys.trends(m), mapping=fields)
        pipe.expire(rt.keys.trends(m), TTL_S)
        if m % 200 == 0:
            pipe.execute()
    pipe.execute()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args(argv)
    with bench() as b:
        settings = b.settings(console_users=f"{USER}:{PASSWORD}")
        rt = Runtime(settings)
        store = AccountStore(redis_client(settings.redis_url), settings)
        started = time.perf_counter()
        fill(store, args.accounts)
        fill_trends(rt)
        print(
            f"{args.accounts} accounts and 1,440 minutes of trends (50 gateways) written in "
            f"{time.perf_counter() - started:.1f}s"
        )
        port = free_port()
        b.supervisor.start(
            "console",
            [sys.executable, "-m", "wxtasks", "console", "--port", str(port)],
            {**b.env(settings), "WXTASKS_CONSOLE_USERS": f"{USER}:{PASSWORD}"},
        )
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return requests.get(base + "/login", timeout=1).ok
            except requests.RequestException:
                return False

        wait_until(up, 30, what="the console")
        http = requests.Session()
        http.auth = (USER, PASSWORD)
        cold_server, cold_client = fetch(http, base + "/overview?window=day", 1)
        print(
            f"\nfirst request of a fresh process, last day (the process read the day at "
            f"start, in the background): server {cold_server[0]:.1f} ms, client "
            f"{cold_client[0]:.1f} ms"
        )
        cold = TrendCache(rt.redis, rt.keys)
        took = timed(
            lambda: build(cold, WINDOWS["day"], gateways=rt.gateways.names(), down=frozenset()), 1
        )
        print(
            f"reading and adding up a whole day afresh (what that start-up read costs): "
            f"{took[0]:.0f} ms"
        )
        all_server: list[float] = []
        print(f"\nHTTP, one client, {args.requests} requests per URL:")
        for url in URLS:
            server, client = fetch(http, base + url, args.requests)
            all_server += server
            print(line(url, server, client))

        print("\nIn process, the same Redis, one Overview built:")
        n = max(10, args.requests // 4)
        kept = TrendCache(rt.redis, rt.keys)
        names, down = rt.gateways.names(), rt.fleet.down()
        for window in WINDOWS.values():
            build(kept, window, gateways=names, down=down)  # the first one fills the cache
            ours = timed(lambda w=window: build(kept, w, gateways=names, down=down), n)
            fresh = timed(
                lambda w=window: build(TrendCache(rt.redis, rt.keys), w, gateways=names, down=down),
                n,
            )
            print(
                f"  {window.label:<10} console (finished minutes kept) p50 "
                f"{statistics.median(ours):6.1f} ms p99 {percentile(ours, 0.99):6.1f} ms  | "
                f"every minute read afresh p50 {statistics.median(fresh):6.1f} ms p99 "
                f"{percentile(fresh, 0.99):6.1f} ms  | "
                f"{statistics.median(fresh) / statistics.median(ours):5.1f}x"
            )
        sampler = timed(lambda: gauges(rt), 10)
        print(
            f"\nthe once-a-minute sampler with {args.accounts} accounts: p50 "
            f"{statistics.median(sampler):.1f} ms (control worker, once a minute)"
        )
        p99 = percentile(all_server, 0.99)
        verdict = "OK" if p99 <= 300 else "MISSED"
        print(f"\nserver-side p99, every HTTP request: {p99:.1f} ms (goal <= 300 ms): {verdict}")
        return 0 if p99 <= 300 else 1


if __name__ == "__main__":
    sys.exit(main())
