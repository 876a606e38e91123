"""How fast the callback receiver answers a gateway (goal: a few ms; gateways give ~3 s).

Side by side in one run: the receiver (validate, publish a task, 200) against a bare
tornado handler that answers 200 without looking at the body, both hit by the same client.

    python bench/callback_latency.py [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time

import requests
from harness import bench, percentile
from tornado import web
from tornado.httpserver import HTTPServer

from wxtasks.dev.redis_server import free_port
from wxtasks.dev.stack import wait_until

SECRET = "bench-secret-0123456789abcdefghijklmn"  # 32+ characters


def measure(url: str, n: int) -> list[float]:
    session = requests.Session()
    event = {
        "TypeName": "AddMsg",
        "Appid": "acct-1",
        "Wxid": "wxid_acct",
        "Data": {
            "NewMsgId": 0,
            "MsgType": 1,
            "FromUserName": {"string": "wxid_c"},
            "ToUserName": {"string": "wxid_acct"},
            "Content": {"string": "hi"},
        },
    }
    times = []
    for i in range(n):
        event["Data"]["NewMsgId"] = 10_000 + i  # type: ignore[index]
        started = time.perf_counter()
        reply = session.post(
            url, data=json.dumps(event), headers={"Content-Type": "application/json"}, timeout=5
        )
        times.append((time.perf_counter() - started) * 1000)
        assert reply.status_code == 200, reply.text
    return times


class Bare(web.RequestHandler):
    def post(self) -> None:
        self.finish({"ok": True})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    with bench() as b:
        settings = b.settings(callback_secret=SECRET)
        port = free_port()
        b.supervisor.start(
            "callbacks",
            [sys.executable, "-m", "wxtasks", "callbacks", "--port", str(port)],
            b.env(settings),
        )
        url = f"http://127.0.0.1:{port}/callback/{SECRET}"
        wait_until(lambda: _up(url), 20, what="the receiver")
        ours = measure(url, args.requests)

    bare_port = free_port()

    def serve() -> None:
        async def run() -> None:
            HTTPServer(web.Application([(r"/callback", Bare)])).listen(bare_port, "127.0.0.1")
            await asyncio.Event().wait()

        asyncio.run(run())

    threading.Thread(target=serve, daemon=True).start()
    wait_until(lambda: _up(f"http://127.0.0.1:{bare_port}/callback"), 10)
    bare = measure(f"http://127.0.0.1:{bare_port}/callback", args.requests)
    print(
        f"receiver (validate + enqueue): p50 {percentile(ours, 0.5):.2f} ms, "
        f"p99 {percentile(ours, 0.99):.2f} ms, max {max(ours):.2f} ms"
    )
    print(
        f"bare tornado 200            : p50 {percentile(bare, 0.5):.2f} ms, "
        f"p99 {percentile(bare, 0.99):.2f} ms"
    )
    print(f"ratio receiver / bare, p50: {percentile(ours, 0.5) / percentile(bare, 0.5):.2f}")


def _up(url: str) -> bool:
    try:
        requests.post(url, data=b"{}", timeout=0.5)
        return True
    except requests.RequestException:
        return False


if __name__ == "__main__":
    main()
