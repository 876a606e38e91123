"""Reply latency while every account runs a 群发 backlog, before and after the outbox.

Scenario (issue 10, "replies go ahead of campaigns"): the seed's limits (global 5/s burst
10, account 1/s burst 2), v1 profile, one worker instance x 2 processes and a beat;
10 accounts each run a 60-recipient ``bulk_send`` (120 s of sends at 5/s); 8 s in, every
account replies to a customer (10 replies, ``send_text``). Latency = enqueue -> the
simulator accepting the reply.

"Before" is the previous design (commit 74f3495: waiting messages are countdown retries
in the broker, bulk_send fans out send_text tasks), run from a temporary git worktree of
that commit with its own ``wxtasks`` and ``workers`` packages; "after" is this tree. Both
run in one invocation, one after the other, on the same machine.

Goal: after, the slowest reply is at the gateway within 3 s.

    python bench/reply_latency.py [--quick] [--before-tree /tmp/wx-before]

``--quick``: 3 accounts x 20 recipients, replies 4 s in.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
BEFORE_COMMIT = "74f3495"
TOKEN = "bench-token"


# -- one side's scenario, run in a child process against that side's code ---------------------


def scenario(accounts_n: int, recipients: int, reply_after_s: float) -> dict[str, Any]:
    """Runs with whichever ``wxtasks`` is importable (this tree's or the old one's)."""
    import requests

    try:  # this tree
        from wxtasks.dev.redis_server import RedisServer, free_port
        from wxtasks.dev.stack import Supervisor, celery_cmd, wait_until, worker_args
    except ImportError:  # the previous design's tree
        from wxtasks.redis_server import RedisServer, free_port  # type: ignore[no-redef]
        from wxtasks.stack import (  # type: ignore[no-redef]
            Supervisor,
            celery_cmd,
            wait_until,
            worker_args,
        )
    try:  # this tree: accounts are a package, the Runtime builds the store
        from wxtasks.accounts.machine import Event
        from wxtasks.runtime import Runtime

        def account_store(settings: Any) -> Any:
            return Runtime(settings).accounts
    except ImportError:  # the previous design's tree
        from wxtasks.machine import Event  # type: ignore[no-redef]

        from wxtasks.accounts import AccountStore  # type: ignore[no-redef]

        def account_store(settings: Any) -> Any:
            return AccountStore(redis_client(settings.redis_url), settings)

    from wxtasks.client import WxTasksClient
    from wxtasks.config import Settings
    from wxtasks.runtime import redis_client

    sup = Supervisor(log_dir=os.path.join(BENCH_DIR, "results", "logs", "reply_latency"))
    with RedisServer() as server:
        try:
            port = free_port()
            sim_url = f"http://127.0.0.1:{port}"
            sim_args = ["--port", str(port), "--profile", "v1"]
            sup.start(
                "simulator",
                [sys.executable, "-m", "wxtasks", "simulator", *sim_args],
                {"VIDEOS_API_TOKEN": TOKEN},
            )

            def sim_ok() -> bool:
                try:
                    return requests.get(sim_url + "/admin/stats", timeout=0.5).ok
                except requests.RequestException:
                    return False

            wait_until(sim_ok, 20, what="simulator")
            settings = Settings.from_env(
                {},
                redis_url=server.url,
                broker_url=server.url[:-1] + "1",
                gateway_base_url=sim_url,
                gateway_token=TOKEN,
                gateway_profile="v1",
                heartbeat_interval_s=3600,
            )
            assert (settings.rate_per_second, settings.burst) == (5, 10)
            assert (settings.account_rate_per_second, settings.account_burst) == (1, 2)
            env = {**settings.environ(), "WXTASKS_LOG_LEVEL": "WARNING"}
            store = account_store(settings)
            accounts = [f"shop-{i}" for i in range(accounts_n)]
            for a in accounts:
                store.register(a)
                store.transition(a, Event.LOGIN_SUCCEEDED)
                if hasattr(settings, "quiet_hours"):  # simulated accounts: any hour
                    store.update(a, pacing={"quiet_hours": ""})
            sup.start("worker", worker_args("send,control", "w", 2, "-l", "WARNING"), env)
            sup.start("beat", celery_cmd("beat", "-l", "WARNING"), env)
            client = WxTasksClient.from_settings(settings)
            wait_until(
                lambda: len(client.app.control.ping(timeout=0.5) or []) >= 1, 60, 0.2, "worker"
            )

            def sends() -> list[dict[str, Any]]:
                return list(requests.get(sim_url + "/admin/sends", timeout=30).json()["sends"])

            started = time.time()
            for a in accounts:
                client.bulk_send(a, [f"wxid_{a}_{n:02d}" for n in range(recipients)], f"{a} 的新品")
            wait_until(lambda: len(sends()) >= 1, 60, what="the campaigns to start")
            time.sleep(max(0.0, started + reply_after_s - time.time()))
            enqueued: dict[str, float] = {}
            results = []
            bulk_at_reply = len(sends())
            for a in accounts:
                enqueued[a] = time.time()
                results.append(client.send_text(a, f"customer_of_{a}", f"{a}: 您好，马上为您查询"))
            outcomes = [r.get(timeout=600)["status"] for r in results]
            at_gateway = sends()
            latency = {
                s["appId"]: s["at"] - enqueued[s["appId"]]
                for s in at_gateway
                if str(s["toWxid"]).startswith("customer_of_")
            }
            bulk = [s for s in at_gateway if not str(s["toWxid"]).startswith("customer_of_")]
            client.app.close()
            return {
                "latency": latency,
                "outcomes": outcomes,
                "bulk_sent_before_replies": bulk_at_reply,
                "bulk_sent_by_last_reply": len(bulk),
                "reply_at_s": reply_after_s,
            }
        finally:
            sup.stop_all()


# -- the comparison -------------------------------------------------------------------------


def run_side(side: str, tree: str, args: list[str]) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WXTASKS_", "CELERY_"))}
    env["PYTHONPATH"] = tree
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--side", side, *args],
        cwd=tree,  # `celery -A workers` and beat_schedule come from that tree
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return dict(json.loads(line))
    raise RuntimeError(f"{side} side failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def before_tree(path: str) -> str:
    if not os.path.exists(os.path.join(path, "wxtasks")):
        subprocess.run(
            ["git", "-C", REPO, "worktree", "add", "--detach", path, BEFORE_COMMIT],
            check=True,
            capture_output=True,
        )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--before-tree", default="/tmp/wx-before")
    parser.add_argument("--side", choices=["before", "after"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    accounts_n, recipients, reply_after_s = (3, 20, 4.0) if args.quick else (10, 60, 8.0)
    if args.side:
        print(json.dumps(scenario(accounts_n, recipients, reply_after_s)))
        return

    from harness import percentile, table

    passed = ["--quick"] if args.quick else []
    sides = {
        "before": run_side("before", before_tree(args.before_tree), passed),
        "after": run_side("after", REPO, passed),
    }
    print(
        f"\n== reply latency: {accounts_n} accounts x {recipients}-recipient bulk_send, global "
        f"5/s burst 10, account 1/s burst 2, v1, 1 worker x 2 procs + beat; one reply per "
        f"account {reply_after_s:.0f} s in =="
    )
    rows = []
    for side, r in sides.items():
        lat = sorted(r["latency"].values())
        rows.append(
            [
                f"{side} ({BEFORE_COMMIT})" if side == "before" else "after (outbox)",
                f"{len(lat)}/{accounts_n}",
                f"{percentile(lat, 0.5):.2f}",
                f"{percentile(lat, 0.99):.2f}",
                f"{max(lat):.2f}" if lat else "-",
                ",".join(sorted(set(r["outcomes"]))),
                r["bulk_sent_before_replies"],
            ]
        )
    print(
        table(
            rows,
            ["design", "replies", "p50 s", "p99 s", "max s", "outcomes", "bulk sent before"],
        )
    )
    after = max(sides["after"]["latency"].values(), default=float("inf"))
    before = max(sides["before"]["latency"].values(), default=float("inf"))
    print(
        f"max reply latency before / after: {before:.1f} s / {after:.2f} s "
        f"({before / after:.0f}x); goal after <= 3 s: {'PASS' if after <= 3.0 else 'FAIL'}"
    )
    print(f"(p99 of {accounts_n} replies is the slowest one)")


if __name__ == "__main__":
    main()
