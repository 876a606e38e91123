"""The admit script (state, dedup, both token buckets) on a real Redis, with an explicit
clock: no sleeps."""

from __future__ import annotations

import redis

from tests.conftest import TOKEN
from wxtasks.accounts import AccountStore
from wxtasks.config import Settings
from wxtasks.gateway import GatewayClient, SendReceipt
from wxtasks.machine import Event
from wxtasks.sending import Admit, Message, SendPipeline, Status


def setup(redis_url: str, r: redis.Redis, **overrides: object) -> tuple[AccountStore, SendPipeline]:
    settings = Settings.from_env({}, redis_url=redis_url, **overrides)
    store = AccountStore(r, settings)
    pipe = SendPipeline(r, settings, GatewayClient("http://127.0.0.1:1", TOKEN))
    return store, pipe


def online(store: AccountStore, app_id: str, **options: object) -> None:
    store.register(app_id, **options)  # type: ignore[arg-type]
    store.transition(app_id, Event.LOGIN_SUCCEEDED)


def msg(app_id: str = "a1", to: str = "wxid_1", content: str = "hi", **kw: str) -> Message:
    return Message.parse("text", {"app_id": app_id, "to_wxid": to, "content": content, **kw})


def test_global_bucket_gives_burst_then_rate(redis_url: str, r: redis.Redis) -> None:
    store, pipe = setup(
        redis_url, r, rate_per_second=20, burst=5, account_rate_per_second=1000, account_burst=1000
    )
    online(store, "a1")
    t0 = 1_700_000_000_000.0
    admitted = [pipe.admit(msg(content=f"m{i}"), f"t{i}", now_ms=t0).outcome for i in range(8)]
    assert admitted == [Admit.ADMITTED] * 5 + [Admit.WAIT] * 3
    wait = pipe.admit(msg(content="m9"), "t9", now_ms=t0)
    assert wait.wait_s == 0.05  # one token every 1/20 s
    assert pipe.admit(msg(content="m9"), "t9", now_ms=t0 + 49).outcome is Admit.WAIT
    assert pipe.admit(msg(content="m9"), "t9", now_ms=t0 + 50).outcome is Admit.ADMITTED


def test_never_more_than_burst_plus_rate_times_window(redis_url: str, r: redis.Redis) -> None:
    store, pipe = setup(
        redis_url, r, rate_per_second=20, burst=5, account_rate_per_second=1000, account_burst=1000
    )
    online(store, "a1")
    t0 = 1_700_000_000_000.0
    times = []
    i = 0
    for step in range(0, 3000, 7):  # a client hammering every 7 ms for 3 s
        while pipe.admit(msg(content=f"m{i}"), f"t{i}", now_ms=t0 + step).outcome is Admit.ADMITTED:
            times.append(step)
            i += 1
    for start in times:
        for width in (50, 100, 500, 1000):
            n = sum(1 for t in times if start <= t < start + width)
            assert n <= 5 + 20 * width / 1000 + 1e-9
    assert 5 + 20 * 2.9 <= len(times) <= 5 + 20 * 3


def test_account_bucket_books_slots_in_order_and_takes_nothing_global(
    redis_url: str, r: redis.Redis
) -> None:
    store, pipe = setup(
        redis_url, r, rate_per_second=100, burst=3, account_rate_per_second=1, account_burst=2
    )
    online(store, "slow")
    online(store, "fast", rate=50, burst=50)
    t0 = 1_700_000_000_000.0
    first = [pipe.admit(msg("slow", content=f"s{i}"), f"s{i}", now_ms=t0) for i in range(4)]
    assert [a.outcome for a in first] == [
        Admit.ADMITTED,
        Admit.ADMITTED,
        Admit.SCHEDULED,
        Admit.SCHEDULED,
    ]
    # each message waiting on the account books the next slot, in arrival order
    assert [a.wait_s for a in first[2:]] == [1.0, 2.0]
    # a booked slot took no global token: "fast" still has the one left in the burst
    assert pipe.admit(msg("fast", content="f0"), "f0", now_ms=t0).outcome is Admit.ADMITTED
    # and a global shortage takes nothing from the account
    assert pipe.admit(msg("fast", content="f1"), "f1", now_ms=t0).outcome is Admit.WAIT
    assert pipe.admit(msg("fast", content="f1"), "f1", now_ms=t0 + 10).outcome is Admit.ADMITTED
    # at its slot the booked message needs only a global token
    assert pipe.admit(msg("slow", content="s2"), "s2", now_ms=t0 + 1000).outcome is Admit.ADMITTED
    # a booked message is still "the same message" for everyone else
    assert pipe.admit(msg("slow", content="s3"), "other", now_ms=t0).outcome is Admit.DUPLICATE


def test_a_booked_slot_is_given_up_when_the_account_leaves_online(
    redis_url: str, r: redis.Redis
) -> None:
    store, pipe = setup(redis_url, r, account_rate_per_second=1, account_burst=1)
    online(store, "a1")
    t0 = 1_700_000_000_000.0
    assert pipe.admit(msg(content="m0"), "t0", now_ms=t0).outcome is Admit.ADMITTED
    booked = msg(content="m1")
    assert pipe.admit(booked, "t1", now_ms=t0).outcome is Admit.SCHEDULED
    store.transition("a1", Event.LIVENESS_FAILED)
    refused = pipe.admit(booked, "t1", now_ms=t0 + 1000)
    assert refused.outcome is Admit.NOT_ONLINE and not r.exists(pipe.claim_key(booked))


def test_duplicates_and_redelivery(redis_url: str, r: redis.Redis) -> None:
    store, pipe = setup(redis_url, r, account_rate_per_second=100, account_burst=100)
    online(store, "a1")
    m = msg(content="same")
    assert pipe.admit(m, "task-1").outcome is Admit.ADMITTED
    pipe.record(m, "task-1", Status.SENT, SendReceipt("wxid_1", "11", "9007199254740993", 5))
    dup = pipe.admit(msg(content="same"), "task-2")
    assert dup.outcome is Admit.DUPLICATE
    assert dup.claim["owner"] == "task-1" and dup.claim["newMsgId"] == "9007199254740993"
    # the same task coming back (redelivered) is told apart from a new duplicate
    again = pipe.admit(m, "task-1")
    assert again.outcome is Admit.REDELIVERED and again.claim["status"] == "sent"
    # a different recipient or content is a different message
    assert pipe.admit(msg(to="wxid_2", content="same"), "task-3").outcome is Admit.ADMITTED
    # the caller's dedup_key wins over the content
    assert pipe.admit(msg(content="v1", dedup_key="order-7"), "k1").outcome is Admit.ADMITTED
    assert pipe.admit(msg(content="v2", dedup_key="order-7"), "k2").outcome is Admit.DUPLICATE


def test_released_claims_let_a_retry_send(redis_url: str, r: redis.Redis) -> None:
    store, pipe = setup(redis_url, r)
    online(store, "a1")
    m = msg(content="retry me")
    assert pipe.admit(m, "t1").outcome is Admit.ADMITTED
    pipe.release(m, "other-task")  # not the owner: nothing happens
    assert pipe.admit(m, "t2").outcome is Admit.DUPLICATE
    pipe.release(m, "t1")
    assert pipe.admit(m, "t2").outcome is Admit.ADMITTED


def test_claims_expire_after_the_dedup_window(redis_url: str, r: redis.Redis) -> None:
    store, pipe = setup(redis_url, r, dedup_ttl_s=300)
    online(store, "a1")
    m = msg()
    pipe.admit(m, "t1")
    assert 295 <= r.ttl(pipe.claim_key(m)) <= 300


def test_state_and_registration_are_checked_first(redis_url: str, r: redis.Redis) -> None:
    store, pipe = setup(redis_url, r)
    assert pipe.admit(msg("ghost"), "t").outcome is Admit.UNKNOWN_ACCOUNT
    store.register("idle")
    refused = pipe.admit(msg("idle"), "t")
    assert refused.outcome is Admit.NOT_ONLINE and refused.state == "IDLE"
    assert r.get(pipe.keys.global_bucket) is None  # no token taken


def test_buckets_use_the_redis_clock(redis_url: str, r: redis.Redis) -> None:
    store, pipe = setup(redis_url, r, rate_per_second=1, burst=1)
    online(store, "a1")
    assert pipe.admit(msg(content="x"), "t1").outcome is Admit.ADMITTED
    seconds, micros = r.time()
    tat = float(r.get(pipe.keys.global_bucket))
    assert abs(tat - (seconds * 1000 + micros / 1000 + 1000)) < 1000


def test_no_account_slot_is_booked_past_the_messages_deadline(
    redis_url: str, r: redis.Redis
) -> None:
    store, pipe = setup(redis_url, r, account_rate_per_second=1, account_burst=1)
    online(store, "a1")
    t0 = 1_700_000_000_000.0
    assert pipe.admit(msg(content="m0"), "t0", now_ms=t0).outcome is Admit.ADMITTED
    # its slot (in 1 s) lies past what its deadline allows: nothing is booked or claimed
    late = pipe.admit(msg(content="m1"), "t1", now_ms=t0, max_wait_s=0.5)
    assert late.outcome is Admit.WAIT and late.wait_s == 1.0
    assert not r.exists(pipe.claim_key(msg(content="m1")))
    # so the next message still gets the slot at 1 s, not at 2 s
    nxt = pipe.admit(msg(content="m2"), "t2", now_ms=t0, max_wait_s=60)
    assert nxt.outcome is Admit.SCHEDULED and nxt.wait_s == 1.0
