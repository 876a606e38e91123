"""The state machine's rules, as a pure function of (state, event, now): no Redis."""

from __future__ import annotations

import pytest

from wxtasks.accounts.machine import (
    ALERT_MAX_RETRY,
    ALERT_NEED_LOGIN,
    Chore,
    Event,
    Policy,
    Snapshot,
    State,
    decide,
    heartbeat_chore,
)
from wxtasks.errors import TransitionRefused

POLICY = Policy(
    max_retry=3,
    backoff_base_s=1,
    backoff_max_s=60,
    error_retry_interval_s=1800,
    login_qr_ttl_s=120,
    heartbeat_interval_s=30,
)
NOW = 1_000_000.0


def acct(state: State, **kw: float) -> Snapshot:
    return Snapshot("a1", state, 7, **kw)  # type: ignore[arg-type]


def test_the_five_states_and_their_legal_edges() -> None:
    assert decide(acct(State.IDLE), Event.LOGIN_STARTED, NOW, POLICY).state is State.LOGGING_IN
    assert decide(acct(State.LOGGING_IN), Event.LOGIN_SUCCEEDED, NOW, POLICY).state is State.ONLINE
    assert decide(acct(State.LOGGING_IN), Event.LOGIN_EXPIRED, NOW, POLICY).state is State.IDLE
    assert (
        decide(acct(State.ONLINE), Event.LIVENESS_FAILED, NOW, POLICY).state is State.RECONNECTING
    )
    assert (
        decide(acct(State.RECONNECTING), Event.RECONNECT_SUCCEEDED, NOW, POLICY).state
        is State.ONLINE
    )
    assert decide(acct(State.ERROR), Event.RETRY_PLAN, NOW, POLICY).state is State.IDLE
    for state in State:
        assert decide(acct(state), Event.RESET, NOW, POLICY).state is State.IDLE


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (State.IDLE, Event.LIVENESS_FAILED),
        (State.IDLE, Event.RECONNECT_SUCCEEDED),
        (State.ERROR, Event.LOGIN_SUCCEEDED),
        (State.ERROR, Event.LIVENESS_FAILED),
        (State.ONLINE, Event.LOGIN_STARTED),
        (State.RECONNECTING, Event.LIVENESS_FAILED),
        (State.ONLINE, Event.RETRY_PLAN),
    ],
)
def test_illegal_transitions_are_refused(state: State, event: Event) -> None:
    with pytest.raises(TransitionRefused, match=event.value):
        decide(acct(state), event, NOW, POLICY)


def test_liveness_failure_starts_a_reconnect_chain_after_about_one_second() -> None:
    d = decide(acct(State.ONLINE), Event.LIVENESS_FAILED, NOW, POLICY, rand=lambda: 0.5)
    assert d.reconnect_in_s == pytest.approx(1.0)
    assert d.fields["retry_count"] == "0"
    assert float(d.fields["next_attempt_at"]) == pytest.approx(NOW + 1.0)


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    mids = [POLICY.backoff_s(n, rand=lambda: 0.5) for n in range(8)]
    assert mids == [1, 2, 4, 8, 16, 32, 60, 60]
    for n in range(10):
        low, high = POLICY.backoff_s(n, rand=lambda: 0.0), POLICY.backoff_s(n, rand=lambda: 1.0)
        assert low < high <= POLICY.backoff_max_s  # jittered, never past the cap


def test_retries_exhausted_go_to_error_with_the_alert() -> None:
    d = decide(acct(State.RECONNECTING, retry_count=1), Event.RECONNECT_FAILED, NOW, POLICY)
    assert d.state is State.RECONNECTING and d.fields["retry_count"] == "2"
    assert d.reconnect_in_s is not None and d.alert is None
    d = decide(acct(State.RECONNECTING, retry_count=2), Event.RECONNECT_FAILED, NOW, POLICY)
    assert d.state is State.ERROR and d.alert == ALERT_MAX_RETRY
    assert d.reconnect_in_s is None
    assert float(d.fields["next_attempt_at"]) == NOW + 1800


def test_reconnect_success_resets_the_retry_count() -> None:
    d = decide(acct(State.RECONNECTING, retry_count=2), Event.RECONNECT_SUCCEEDED, NOW, POLICY)
    assert d.state is State.ONLINE and d.fields["retry_count"] == "0"


def test_an_expired_login_asks_for_a_human() -> None:
    d = decide(acct(State.LOGGING_IN), Event.LOGIN_EXPIRED, NOW, POLICY)
    assert d.state is State.IDLE and d.alert == ALERT_NEED_LOGIN


def test_heartbeat_chores_follow_each_states_timer() -> None:
    assert heartbeat_chore(acct(State.ONLINE), NOW, POLICY) is Chore.PROBE
    assert heartbeat_chore(acct(State.IDLE), NOW, POLICY) is Chore.NOTHING
    # a reconnect chain on time is left alone; one long overdue (its worker died) resumes
    assert (
        heartbeat_chore(acct(State.RECONNECTING, next_attempt_at=NOW - 5), NOW, POLICY)
        is Chore.NOTHING
    )
    assert (
        heartbeat_chore(acct(State.RECONNECTING, next_attempt_at=NOW - 1000), NOW, POLICY)
        is Chore.RESUME_RECONNECT
    )
    # ERROR waits for the automatic retry plan
    assert heartbeat_chore(acct(State.ERROR, next_attempt_at=NOW + 1), NOW, POLICY) is Chore.NOTHING
    assert (
        heartbeat_chore(acct(State.ERROR, next_attempt_at=NOW - 1), NOW, POLICY) is Chore.RETRY_PLAN
    )
    # a QR login outliving its code gives up
    assert (
        heartbeat_chore(acct(State.LOGGING_IN, login_started_at=NOW - 60), NOW, POLICY)
        is Chore.NOTHING
    )
    assert (
        heartbeat_chore(acct(State.LOGGING_IN, login_started_at=NOW - 121), NOW, POLICY)
        is Chore.EXPIRE_LOGIN
    )
