"""`wxtasks dev` as a new user meets it: one command, then Flower, the CLI and the REST
API work, and SIGTERM leaves no process behind."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import requests

from wxtasks.dev.redis_server import free_port
from wxtasks.dev.stack import wait_until

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_dev_runs_the_whole_stack_and_stops_cleanly(tmp_path: Path) -> None:
    redis_port, flower, sim, metrics = free_port(), free_port(), free_port(), free_port()
    callbacks, console = free_port(), free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("WXTASKS_", "WECHATAPI_", "CELERY_", "VIDEOS_"))
    }
    env["WXTASKS_REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"  # nothing answers there
    dev = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wxtasks",
            "dev",
            "--accounts",
            "5",
            "--flower-port",
            str(flower),
            "--simulator-port",
            str(sim),
            "--metrics-port",
            str(metrics),
            "--callback-port",
            str(callbacks),
            "--console-port",
            str(console),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []  # what the newcomer reads in the first terminal
    reader = threading.Thread(target=lambda: lines.extend(dev.stdout or []), daemon=True)
    reader.start()
    try:

        def workers() -> list[str]:
            try:
                reply = requests.get(f"http://127.0.0.1:{flower}/api/workers", timeout=2)
                return sorted(reply.json()) if reply.ok else []
            except requests.RequestException:
                return []

        names = wait_until(
            lambda: len(workers()) == 2 and workers(), 90, 0.5, "Flower to list both workers"
        )
        assert [n.split("@")[0] for n in names] == ["control", "send"]
        tree = _descendants(dev.pid)

        cli_env = env  # a second terminal: the same environment, nothing more
        listed = subprocess.run(
            [sys.executable, "-m", "wxtasks", "accounts", "list", "--json"],
            env=cli_env,
            capture_output=True,
            text=True,
            check=True,
        )
        accounts = {a["app_id"]: a["state"] for a in json.loads(listed.stdout)}
        # five demo accounts ONLINE, and demo-qr waiting for a human to scan its QR code
        assert accounts == {**{f"demo-{i:02d}": "ONLINE" for i in range(1, 6)}, "demo-qr": "IDLE"}
        banner = wait_until(
            lambda: next((x for x in lines if "console: http" in x), None), 30, 0.2, "banner"
        )
        # the banner's callback URL carries this run's real secret: the receiver takes it
        hook = next(x for x in lines if "callbacks: POST" in x).split("POST ", 1)[1].strip()
        assert "<" not in hook and requests.post(hook, data=b"{}", timeout=5).status_code == 400
        assert requests.post(hook + "x", data=b"{}", timeout=5).status_code == 403
        # `gateways list` and `check` say the same about the simulator's token (a second
        # terminal finds the simulator at the default port; this test's is another)
        cli_env = {**env, "WECHATAPI_BASE_URL": f"http://127.0.0.1:{sim}"}
        gws = subprocess.run(
            [sys.executable, "-m", "wxtasks", "gateways", "list", "--json"],
            env=cli_env,
            capture_output=True,
            text=True,
            check=True,
        )
        assert json.loads(gws.stdout)[0]["token"] == "none"
        checked = subprocess.run(
            [sys.executable, "-m", "wxtasks", "check"], env=cli_env, capture_output=True, text=True
        )
        gateway_line = next(x for x in checked.stdout.splitlines() if " gateway " in x)
        assert gateway_line.startswith("ok") and "without a token" in gateway_line

        reply = requests.post(
            f"http://127.0.0.1:{flower}/api/task/send-task/wxtasks.send_text",
            json={
                "kwargs": {"app_id": "demo-01", "to_wxid": "wxid_friend", "content": "from flower"},
                "queue": "send",
            },
            timeout=10,
        )
        assert reply.ok, reply.text

        def delivered() -> bool:
            sends = requests.get(f"http://127.0.0.1:{sim}/admin/sends", timeout=2).json()
            return any(s["content"] == "from flower" for s in sends["sends"])

        wait_until(delivered, 30, 0.2, "the message at the gateway")

        # a user kills the send worker: `wxtasks dev` starts it again and sends still flow
        def send_worker() -> int | None:
            for pid in _descendants(dev.pid):
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        cmd = f.read().split(b"\0")
                except OSError:
                    continue
                if b"send@%h" in cmd and _alive(pid) and _ppid(pid) == dev.pid:
                    return pid
            return None

        first = wait_until(send_worker, 10, 0.2, "the send worker")
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: send_worker() not in (None, first), 30, 0.2, "a new send worker")
        tree |= _descendants(dev.pid)
        requests.post(
            f"http://127.0.0.1:{flower}/api/task/send-task/wxtasks.send_text",
            json={
                "kwargs": {"app_id": "demo-03", "to_wxid": "w", "content": "after the kill"},
                "queue": "send",
            },
            timeout=10,
        )
        wait_until(
            lambda: any(
                s["content"] == "after the kill"
                for s in requests.get(f"http://127.0.0.1:{sim}/admin/sends", timeout=2).json()[
                    "sends"
                ]
            ),
            60,
            0.3,
            "a send after the worker was killed",
        )

        # the simulator pushes callbacks to the stack's receiver
        message = {
            "NewMsgId": 42,
            "MsgType": 1,
            "FromUserName": {"string": "wxid_c"},
            "ToUserName": {"string": "wxid_demo-02"},
            "Content": {"string": "hi"},
        }
        requests.post(
            f"http://127.0.0.1:{sim}/admin/push",
            timeout=5,
            json={"appId": "demo-02", "typeName": "AddMsg", "data": message},
        )

        def received() -> list[dict[str, object]]:
            out = subprocess.run(
                [sys.executable, "-m", "wxtasks", "inbound", "list", "--json"],
                env=cli_env,
                capture_output=True,
                text=True,
                check=True,
            )
            return list(json.loads(out.stdout))

        got = wait_until(received, 30, 0.5, "the pushed message recorded")
        assert got[0]["new_msg_id"] == "42" and got[0]["app_id"] == "demo-02"
        assert (
            'wxtasks_accounts{state="ONLINE"} 5.0'
            in requests.get(f"http://127.0.0.1:{metrics}/metrics", timeout=5).text
        )
        # the console runs too, behind a login made for this run (printed, never a default)
        assert requests.get(f"http://127.0.0.1:{console}/login", timeout=5).ok
        assert requests.get(f"http://127.0.0.1:{console}/accounts", timeout=5).status_code == 401

        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if chromium:
            # the README's QR login, as a newcomer follows it: the login the banner printed,
            # Accounts, "log in" next to demo-qr, show the code, "simulate scan"
            user, password = re.search(r"user (\S+), role admin, password (\S+)\)", banner).groups()
            _qr_login_in_the_console(
                chromium, f"http://127.0.0.1:{console}", user, password, tmp_path
            )
            after = subprocess.run(
                [sys.executable, "-m", "wxtasks", "accounts", "show", "demo-qr"],
                env=cli_env,
                capture_output=True,
                text=True,
                check=True,
            )
            assert json.loads(after.stdout)["state"] == "ONLINE"
            dom = subprocess.run(
                [
                    chromium,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--no-first-run",
                    f"--user-data-dir={tmp_path / 'chromium'}",
                    "--virtual-time-budget=5000",
                    "--dump-dom",
                    f"http://127.0.0.1:{flower}/",
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            for name in names:
                assert name in dom.stdout, f"{name} not on Flower's page"
    finally:
        dev.send_signal(signal.SIGTERM)
        dev.wait(timeout=60)
        reader.join(timeout=10)
        if dev.stdout is not None:
            dev.stdout.close()
    assert "stopped" in "".join(lines)
    left = [pid for pid in tree if _alive(pid)]
    assert left == [], f"processes left behind: {left}"


def _qr_login_in_the_console(chromium: str, url: str, user: str, password: str, tmp: Path) -> None:
    sync_api: Any = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=os.path.realpath(chromium),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--no-first-run"],
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(40_000)
            page.goto(url)
            page.fill("input[name=username]", user)
            page.fill("input[name=password]", password)
            page.click("button[type=submit]")
            page.wait_for_url("**/overview")
            page.click("header nav >> text=Accounts")
            page.click("#acct-demo-qr a.act")  # "log in" next to the account that needs it
            page.click("#start-login")
            page.wait_for_url("**/accounts/demo-qr/login")
            page.locator("#qr-image").wait_for()
            page.screenshot(path=str(tmp / "dev-qr-1-code.png"), full_page=True)
            page.click("#simulate-scan")
            page.locator("#qr-phase").filter(has_text="confirmed").wait_for()
            page.screenshot(path=str(tmp / "dev-qr-2-confirmed.png"), full_page=True)
            assert "demo-qr is ONLINE" in page.locator("#qr-result").inner_text()
        finally:
            browser.close()
