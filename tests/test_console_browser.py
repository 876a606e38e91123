"""The console in headless Chromium (Debian's, driven by playwright with the system
executable), against real Redis, real Celery workers and beat, and the simulator.

An operator logs in, sees the demo accounts, watches an account the simulator took offline
turn RECONNECTING and then ONLINE without reloading, runs a QR login end to end (with the
security code the gateway asks for), requeues a dead letter and sees it sent, and sends a
test message. Then one test per role: a viewer, an operator and an admin each do what the
role allows, see no button for the rest, and every forbidden POST, sent with the tab's
valid CSRF token, gets 403 and changes nothing. Screenshots land in each test's tmp dir."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TOKEN, Simulator, Stack, _simulator, build, settings_for
from tests.console_support import (
    PASSWORD,
    ROLE_USERS,
    USER,
    ConsoleProcess,
    demo_accounts,
    role_password,
    start_console,
)
from wxtasks.accounts.machine import Event, State
from wxtasks.accounts.store import AccountStore
from wxtasks.campaigns.store import Content
from wxtasks.client import WxTasksClient
from wxtasks.dev.stack import Supervisor, wait_until
from wxtasks.keys import Keys
from wxtasks.runtime import Runtime, redis_client
from wxtasks.send.deadletters import DeadLetters

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow, pytest.mark.browser]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 40_000  # the longest a page may take to show a change (a QR poll is every 5 s)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH (apt-get install -y chromium; .ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        # playwright gives each launch a fresh temporary profile (user-data-dir)
        browser = p.chromium.launch(
            executable_path=os.path.realpath(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def sim(simulators: dict[str, Simulator], supervisor: Supervisor) -> Simulator:
    return _simulator(simulators, supervisor, "videosapi")


@pytest.fixture(scope="module")
def stack(redis_server: str, sim: Simulator, supervisor: Supervisor) -> Iterator[Stack]:
    settings = settings_for(redis_server, sim, heartbeat_interval_s=2, backoff_max_s=8)
    stack = Stack(settings, supervisor)
    stack.worker("send,control", "console", 2)
    stack.beat()
    stack.dispatchers()
    stack.wait_workers(1)
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def console(stack: Stack, supervisor: Supervisor) -> Iterator[ConsoleProcess]:
    proc = start_console(supervisor, stack.settings)
    yield proc
    supervisor.stop(proc.child, timeout_s=5)


@pytest.fixture
def store(stack: Stack, redis_url: str) -> Iterator[AccountStore]:
    client = redis_client(redis_url)
    yield build(client, stack.settings).accounts
    client.close()


@pytest.fixture
def page(browser: Any, console: ConsoleProcess, tmp_path: Path, redis_url: str) -> Iterator[Any]:
    """A logged-in tab in a context of its own (no cookies from other tests); after the
    test's Redis is flushed (redis_url), since the session lives there."""
    context = browser.new_context()
    tab = context.new_page()
    tab.set_default_timeout(WAIT_MS)
    tab.goto(console.url + "/")
    assert "/login" in tab.url  # sent to the form
    tab.fill("input[name=username]", USER)
    tab.fill("input[name=password]", PASSWORD)
    tab.click("button[type=submit]")
    tab.wait_for_url("**/overview")  # the landing page
    yield tab
    context.close()


def shot(page: Any, tmp_path: Path, name: str) -> None:
    """A screenshot in the test's tmp dir; the page shown never holds the gateway token."""
    page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
    assert TOKEN not in page.content()


def test_accounts_page_shows_states_live(
    page: Any, store: AccountStore, sim: Simulator, console: ConsoleProcess, tmp_path: Path
) -> None:
    ids = demo_accounts(store, 20)
    page.goto(console.url + "/accounts")
    rows = page.locator("table.accounts tbody tr[data-app-id]")
    wait_until(lambda: rows.count() == 20, 10, what="20 rows")
    assert [rows.nth(i).get_attribute("data-app-id") for i in range(20)] == ids
    assert page.locator("#acct-demo-07 .state").inner_text() == "ONLINE"
    assert page.locator("#acct-demo-07 td").nth(2).inner_text() == "default"
    shot(page, tmp_path, "1-accounts")

    page.evaluate("window.notReloaded = true")
    sim.set_online("demo-07", False)  # down, and reconnects fail until it is back
    state = page.locator("#acct-demo-07 .state")
    state.filter(has_text="RECONNECTING").wait_for()
    shot(page, tmp_path, "2-reconnecting")
    # the counts come from the shared index (about a second behind the rows)
    page.locator('[data-state="RECONNECTING"] b').filter(has_text="1").wait_for()
    sim.set_online("demo-07", False, recoverable=True)  # the next reconnect works
    state.filter(has_text="ONLINE").wait_for()
    shot(page, tmp_path, "3-online-again")
    assert page.evaluate("window.notReloaded") is True  # no reload happened
    assert store.get("demo-07").state is State.ONLINE

    # filters: by state, by tag
    store.update("demo-03", tags=["vip"])
    page.goto(console.url + "/accounts?tag=vip")
    page.locator("#acct-demo-03").wait_for()  # the filter index is shared for up to 1 s
    assert rows.count() == 1
    page.goto(console.url + "/accounts")
    page.select_option("select[name=state]", "RECONNECTING")
    page.click("form.filters button")
    page.locator("table.accounts").filter(has_text="no accounts match").wait_for()


def test_qr_login_end_to_end(
    page: Any, store: AccountStore, sim: Simulator, console: ConsoleProcess, tmp_path: Path
) -> None:
    sim.set_online("qr-01", False)  # the gateway has no session: a human must scan
    store.register("qr-01", note="new phone")
    store.transition("qr-01", Event.LOGIN_STARTED, reason="earlier attempt")
    store.transition("qr-01", Event.LOGIN_EXPIRED, reason="nobody scanned")
    page.goto(console.url + "/accounts?state=IDLE")
    page.click("#acct-qr-01 a.act")  # "log in" next to the account that needs a human
    page.click("#start-login")
    page.wait_for_url("**/accounts/qr-01/login")
    assert page.locator("#qr-phase").inner_text() == "waiting"
    image = page.locator("#qr-image")
    assert image.get_attribute("src").startswith("data:image/png;base64,")
    assert page.evaluate("document.getElementById('qr-image').naturalWidth") > 50
    first = int(page.locator("#qr-countdown").inner_text())
    assert 100 <= first <= 120
    wait_until(
        lambda: int(page.locator("#qr-countdown").inner_text()) < first, 10, what="countdown"
    )
    assert store.get("qr-01").state is State.LOGGING_IN
    shot(page, tmp_path, "1-qr-waiting")

    sim.admin("scan", {"appId": "qr-01", "captcha": "246810"})
    page.locator("#qr-phase").filter(has_text="scanned").wait_for()
    shot(page, tmp_path, "2-qr-scanned")
    page.locator("#qr-phase").filter(has_text="captcha").wait_for()
    shot(page, tmp_path, "3-qr-captcha")
    page.fill("#captcha-code", "000000")  # a typo: the gateway asks again
    page.click("#captcha-form button")
    page.locator("#qr-message").filter(has_text="not accepted").wait_for()
    page.fill("#captcha-code", "246810")
    page.click("#captcha-form button")
    page.locator("#qr-phase").filter(has_text="confirmed").wait_for()
    assert "qr-01 is ONLINE" in page.locator("#qr-result").inner_text()
    shot(page, tmp_path, "4-qr-confirmed")
    account = store.get("qr-01")
    assert account.state is State.ONLINE and account.wxid == "wxid_qr-01"

    # a login nobody scans can be cancelled, and the account is IDLE again
    sim.set_online("qr-02", False)
    store.register("qr-02")
    page.goto(console.url + "/accounts/qr-02/login")
    page.click("#start-login")
    page.locator("#qr-phase").filter(has_text="waiting").wait_for()
    page.click("text=Cancel login")
    page.locator("#qr-phase").filter(has_text="cancelled").wait_for()
    assert store.get("qr-02").state is State.IDLE


def test_requeue_a_dead_letter_and_test_send(
    page: Any,
    store: AccountStore,
    sim: Simulator,
    stack: Stack,
    console: ConsoleProcess,
    tmp_path: Path,
) -> None:
    store.register("dl-01")  # IDLE: a send from it fails and is dead-lettered
    client = WxTasksClient.from_settings(stack.settings)
    failed = client.send_text("dl-01", "wxid_customer", "requeue me").get(timeout=60)
    assert failed["status"] == "failed"
    dead = DeadLetters(store.redis, Keys(stack.settings.key_prefix))
    assert [e["task_id"] for e in dead.list()] == [failed["task_id"]]
    store.transition("dl-01", Event.LOGIN_SUCCEEDED, reason="logged in meanwhile")

    page.goto(console.url + "/deadletters?status=failed")
    row = page.locator(f"#dl-{failed['task_id']}")
    assert "requeue me" in row.inner_text()
    row.locator("input[type=checkbox]").check()
    shot(page, tmp_path, "1-deadletters")
    page.click("#requeue-selected")
    assert "Requeue 1 dead letter(s)?" in page.locator("h1").inner_text()
    shot(page, tmp_path, "2-confirm")
    page.click("#confirm")
    page.locator(".task-result[data-outcome=sent]").wait_for()
    shot(page, tmp_path, "3-requeued-and-sent")
    assert [s["content"] for s in sim.sends() if s["appId"] == "dl-01"] == ["requeue me"]
    assert dead.count() == 0

    page.goto(console.url + "/accounts/dl-01")
    page.fill("input[name=to_wxid]", "wxid_tester")
    page.fill("input[name=content]", "console test send")
    page.click("#send-test")
    result = page.locator("#send-result .task-result[data-outcome=sent]")
    result.wait_for()
    assert "newMsgId" in result.inner_text()
    shot(page, tmp_path, "4-test-send")
    assert any(s["content"] == "console test send" for s in sim.sends())
    client.app.close()


# -- one test per role: what each may do, and that the server refuses the rest ------------------


@pytest.fixture
def login_as(browser: Any, console: ConsoleProcess, redis_url: str) -> Iterator[Any]:
    """Open a tab logged in as a user (through the form), in a context of its own."""
    contexts: list[Any] = []

    def open_tab(user: str) -> Any:
        context = browser.new_context()
        contexts.append(context)
        tab = context.new_page()
        tab.set_default_timeout(WAIT_MS)
        tab.goto(console.url + "/login")
        tab.fill("input[name=username]", user)
        tab.fill("input[name=password]", role_password(user))
        tab.click("button[type=submit]")
        tab.wait_for_url("**/overview")  # the landing page
        assert tab.locator("#user").inner_text() == user
        return tab

    yield open_tab
    for context in contexts:
        context.close()


@dataclass
class Scene:
    """What each role test starts from: accounts, a scheduled campaign, a dead letter."""

    stack: Stack
    store: AccountStore
    rt: Runtime
    dead_task: str

    @property
    def dead(self) -> DeadLetters:
        return self.rt.deadletters


@pytest.fixture
def scene(stack: Stack, store: AccountStore, sim: Simulator) -> Iterator[Scene]:
    demo_accounts(store, 2)
    sim.set_online("idle-01", False)
    store.register("idle-01", note="needs a scan")  # IDLE: a QR login can start
    store.register("dl-01")  # IDLE: its send fails and is dead-lettered
    client = WxTasksClient.from_settings(stack.settings)
    failed = client.send_text("dl-01", "wxid_customer", "dead letter").get(timeout=60)
    client.app.close()
    assert failed["status"] == "failed"
    store.transition("dl-01", Event.LOGIN_SUCCEEDED, reason="logged in meanwhile")
    rt = Runtime(stack.settings)
    rt.campaigns.create(
        "sale",
        Content.parse("text", {"content": "大促"}),
        [("demo-01", "wxid_a"), ("demo-02", "wxid_b")],
        start_at=time.time() + 3600,  # scheduled: nothing goes out during the test
    )
    yield Scene(stack, store, rt, failed["task_id"])
    rt.close()


def refused(tab: Any, console: ConsoleProcess, path: str, needed: str, **body: str) -> None:
    """POST as this tab's user, with its valid CSRF token: 403 naming the role needed."""
    token = tab.locator("form.logout input[name=_csrf]").get_attribute("value")
    reply = tab.request.post(console.url + path, form={"_csrf": token, **body}, max_redirects=0)
    assert reply.status == 403, (path, reply.status)
    assert f"needs the {needed} role" in reply.text(), path


def shown(tab: Any, selector: str) -> bool:
    return bool(tab.locator(selector).count())


def unchanged(scene: Scene, sim: Simulator) -> None:
    """Nothing the refused requests aimed at has changed."""
    store = scene.store
    assert store.get("demo-01").note == "demo account" and store.get("demo-01").rate is None
    assert store.get("idle-01").state is State.IDLE and store.get("demo-02").state is State.ONLINE
    assert scene.rt.campaigns.show("sale")["state"] == "scheduled"
    assert scene.dead.get(scene.dead_task) is not None
    assert not [s for s in sim.sends() if s["content"] == "forged"]


def test_viewer_sees_everything_and_changes_nothing(
    login_as: Any, scene: Scene, sim: Simulator, console: ConsoleProcess, tmp_path: Path
) -> None:
    tab = login_as(ROLE_USERS["viewer"])
    assert tab.locator("#role").inner_text() == "viewer"
    tab.goto(console.url + "/accounts")
    tab.locator("#acct-idle-01").wait_for()  # the table's index lags a registration by ~1 s
    assert not shown(tab, "#acct-idle-01 a.act")  # no "log in" for a viewer
    tab.goto(console.url + "/accounts/idle-01")
    assert "needs a scan" in tab.locator("#options").inner_text()  # options shown, read-only
    for button in ("#start-login", "#send-test", "#options-form", "#account-reset"):
        assert not shown(tab, button), button
    tab.goto(console.url + "/campaigns/sale")
    assert tab.locator("#campaign-state").inner_text() == "scheduled"
    assert not shown(tab, "#campaign-pause") and not shown(tab, "#campaign-cancel")
    tab.goto(console.url + "/deadletters")
    assert "dead letter" in tab.locator(f"#dl-{scene.dead_task}").inner_text()
    assert not shown(tab, "#requeue-selected") and not shown(tab, "#purge-selected")
    assert not shown(tab, "input[name=task_id]")
    shot(tab, tmp_path, "viewer-deadletters")
    for path, needed, body in (
        ("/accounts/demo-01/options", "admin", {"note": "forged", "rate": "9"}),
        ("/accounts/demo-02/reset", "admin", {}),
        ("/accounts/demo-02/remove", "admin", {"confirmed": "yes"}),
        ("/accounts/idle-01/login/start", "operator", {}),
        ("/accounts/demo-01/send", "operator", {"to_wxid": "wxid_x", "content": "forged"}),
        ("/campaigns/sale/pause", "operator", {}),
        ("/campaigns/sale/cancel", "admin", {"confirmed": "yes"}),
        ("/deadletters/requeue", "operator", {"confirmed": "yes", "task_id": scene.dead_task}),
        ("/deadletters/purge", "admin", {"confirmed": "yes", "task_id": scene.dead_task}),
    ):
        refused(tab, console, path, needed, **body)
    unchanged(scene, sim)
    tab.goto(console.url + "/activity")
    assert tab.locator("tr.audit").count() == 1  # only the viewer's own login
    assert tab.locator("tr.audit").get_attribute("data-action") == "session.login"


def test_operator_logs_in_sends_pauses_and_requeues_but_cannot_destroy(
    login_as: Any, scene: Scene, sim: Simulator, console: ConsoleProcess, tmp_path: Path
) -> None:
    operator = ROLE_USERS["operator"]
    tab = login_as(operator)
    # the server refuses what an operator may not do, and nothing changes
    for path, body in (
        ("/accounts/demo-01/options", {"note": "forged"}),
        ("/accounts/demo-02/reset", {}),
        ("/accounts/demo-02/remove", {"confirmed": "yes"}),
        ("/campaigns/sale/cancel", {"confirmed": "yes"}),
        ("/deadletters/purge", {"confirmed": "yes", "task_id": scene.dead_task}),
    ):
        refused(tab, console, path, "admin", **body)
    unchanged(scene, sim)
    # a test send
    tab.goto(console.url + "/accounts/demo-01")
    assert not shown(tab, "#options-form") and not shown(tab, "#account-remove")
    tab.fill("input[name=to_wxid]", "wxid_tester")
    tab.fill("input[name=content]", "operator test send")
    tab.click("#send-test")
    tab.locator("#send-result .task-result[data-outcome=sent]").wait_for()
    # a QR login can start
    tab.goto(console.url + "/accounts/idle-01")
    tab.click("#start-login")
    tab.locator("#qr-phase").filter(has_text="waiting").wait_for()
    assert scene.store.get("idle-01").state is State.LOGGING_IN
    # pause and resume, with no cancel button
    tab.goto(console.url + "/campaigns/sale")
    assert not shown(tab, "#campaign-cancel")
    tab.click("#campaign-pause")
    tab.locator("#campaign-state").filter(has_text="paused").wait_for()
    tab.click("#campaign-resume")
    tab.locator("#campaign-state").filter(has_text="scheduled").wait_for()
    # requeue a dead letter (no purge button) and see it sent
    tab.goto(console.url + "/deadletters")
    assert not shown(tab, "#purge-selected")
    tab.locator(f"#dl-{scene.dead_task} input[type=checkbox]").check()
    tab.click("#requeue-selected")
    tab.click("#confirm")
    tab.locator(".task-result[data-outcome=sent]").wait_for()
    shot(tab, tmp_path, "operator-requeued")
    assert scene.dead.count() == 0
    contents = [s["content"] for s in sim.sends()]
    assert "operator test send" in contents and "dead letter" in contents
    tab.goto(console.url + f"/activity?user={operator}")
    actions = [r.get_attribute("data-action") for r in tab.locator("tr.audit").all()]
    assert actions == [
        "deadletter.requeue",
        "campaign.resume",
        "campaign.pause",
        "account.qr_login",
        "account.test_send",
        "session.login",
    ]
    shot(tab, tmp_path, "operator-activity")


def test_admin_purges_cancels_resets_removes_and_changes_options(
    login_as: Any, scene: Scene, sim: Simulator, console: ConsoleProcess, tmp_path: Path
) -> None:
    admin = ROLE_USERS["admin"]
    tab = login_as(admin)
    store = scene.store
    tab.goto(console.url + "/accounts/demo-01")
    tab.fill("input[name=note]", "vip line")
    tab.fill("input[name=rate]", "0.5")
    tab.click("#save-options")
    tab.locator("#message").filter(has_text="options saved").wait_for()
    assert (store.get("demo-01").note, store.get("demo-01").rate) == ("vip line", 0.5)
    store.transition("demo-02", Event.LIVENESS_FAILED, reason="test")
    tab.goto(console.url + "/accounts/demo-02")
    tab.click("#account-reset")
    tab.locator("#message").filter(has_text="reset").wait_for()
    assert store.get("demo-02").state in (State.IDLE, State.LOGGING_IN, State.ONLINE)
    tab.goto(console.url + "/accounts/idle-01")
    tab.click("#account-remove")
    tab.click("#confirm")
    tab.wait_for_url("**/accounts")
    assert "idle-01" not in store.app_ids()
    tab.goto(console.url + "/campaigns/sale")
    tab.click("#campaign-cancel")
    tab.click("#confirm")
    tab.locator("#campaign-state").filter(has_text="cancelled").wait_for()
    tab.goto(console.url + "/deadletters")
    tab.locator(f"#dl-{scene.dead_task} input[type=checkbox]").check()
    tab.click("#purge-selected")
    assert "Purge 1 dead letter(s)?" in tab.locator("h1").inner_text()
    tab.click("#confirm")
    tab.locator("#message").filter(has_text="1 dead letter(s) purged").wait_for()
    assert scene.dead.count() == 0
    tab.goto(console.url + "/activity?object=idle-01")
    row = tab.locator("tr.audit")
    assert row.count() == 1 and row.get_attribute("data-action") == "account.remove"
    assert row.get_attribute("data-user") == admin
    shot(tab, tmp_path, "admin-activity")
    tab.goto(console.url + f"/activity?user={admin}")
    actions = {r.get_attribute("data-action") for r in tab.locator("tr.audit").all()}
    assert actions == {
        "session.login",
        "account.options",
        "account.reset",
        "account.remove",
        "campaign.cancel",
        "deadletter.purge",
    }


def test_overview_shows_trends_from_a_real_run(
    page: Any, store: AccountStore, stack: Stack, console: ConsoleProcess, tmp_path: Path
) -> None:
    from wxtasks.trends import minute_of

    ids = demo_accounts(store, 5)
    store.register("ov-idle")  # IDLE: its send fails and is dead-lettered
    client = WxTasksClient.from_settings(stack.settings)
    results = [client.send_text(a, "wxid_fan", f"trend {a}") for a in ids]
    results.append(client.send_text("ov-idle", "wxid_fan", "fails"))
    outcomes = [r.get(timeout=60)["status"] for r in results]
    assert outcomes == ["sent"] * 5 + ["failed"]
    client.app.close()
    keys = Keys(stack.settings.key_prefix)

    def sampled() -> bool:  # beat's sampler runs every 10 s, first in each minute writes
        now = minute_of(time.time())
        return any(store.redis.hexists(keys.trends(m), "sampled") for m in (now, now - 1))

    wait_until(sampled, 30, 0.5, "beat to sample the trends")
    page.goto(console.url + "/overview")
    assert page.locator("header nav a.here").inner_text() == "Overview"
    sends = page.locator('#chart-sends g[data-series="sent"]')
    assert float(sends.get_attribute("data-total")) >= 5
    assert (
        float(page.locator('#chart-sends g[data-series="failed"]').get_attribute("data-total")) >= 1
    )
    dead = page.locator('#chart-deadletters g[data-series="deadletters"]')
    assert float(dead.get_attribute("data-total")) >= 1
    assert page.locator("#chart-deadletters rect").count() >= 1
    assert page.locator("#chart-sends polyline, #chart-sends circle").count() >= 1
    online = page.locator('#chart-accounts g[data-series="ONLINE"]')
    assert float(online.get_attribute("data-latest")) >= 1
    assert page.locator("#gw-default .state").inner_text() == "up"
    shot(page, tmp_path, "1-overview-hour")
    # it refreshes itself (htmx, every 10 s) without a reload
    page.evaluate("window.notReloaded = true")
    taken = page.locator("#overview-taken").get_attribute("data-taken-at")
    wait_until(
        lambda: page.locator("#overview-taken").get_attribute("data-taken-at") != taken,
        20,
        0.5,
        "the charts to refresh",
    )
    assert page.evaluate("window.notReloaded") is True
    page.click("#window-day")
    page.wait_for_url("**/overview?window=day")
    assert float(page.locator('#chart-sends g[data-series="sent"]').get_attribute("data-total")) > 0
    shot(page, tmp_path, "2-overview-day")
