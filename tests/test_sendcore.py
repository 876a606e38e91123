"""The send path's decision table (``wxtasks.send.policy.decide``), with an injected clock and rand:
for every admission and gateway answer, what happens to the message."""

from __future__ import annotations

import json

import pytest

from wxtasks.backoff import backoff_s
from wxtasks.send.gates import Admission, Answer, Lane
from wxtasks.send.outcome import DeadLetter, SendResult, Status
from wxtasks.send.policy import (
    BUSINESS_ATTEMPTS,
    HOLD_POLL_S,
    RETRY_CAP_S,
    SHORT_WAIT_S,
    Action,
    Do,
    Gateway,
    GatewayAnswer,
    Ticket,
    decide,
)

NOW = 1_700_000_000.0
WINDOW_S = 600.0


def ticket(
    attempt: int = 0, enqueued_at: float = NOW - 10, lane: Lane = Lane.INTERACTIVE
) -> Ticket:
    return Ticket("task-1", lane, enqueued_at, WINDOW_S, attempt)


def never() -> float:
    raise AssertionError("an admission decision draws no jitter")


def admission(answer: Answer, **kw: object) -> Action:
    return decide(ticket(), Admission(answer, **kw), NOW, rand=never)  # type: ignore[arg-type]


def gateway(outcome: Gateway, attempt: int = 0, jitter: float = 0.5) -> Action:
    return decide(ticket(attempt), GatewayAnswer(outcome, "ret=500 boom"), NOW, lambda: jitter)


def is_failed_and_dead_lettered(action: Action) -> bool:
    return (
        action.do is Do.FINISH
        and action.status is Status.FAILED
        and action.dead_letter
        and action.release
    )


# -- admission ------------------------------------------------------------------------------


def test_admitted_is_sent() -> None:
    assert admission(Answer.ADMITTED, enqueued_at=NOW - 10) == Action(Do.SEND)


def test_an_unknown_account_fails_at_once_and_is_dead_lettered() -> None:
    action = admission(Answer.UNKNOWN_ACCOUNT)
    assert is_failed_and_dead_lettered(action)
    assert "not registered" in action.reason


def test_a_message_past_its_deadline_fails_saying_how_old_it_is() -> None:
    # the admission knows when the message was first enqueued, better than this ticket
    action = admission(Answer.EXPIRED, enqueued_at=NOW - 700)
    assert is_failed_and_dead_lettered(action)
    assert "enqueued 700s ago" in action.reason and "600s" in action.reason
    assert "interactive lane" in action.reason


def test_a_duplicate_ends_duplicate_and_keeps_the_first_senders_claim() -> None:
    claim = {"owner": "task-0", "status": "sent", "msgId": "1"}
    action = admission(Answer.DUPLICATE, claim=claim)
    assert action.do is Do.FINISH and action.status is Status.DUPLICATE
    assert not action.release and not action.dead_letter  # the claim is another task's


def test_a_redelivered_message_that_was_sent_is_not_sent_again() -> None:
    action = admission(Answer.REDELIVERED, claim={"status": "sent", "msgId": "11"})
    assert action.do is Do.FINISH and action.status is Status.SENT
    assert not action.dead_letter and not action.release


def test_a_redelivered_message_with_an_unknown_outcome_is_dead_lettered_not_resent() -> None:
    action = admission(Answer.REDELIVERED, claim={"status": "unknown"})
    assert action.do is Do.FINISH and action.status is Status.UNKNOWN
    assert action.dead_letter and not action.release  # the claim keeps it from a resend
    assert "not sent again" in action.reason


def test_a_redelivered_message_another_worker_may_still_hold_waits_for_its_hold() -> None:
    action = admission(Answer.REDELIVERED, claim={"status": "inflight"}, wait_s=24.0)
    assert action.do is Do.PARK and action.wait_s == 24.0
    assert action.retry and not action.release  # not our claim to free


def test_a_redelivered_message_whose_holder_died_is_unknown_not_resent() -> None:
    # the hold ended and the claim still says inflight: the holder died mid-send
    action = admission(Answer.REDELIVERED, claim={"status": "inflight"}, wait_s=0.0)
    assert action.do is Do.FINISH and action.status is Status.UNKNOWN
    assert action.dead_letter and not action.release


@pytest.mark.parametrize("state", ["RECONNECTING", "LOGGING_IN"])
def test_an_account_coming_back_holds_its_messages(state: str) -> None:
    action = admission(Answer.ACCOUNT_WAITING, detail=state, enqueued_at=NOW - 10)
    assert action.do is Do.PARK and action.wait_s == HOLD_POLL_S
    assert not action.retry and not action.release and state in action.reason


@pytest.mark.parametrize("state", ["IDLE", "ERROR"])
def test_an_account_that_cannot_come_back_by_itself_fails_its_messages(state: str) -> None:
    action = admission(Answer.ACCOUNT_UNUSABLE, detail=state, enqueued_at=NOW - 10)
    assert is_failed_and_dead_lettered(action)
    assert f"account is {state}" in action.reason


def test_a_paused_campaigns_message_waits_and_a_cancelled_ones_ends_cancelled() -> None:
    paused = admission(Answer.CAMPAIGN_PAUSED, enqueued_at=NOW)
    assert paused.do is Do.PARK and not paused.retry
    cancelled = admission(Answer.CAMPAIGN_CANCELLED, enqueued_at=NOW)
    assert cancelled.do is Do.FINISH and cancelled.status is Status.CANCELLED
    assert not cancelled.dead_letter  # an operator's doing, not a failure


@pytest.mark.parametrize("wait_s", [0.001, 0.5, SHORT_WAIT_S])
def test_a_short_wait_for_a_global_token_sleeps_in_the_worker(wait_s: float) -> None:
    action = admission(Answer.GLOBAL_TOKENS, wait_s=wait_s, enqueued_at=NOW - 10)
    assert action.do is Do.SLEEP and action.wait_s == wait_s
    assert "global" in action.reason


def test_a_wait_for_one_accounts_token_parks_so_it_holds_up_no_other_account() -> None:
    # a burst to one account must not keep workers asleep while another's reply waits
    assert admission(Answer.ACCOUNT_TOKENS, wait_s=0.02, enqueued_at=NOW).do is Do.SLEEP
    action = admission(Answer.ACCOUNT_TOKENS, wait_s=0.5, enqueued_at=NOW)
    assert action.do is Do.PARK and "account" in action.reason


@pytest.mark.parametrize("why", [Answer.GLOBAL_TOKENS, Answer.ACCOUNT_TOKENS])
def test_a_longer_wait_parks_the_message_in_the_outbox(why: Answer) -> None:
    action = admission(why, wait_s=SHORT_WAIT_S + 0.001, enqueued_at=NOW)
    assert action.do is Do.PARK and action.wait_s == SHORT_WAIT_S + 0.001
    assert not action.retry and not action.release


def test_a_message_behind_older_ones_parks_however_short_the_wait() -> None:
    action = admission(Answer.BEHIND, wait_s=0.0, enqueued_at=NOW)
    assert action.do is Do.PARK and "behind older messages" in action.reason


def test_a_wait_that_would_end_past_the_deadline_parks_instead_of_sleeping() -> None:
    # 0.2 s left of its window: sleeping 0.5 s would only hand it in late
    late = ticket(enqueued_at=NOW - WINDOW_S + 0.2)
    action = decide(late, Admission(Answer.GLOBAL_TOKENS, wait_s=0.5), NOW, never)
    assert action.do is Do.PARK
    # the same wait with time to spare sleeps
    early = ticket(enqueued_at=NOW - WINDOW_S + 0.5)
    assert decide(early, Admission(Answer.GLOBAL_TOKENS, wait_s=0.5), NOW, never).do is (Do.SLEEP)


def test_the_bulk_lanes_longer_window_counts_for_the_sleep() -> None:
    bulk = Ticket("c:0", Lane.BULK, NOW - 3600, 86_400.0)
    action = decide(bulk, Admission(Answer.GLOBAL_TOKENS, wait_s=0.5), NOW, never)
    assert action.do is Do.SLEEP


# -- the gateway's answer ---------------------------------------------------------------------


def test_sent_finishes_sent_and_keeps_the_claim() -> None:
    action = gateway(Gateway.SENT)
    assert action == Action(Do.FINISH, Status.SENT)


def test_an_unknown_outcome_is_dead_lettered_and_never_resent() -> None:
    action = gateway(Gateway.UNKNOWN)
    assert action.do is Do.FINISH and action.status is Status.UNKNOWN
    assert action.dead_letter and not action.release  # the claim stops a resend
    assert "not resent" in action.reason


def test_offline_parks_frees_the_claim_tells_the_lifecycle_and_backs_off() -> None:
    action = gateway(Gateway.OFFLINE, attempt=2, jitter=0.5)
    assert action.do is Do.PARK
    assert action.release and action.offline and action.retry and not action.dead_letter
    assert action.wait_s == 4.0  # 2 ** attempt at the middle of the jitter
    assert "offline" in action.reason


def test_unavailable_parks_and_retries_without_blaming_the_account() -> None:
    action = gateway(Gateway.UNAVAILABLE, attempt=0, jitter=0.5)
    assert action.do is Do.PARK and action.release and action.retry
    assert not action.offline and action.wait_s == 1.0


def test_a_business_error_is_tried_business_attempts_times_in_all_then_fails() -> None:
    attempt, calls = 0, 0
    while True:
        calls += 1
        action = gateway(Gateway.BUSINESS, attempt=attempt)
        if action.do is not Do.PARK:
            break
        assert action.release and action.retry and not action.offline
        attempt += 1  # what the send task records when it parks a retry
    assert calls == BUSINESS_ATTEMPTS
    assert is_failed_and_dead_lettered(action) and "ret=500 boom" in action.reason


def test_an_auth_error_fails_at_once() -> None:
    action = gateway(Gateway.AUTH)
    assert is_failed_and_dead_lettered(action)


def test_bad_input_the_gateway_refused_fails_at_once() -> None:
    action = gateway(Gateway.BAD_INPUT)
    assert is_failed_and_dead_lettered(action) and action.reason.startswith("bad input:")


@pytest.mark.parametrize(
    ("attempt", "low", "high"), [(0, 0.75, 1.25), (1, 1.5, 2.5), (4, 12, 20), (5, 22.5, 37.5)]
)
def test_backoff_doubles_up_to_thirty_seconds_with_a_quarter_either_way(
    attempt: int, low: float, high: float
) -> None:
    assert backoff_s(attempt, cap_s=RETRY_CAP_S, rand=0.0) == low
    assert low < backoff_s(attempt, cap_s=RETRY_CAP_S, rand=0.999_999) < high
    assert backoff_s(attempt + 20, cap_s=RETRY_CAP_S, rand=0.5) == 30.0


# -- what a message ends as -------------------------------------------------------------------


def test_a_send_result_is_the_public_json_dict() -> None:
    receipt = {"msgId": 11, "newMsgId": 9_007_199_254_740_993, "createTime": "1700000000"}
    result = SendResult.from_ids(Status.SENT, "a1", "wxid_1", "t1", receipt)
    as_dict = result.as_dict()
    assert as_dict == {
        "status": "sent",
        "app_id": "a1",
        "to_wxid": "wxid_1",
        "task_id": "t1",
        "msgId": "11",
        "newMsgId": "9007199254740993",  # 64-bit: a string, never rounded
        "createTime": 1_700_000_000,
    }
    assert json.loads(json.dumps(as_dict)) == as_dict
    dup = SendResult.from_ids(
        Status.DUPLICATE, "a1", "w", "t2", {"createTime": ""}, first_task_id="t1"
    ).as_dict()
    assert dup["status"] == "duplicate" and dup["first_task_id"] == "t1"
    assert dup["createTime"] is None and dup["msgId"] == "" and "error" not in dup


@pytest.mark.parametrize(
    ("raw", "content"),
    [
        ({"content": "hello"}, "hello"),
        ({"img_url": "https://x/i.png"}, "https://x/i.png"),
        ({"file_url": "https://x/f.pdf", "file_name": "f.pdf"}, "https://x/f.pdf"),
        (
            {"title": "T", "desc": "D", "link_url": "https://x/l", "thumb_url": "https://x/t"},
            "https://x/l",
        ),
        ({"content": "", "img_url": "https://x/i.png"}, "https://x/i.png"),
        ({}, None),
    ],
)
def test_a_dead_letter_shows_what_the_message_was_for_every_kind(
    raw: dict[str, str], content: str | None
) -> None:
    entry = DeadLetter.of(
        "t1", "wxtasks.send_x", {"app_id": "a1", "to_wxid": "w", **raw}, Status.FAILED, "why"
    )
    assert entry.content == content
    assert entry.as_dict()["content"] == content


def test_a_dead_letter_keeps_what_it_needs_to_be_requeued_and_survives_odd_input() -> None:
    raw = {"app_id": 7, "to_wxid": "w", "content": "x" * 900, "when": object(), "n": 3}
    entry = DeadLetter.of(
        "t9", "wxtasks.send_text", raw, Status.UNKNOWN, "timeout", attempts=2, lane="bulk"
    )
    stored = json.loads(json.dumps(entry.as_dict()))  # it is JSON, whatever came in
    assert stored["kwargs"]["content"] == "x" * 900 and stored["kwargs"]["n"] == 3
    assert stored["kwargs"]["when"].startswith("<object object")
    assert stored["app_id"] == "7" and len(stored["content"]) == 500
    assert stored["status"] == "unknown" and stored["attempts"] == 2 and stored["lane"] == "bulk"
    result = entry.result().as_dict()
    assert result["status"] == "unknown" and result["error"] == "timeout"
    assert result["task_id"] == "t9" and result["to_wxid"] == "w"
