"""The account registry and atomic transitions on a real Redis, from several processes."""

from __future__ import annotations

import multiprocessing as mp

import pytest
import redis

from tests.conftest import build
from wxtasks.accounts.machine import Event, State
from wxtasks.accounts.store import AccountStore
from wxtasks.config import Settings
from wxtasks.errors import BadInputError, TransitionRefused, UnknownAccountError
from wxtasks.events import read_events
from wxtasks.runtime import redis_client


def store_for(redis_url: str, r: redis.Redis, **overrides: object) -> AccountStore:
    return build(r, Settings.from_env({}, redis_url=redis_url, **overrides)).accounts


def test_register_get_list_update_remove(redis_url: str, r: redis.Redis) -> None:
    store = store_for(redis_url, r)
    account, created = store.register("a1", rate=2, burst=3, note="客服 1", tags=["vip"])
    assert created and account.state is State.IDLE and account.version == 1
    assert (account.rate, account.burst, account.note, account.tags) == (2, 3, "客服 1", ("vip",))
    _, created_again = store.register("a1")
    assert not created_again
    store.register("a2")
    assert [a.app_id for a in store.list()] == ["a1", "a2"]
    assert store.update("a2", rate=0.5).rate == 0.5
    store.transition("a1", Event.LOGIN_SUCCEEDED)
    assert [a.app_id for a in store.list(State.ONLINE)] == ["a1"]
    assert store.remove("a1")
    with pytest.raises(UnknownAccountError):
        store.get("a1")
    with pytest.raises(UnknownAccountError):
        store.update("a1", note="x")


def test_removing_an_account_leaves_nothing_scheduled(redis_url: str, r: redis.Redis) -> None:
    store = store_for(redis_url, r)
    store.register("a1")
    assert r.zscore(store.keys.heartbeat_schedule, "a1") is not None
    store.remove("a1")
    assert r.zscore(store.keys.heartbeat_schedule, "a1") is None
    assert not r.exists(store.keys.account("a1"))


def test_first_heartbeats_are_spread_not_aligned(redis_url: str, r: redis.Redis) -> None:
    store = store_for(redis_url, r, heartbeat_interval_s=30)
    for i in range(200):
        store.register(f"a{i}")
    dues = sorted(s for _, s in r.zrange(store.keys.heartbeat_schedule, 0, -1, withscores=True))
    assert dues[-1] - dues[0] > 20  # spread over (most of) one interval
    assert len({round(d) for d in dues}) > 20


@pytest.mark.parametrize("bad", ["", " a", "a{b}", "x" * 200])
def test_bad_app_ids_are_refused(redis_url: str, r: redis.Redis, bad: str) -> None:
    with pytest.raises(BadInputError):
        store_for(redis_url, r).register(bad)


def test_transitions_are_versioned_and_published(redis_url: str, r: redis.Redis) -> None:
    settings = Settings.from_env({}, redis_url=redis_url)
    store = build(r, settings).accounts
    store.register("a1")
    d = store.transition("a1", Event.LOGIN_SUCCEEDED, reason="test")
    assert d is not None and d.version == 2
    with pytest.raises(TransitionRefused):
        store.transition("a1", Event.RETRY_PLAN)
    # expecting another state, or an old version, is "someone else took it": None
    assert store.transition("a1", Event.LIVENESS_FAILED, expect=[State.RECONNECTING]) is None
    assert store.transition("a1", Event.LIVENESS_FAILED, version=1) is None
    assert store.get("a1").state is State.ONLINE
    events = read_events(r, settings)
    assert [(e["prev"], e["curr"], e["reason"]) for e in events] == [("IDLE", "ONLINE", "test")]


def _race(redis_url: str, start: mp.synchronize.Event, results: mp.Queue) -> None:
    store = build(redis_client(redis_url), Settings.from_env({}, redis_url=redis_url)).accounts
    start.wait()
    won = 0
    for _ in range(5):
        if (
            store.transition("hot", Event.LIVENESS_FAILED, reason="race", expect=[State.ONLINE])
            is not None
        ):
            won += 1
    results.put(won)


def test_racing_processes_start_exactly_one_reconnect_chain(redis_url: str, r: redis.Redis) -> None:
    settings = Settings.from_env({}, redis_url=redis_url)
    store = build(r, settings).accounts
    store.register("hot")
    store.transition("hot", Event.LOGIN_SUCCEEDED)
    ctx = mp.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(redis_url, start, results)) for _ in range(8)]
    for p in procs:
        p.start()
    start.set()
    wins = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert sum(wins) == 1
    account = store.get("hot")
    assert account.state is State.RECONNECTING and account.version == 3
    transitions = [e for e in read_events(r, settings) if e["curr"] == "RECONNECTING"]
    assert len(transitions) == 1
