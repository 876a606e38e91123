"""One gateway of 50 goes down: does anybody else notice?

50 simulated gateways (one simulator process, ports P .. P+49, a token each) x 2 accounts,
real workers and beat. Two runs side by side: one with no outage, one where gateway 1
answers 503 for ``--outage-s`` (60 by default). During the run every account but gateway
1's sends at a steady pace. Printed:

- the other 98 accounts' send latency (enqueue -> gateway, p50 / p99) and heartbeat
  lateness (p50 / p99), each as a ratio outage / no outage (goal ~1.0);
- calls to the down gateway per account per minute while it was down.

    python bench/gateway_outage.py [--outage-s 60] [--heartbeat-s 10]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import Any

import requests
from celery import Celery
from harness import Bench, _ok, bench, percentile

from wxtasks.accounts.machine import Event
from wxtasks.dev.redis_server import free_port
from wxtasks.dev.stack import wait_until
from wxtasks.runtime import Runtime, redis_client

N_GATEWAYS = 50
PREFIX = "bench-gw-"
HB_PATH = "/login/checkOnline"


def url(port: int, i: int) -> str:
    return f"http://127.0.0.1:{port + i - 1}"


def run(
    b: Bench, port: int, outage_s: float, window_s: float, heartbeat_s: float, pace: float
) -> dict[str, Any]:
    settings = b.settings(
        heartbeat_interval_s=heartbeat_s,
        rate_per_second=1000,
        burst=1000,
        account_rate_per_second=100,
        account_burst=100,
        gateway_down_failures=3,
        gateway_down_after_s=2,
        gateway_probe_interval_s=heartbeat_s / 2,
    )
    r = redis_client(settings.redis_url)
    registry = Runtime(settings).gateways
    store = Runtime(settings).accounts
    env = {}
    accounts: dict[int, list[str]] = {}
    for i in range(1, N_GATEWAYS + 1):
        var = f"BENCH_GW_TOKEN_{i}"
        env[var] = f"{PREFIX}{i}"
        registry.add(f"gw-{i}", base_url=url(port, i), profile="videosapi", token_env=var)
        accounts[i] = [f"g{i:02d}-a", f"g{i:02d}-b"]
        for app_id in accounts[i]:
            store.register(app_id, gateway=f"gw-{i}")
            store.transition(app_id, Event.LOGIN_SUCCEEDED)
    others = [a for i in range(2, N_GATEWAYS + 1) for a in accounts[i]]
    base_env = b.env(settings)
    b.env = lambda s: {**base_env, **env}  # type: ignore[method-assign]
    workers = b.workers(settings, instances=1, concurrency=3, queues="send")
    workers += b.workers(settings, instances=1, concurrency=2, queues="control")
    beat = b.beat(settings)
    time.sleep(heartbeat_s * 1.5)  # every account heartbeats once before measuring
    r.delete("wx:stats:heartbeat_lateness")
    producer = Celery(broker=settings.broker_url, backend=settings.redis_url)
    sent_at: dict[str, float] = {}
    stop = threading.Event()

    def produce() -> None:
        n = 0
        while not stop.is_set():
            app_id = others[n % len(others)]
            content = f"o{n}"
            sent_at[content] = time.time()
            producer.send_task(
                "wxtasks.send_text",
                kwargs={"app_id": app_id, "to_wxid": "wxid_x", "content": content},
                queue="send",
            )
            n += 1
            time.sleep(1 / pace)

    thread = threading.Thread(target=produce, daemon=True)
    calls_down = 0.0
    thread.start()
    if outage_s:
        requests.post(url(port, 1) + "/admin/faults", json={"outage": True}, timeout=5)
        before = _calls(port, 1)
        time.sleep(outage_s)
        calls_down = _calls(port, 1) - before
        requests.post(url(port, 1) + "/admin/faults", json={"outage": False}, timeout=5)
        time.sleep(heartbeat_s * 2)
    else:
        time.sleep(window_s)
    stop.set()
    thread.join()
    time.sleep(3)
    latency = []
    for i in range(2, N_GATEWAYS + 1):
        for s in requests.get(url(port, i) + "/admin/sends", timeout=30).json()["sends"]:
            if s["content"] in sent_at:
                latency.append(float(s["at"]) - sent_at[s["content"]])
    lateness = [float(x) for x in r.lrange("wx:stats:heartbeat_lateness", 0, -1)]
    producer.close()
    b.stop_workers([*workers, beat])
    r.flushall()
    for i in range(1, N_GATEWAYS + 1):
        requests.post(url(port, i) + "/admin/reset", json={}, timeout=5)
    r.close()
    return {
        "latency_p50": percentile(latency, 0.5),
        "latency_p99": percentile(latency, 0.99),
        "lateness_p50": percentile(lateness, 0.5),
        "lateness_p99": percentile(lateness, 0.99),
        "sends": len(latency),
        "calls_per_account_minute": calls_down / 2 / (outage_s / 60) if outage_s else 0.0,
    }


def _calls(port: int, i: int) -> int:
    stats = requests.get(url(port, i) + "/admin/stats", timeout=5).json()
    return int(sum(stats["calls"].values()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--outage-s", type=float, default=60.0)
    parser.add_argument("--heartbeat-s", type=float, default=10.0)
    parser.add_argument("--pace", type=float, default=20.0, help="sends per second")
    opts = parser.parse_args()
    window = opts.outage_s + opts.heartbeat_s * 2  # the same length as the outage run
    with bench() as b:
        port = free_port()
        sim = b.supervisor.start(
            "fleet-simulator",
            [sys.executable, "-m", "wxtasks", "simulator", "--port", str(port),
             "--gateways", str(N_GATEWAYS), "--token-prefix", PREFIX],
        )  # fmt: skip
        wait_until(
            lambda: _ok(url(port, N_GATEWAYS) + "/admin/stats"),
            30,
            what="50 simulated gateways",
        )
        calm = run(b, port, 0.0, window, opts.heartbeat_s, opts.pace)
        storm = run(b, port, opts.outage_s, window, opts.heartbeat_s, opts.pace)
        b.supervisor.stop(sim)
    print(f"50 gateways x 2 accounts; gateway 1 down {opts.outage_s:g}s; others send "
          f"{opts.pace:g}/s; heartbeat every {opts.heartbeat_s:g}s")  # fmt: skip
    for key in ("latency_p50", "latency_p99", "lateness_p50", "lateness_p99"):
        a, o = calm[key], storm[key]
        print(f"  other 98 accounts {key:<13} no outage {a * 1000:7.1f} ms   "
              f"outage {o * 1000:7.1f} ms   ratio {o / a if a else float('nan'):.2f}")  # fmt: skip
    print(f"  sends measured: {calm['sends']} / {storm['sends']}")
    print(f"  calls to the down gateway: {storm['calls_per_account_minute']:.1f} per account "
          "per minute while down")  # fmt: skip


if __name__ == "__main__":
    main()
