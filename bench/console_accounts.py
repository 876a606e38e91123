"""The console's accounts page with 10,000 accounts (goal: p99 <= 300 ms server side).

A `wxtasks console` process serves a Redis holding 10,000 accounts (five states, tags);
one client, then four at once, fetch the page a browser loads (unfiltered, by state, by
tag, a later page) and the fragment its live table polls every 2 s. The server's own time
comes from its ``Server-Timing`` header; the client's time (loopback) is printed beside it.

Side by side in one run, in this process against the same Redis, what one page costs
built three ways: the console's (a shared (state, tags) index, refreshed in the background
once a second, plus one page of full records), the same with the index read afresh for
every request, and the naive way (every record read in full, then filtered and sliced).

    python bench/console_accounts.py [--accounts 10000] [--requests 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Callable

import requests
from harness import bench, percentile

from wxtasks.accounts.machine import State
from wxtasks.accounts.store import AccountStore
from wxtasks.console.views import PAGE_SIZE, AccountIndex, accounts_page
from wxtasks.dev.redis_server import free_port
from wxtasks.dev.stack import wait_until
from wxtasks.runtime import Runtime

USER, PASSWORD = "bench", "bench-password"
URLS = [
    "/accounts",
    "/accounts?state=ERROR",
    "/accounts?tag=vip&page=3",
    "/accounts?page=150",
    "/accounts?part=rows",
]
STATES = [State.ONLINE] * 14 + [State.RECONNECTING, State.IDLE, State.ERROR, State.LOGGING_IN]


def fill(store: AccountStore, n: int) -> None:
    """n accounts in a spread of states and tags, written as the registry writes them."""
    now = time.time()
    pipe = store.redis.pipeline(transaction=False)
    for i in range(n):
        app_id = f"acct-{i:05d}"
        tags = '["vip"]' if i % 20 == 0 else '["bulk", "north"]' if i % 2 else '["south"]'
        pipe.hset(
            store.keys.account(app_id),
            mapping={
                "state": STATES[i % len(STATES)].value,
                "version": "3",
                "retry_count": str(i % 4),
                "tags": tags,
                "note": f"shop {i}",
                "created_at": f"{now - 86400:.3f}",
                "state_since": f"{now - i % 3600:.3f}",
                "last_heartbeat_at": f"{now - i % 30:.3f}",
                "wxid": f"wxid_{i}",
                "nick_name": f"客服{i}",
            },
        )
        pipe.sadd(store.keys.accounts, app_id)
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()


def fetch(http: requests.Session, url: str, n: int) -> tuple[list[float], list[float]]:
    server, client = [], []
    for _ in range(n):
        started = time.perf_counter()
        reply = http.get(url, timeout=30)
        client.append((time.perf_counter() - started) * 1000)
        reply.raise_for_status()
        server.append(float(reply.headers["Server-Timing"].split("dur=")[1]))
    return server, client


def line(name: str, server: list[float], client: list[float]) -> str:
    return (
        f"  {name:<28} server p50 {percentile(server, 0.5):6.1f} ms  p99 "
        f"{percentile(server, 0.99):6.1f} ms   client p50 {percentile(client, 0.5):6.1f} ms  "
        f"p99 {percentile(client, 0.99):6.1f} ms"
    )


def timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args(argv)
    with bench() as b:
        settings = b.settings(console_users=f"{USER}:{PASSWORD}")
        store = Runtime(settings).accounts
        started = time.perf_counter()
        fill(store, args.accounts)
        print(f"{args.accounts} accounts written in {time.perf_counter() - started:.1f}s")
        port = free_port()
        b.supervisor.start(
            "console",
            [
                sys.executable,
                "-m",
                "wxtasks",
                "console",
                "--port",
                str(port),
                "--server-timing",  # the header is off outside benchmarks
            ],
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
        http.get(base + "/accounts", timeout=30)  # warm up: templates, connections
        all_server: list[float] = []

        print(f"\nHTTP, one client, {args.requests} requests per URL ({PAGE_SIZE} rows a page):")
        for url in URLS:
            server, client = fetch(http, base + url, args.requests)
            all_server += server
            print(line(url, server, client))

        print("\nHTTP, four clients at once (operators' tabs polling together), /accounts:")
        results: list[tuple[list[float], list[float]]] = []

        def worker() -> None:
            session = requests.Session()
            session.auth = (USER, PASSWORD)
            results.append(fetch(session, base + "/accounts", args.requests // 2))

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        server = [x for s, _ in results for x in s]
        client = [x for _, c in results for x in c]
        all_server += server
        print(line("/accounts x4", server, client))

        print("\nIn process, the same Redis, one page (unfiltered / state=ERROR):")
        shared = AccountIndex(store)
        accounts_page(shared)  # the first page builds the index; later ones share it

        def naive(state: str | None) -> object:
            items = store.list(state)
            return items[:PAGE_SIZE]

        n = max(10, args.requests // 4)
        rows = {
            "console (shared index)": (
                timed(lambda: accounts_page(shared), n),
                timed(lambda: accounts_page(shared, state="ERROR"), n),
            ),
            "fresh index per request": (
                timed(lambda: accounts_page(shared, fresh=True), n),
                timed(lambda: accounts_page(shared, state="ERROR", fresh=True), n),
            ),
            "naive: read every record": (
                timed(lambda: naive(None), n),
                timed(lambda: naive("ERROR"), n),
            ),
        }
        base_p50 = statistics.median(rows["naive: read every record"][0])
        for name, (plain, filtered) in rows.items():
            print(
                f"  {name:<26} p50 {statistics.median(plain):6.1f} ms  p99 "
                f"{percentile(plain, 0.99):6.1f} ms  | by state p50 "
                f"{statistics.median(filtered):6.1f} ms  | "
                f"{base_p50 / statistics.median(plain):5.1f}x faster than naive"
            )
        p99 = percentile(all_server, 0.99)
        verdict = "OK" if p99 <= 300 else "MISSED"
        print(f"\nserver-side p99, every HTTP request: {p99:.1f} ms (goal <= 300 ms): {verdict}")
        return 0 if p99 <= 300 else 1


if __name__ == "__main__":
    sys.exit(main())
