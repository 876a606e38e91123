"""Account lifecycle end to end: real workers and beats against a v1-profile gateway."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

from tests.conftest import Simulator, Stack, _simulator, build
from wxtasks.accounts.machine import State
from wxtasks.client import WxTasksClient
from wxtasks.config import Settings
from wxtasks.dev.stack import Supervisor, wait_until
from wxtasks.events import read_events
from wxtasks.runtime import redis_client

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

HB_PATH = "/v1/account/heartbeat"
#: heartbeats are counted over this window: 2 rounds of 18 accounts every 2 s, 36 probes;
#: a second beat would double that, a stopped one make it 0
RATE_WINDOW_S = 4


def heartbeat_rate(sim: Simulator, window_s: float) -> float:
    before = sim.calls(HB_PATH)
    time.sleep(window_s)  # measuring a rate over a window: the window is the point
    return (sim.calls(HB_PATH) - before) / window_s


def test_accounts_come_online_fail_over_to_error_and_recover(
    simulators: dict[str, Simulator],
    supervisor: Supervisor,
    make_stack: Callable[..., Stack],
    redis_url: str,
) -> None:
    sim = _simulator(simulators, supervisor, "v1")
    stack = make_stack(sim, heartbeat_interval_s=2, max_retry=3, backoff_max_s=8)
    r: redis.Redis = redis_client(redis_url)
    store = build(r, stack.settings).accounts
    stack.worker("control", "ctl", 2)
    stack.worker("send", "snd", 1)
    stack.beat()
    stack.wait_workers(2)

    ids = [f"acct-{i:02d}" for i in range(20)]
    client = WxTasksClient.from_settings(stack.settings)
    for app_id in ids:
        store.register(app_id)
        client.login(app_id)
    wait_until(
        lambda: all(a.state is State.ONLINE for a in store.get_many(ids)),
        30,
        what="20 accounts ONLINE",
    )

    down, back = ids[:3], ids[2]
    for app_id in down:
        sim.set_online(app_id, False)
    wait_until(lambda: store.get(back).state is State.RECONNECTING, 15, what=f"{back} RECONNECTING")
    sim.set_online(back, True)  # brought back during its backoff

    def settled() -> bool:
        states = {a.app_id: a.state for a in store.get_many(down)}
        return (
            states[down[0]] is State.ERROR
            and states[down[1]] is State.ERROR
            and states[back] is State.ONLINE
        )

    wait_until(settled, 40, 0.2, "two accounts in ERROR and one back ONLINE")
    assert store.get(back).retry_count == 0
    assert store.get(down[0]).retry_count == 3
    events = read_events(r, stack.settings, count=500)
    alerts = [e for e in events if e.get("kind") == "alert"]
    assert sorted(e["app_id"] for e in alerts if e["alert"] == "maxRetryReached") == down[:2]
    # the other 17 never left ONLINE
    others = set(ids[3:])
    assert not [e for e in events if e.get("app_id") in others and e.get("prev") == "ONLINE"]
    assert all(a.state is State.ONLINE for a in store.get_many(others))

    # heartbeat rate at the gateway: 18 ONLINE accounts every 2 s = 9/s. The bounds allow
    # for a busy shared machine and still tell the failures apart: a second beat doubling
    # the probes (2x), or beat stopping after the failover (0x)
    expected = 18 / 2
    one_beat = heartbeat_rate(sim, RATE_WINDOW_S)
    assert expected * 0.5 <= one_beat <= expected * 1.5, one_beat
    second = stack.beat()
    two_beats = heartbeat_rate(sim, RATE_WINDOW_S)
    assert expected * 0.5 <= two_beats <= expected * 1.5, two_beats

    # kill the first beat; the standby keeps the schedule going
    first = stack.children[2]
    holder = r.get(store.keys.beat_lock)
    supervisor.kill(first)
    assert second.alive
    # the standby takes the lock within one lock period (the default a user gets) plus its
    # 1 s standby check; the bound leaves room for a busy machine
    lock_s = Settings().beat_lock_ttl_s
    assert stack.settings.beat_lock_ttl_s == lock_s
    wait_until(
        lambda: r.get(store.keys.beat_lock) not in (None, holder),
        lock_s + 1 + 5,
        what="the standby beat to take the lock",
    )
    after = heartbeat_rate(sim, RATE_WINDOW_S)
    assert expected * 0.5 <= after <= expected * 1.5, after
    r.close()


def test_removed_accounts_stop_their_heartbeats(
    simulators: dict[str, Simulator],
    supervisor: Supervisor,
    make_stack: Callable[..., Stack],
    redis_url: str,
) -> None:
    sim = _simulator(simulators, supervisor, "v1")
    stack = make_stack(sim, heartbeat_interval_s=1)
    r = redis_client(redis_url)
    store = build(r, stack.settings).accounts
    stack.worker("control,send", "ctl", 2)
    stack.beat()
    store.register("gone")
    WxTasksClient.from_settings(stack.settings).login("gone")
    wait_until(lambda: store.get("gone").last_heartbeat_at, 20, what="a heartbeat")
    store.remove("gone")
    broker = redis.Redis.from_url(stack.settings.broker_url)
    wait_until(lambda: broker.llen("control") == 0, 10, what="dispatched heartbeats to drain")
    before = sim.calls(HB_PATH)
    assert heartbeat_rate(sim, 3) == 0, "a removed account was still probed"
    assert sim.calls(HB_PATH) == before
    assert not r.exists(store.keys.account("gone"))  # and nothing recreated it
    r.close()
