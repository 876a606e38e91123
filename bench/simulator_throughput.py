"""How many sends per second the gateway simulator serves (goal: >= 3,000 on 2 cores).

Side by side in one run: the simulator vs. a bare stdlib ThreadingHTTPServer answering the
same envelope with no logic, both loaded by the same client processes (keep-alive
connections, raw http.client) for the same time.

    python bench/simulator_throughput.py [--seconds 5] [--clients 3] [--conns 8]
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

from wxtasks.dev.redis_server import free_port
from wxtasks.dev.stack import Supervisor, wait_until

TOKEN = "bench-token"
BODY = json.dumps({"appId": "bench-1", "toWxid": "wxid_x", "content": "hello"}).encode()


def _client(port: int, seconds: float, conns: int, out: mp.Queue) -> None:
    done = 0
    stop = time.monotonic() + seconds
    errors = 0

    def loop() -> None:
        nonlocal done, errors
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        headers = {"VideosApi-token": TOKEN, "Content-Type": "application/json"}
        while time.monotonic() < stop:
            conn.request("POST", "/message/postText", BODY, headers)
            reply = conn.getresponse().read()
            if b'"ret": 200' in reply or b'"ret":200' in reply:
                done += 1
            else:
                errors += 1

    threads = [threading.Thread(target=loop) for _ in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put((done, errors))


def load(port: int, seconds: float, clients: int, conns: int) -> tuple[float, int]:
    out: mp.Queue = mp.Queue()
    procs = [mp.Process(target=_client, args=(port, seconds, conns, out)) for _ in range(clients)]
    started = time.monotonic()
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    elapsed = time.monotonic() - started
    return sum(d for d, _ in results) / elapsed, sum(e for _, e in results)


class Bare(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        raw = json.dumps({"ret": 200, "msg": "ok", "data": {"msgId": 1}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--conns", type=int, default=8)
    args = parser.parse_args()

    sup = Supervisor()
    port = free_port()
    try:
        sup.start(
            "simulator",
            [sys.executable, "-m", "wxtasks", "simulator", "--port", str(port)],
            {"VIDEOS_API_TOKEN": TOKEN},
        )
        wait_until(lambda: _ok(f"http://127.0.0.1:{port}/admin/stats"), 20)
        sim_rate, sim_err = load(port, args.seconds, args.clients, args.conns)
        recorded = requests.get(f"http://127.0.0.1:{port}/admin/stats").json()["sends"]
    finally:
        sup.stop_all()

    bare = ThreadingHTTPServer(("127.0.0.1", 0), Bare)
    threading.Thread(target=bare.serve_forever, daemon=True).start()
    bare_rate, bare_err = load(bare.server_address[1], args.seconds, args.clients, args.conns)
    bare.shutdown()

    print(f"simulator : {sim_rate:8.0f} sends/s  ({recorded} recorded, {sim_err} errors)")
    print(f"bare http : {bare_rate:8.0f} req/s    ({bare_err} errors)")
    print(f"ratio simulator / bare stdlib server: {sim_rate / bare_rate:.2f}")
    print(
        f"ratio simulator / 3,000 goal       : {sim_rate / 3000:.2f}  "
        f"({'PASS' if sim_rate >= 3000 else 'FAIL'})"
    )


def _ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=0.5).ok
    except requests.RequestException:
        return False


if __name__ == "__main__":
    main()
