"""The admit script (state, dedup, deadline, lane order, both token buckets) on a real
Redis, with an explicit clock: no sleeps."""

from __future__ import annotations

import redis

from tests.conftest import build, end_sent
from wxtasks.accounts.machine import Event
from wxtasks.accounts.store import AccountStore
from wxtasks.config import Settings
from wxtasks.gateway import SendReceipt
from wxtasks.send.gates import Answer, Lane
from wxtasks.send.outbox import Waiting
from wxtasks.send.pipeline import Message, SendPipeline
from wxtasks.send.policy import Ticket

T0 = 1_700_000_000_000.0  # ms


def setup(redis_url: str, r: redis.Redis, **overrides: object) -> tuple[AccountStore, SendPipeline]:
    """Admission on its own: bulk pacing off unless a test turns it on (test_pacing's)."""
    pacing_off = {"quiet_hours": "", "warmup_s": 0, "bulk_jitter_s": "0-0"}
    settings = Settings.from_env({}, redis_url=redis_url, **{**pacing_off, **overrides})
    store = build(r, settings).accounts
    pipe = build(r, settings).pipeline
    return store, pipe


def online(store: AccountStore, app_id: str, **options: object) -> None:
    store.register(app_id, **options)  # type: ignore[arg-type]
    store.transition(app_id, Event.LOGIN_SUCCEEDED)


def msg(app_id: str = "a1", to: str = "wxid_1", content: str = "hi", **kw: str) -> Message:
    return Message.parse("text", {"app_id": app_id, "to_wxid": to, "content": content, **kw})


def ticket(
    pipe: SendPipeline,
    task_id: str,
    lane: Lane = Lane.INTERACTIVE,
    enqueued_ms: float = T0,
    **kw: object,
) -> Ticket:
    return pipe.ticket(task_id, lane, enqueued_ms / 1000, **kw)  # type: ignore[arg-type]


def test_global_bucket_gives_burst_then_rate(redis_url: str, r: redis.Redis) -> None:
    store, pipe = setup(
        redis_url, r, rate_per_second=20, burst=5, account_rate_per_second=1000, account_burst=1000
    )
    online(store, "a1")
    admitted = [
        pipe.admit(msg(content=f"m{i}"), ticket(pipe, f"t{i}"), now_ms=T0).answer for i in range(8)
    ]
    assert admitted == [Answer.ADMITTED] * 5 + [Answer.GLOBAL_TOKENS] * 3
    wait = pipe.admit(msg(content="m9"), ticket(pipe, "t9"), now_ms=T0)
    assert wait.wait_s == 0.05 and wait.answer is Answer.GLOBAL_TOKENS  # one token every 1/20 s
    assert pipe.admit(msg(content="m9"), ticket(pipe, "t9"), now_ms=T0 + 49).answer is (
        Answer.GLOBAL_TOKENS
    )
    assert (
        pipe.admit(msg(content="m9"), ticket(pipe, "t9"), now_ms=T0 + 50).answer is Answer.ADMITTED
    )


def test_never_more_than_burst_plus_rate_times_window(redis_url: str, r: redis.Redis) -> None:
    store, pipe = setup(
        redis_url, r, rate_per_second=20, burst=5, account_rate_per_second=1000, account_burst=1000
    )
    online(store, "a1")
    times = []
    i = 0
    for step in range(0, 3000, 7):  # a client hammering every 7 ms for 3 s
        while (
            pipe.admit(msg(content=f"m{i}"), ticket(pipe, f"t{i}"), now_ms=T0 + step).answer
            is Answer.ADMITTED
        ):
            times.append(step)
            i += 1
    for start in times:
        for width in (50, 100, 500, 1000):
            n = sum(1 for t in times if start <= t < start + width)
            assert n <= 5 + 20 * width / 1000 + 1e-9
    assert 5 + 20 * 2.9 <= len(times) <= 5 + 20 * 3


def test_a_short_account_bucket_takes_nothing_global(redis_url: str, r: redis.Redis) -> None:
    store, pipe = setup(
        redis_url, r, rate_per_second=100, burst=3, account_rate_per_second=1, account_burst=2
    )
    online(store, "slow")
    online(store, "fast", rate=50, burst=50)
    first = [
        pipe.admit(msg("slow", content=f"s{i}"), ticket(pipe, f"s{i}"), now_ms=T0) for i in range(3)
    ]
    assert [a.answer for a in first] == [Answer.ADMITTED, Answer.ADMITTED, Answer.ACCOUNT_TOKENS]
    assert first[2].answer is Answer.ACCOUNT_TOKENS and first[2].wait_s == 1.0
    # the account's shortage took no global token: "fast" still has the one left
    assert pipe.admit(msg("fast", content="f0"), ticket(pipe, "f0"), now_ms=T0).answer is (
        Answer.ADMITTED
    )


def test_bulk_leaves_a_token_in_each_bucket_for_replies(redis_url: str, r: redis.Redis) -> None:
    store, pipe = setup(
        redis_url, r, rate_per_second=100, burst=3, account_rate_per_second=1, account_burst=2
    )
    online(store, "shop")
    bulk = pipe.admit(msg("shop", content="b0"), ticket(pipe, "b0", Lane.BULK), now_ms=T0)
    assert bulk.answer is Answer.ADMITTED
    # the account's second token is the reply's: bulk may not take it
    held = pipe.admit(msg("shop", content="b1"), ticket(pipe, "b1", Lane.BULK), now_ms=T0)
    assert held.answer is Answer.ACCOUNT_TOKENS
    reply = pipe.admit(msg("shop", content="r0"), ticket(pipe, "r0"), now_ms=T0)
    assert reply.answer is Answer.ADMITTED


def test_a_fresh_message_queues_behind_the_waiting_ones_of_its_lane(
    redis_url: str, r: redis.Redis
) -> None:
    store, pipe = setup(redis_url, r, account_rate_per_second=10, account_burst=10)
    online(store, "a1")
    older = Waiting("old", "wxtasks.send_text", {"app_id": "a1"}, "a1", "interactive", T0 / 1000)
    build(r, pipe.settings).outbox.park(older, 0)
    fresh = pipe.admit(msg(content="new"), ticket(pipe, "new"), now_ms=T0)
    assert fresh.answer is Answer.BEHIND
    # the dispatched message itself is not behind anyone, nor is another lane's
    assert (
        pipe.admit(msg(content="old"), ticket(pipe, "old", from_outbox=True), now_ms=T0).answer
        is Answer.ADMITTED
    )
    assert (
        pipe.admit(msg(content="b"), ticket(pipe, "b", Lane.BULK), now_ms=T0).answer
        is Answer.ADMITTED
    )


def test_the_deadline_counts_from_the_first_enqueue(redis_url: str, r: redis.Redis) -> None:
    store, pipe = setup(redis_url, r)  # the default windows: 600 s, bulk 86,400 s
    assert (pipe.settings.send_deadline_s, pipe.settings.bulk_deadline_s) == (600, 86_400)
    online(store, "a1")
    late = pipe.admit(msg(content="x"), ticket(pipe, "t1"), now_ms=T0 + 600_001)
    assert late.answer is Answer.EXPIRED and late.enqueued_at == T0 / 1000
    assert r.get(pipe.keys.global_bucket) is None  # an expired message takes nothing
    # the bulk lane's window is its own
    bulk = pipe.admit(msg(content="y"), ticket(pipe, "t2", Lane.BULK), now_ms=T0 + 600_001)
    assert bulk.answer is Answer.ADMITTED


def test_a_message_without_an_enqueue_time_keeps_its_first_sighting(
    redis_url: str, r: redis.Redis
) -> None:
    store, pipe = setup(redis_url, r)  # the default window: 600 s
    store.register("a1")  # IDLE: the first attempt fails, but it has been seen
    plain = pipe.ticket("plain", Lane.INTERACTIVE, None)
    first = pipe.admit(msg(content="x"), plain, now_ms=T0)
    assert first.enqueued_at == T0 / 1000
    store.transition("a1", Event.LOGIN_SUCCEEDED)
    # redelivered 11 minutes later: its clock did not restart
    again = pipe.admit(msg(content="x"), plain, now_ms=T0 + 660_000)
    assert again.answer is Answer.EXPIRED and again.enqueued_at == T0 / 1000


def test_duplicates_and_redelivery(redis_url: str, r: redis.Redis) -> None:
    store, pipe = setup(redis_url, r, account_rate_per_second=100, account_burst=100)
    online(store, "a1")
    m = msg(content="same")
    t1 = ticket(pipe, "task-1")
    assert pipe.admit(m, t1, now_ms=T0).answer is Answer.ADMITTED
    # while the first holder may still be at the gateway, a redelivery is told how long
    held = pipe.admit(m, t1, now_ms=T0 + 1000)
    assert held.answer is Answer.REDELIVERED and held.claim["status"] == "inflight"
    assert held.wait_s == (2 * pipe.settings.gateway_timeout_s + 5) - 1
    end_sent(pipe, m, t1, SendReceipt("wxid_1", "11", "9007199254740993", 5))
    dup = pipe.admit(msg(content="same"), ticket(pipe, "task-2"), now_ms=T0)
    assert dup.answer is Answer.DUPLICATE
    assert dup.claim["owner"] == "task-1" and dup.claim["newMsgId"] == "9007199254740993"
    # the same task coming back (redelivered) is told apart from a new duplicate
    again = pipe.admit(m, t1, now_ms=T0)
    assert again.answer is Answer.REDELIVERED and again.claim["status"] == "sent"
    # a different recipient or content is a different message
    assert (
        pipe.admit(msg(to="wxid_2", content="same"), ticket(pipe, "t3"), now_ms=T0).answer
        is Answer.ADMITTED
    )
    # the caller's dedup_key wins over the content
    k1, k2 = msg(content="v1", dedup_key="order-7"), msg(content="v2", dedup_key="order-7")
    assert pipe.admit(k1, ticket(pipe, "k1"), now_ms=T0).answer is Answer.ADMITTED
    assert pipe.admit(k2, ticket(pipe, "k2"), now_ms=T0).answer is Answer.DUPLICATE


def test_released_claims_let_a_retry_send(redis_url: str, r: redis.Redis) -> None:
    store, pipe = setup(redis_url, r)
    online(store, "a1")
    m = msg(content="retry me")
    assert pipe.admit(m, ticket(pipe, "t1"), now_ms=T0).answer is Answer.ADMITTED
    pipe.release(m, "other-task")  # not the owner: nothing happens
    assert pipe.admit(m, ticket(pipe, "t2"), now_ms=T0).answer is Answer.DUPLICATE
    pipe.release(m, "t1")
    assert pipe.admit(m, ticket(pipe, "t2"), now_ms=T0 + 1000).answer is Answer.ADMITTED


def test_claims_expire_after_the_dedup_window(redis_url: str, r: redis.Redis) -> None:
    store, pipe = setup(redis_url, r, dedup_ttl_s=300)
    online(store, "a1")
    m = msg()
    pipe.admit(m, ticket(pipe, "t1"), now_ms=T0)
    assert 295 <= r.ttl(pipe.claim_key(m)) <= 300


def test_a_dispatched_message_was_paid_for_by_the_dispatcher(
    redis_url: str, r: redis.Redis
) -> None:
    store, pipe = setup(redis_url, r, rate_per_second=1, burst=1)
    online(store, "a1")
    assert pipe.admit(msg(content="x"), ticket(pipe, "t1"), now_ms=T0).answer is Answer.ADMITTED
    paid = ticket(pipe, "t2", from_outbox=True)
    assert pipe.admit(msg(content="y"), paid, paid_at_ms=T0, now_ms=T0).answer is Answer.ADMITTED
    # one that sat in the broker (workers were down) asks the buckets again: a backlog of
    # dispatched messages never bursts out at the gateway together
    stale = ticket(pipe, "t3", from_outbox=True)
    late = pipe.admit(msg(content="z"), stale, paid_at_ms=T0 - 5000, now_ms=T0)
    assert late.answer is Answer.GLOBAL_TOKENS


def test_a_stopped_campaigns_target_is_not_admitted(redis_url: str, r: redis.Redis) -> None:
    store, pipe = setup(redis_url, r)
    online(store, "a1")
    r.hset(pipe.keys.campaigns_stopped, mapping={"c1": "paused", "c2": "cancelled"})
    for campaign, answer in (("c1", Answer.CAMPAIGN_PAUSED), ("c2", Answer.CAMPAIGN_CANCELLED)):
        t = ticket(pipe, f"{campaign}:0", Lane.BULK, campaign=campaign)
        refused = pipe.admit(msg(content=campaign), t, now_ms=T0)
        assert refused.answer is answer and refused.detail == campaign


def test_state_and_registration_are_checked_first(redis_url: str, r: redis.Redis) -> None:
    store, pipe = setup(redis_url, r)
    assert pipe.admit(msg("ghost"), ticket(pipe, "t")).answer is Answer.UNKNOWN_ACCOUNT
    store.register("idle")
    refused = pipe.admit(msg("idle"), ticket(pipe, "t"), now_ms=T0)
    assert refused.answer is Answer.ACCOUNT_UNUSABLE and refused.detail == "IDLE"
    assert r.get(pipe.keys.global_bucket) is None  # no token taken


def test_buckets_use_the_redis_clock(redis_url: str, r: redis.Redis) -> None:
    store, pipe = setup(redis_url, r, rate_per_second=1, burst=1)
    online(store, "a1")
    seconds, micros = r.time()
    now = seconds * 1000 + micros / 1000
    assert pipe.admit(msg(content="x"), ticket(pipe, "t1", enqueued_ms=now)).answer is (
        Answer.ADMITTED
    )
    tat = float(r.get(pipe.keys.global_bucket))
    assert abs(tat - (now + 1000)) < 1000
