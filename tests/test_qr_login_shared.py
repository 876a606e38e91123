"""A QR login kept in Redis: two console processes behind a round-robin proxy complete one
end to end (real Redis, the simulator, real console processes; no sticky sessions)."""

from __future__ import annotations

import itertools
import re
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from tests.conftest import Simulator, build, settings_for
from tests.console_support import PASSWORD, USER, ConsoleProcess, start_console
from wxtasks.accounts.machine import State
from wxtasks.dev.stack import Supervisor, wait_until
from wxtasks.runtime import redis_client

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}


class RoundRobin:
    """An HTTP proxy that hands each request to the next backend in turn."""

    def __init__(self, backends: list[str]) -> None:
        self.backends = itertools.cycle(backends)
        self.served: Counter[str] = Counter()
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def _forward(self) -> None:
                with proxy.lock:
                    backend = next(proxy.backends)
                    proxy.served[backend] += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
                reply = requests.request(
                    self.command,
                    backend + self.path,
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                    timeout=30,
                )
                self.send_response(reply.status_code)
                for k, v in reply.headers.items():
                    if k.lower() not in HOP:
                        self.send_header(k, v)
                self.send_header("X-Backend", backend)
                self.send_header("Content-Length", str(len(reply.content)))
                self.end_headers()
                self.wfile.write(reply.content)

            do_GET = do_POST = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def consoles(
    redis_url: str, simulator: Simulator, supervisor: Supervisor
) -> Iterator[list[ConsoleProcess]]:
    settings = settings_for(redis_url, simulator)
    # one deployment: the same users and session secret on every console process
    env = {"WXTASKS_CONSOLE_SECRET": "shared-console-secret-for-this-test"}
    procs = [start_console(supervisor, settings, **env) for _ in range(2)]
    yield procs
    for proc in procs:
        supervisor.stop(proc.child, timeout_s=5)


def test_two_console_processes_behind_round_robin_complete_a_qr_login(
    consoles: list[ConsoleProcess], simulator: Simulator, redis_url: str
) -> None:
    client = redis_client(redis_url)
    store = build(client, settings_for(redis_url, simulator)).accounts
    simulator.set_online("rr-01", False)  # no session at the gateway: a human must scan
    store.register("rr-01")
    proxy = RoundRobin([c.url for c in consoles])
    try:
        http = requests.Session()
        http.auth = (USER, PASSWORD)
        http.headers["X-CSRF-Token"] = http.get(proxy.url + "/api/session", timeout=10).json()[
            "csrf_token"
        ]
        page = proxy.url + "/accounts/rr-01/login"
        started = http.post(page + "/start", allow_redirects=False, timeout=30)
        assert started.status_code == 302, started.text

        def phase() -> tuple[str, str, str]:
            reply = http.get(page + "/status", timeout=10)
            assert reply.status_code == 200, reply.text
            found = re.search(r'id="qr-phase">(\w+)<', reply.text)
            assert found, reply.text
            return found.group(1), reply.headers["X-Backend"], reply.text

        # both processes show the same login (the QR code one of them asked for)
        seen = {backend: text for _, backend, text in [phase(), phase()]}
        images = {re.search(r'id="qr-image" src="([^"]+)"', t).group(1) for t in seen.values()}
        assert len(seen) == 2 and len(images) == 1
        assert all(phase()[0] == "waiting" for _ in range(4))
        assert store.get("rr-01").state is State.LOGGING_IN

        simulator.admin("scan", {"appId": "rr-01", "captcha": "135790"})
        wait_until(lambda: phase()[0] == "captcha", 30, 0.3, "the gateway to ask for the code")
        # the code goes to whichever process the proxy picks; the other one may poll next
        assert http.post(page + "/captcha", data={"code": "135790"}, timeout=30).ok
        wait_until(lambda: phase()[0] == "confirmed", 30, 0.3, "the login to be confirmed")
        account = store.get("rr-01")
        assert account.state is State.ONLINE and account.wxid == "wxid_rr-01"
        # every process tells the same story, and both took part
        assert {phase()[0] for _ in range(4)} == {"confirmed"}
        assert len(proxy.served) == 2 and min(proxy.served.values()) >= 5
        # the gateway was asked about once per poll period in all, not once per process
        assert simulator.calls("/login/checkLogin") <= 12
    finally:
        proxy.close()
        client.close()
