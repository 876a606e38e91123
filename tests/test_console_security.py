"""The console as an attacker on the same network meets it (issue: least privilege): roles
enforced on every POST, logins that cannot be guessed at speed, sessions that end, proxy
headers believed only from trusted proxies, `next=` that stays on the site, and an audit
trail of who changed what. Real console processes against the real Redis; the throttle's
and the sessions' clocks are moved in the unit tests at the end (no test sleeps for time).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import Simulator, build, settings_for
from tests.console_support import (
    PASSWORD,
    ROLE_USERS,
    USER,
    ConsoleProcess,
    csrf_in,
    demo_accounts,
    role_password,
    start_console,
)
from wxtasks.accounts.machine import State
from wxtasks.accounts.store import AccountStore
from wxtasks.campaigns.store import Content
from wxtasks.config import Settings
from wxtasks.console.app import ROUTES
from wxtasks.console.auth import Users, hash_password
from wxtasks.console.pages import safe_next
from wxtasks.console.sessions import ABSOLUTE_S, LoginThrottle, Sessions
from wxtasks.dev.stack import Supervisor, wait_until
from wxtasks.keys import Keys
from wxtasks.netaddr import client_address, parse_networks
from wxtasks.runtime import Runtime
from wxtasks.scripts import Scripts
from wxtasks.send.deadletters import DeadLetters

pytestmark = pytest.mark.timeout(120)

VIC, OPAL, ADA = ROLE_USERS["viewer"], ROLE_USERS["operator"], ROLE_USERS["admin"]


@pytest.fixture
def settings(redis_url: str, simulator: Simulator) -> Settings:
    return settings_for(redis_url, simulator)


@pytest.fixture
def store(r: Any, settings: Settings) -> AccountStore:
    return build(r, settings).accounts


@pytest.fixture
def consoles(supervisor: Supervisor, settings: Settings) -> Iterator[Any]:
    started: list[ConsoleProcess] = []

    def start(**env: str) -> ConsoleProcess:
        proc = start_console(supervisor, settings, **env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        supervisor.stop(proc.child, timeout_s=5)


def login_form(
    console: ConsoleProcess, user: str, password: str, **headers: str
) -> tuple[requests.Session, requests.Response]:
    http = requests.Session()
    http.headers.update(headers)
    token = csrf_in(http.get(console.url + "/login", timeout=10).text)
    reply = http.post(
        console.url + "/login",
        data={"username": user, "password": password, "_csrf": token},
        allow_redirects=False,
        timeout=10,
    )
    return http, reply


def audit_entries(settings: Settings, **filters: str) -> list[dict[str, str]]:
    from wxtasks.audit import read_audit

    rt = Runtime(settings)
    try:
        return read_audit(rt.redis, settings, **filters)
    finally:
        rt.close()


# -- roles ---------------------------------------------------------------------------------

#: every POST route of the console, the role it needs, and a body that would act
FORBIDDEN_BODIES: dict[str, tuple[str, dict[str, str]]] = {
    "/accounts/demo-01/options": ("admin", {"note": "changed", "rate": "9"}),
    "/accounts/demo-01/reset": ("admin", {}),
    "/accounts/demo-01/remove": ("admin", {"confirmed": "yes"}),
    "/accounts/demo-01/login/start": ("operator", {}),
    "/accounts/demo-01/login/captcha": ("operator", {"code": "123456"}),
    "/accounts/demo-01/login/cancel": ("operator", {}),
    "/accounts/demo-01/login/simulate-scan": ("operator", {}),
    "/accounts/demo-01/send": ("operator", {"to_wxid": "wxid_x", "content": "forged"}),
    "/campaigns/spring/pause": ("operator", {}),
    "/campaigns/spring/resume": ("operator", {}),
    "/campaigns/spring/cancel": ("admin", {"confirmed": "yes"}),
    "/deadletters/requeue": ("operator", {"confirmed": "yes", "task_id": "dead-1"}),
    "/deadletters/purge": ("admin", {"confirmed": "yes", "task_id": "dead-1"}),
}


def test_every_post_route_declares_the_role_the_issue_gives_it() -> None:
    """The table above is every state-changing route but the session's own, with the
    role each one declares next to its handler."""
    from tornado.web import RequestHandler

    from wxtasks.console.auth import required_role

    declared = {
        pattern.replace("([^/]+)", "X"): required_role(handler.post)
        for pattern, handler in ROUTES
        if handler.post is not RequestHandler.post  # type: ignore[comparison-overlap]
    }
    expected = {
        path.replace("demo-01", "X").replace("spring", "X"): role
        for path, (role, _body) in FORBIDDEN_BODIES.items()
    }
    expected["/campaigns/X/(pause|resume)"] = expected.pop("/campaigns/X/pause")
    del expected["/campaigns/X/resume"]
    assert declared == {**expected, "/login": "viewer", "/logout": "viewer"}


def test_each_role_is_refused_what_it_may_not_do_and_nothing_changes(
    consoles: Any, store: AccountStore, settings: Settings, simulator: Simulator
) -> None:
    console = consoles()
    demo_accounts(store, 1)
    store.update("demo-01", note="before")
    rt = Runtime(settings)
    rt.campaigns.create(
        "spring",
        Content.parse("text", {"content": "hi"}),
        [("demo-01", "wxid_a")],
        start_at=time.time() + 3600,
    )
    dead = DeadLetters(rt.redis, rt.keys)
    dead.add(
        {
            "task_id": "dead-1",
            "task": "wxtasks.send_text",
            "status": "failed",
            "kwargs": {"app_id": "demo-01", "to_wxid": "wxid_a", "content": "x"},
            "app_id": "demo-01",
            "error": "boom",
        }
    )
    levels = {"viewer": 0, "operator": 1, "admin": 2}
    refused = 0
    for role, name in ROLE_USERS.items():
        http = console.basic(name, role_password(name))  # a valid CSRF token at hand
        for path, (needed, body) in FORBIDDEN_BODIES.items():
            if levels[role] >= levels[needed]:
                continue
            reply = http.post(console.url + path, data=body, allow_redirects=False, timeout=10)
            assert reply.status_code == 403, (role, path, reply.status_code)
            assert f"needs the {needed} role" in reply.text, (role, path)
            refused += 1
    assert refused == 13 + 5  # the viewer is refused all 13, the operator the 5 admin ones
    account = store.get("demo-01")
    assert (account.note, account.rate, account.state) == ("before", None, State.ONLINE)
    assert rt.campaigns.show("spring")["state"] == "scheduled"
    assert dead.count() == 1
    assert simulator.sends() == []
    assert audit_entries(settings) == []  # nothing was done, so nothing is recorded
    # the same requests as an admin go through (a sample that touches nothing outside)
    admin = console.basic(ADA, role_password(ADA))
    assert admin.post(console.url + "/campaigns/spring/pause", timeout=10).ok
    assert rt.campaigns.show("spring")["state"] == "paused"
    rt.close()


# -- logins at speed ------------------------------------------------------------------------


def test_thirty_wrong_passwords_then_429_for_form_and_basic_on_every_console(
    consoles: Any, settings: Settings
) -> None:
    # behind a trusted proxy (this host): X-Forwarded-For names the client
    proxy = {"WXTASKS_TRUSTED_PROXIES": "127.0.0.1/32"}
    first, second = consoles(**proxy), consoles(**proxy)
    http = requests.Session()
    token = csrf_in(http.get(first.url + "/login", timeout=10).text)
    statuses, waits = [], []
    for i in range(30):  # each guess from another address: the user name is what is locked
        reply = http.post(
            first.url + "/login",
            data={"username": VIC, "password": f"guess-{i}", "_csrf": token},
            headers={"X-Forwarded-For": f"203.0.113.{i + 1}"},
            timeout=10,
        )
        statuses.append(reply.status_code)
        waits.append(reply.headers.get("Retry-After"))
    assert statuses == [401] * 5 + [429] * 25
    assert waits[:5] == [None] * 5 and all(w and 0 < int(w) <= 300 for w in waits[5:])
    assert "too many failed logins" in reply.text and 'name="password"' in reply.text
    # the right password is refused too, by the form and by HTTP Basic, on either console
    for console in (first, second):
        _http, right = login_form(console, VIC, role_password(VIC))
        assert right.status_code == 429 and int(right.headers["Retry-After"]) > 250
        basic = requests.get(
            console.url + "/api/session", auth=(VIC, role_password(VIC)), timeout=10
        )
        assert basic.status_code == 429 and int(basic.headers["Retry-After"]) > 250
    # another user is not locked out by the guesses at vic
    _http, other = login_form(first, OPAL, role_password(OPAL))
    assert other.status_code == 302
    # one client address guessing at many names is locked out too, whoever it names next
    for i, name in enumerate(("x1", "x2", "x3", "x4", "x5")):
        _http, bad = login_form(first, name, "nope", **{"X-Forwarded-For": "198.51.100.7"})
        assert bad.status_code == 401, i
    _http, locked = login_form(
        second, ADA, role_password(ADA), **{"X-Forwarded-For": "198.51.100.7"}
    )
    assert locked.status_code == 429
    _http, elsewhere = login_form(
        second, ADA, role_password(ADA), **{"X-Forwarded-For": "198.51.100.8"}
    )
    assert elsewhere.status_code == 302
    # failures are logged with the user name, never the password
    wait_until(lambda: "login failed user='x5'" in Path(first.child.log_path).read_text(), 5)
    log = Path(first.child.log_path).read_text() + Path(second.child.log_path).read_text()
    assert "login failed user='hicks'" not in log and "guess-3" not in log
    assert role_password(VIC) not in log and role_password(ADA) not in log
    assert "locked out" in log


def test_the_right_password_works_once_retry_after_has_passed(r: Any, settings: Settings) -> None:
    """The throttle with the user's defaults (5 failures in 300 s) and a moved clock."""
    now = [1_000_000.0]
    throttle = LoginThrottle(r, Keys(settings.key_prefix), Scripts(r), clock=lambda: now[0])
    users = Users.from_settings(Settings.from_env({}, console_users="vic:pw-vic"))

    def attempt(password: str) -> int | bool:
        """429's Retry-After, or whether the password was right."""
        token, wait = throttle.attempt("vic", "192.0.2.1")
        if wait:
            return wait
        user = users.check("vic", password)
        if user is not None:
            throttle.succeeded("vic", "192.0.2.1", token)
        return user is not None

    answers = []
    for i in range(30):
        answers.append(attempt(f"wrong-{i}"))
        now[0] += 1
    assert answers[:5] == [False] * 5 and all(isinstance(a, int) and a > 0 for a in answers[5:])
    retry_after = attempt("pw-vic")
    assert retry_after == 300 - 30  # the first failure leaves the window then
    now[0] += retry_after - 1
    assert attempt("pw-vic") == 1  # still refused, one second before
    now[0] += 1
    assert attempt("pw-vic") is True  # Retry-After has passed: the right password works
    assert attempt("pw-vic") is True  # ... and the user name's failures are forgotten


def test_an_unknown_user_costs_what_a_wrong_password_costs() -> None:
    users = Users.from_settings(Settings.from_env({}, console_users="amy:pw-amy:admin"))

    times: dict[str, list[float]] = {"amy": [], "nobody-by-this-name": []}
    for _ in range(7):  # interleaved, and the fastest of each: load on the machine cancels out
        for name, samples in times.items():
            started = time.perf_counter()
            assert users.check(name, "wrong") is None
            samples.append(time.perf_counter() - started)
    known, unknown = min(times["amy"]), min(times["nobody-by-this-name"])
    assert known > 0.005 and unknown > 0.005  # both pay for a scrypt
    assert 0.5 < unknown / known < 2.0


# -- sessions -------------------------------------------------------------------------------


def _cookie_copy(http: requests.Session) -> requests.Session:
    thief = requests.Session()
    for c in http.cookies:
        thief.cookies.set(c.name, c.value)
    return thief


def _works(console: ConsoleProcess, http: requests.Session) -> bool:
    reply = http.get(console.url + "/api/session", allow_redirects=False, timeout=10)
    return reply.status_code == 200


def test_a_copied_cookie_stops_working_at_logout_and_when_its_user_goes(
    consoles: Any, settings: Settings, supervisor: Supervisor, tmp_path: Path
) -> None:
    users_file = tmp_path / "users"
    users_file.write_text(f"fil:{hash_password('pw-fil')}:operator\n")
    shared = {"WXTASKS_CONSOLE_SECRET": "s" * 64, "WXTASKS_CONSOLE_USERS_FILE": str(users_file)}
    console = consoles(**shared)
    # logout deletes the session: the copy dies with it
    http, reply = login_form(console, "fil", "pw-fil")
    assert reply.status_code == 302
    copy = _cookie_copy(http)
    assert _works(console, copy)
    page = http.get(console.url + "/accounts", timeout=10).text
    http.post(console.url + "/logout", data={"_csrf": csrf_in(page)}, timeout=10)
    assert not _works(console, copy) and not _works(console, http)
    # a user taken out of the users file is out at the next request, without a restart
    http, _ = login_form(console, "fil", "pw-fil")
    copy = _cookie_copy(http)
    assert _works(console, copy)
    users_file.write_text("# fil left\n")
    stamp = time.time() + 5
    os.utime(users_file, (stamp, stamp))  # a new mtime whatever the file system's grain
    wait_until(lambda: not _works(console, copy), 10, what="the removed user's session to end")
    assert not _works(console, http)
    # a restart without a user: its sessions (in Redis, they survive restarts) end too
    supervisor.stop(console.child, timeout_s=5)
    env_users = f"{USER}:{PASSWORD}:admin,tmp:pw-tmp:viewer"
    before = consoles(**shared, WXTASKS_CONSOLE_USERS=env_users)
    stays, _ = login_form(before, USER, PASSWORD)
    goes, _ = login_form(before, "tmp", "pw-tmp")
    copy = _cookie_copy(goes)
    supervisor.stop(before.child, timeout_s=5)
    after = consoles(**shared, WXTASKS_CONSOLE_USERS=f"{USER}:{PASSWORD}:admin")
    after_stays = _cookie_copy(stays)
    assert _works(after, after_stays)  # a session outlives a restart ...
    assert not _works(after, copy)  # ... unless its user is gone
    assert audit_entries(settings, user="tmp", obj="session")[0]["action"] == "session.login"


def test_sessions_end_when_idle_and_after_twelve_hours(r: Any, settings: Settings) -> None:
    now = [5_000_000.0]
    sessions = Sessions(r, Keys(settings.key_prefix), settings.console_idle_s, clock=lambda: now[0])
    assert settings.console_idle_s == 3600  # the default
    sid = sessions.create("amy", "fp", "192.0.2.1")
    now[0] += 3599
    assert sessions.get(sid) is not None  # used: the idle time starts again
    now[0] += 3599
    assert sessions.get(sid) is not None
    now[0] += 3601
    assert sessions.get(sid) is None  # an hour unused
    assert r.ttl(Keys(settings.key_prefix).console_session("x")) == -2
    busy = sessions.create("amy", "fp", "192.0.2.1")
    started = now[0]
    while now[0] - started < ABSOLUTE_S - 1800:
        now[0] += 1800
        assert sessions.get(busy) is not None
    now[0] = started + ABSOLUTE_S + 1
    assert sessions.get(busy) is None  # however busy, 12 h is the end
    # Redis holds the SHA-256 of the id, never the id a cookie carries
    kept = sessions.create("amy", "fp", "192.0.2.1")
    assert not [k for k in r.scan_iter("*") if kept in k]
    assert sessions.delete(kept) and sessions.get(kept) is None


# -- where a request comes from, and where it goes after the login -----------------------------


def test_next_stays_on_the_site(consoles: Any) -> None:
    console = consoles()
    for target in (
        "/%09/evil.example/",
        "/%0A/evil.example/",
        "//evil.example/",
        "https://evil.example/",
    ):
        http = requests.Session()
        form = http.get(f"{console.url}/login?next={target}", timeout=10)
        assert form.status_code == 200
        reply = http.post(
            f"{console.url}/login?next={target}",
            data={"username": USER, "password": PASSWORD, "_csrf": csrf_in(form.text)},
            allow_redirects=False,
            timeout=10,
        )
        assert reply.status_code == 302, (target, reply.status_code)
        assert reply.headers["Location"] == "/overview", target  # the landing page
    http, reply = login_form(console, USER, PASSWORD)
    kept = requests.Session()
    kept.cookies = http.cookies
    assert (
        kept.get(
            f"{console.url}/login?next=/campaigns?part=1", allow_redirects=False, timeout=10
        ).headers["Location"]
        == "/campaigns?part=1"
    )
    assert safe_next("/\t/evil.example/") == "/overview"
    assert safe_next("/accounts?q=张") == "/accounts?q=%E5%BC%A0"
    assert safe_next("/\\evil.example") == "/overview"


def test_proxy_headers_only_from_trusted_proxies_and_secure_cookies_for_https(
    consoles: Any, settings: Settings
) -> None:
    spoof = {
        "X-Forwarded-For": "203.0.113.66",
        "X-Real-IP": "203.0.113.67",
        "X-Forwarded-Proto": "https",
    }
    plain = consoles()
    _http, reply = login_form(plain, OPAL, role_password(OPAL), **spoof)
    assert reply.status_code == 302
    assert "secure" not in reply.headers["Set-Cookie"].lower()  # no header makes it Secure
    assert "Server-Timing" not in reply.headers
    (entry,) = audit_entries(settings, user=OPAL)
    assert entry["from"] == "127.0.0.1"  # the header was not believed
    behind = consoles(WXTASKS_TRUSTED_PROXIES="127.0.0.0/8")
    _http, reply = login_form(behind, ADA, role_password(ADA), **spoof)
    assert reply.status_code == 302
    (entry,) = audit_entries(settings, user=ADA)
    assert entry["from"] == "203.0.113.66"
    https = consoles(WXTASKS_CONSOLE_URL="https://ops.example.com/")
    cookie = requests.get(https.url + "/login", timeout=10).headers["Set-Cookie"]
    assert "secure" in cookie.lower()  # the URL says https: the browser sends it only so
    trusted = parse_networks("10.0.0.0/8, 127.0.0.1")
    assert (
        client_address("127.0.0.1", {"X-Forwarded-For": "1.2.3.4, 10.0.0.9"}, trusted)[0]
        == "1.2.3.4"
    )
    assert client_address("192.0.2.5", {"X-Forwarded-For": "1.2.3.4"}, trusted)[0] == "192.0.2.5"


# -- the audit trail --------------------------------------------------------------------------


def test_a_console_action_and_a_cli_action_appear_on_the_activity_page(
    consoles: Any, settings: Settings, store: AccountStore, tmp_path: Path
) -> None:
    import pwd

    demo_accounts(store, 1)
    rt = Runtime(settings)
    rt.campaigns.create(
        "autumn",
        Content.parse("text", {"content": "hi"}),
        [("demo-01", "wxid_a")],
        start_at=time.time() + 3600,
    )
    console = consoles()
    http, _ = login_form(console, OPAL, role_password(OPAL))
    page = http.get(console.url + "/campaigns/autumn", timeout=10).text
    assert http.post(
        console.url + "/campaigns/autumn/pause", data={"_csrf": csrf_in(page)}, timeout=10
    ).ok
    done = subprocess.run(
        [sys.executable, "-m", "wxtasks", "campaigns", "resume", "autumn"],
        env={**os.environ, **settings.environ()},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    os_user = pwd.getpwuid(os.geteuid()).pw_name
    activity = http.get(console.url + "/activity?object=campaign:autumn", timeout=10).text
    rows = [line for line in activity.splitlines() if 'class="audit"' in line]
    assert len(rows) == 2
    assert f'data-user="{os_user}" data-action="campaign.resume"' in rows[0]  # newest first
    assert f'data-user="{OPAL}" data-action="campaign.pause"' in rows[1]
    assert ">cli<" in activity and ">console<" in activity
    assert time.strftime("%Y-%m-%d") in activity  # when
    mine = http.get(console.url + f"/activity?user={OPAL}", timeout=10).text
    assert "campaign.pause" in mine and "campaign.resume" not in mine and "session.login" in mine
    shown = subprocess.run(
        [sys.executable, "-m", "wxtasks", "events", "--audit"],
        env={**os.environ, **settings.environ()},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    ).stdout
    assert f"AUDIT campaign.pause campaign:autumn by {OPAL} (console from 127.0.0.1)" in shown
    assert f"AUDIT campaign.resume campaign:autumn by {os_user} (cli from " in shown
    for secret in (role_password(OPAL), PASSWORD, settings.gateway_token):
        assert secret not in activity and secret not in shown
    rt.close()


def test_the_campaign_report_makes_formulas_text(
    consoles: Any, settings: Settings, store: AccountStore
) -> None:
    import csv
    import io

    demo_accounts(store, 1)
    rt = Runtime(settings)
    rt.campaigns.create(
        "csv",
        Content.parse("text", {"content": "hi"}),
        [
            ("demo-01", '=HYPERLINK("http://evil.example","x")'),
            ("demo-01", "+1"),
            ("demo-01", "wxid_ok"),
        ],
        start_at=time.time() + 3600,
    )
    console = consoles()
    report = console.basic().get(console.url + "/campaigns/csv/report.csv", timeout=10)
    rows = list(csv.DictReader(io.StringIO(report.content.decode("utf-8-sig"))))
    assert [r["to_wxid"] for r in rows] == [
        '\'=HYPERLINK("http://evil.example","x")',
        "'+1",
        "wxid_ok",
    ]
    rt.close()
