"""The outbox and its dispatcher on a real Redis, with an explicit clock: what waits,
what leaves and when, in which order, and what an operator sees. No sleeps."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import pytest
import redis

from tests.conftest import build
from wxtasks.accounts.machine import Event, State
from wxtasks.campaigns.store import Campaigns, Content
from wxtasks.config import Settings
from wxtasks.runtime import redis_client
from wxtasks.send.dispatcher import LEASE_S, Dispatched
from wxtasks.send.gates import Lane
from wxtasks.send.outbox import Waiting
from wxtasks.send.outcome import CANCELLED_BY_OPERATOR, Ending, SendResult, Status

#: the test clock starts ahead of the wall clock, so whatever was parked is due by it
T0 = float(int(time.time()) + 3600)

#: pacing off, so these tests see the buckets alone (tests/test_pacing.py has the gates)
NO_PACING: dict[str, Any] = {
    "quiet_hours": "",
    "warmup_s": 0.0,
    "bulk_jitter_s": "0-0",
    "group_jitter_s": "0-0",
}


class Rig:
    """An outbox, its dispatcher on the test clock ``t``, and what it published."""

    def __init__(self, redis_url: str, r: redis.Redis, **overrides: Any) -> None:
        self.settings = Settings.from_env({}, redis_url=redis_url, **{**NO_PACING, **overrides})
        self.r = r
        self.rt = rt = build(r, self.settings)
        self.keys, self.scripts, self.store, self.outbox = (
            rt.keys,
            rt.scripts,
            rt.accounts,
            rt.outbox,
        )
        self.t = T0
        self.batches: list[list[Dispatched]] = []
        self.dispatcher = rt.dispatcher(self.batches.append, clock=lambda: self.t)
        rt.__dict__["campaigns"] = Campaigns(
            r,
            self.settings,
            rt.keys,
            rt.scripts,
            rt.outbox,
            rt.endings,
            rt.store_result,
            clock=lambda: self.t,
        )

    def online(self, *app_ids: str, **options: Any) -> None:
        for app_id in app_ids:
            self.store.register(app_id, **options)
            self.store.transition(app_id, Event.LOGIN_SUCCEEDED)

    def park(
        self,
        task_id: str,
        app_id: str,
        lane: str = "interactive",
        enqueued_at: float | None = None,
        client: Any = None,
        **fields: Any,
    ) -> Waiting:
        waiting = Waiting(
            task_id,
            "wxtasks.send_text",
            {
                "app_id": app_id,
                "to_wxid": fields.pop("to_wxid", "wxid_1"),
                "content": fields.pop("content", task_id),
            },
            app_id,
            lane,
            self.t - 1 if enqueued_at is None else enqueued_at,
            **fields,
        )
        self.outbox.park(waiting, 0.0, client=client)
        return waiting

    def park_many(self, items: Iterable[tuple[str, str]], lane: str = "interactive") -> None:
        pipe = self.r.pipeline(transaction=False)
        for task_id, app_id in items:
            self.park(task_id, app_id, lane, client=pipe)
        pipe.execute()

    def dispatched(self, since: int = 0) -> list[Dispatched]:
        return [d for batch in self.batches[since:] for d in batch]

    def tick(self, at: float | None = None) -> list[Waiting]:
        """One dispatcher tick at ``at`` (seconds); what it handed out, in order."""
        if at is not None:
            self.t = at
        before = len(self.batches)
        self.dispatcher.tick()
        return [d.waiting for d in self.dispatched(before)]

    def ids(self, at: float | None = None) -> list[str]:
        return [w.task_id for w in self.tick(at)]

    def end(self, task_id: str) -> None:
        """A dispatched message ended sent (as its send task would record it)."""
        app_id = next(d.waiting.app_id for d in self.dispatched() if d.waiting.task_id == task_id)
        result = SendResult(Status.SENT, app_id, "-", task_id)
        self.rt.endings.end(Ending(result, from_outbox=True), store_result=False)

    def done(self) -> None:
        """Every dispatched message ended (as its send task would record)."""
        for d in self.dispatched():
            self.end(d.waiting.task_id)


def at_most_burst_plus_rate(times_ms: list[int], burst: int, rate: float) -> None:
    for start in times_ms:
        for width in (100, 300, 1000, 2500):
            n = sum(1 for t in times_ms if start <= t < start + width)
            assert n <= burst + rate * width / 1000 + 1e-9, (start, width, n)


# -- buckets ----------------------------------------------------------------------------------


def test_the_global_bucket_bounds_dispatch_to_burst_plus_rate(
    redis_url: str, r: redis.Redis
) -> None:
    rig = Rig(
        redis_url, r, rate_per_second=5, burst=10, account_rate_per_second=1000, account_burst=1000
    )
    rig.online("a1", "a2", "a3")
    rig.park_many((f"m{i:03}", f"a{i % 3 + 1}") for i in range(150))
    times: list[int] = []
    per_tick = []
    for step in range(0, 6000, 100):
        n = len(rig.tick(T0 + step / 1000))
        per_tick.append(n)
        times += [step] * n
    assert per_tick[0] == 10  # the burst at once
    at_most_burst_plus_rate(times, burst=10, rate=5)
    assert len(times) >= 10 + 5 * 5.9 - 1  # and the rate is used, not wasted
    assert max(per_tick[1:]) == 1  # then one at a time, 200 ms apart


def test_each_accounts_bucket_bounds_its_own_dispatch(redis_url: str, r: redis.Redis) -> None:
    rig = Rig(redis_url, r, rate_per_second=1000, burst=1000)
    rig.online("slow", rate=2, burst=3)
    rig.online("fast", rate=20, burst=5)
    rig.park_many(
        [(f"s{i:03}", "slow") for i in range(100)] + [(f"f{i:03}", "fast") for i in range(200)]
    )
    times: dict[str, list[int]] = {"slow": [], "fast": []}
    for step in range(0, 5000, 50):
        for w in rig.tick(T0 + step / 1000):
            times[w.app_id].append(step)
    at_most_burst_plus_rate(times["slow"], burst=3, rate=2)
    at_most_burst_plus_rate(times["fast"], burst=5, rate=20)
    assert len(times["slow"]) >= 3 + 2 * 4.95 - 1
    assert len(times["fast"]) >= 5 + 20 * 4.95 - 1
    # an account waiting for its own bucket is looked at again when it refills, not before
    ready = r.zscore(rig.keys.outbox_ready(rig.keys.shard("slow"), Lane.INTERACTIVE), "slow")
    assert ready is not None and ready > rig.t * 1000


def test_dispatched_messages_carry_the_time_their_tokens_were_taken(
    redis_url: str, r: redis.Redis
) -> None:
    rig = Rig(redis_url, r)
    rig.online("a1")
    rig.park("m1", "a1")
    rig.tick(T0 + 0.25)
    (d,) = rig.dispatched()
    assert d.paid_at_ms == (T0 + 0.25) * 1000  # so the send task admits it at once


def test_replies_go_before_bulk_for_the_global_tokens(redis_url: str, r: redis.Redis) -> None:
    rig = Rig(
        redis_url, r, rate_per_second=1, burst=4, account_rate_per_second=1000, account_burst=1000
    )
    rig.online("shop", "crm")
    rig.park_many(((f"b{i}", "shop") for i in range(10)), lane="bulk")
    rig.park_many((f"i{i}", "crm") for i in range(6))
    order = []
    for s in range(20):
        order += rig.tick(T0 + s)
    lanes = [w.lane for w in order]
    assert lanes[:6] == ["interactive"] * 6  # every reply before any bulk message
    assert lanes.count("bulk") >= 5  # and bulk carries on behind them
    # a reply parked behind a bulk backlog takes the next token
    rig.park("late-reply", "crm", enqueued_at=T0 + 19)
    assert [w.task_id for w in rig.tick(T0 + 21)] == ["late-reply"]


def test_bulk_leaves_one_token_in_each_bucket_for_replies(redis_url: str, r: redis.Redis) -> None:
    rig = Rig(
        redis_url,
        r,
        rate_per_second=0.01,
        burst=3,
        account_rate_per_second=1000,
        account_burst=1000,
    )
    rig.online("shop", "crm")
    rig.park_many(((f"b{i}", "shop") for i in range(5)), lane="bulk")
    assert len(rig.tick(T0)) == 2  # of the global burst of 3
    assert rig.tick(T0 + 1) == []
    rig.park("reply", "crm")
    assert rig.ids(T0 + 2) == ["reply"]

    # the same for the account's own bucket
    rig2 = Rig(redis_url, r, key_prefix="t2", rate_per_second=1000, burst=1000)
    rig2.online("shop", rate=0.01, burst=2)
    rig2.park_many(((f"b{i}", "shop") for i in range(5)), lane="bulk")
    assert rig2.ids(T0) == ["b0"]
    rig2.park("reply", "shop")
    assert rig2.ids(T0 + 1) == ["reply"]


def test_accounts_share_the_global_bucket_fairly(redis_url: str, r: redis.Redis) -> None:
    # ten accounts could send 20/s together; the fleet may send 5/s
    rig = Rig(redis_url, r, rate_per_second=5, burst=5, account_rate_per_second=2, account_burst=2)
    apps = [f"acct{i:02}" for i in range(10)]
    rig.online(*apps)
    rig.park_many((f"{a}-{j:02}", a) for a in apps for j in range(40))
    got: Counter[str] = Counter()
    first_at: dict[str, int] = {}
    for step in range(0, 20_000, 100):
        for w in rig.tick(T0 + step / 1000):
            got[w.app_id] += 1
            first_at.setdefault(w.app_id, step)
    total = sum(got.values())
    assert total >= 5 + 5 * 19.9 - 1
    fair = total / len(apps)
    assert all(0.8 * fair <= got[a] <= 1.2 * fair for a in apps), got
    # nobody starves at the start either: every account has sent within 2 s
    assert max(first_at.values()) <= 2000, first_at


def test_a_lane_is_first_in_first_out(redis_url: str, r: redis.Redis) -> None:
    rig = Rig(redis_url, r, account_rate_per_second=3, account_burst=2)
    rig.online("a1")
    enqueued = [T0 - 100 + i for i in (7, 3, 9, 0, 5, 1, 8, 2, 6, 4)]
    for i, when in enumerate(enqueued):
        rig.park(f"m{i}", "a1", enqueued_at=when)
    order = []
    for step in range(0, 5000, 100):
        order += rig.ids(T0 + step / 1000)
    assert order == [f"m{i}" for i in sorted(range(10), key=lambda i: enqueued[i])]


# -- account states ------------------------------------------------------------------------------


def test_an_account_coming_back_holds_its_messages_until_it_is_online(
    redis_url: str, r: redis.Redis
) -> None:
    rig = Rig(redis_url, r)  # the default window: 600 s
    rig.online("a1")
    rig.store.transition("a1", Event.LIVENESS_FAILED)
    rig.park("stale", "a1", enqueued_at=T0 - 601)  # past its deadline
    rig.park("fresh-1", "a1", enqueued_at=T0 - 2)
    rig.park("fresh-2", "a1", enqueued_at=T0 - 1)
    # only the one past its deadline leaves (untaken), for the worker to fail it
    assert rig.ids(T0) == ["stale"]
    assert rig.dispatched()[0].paid_at_ms is None
    for s in (1, 2, 30):
        assert rig.tick(T0 + s) == []
    assert [w.task_id for w in rig.outbox.waiting("a1")] == ["fresh-1", "fresh-2"]
    rig.store.transition("a1", Event.RECONNECT_SUCCEEDED)
    assert rig.ids(T0 + 31) == ["fresh-1", "fresh-2"]
    # held while logging in, too
    rig.store.register("a2")
    rig.store.transition("a2", Event.LOGIN_STARTED)
    assert rig.store.get("a2").state is State.LOGGING_IN
    rig.park("qr", "a2", enqueued_at=T0 + 30)
    assert rig.tick(T0 + 40) == []


def test_an_account_that_cannot_send_releases_its_messages_to_fail(
    redis_url: str, r: redis.Redis
) -> None:
    rig = Rig(redis_url, r)
    rig.store.register("idle")
    rig.online("broken", "removed")
    rig.store.transition("broken", Event.LIVENESS_FAILED)
    while rig.store.get("broken").state is not State.ERROR:
        rig.store.transition("broken", Event.RECONNECT_FAILED)
    for app in ("idle", "broken", "removed", "never-registered"):
        rig.park(f"{app}-1", app)
        rig.park(f"{app}-2", app)
    rig.store.remove("removed")
    out = rig.tick(T0)
    assert sorted(w.task_id for w in out) == sorted(
        f"{a}-{i}" for a in ("idle", "broken", "removed", "never-registered") for i in (1, 2)
    )
    assert all(d.paid_at_ms is None for d in rig.dispatched())  # no token spent on them
    assert not any(
        rig.r.zcard(rig.keys.outbox_ready(s, Lane.INTERACTIVE)) for s in range(rig.keys.shards)
    )


# -- leases ------------------------------------------------------------------------------------


def test_a_dispatched_message_whose_lease_ran_out_goes_out_again(
    redis_url: str, r: redis.Redis
) -> None:
    rig = Rig(redis_url, r)
    rig.online("a1")
    rig.park("lost", "a1", enqueued_at=T0 - 2)
    rig.park("done", "a1", enqueued_at=T0 - 1)
    assert rig.ids(T0) == ["lost", "done"]
    rig.end("done")  # its send task finished
    assert rig.tick(T0 + LEASE_S - 1) == []
    assert rig.ids(T0 + LEASE_S + 1) == ["lost"]  # reclaimed and dispatched again
    assert rig.tick(T0 + LEASE_S + 2) == []
    assert r.zcard(rig.keys.outbox_inflight(rig.keys.shard("a1"))) == 1  # the second lease
    assert rig.dispatcher.reclaim(rig.keys.shard("a1"), (T0 + 2 * LEASE_S + 2) * 1000) == 1


def test_two_dispatchers_never_hand_out_one_message_twice(redis_url: str, r: redis.Redis) -> None:
    rig = Rig(
        redis_url, r, rate_per_second=300, burst=20, account_rate_per_second=50, account_burst=3
    )
    apps = [f"a{i:02}" for i in range(20)]
    rig.online(*apps)
    ids = [f"m{i:04}" for i in range(1000)]
    rig.park_many((task_id, apps[i % 20]) for i, task_id in enumerate(ids))

    lock = threading.Lock()
    now = [T0]

    def clock() -> float:
        with lock:
            now[0] += 0.002
            return now[0]

    handed: list[list[Dispatched]] = [[], []]
    clients = [redis_client(redis_url) for _ in handed]
    errors: list[BaseException] = []
    dispatchers = [
        build(clients[k], rig.settings).dispatcher(handed[k].extend, clock=clock) for k in (0, 1)
    ]
    for _ in range(2):  # both are live: they split the shards between them
        for d in dispatchers:
            d.leases.cycle()
    assert sorted(len(d.leases.held) for d in dispatchers) == [32, 32]

    def run(k: int) -> None:
        try:
            dispatcher = dispatchers[k]
            for _ in range(3000):
                dispatcher.tick()
                if sum(len(h) for h in handed) >= len(ids):
                    return
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for c in clients:
        c.close()
    assert not errors
    out = [d.waiting.task_id for h in handed for d in h]
    assert len(out) == len(set(out))  # never twice
    assert sorted(out) == ids  # nothing lost
    assert handed[0] and handed[1]  # both took part


def test_a_dispatcher_whose_leases_passed_to_another_dispatches_nothing(
    redis_url: str, r: redis.Redis
) -> None:
    rig = Rig(redis_url, r, rate_per_second=1000, burst=1000)
    apps = [f"a{i:02}" for i in range(40)]
    rig.online(*apps)
    old = rig.dispatcher
    old.leases.cycle()
    assert len(old.leases.held) == rig.keys.shards  # alone: it holds every shard
    # it is paused past its leases (SIGSTOP): they run out, and it drops out of the split
    r.delete(*(rig.keys.shard_lease(s) for s in range(rig.keys.shards)), rig.keys.dispatchers)
    new = build(r, rig.settings).dispatcher(rig.batches.append, clock=lambda: rig.t)
    new.leases.cycle()
    assert len(new.leases.held) == rig.keys.shards
    for i, app in enumerate(apps):
        rig.park(f"m{i}", app)
    # resumed, it still believes it holds its shards (its next lease cycle is not due)
    old.leases._next_cycle = float("inf")
    assert old.tick() == 0 and rig.dispatched() == []
    busy = {rig.keys.shard(a) for a in apps}
    assert old.fenced == len(busy)  # each call refused by the fencing token ...
    assert not busy & set(old.leases.held)  # ... and those shards given up
    assert new.tick() == 40  # the new holder dispatches everything, once


def test_a_batch_the_broker_refused_is_parked_again_at_once(redis_url: str, r: redis.Redis) -> None:
    rig = Rig(redis_url, r, rate_per_second=1000, burst=1000)
    rig.online("a1")
    rig.park("m1", "a1")
    rig.park("m2", "a1")

    def broker_away(batch: list[Dispatched]) -> None:
        raise ConnectionError("broker away")

    rig.dispatcher.publish = broker_away
    with pytest.raises(ConnectionError):
        rig.tick(T0)
    assert sorted(w.task_id for w in rig.outbox.waiting()) == ["m1", "m2"]  # not lost for 60 s
    rig.dispatcher.publish = rig.batches.append
    assert rig.ids(T0 + 5) == ["m1", "m2"]  # (their first tokens were spent)


# -- campaigns and operators ---------------------------------------------------------------------


def campaigns_for(rig: Rig) -> Campaigns:
    return rig.rt.campaigns


def test_a_paused_campaign_is_set_aside_and_resumes_in_order(
    redis_url: str, r: redis.Redis
) -> None:
    rig = Rig(redis_url, r, rate_per_second=1000, burst=1000)
    rig.online("a1", rate=1, burst=3)
    campaigns = campaigns_for(rig)
    campaigns.create(
        "c1", Content.parse("text", {"content": "hi"}), [("a1", f"w{i}") for i in range(12)]
    )
    assert rig.ids(T0) == ["c1:0", "c1:1"]  # the account's burst, less the reply reserve
    campaigns.pause("c1")
    assert rig.tick(T0 + 1) == []
    held = r.zrange(rig.keys.outbox_held(rig.keys.shard("a1")), 0, -1)
    assert len(held) == 10 and rig.outbox.waiting("a1") == []  # set aside within one tick
    # a reply on the same account is not held up by the paused campaign
    rig.park("reply", "a1", enqueued_at=T0 + 1)
    assert rig.ids(T0 + 2) == ["reply"]
    for s in range(3, 10):
        assert rig.tick(T0 + s) == []
    campaigns.resume("c1")
    order = []
    for s in range(10, 30):
        order += rig.ids(T0 + s)
    assert order == [f"c1:{i}" for i in range(2, 12)]  # where it stopped, in target order


def test_a_campaign_goes_out_in_target_order(redis_url: str, r: redis.Redis) -> None:
    rig = Rig(redis_url, r, rate_per_second=1000, burst=1000)
    rig.online("a1", rate=1000, burst=1000)
    campaigns_for(rig).create(
        "c1", Content.parse("text", {"content": "hi"}), [("a1", f"w{i}") for i in range(25)]
    )
    assert rig.ids(T0) == [f"c1:{i}" for i in range(25)]


def test_cancelling_a_campaign_counts_what_had_not_gone_out(redis_url: str, r: redis.Redis) -> None:
    rig = Rig(redis_url, r, rate_per_second=1000, burst=1000)
    rig.online("a1", rate=1, burst=3)
    campaigns = campaigns_for(rig)
    campaigns.create(
        "c1", Content.parse("text", {"content": "hi"}), [("a1", f"w{i}") for i in range(8)]
    )
    assert len(rig.tick(T0)) == 2
    campaigns.pause("c1")
    rig.tick(T0 + 1)  # some set aside, as a paused campaign's are
    shown = campaigns.cancel("c1")
    assert shown["state"] == "cancelled" and shown["cancelled"] == 6 and shown["waiting"] == 2
    assert [e["status"] for e in campaigns.report("c1")][2:] == ["cancelled"] * 6
    for s in range(2, 10):
        assert rig.tick(T0 + s) == []
    assert r.zcard(rig.keys.outbox_held(rig.keys.shard("a1"))) == 0 and rig.outbox.waiting() == []


def test_an_operator_cancels_only_a_waiting_message(redis_url: str, r: redis.Redis) -> None:
    rig = Rig(redis_url, r, account_rate_per_second=0.01, account_burst=1)
    rig.online("a1")
    rig.park("first", "a1")
    rig.park("second", "a1")
    assert rig.ids(T0) == ["first"]

    def cancel(task_id: str) -> dict[str, Any] | None:
        return rig.rt.endings.cancel_waiting(rig.outbox, task_id, CANCELLED_BY_OPERATOR)

    assert cancel("first") is None  # dispatched: it may be at the gateway
    assert cancel("nope") is None
    cancelled = cancel("second")
    assert cancelled is not None and cancelled["task_id"] == "second"
    assert cancelled["status"] == "cancelled"
    assert cancel("second") is None
    assert rig.outbox.waiting() == []
    assert rig.tick(T0 + 30) == []


def test_an_operator_can_cancel_a_paused_campaigns_message(redis_url: str, r: redis.Redis) -> None:
    rig = Rig(redis_url, r, rate_per_second=1000, burst=1000)
    rig.online("a1", rate=1, burst=3)
    campaigns = campaigns_for(rig)
    campaigns.create(
        "c1", Content.parse("text", {"content": "hi"}), [("a1", f"w{i}") for i in range(4)]
    )
    campaigns.pause("c1")
    rig.tick(T0)
    assert r.zcard(rig.keys.outbox_held(rig.keys.shard("a1"))) == 4
    cancelled = rig.rt.endings.cancel_waiting(rig.outbox, "c1:3", CANCELLED_BY_OPERATOR)
    assert cancelled is not None and cancelled["task_id"] == "c1:3"
    assert campaigns.show("c1")["cancelled"] == 1
    campaigns.resume("c1")
    out = []
    for s in range(1, 10):
        out += rig.ids(T0 + s)
    assert out == ["c1:0", "c1:1", "c1:2"]


def test_outbox_stats_say_how_much_waits_and_for_how_long(redis_url: str, r: redis.Redis) -> None:
    rig = Rig(redis_url, r)
    now_s, now_us = r.time()
    now = now_s + now_us / 1e6
    rig.online("busy", rate=0.001, burst=1)
    rig.online("back")
    rig.store.transition("back", Event.LIVENESS_FAILED)
    for i in range(3):
        rig.park(f"busy-{i}", "busy", enqueued_at=now - 30 + i)
    rig.park("back-0", "back", enqueued_at=now - 10)
    for i in range(4):
        rig.park(f"bulk-{i}", "back", lane="bulk", enqueued_at=now - 100)
    rig.tick(now + 1)  # parked just now, by the Redis clock
    stats = rig.outbox.stats()
    inter, bulk = stats["interactive"], stats["bulk"]
    assert inter["backlog"] == 3 and inter["accounts"] == 2
    assert 28 <= inter["oldest_age_s"] <= 32  # busy-1: busy-0 went out
    assert inter["dispatched"] == 1 and stats["inflight"]["dispatched"] == 1
    assert bulk["backlog"] == 4 and bulk["accounts"] == 1
    assert 99 <= bulk["oldest_age_s"] <= 103
    # nobody is overdue: "busy" waits for its own bucket, "back" is looked at in a second
    assert inter["dispatch_lag_s"] < 1 and bulk["dispatch_lag_s"] < 1
    assert bulk["dispatched"] == 0


def test_a_campaign_cancelled_while_it_loads_stays_cancelled_and_sends_nothing(
    redis_url: str, r: redis.Redis
) -> None:
    rig = Rig(redis_url, r, rate_per_second=1000, burst=1000)
    rig.online("a1", rate=1000, burst=1000)
    campaigns = campaigns_for(rig)

    def targets() -> Iterable[tuple[str, str]]:
        for i in range(3000):
            if i == 1000:  # an operator cancels after the first chunk is in
                assert campaigns.cancel("big")["state"] == "cancelled"
            yield ("a1", f"w{i}")

    summary = campaigns.create("big", Content.parse("text", {"content": "hi"}), targets())
    assert summary["state"] == "cancelled" and summary["waiting"] == 0
    assert summary["cancelled"] == summary["total"] == 1000
    assert rig.outbox.waiting(app_id="a1") == []
    assert rig.ids(rig.t) == []  # the dispatcher hands out none of it


def test_each_shard_holds_a_copy_of_what_a_dispatch_call_reads_fleet_wide(
    redis_url: str, r: redis.Redis
) -> None:
    from wxtasks import mirrors

    rig = Rig(redis_url, r, rate_per_second=1000, burst=1000)
    rig.online("a1")
    keys = rig.keys
    # a writer that died between marking the gateway down and copying it: the beat's
    # refresh (every second) copies it into every shard
    r.sadd(keys.gateways_down, "default")
    assert mirrors.refresh(r, keys, rig.scripts) == keys.shards
    assert all(r.sismember(keys.mirror_gateways_down(s), "default") for s in range(keys.shards))
    assert mirrors.refresh(r, keys, rig.scripts) == 0  # up to date: nothing rewritten
    rig.park("held", "a1")
    assert rig.tick(T0) == []  # the shard's copy says its gateway is down
    rig.rt.fleet.answered("default", force=True)  # not marked down in its health: no edge
    r.srem(keys.gateways_down, "default")
    assert mirrors.refresh(r, keys, rig.scripts) == keys.shards
    assert rig.ids(T0 + 2) == ["held"]
    # a campaign's pause is copied at once by the pause itself
    campaigns = rig.rt.campaigns
    campaigns.create("c1", Content.parse("text", {"content": "hi"}), [("a1", "w1")])
    campaigns.pause("c1")
    shard = keys.shard("a1")
    assert r.hget(keys.mirror_campaigns_stopped(shard), "c1") == "paused"
    campaigns.resume("c1")
    assert r.hget(keys.mirror_campaigns_stopped(shard), "c1") is None
