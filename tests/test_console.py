"""The console over HTTP, as a script or an attacker meets it: authentication on every
route, CSRF on every state-changing request, no gateway token in any page, the accounts
table's filters and pages, the users file and the alert's link to the QR login page."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import TOKEN, Simulator, build, settings_for
from tests.console_support import (
    PASSWORD,
    USER,
    ConsoleProcess,
    csrf_in,
    demo_accounts,
    start_console,
)
from wxtasks.accounts.machine import Event, State
from wxtasks.accounts.store import AccountStore
from wxtasks.config import Settings
from wxtasks.console.app import ROUTES
from wxtasks.console.auth import Users, hash_password, verify_password
from wxtasks.errors import ConfigError
from wxtasks.events import alert_payload, console_link

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def settings(redis_url: str, simulator: Simulator) -> Settings:
    return settings_for(redis_url, simulator)


@pytest.fixture
def store(r: Any, settings: Settings) -> AccountStore:
    return build(r, settings).accounts


@pytest.fixture
def console(supervisor: Any, settings: Settings) -> Iterator[ConsoleProcess]:
    proc = start_console(supervisor, settings)
    yield proc
    supervisor.stop(proc.child, timeout_s=5)


def _concrete(pattern: str) -> str:
    path = pattern.replace(r"([^/]+)", "demo-01").replace(r"([\w-]+)", "some-task-id")
    path = re.sub(r"\(([\w]+)(\|[\w|]+)?\)(?!\?)", r"\1", path)  # (pause|resume) -> pause
    return re.sub(r"\(.*?\)\?", "", path).replace("\\.", ".")


def _every_path() -> list[str]:
    public = {r"/favicon\.ico"}  # the tab's icon (tests/test_overview.py)
    paths = [_concrete(p) for p, _ in ROUTES if p not in public]
    return [*paths, "/static/htmx.min.js", "/static/console.css"]


def test_every_route_needs_credentials(console: ConsoleProcess, store: AccountStore) -> None:
    demo_accounts(store, 1)
    for path in _every_path():
        for method in ("GET", "POST"):
            if path == "/login":
                continue  # the form itself (its POST is checked below)
            reply = requests.request(method, console.url + path, allow_redirects=False, timeout=10)
            assert reply.status_code in (401, 405) or (
                reply.status_code == 302 and reply.headers["Location"].startswith("/login?next=")
            ), (method, path, reply.status_code)
            if reply.status_code == 401:
                assert reply.headers["WWW-Authenticate"].startswith("Basic")
        # a browser is sent to the form, and comes back where it wanted to go
        page = requests.get(console.url + path, headers={"Accept": "text/html"}, timeout=10)
        assert 'name="password"' in page.text, path
    wrong = requests.get(console.url + "/accounts", auth=(USER, "wrong"), timeout=10)
    assert wrong.status_code == 401


def test_state_changing_requests_need_the_csrf_token(
    console: ConsoleProcess, store: AccountStore
) -> None:
    demo_accounts(store, 1)
    http = console.basic()
    token = http.headers.pop("X-CSRF-Token")
    for pattern, handler in ROUTES:
        if not hasattr(handler, "post") or pattern == "/login":
            continue
        path = _concrete(pattern)
        refused = http.post(console.url + path, data={"action": "purge"}, timeout=10)
        assert refused.status_code == 403, (path, refused.status_code)
        wrong = http.post(console.url + path, data={"_csrf": "0" * 64}, timeout=10)
        assert wrong.status_code == 403, path
    # with the token the same request goes through: the options really change
    saved = http.post(
        console.url + "/accounts/demo-01/options",
        data={"_csrf": token, "note": "set by a script", "tags": "vip, north"},
        timeout=10,
    )
    assert saved.ok
    assert store.get("demo-01").note == "set by a script"
    assert store.get("demo-01").tags == ("north", "vip")
    # the login form is protected too (login CSRF)
    anonymous = requests.post(
        console.url + "/login", data={"username": USER, "password": PASSWORD}, timeout=10
    )
    assert anonymous.status_code == 403


def test_login_form_session_and_logout(console: ConsoleProcess, store: AccountStore) -> None:
    demo_accounts(store, 3)
    http = requests.Session()
    form = http.get(console.url + "/login", timeout=10)
    bad = http.post(
        console.url + "/login",
        data={"username": USER, "password": "nope", "_csrf": csrf_in(form.text)},
        timeout=10,
    )
    assert bad.status_code == 401 and "wrong user name or password" in bad.text
    http = console.form_login()
    page = http.get(console.url + "/accounts", timeout=10)
    assert page.ok and "demo-03" in page.text
    cookie = next(c for c in http.cookies if c.name == "wxtasks_console")
    assert cookie.has_nonstandard_attr("HttpOnly") or "httponly" in str(cookie._rest).lower()
    http.post(console.url + "/logout", data={"_csrf": csrf_in(page.text)}, timeout=10)
    after = http.get(console.url + "/accounts", allow_redirects=False, timeout=10)
    assert after.status_code in (302, 401)


def test_the_gateway_token_never_appears_in_a_page(
    console: ConsoleProcess, store: AccountStore, simulator: Simulator
) -> None:
    demo_accounts(store, 2)
    simulator.set_online("qr-1", False)
    store.register("qr-1")
    http = console.form_login()
    page = http.get(console.url + "/accounts/qr-1", timeout=10)
    started = http.post(
        console.url + "/accounts/qr-1/login/start", data={"_csrf": csrf_in(page.text)}, timeout=10
    )
    assert started.ok and "qr-image" in started.text
    bodies = [started.text]
    for path in [*_every_path(), "/accounts/qr-1/login/status", "/accounts?part=rows"]:
        bodies.append(http.get(console.url + path, timeout=10).text)
    bodies.append(console.basic().get(console.url + "/api/session", timeout=10).text)
    assert TOKEN
    for body in bodies:
        assert TOKEN not in body


def test_accounts_table_filters_and_pages(console: ConsoleProcess, store: AccountStore) -> None:
    for i in range(120):
        store.register(f"acct-{i:03d}", tags=["vip"] if i % 10 == 0 else ["bulk"])
        if i % 3:
            store.transition(f"acct-{i:03d}", Event.LOGIN_SUCCEEDED)
    http = console.basic()

    def rows(query: str) -> list[str]:
        html = http.get(console.url + "/accounts?part=rows&" + query, timeout=10).text
        return re.findall(r'data-app-id="([^"]+)"', html)

    first = rows("")
    assert len(first) == 50 and first[0] == "acct-000"
    assert rows("page=3") == [f"acct-{i:03d}" for i in range(100, 120)]
    assert rows("state=IDLE") == [f"acct-{i:03d}" for i in range(0, 120, 3)][:50]
    assert rows("tag=vip") == [f"acct-{i:03d}" for i in range(0, 120, 10)]
    assert rows("tag=vip&state=ONLINE") == [f"acct-{i:03d}" for i in range(0, 120, 10) if i % 3]
    assert rows("q=acct-11") == [f"acct-{i:03d}" for i in range(110, 120)]
    counts = http.get(console.url + "/accounts?part=rows", timeout=10).text
    assert re.search(r'data-state="IDLE">IDLE <b>40</b>', counts)
    assert re.search(r'data-state="ONLINE">ONLINE <b>80</b>', counts)
    assert http.get(console.url + "/accounts?state=BOGUS", timeout=10).status_code == 400


def test_passwords_are_scrypt_hashes(tmp_path: Path) -> None:
    encoded = hash_password("s3cret")
    assert encoded.startswith("scrypt$") and "s3cret" not in encoded
    assert verify_password("s3cret", encoded) and not verify_password("S3cret", encoded)
    line = (
        subprocess.run(
            [sys.executable, "-m", "wxtasks", "console", "hash-password", "--user", "amy"],
            input="pw-amy\npw-amy\n",
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    assert line.startswith("amy:scrypt$")
    users_file = tmp_path / "users"
    users_file.write_text(f"# console users\n{line}\n")
    users = Users.from_settings(
        Settings.from_env({}, console_users="bob:plain", console_users_file=str(users_file))
    )
    assert users.check("amy", "pw-amy") and users.check("amy", "pw-amy")  # second: cached
    assert users.check("bob", "plain")
    assert not users.check("amy", "nope") and not users.check("eve", "pw-amy")
    with pytest.raises(ConfigError, match="WXTASKS_CONSOLE_USERS"):
        Users.from_settings(Settings.from_env({}))
    users_file.write_text("amy:plaintext\n")
    with pytest.raises(ConfigError, match="line 1"):
        Users.from_settings(Settings.from_env({}, console_users_file=str(users_file)))


def test_console_refuses_to_start_without_users(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "wxtasks", "console", "--port", "1"],
        env={"PATH": "/usr/bin:/bin", "WXTASKS_CONSOLE_USERS": ""},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 1 and "WXTASKS_CONSOLE_USERS" in done.stderr


def test_need_login_alert_links_to_the_qr_login_page() -> None:
    settings = Settings.from_env({}, console_url="https://ops.example.com/console/")
    link = console_link(settings, "needLogin", "shop 1")
    assert link == "https://ops.example.com/console/accounts/shop%201/login"
    assert console_link(Settings.from_env({}), "needLogin", "shop-1") == ""
    assert console_link(settings, "maxRetryReached", "shop-1") == ""
    body: Any = alert_payload("dingtalk", "needLogin", "shop 1", "scan", 1_700_000_000, link)
    assert link in body["text"]["content"]
    assert alert_payload("json", "needLogin", "a", "", 0, link)["link"] == link


def test_a_logged_in_page_shows_state_and_hides_nothing_it_should_show(
    console: ConsoleProcess, store: AccountStore
) -> None:
    demo_accounts(store, 2)
    store.transition("demo-02", Event.LIVENESS_FAILED, reason="heartbeat: gateway says offline")
    assert store.get("demo-02").state is State.RECONNECTING
    page = console.basic().get(console.url + "/accounts/demo-02", timeout=10).text
    assert "RECONNECTING" in page and "heartbeat: gateway says offline" in page
    assert console.basic().get(console.url + "/accounts/nobody", timeout=10).status_code == 404


def test_campaigns_progress_pause_resume_cancel_and_report(
    console: ConsoleProcess, store: AccountStore, settings: Settings
) -> None:
    import csv
    import io
    import time

    from wxtasks.campaigns.store import Content
    from wxtasks.runtime import Runtime

    demo_accounts(store, 2)
    rt = Runtime(settings)
    targets = [("demo-01", f"wxid_{i}") for i in range(3)] + [("demo-02", "wxid_x")]
    rt.campaigns.create(
        "spring-sale",
        Content.parse("text", {"content": "春季大促"}),
        targets,
        start_at=time.time() + 3600,  # scheduled: nothing goes out during the test
    )
    http = console.form_login()
    listing = http.get(console.url + "/campaigns", timeout=10).text
    assert 'data-campaign="spring-sale"' in listing and "0/4" in listing
    assert 'href="/campaigns"' in listing  # in the navigation
    page = http.get(console.url + "/campaigns/spring-sale", timeout=10).text
    assert 'id="campaign-state">scheduled' in page and "春季大促" in page
    token = csrf_in(page)

    def act(action: str, **extra: str) -> str:
        reply = http.post(
            console.url + f"/campaigns/spring-sale/{action}",
            data={"_csrf": token, **extra},
            timeout=10,
        )
        assert reply.ok, reply.text
        return reply.text

    assert 'id="campaign-state">paused' in act("pause")
    assert rt.campaigns.show("spring-sale")["state"] == "paused"
    assert 'id="campaign-state">scheduled' in act("resume")
    confirm = act("cancel")  # first the question, nothing changes yet
    assert "Cancel campaign spring-sale?" in confirm
    assert rt.campaigns.show("spring-sale")["state"] == "scheduled"
    assert 'id="campaign-state">cancelled' in act("cancel", confirmed="yes")
    shown = rt.campaigns.show("spring-sale")
    assert shown["state"] == "cancelled" and shown["cancelled"] == 4

    report = http.get(console.url + "/campaigns/spring-sale/report.csv", timeout=10)
    assert report.headers["Content-Type"].startswith("text/csv")
    assert "attachment" in report.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(report.content.decode("utf-8-sig"))))
    assert [(r["app_id"], r["to_wxid"], r["status"]) for r in rows] == [
        (a, w, "cancelled") for a, w in targets
    ]
    assert http.get(console.url + "/campaigns/nope", timeout=10).status_code == 404
