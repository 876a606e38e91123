"""The account state machine: pure rules, no Redis, no clock of its own.

::

    IDLE ──login_started──▶ LOGGING_IN ──login_succeeded──▶ ONLINE
     ▲  ╲                      │ login_expired / login_failed   │ liveness_failed
     │   ╲─login_succeeded─────┼───────────────────────────▶    ▼
     │◀────────────────────────┘            ONLINE ◀─reconnect_succeeded── RECONNECTING
     │                                                         │  ▲ reconnect_failed
     │◀──reset / retry_plan── ERROR ◀──reconnect_failed (retries exhausted)┘
     (reset is allowed from every state)

``decide(account, event, now, policy)`` returns the next state and the fields to write, or
raises :class:`TransitionRefused`. :mod:`wxtasks.accounts.store` applies the result with one
compare-and-set on the account's version, so the rules are tested here with a fake clock
and the atomicity is tested against Redis.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from wxtasks.backoff import backoff_s
from wxtasks.errors import TransitionRefused


class State(StrEnum):
    IDLE = "IDLE"
    LOGGING_IN = "LOGGING_IN"
    ONLINE = "ONLINE"
    RECONNECTING = "RECONNECTING"
    ERROR = "ERROR"


class Event(StrEnum):
    LOGIN_STARTED = "login_started"
    LOGIN_SUCCEEDED = "login_succeeded"
    LOGIN_FAILED = "login_failed"
    LOGIN_EXPIRED = "login_expired"
    LIVENESS_FAILED = "liveness_failed"
    RECONNECT_SUCCEEDED = "reconnect_succeeded"
    RECONNECT_FAILED = "reconnect_failed"
    RECONNECT_RESUMED = "reconnect_resumed"
    RETRY_PLAN = "retry_plan"
    RESET = "reset"


#: event -> states it may leave from
_ALLOWED: dict[Event, frozenset[State]] = {
    Event.LOGIN_STARTED: frozenset({State.IDLE, State.LOGGING_IN}),
    Event.LOGIN_SUCCEEDED: frozenset({State.IDLE, State.LOGGING_IN}),
    Event.LOGIN_FAILED: frozenset({State.LOGGING_IN}),
    Event.LOGIN_EXPIRED: frozenset({State.LOGGING_IN}),
    Event.LIVENESS_FAILED: frozenset({State.ONLINE}),
    Event.RECONNECT_SUCCEEDED: frozenset({State.RECONNECTING}),
    Event.RECONNECT_FAILED: frozenset({State.RECONNECTING}),
    Event.RECONNECT_RESUMED: frozenset({State.RECONNECTING}),
    Event.RETRY_PLAN: frozenset({State.ERROR}),
    Event.RESET: frozenset(State),
}

#: alerts that ask a human to act
ALERT_NEED_LOGIN = "needLogin"
ALERT_MAX_RETRY = "maxRetryReached"


@dataclass(frozen=True)
class Policy:
    max_retry: int = 5
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    error_retry_interval_s: float = 1800.0
    login_qr_ttl_s: float = 120.0
    heartbeat_interval_s: float = 30.0

    def backoff_s(self, retry_count: int, rand: Callable[[], float] = random.random) -> float:
        """Delay before reconnect attempt ``retry_count + 1``: 1, 2, 4 ... capped, ±25 %."""
        return backoff_s(
            retry_count, cap_s=self.backoff_max_s, base_s=self.backoff_base_s, rand=rand()
        )


@dataclass(frozen=True)
class Snapshot:
    """What the rules need to know about an account."""

    app_id: str
    state: State
    version: int
    retry_count: int = 0
    state_since: float = 0.0
    next_attempt_at: float = 0.0
    login_started_at: float = 0.0


@dataclass(frozen=True)
class Decision:
    prev: State
    state: State
    event: Event
    reason: str
    fields: dict[str, str] = field(default_factory=dict)
    alert: str | None = None
    #: seconds until the next reconnect attempt, when this decision starts or continues one
    reconnect_in_s: float | None = None
    #: the account's version once the decision is written (set by the store)
    version: int = 0


def decide(
    account: Snapshot,
    event: Event,
    now: float,
    policy: Policy,
    *,
    reason: str = "",
    rand: Callable[[], float] = random.random,
) -> Decision:
    """The transition ``event`` causes from ``account`` at time ``now``."""
    if account.state not in _ALLOWED[event]:
        raise TransitionRefused(account.app_id, account.state.value, event.value)
    prev = account.state
    fields: dict[str, str] = {}
    alert = None
    reconnect_in = None

    if event is Event.LOGIN_STARTED:
        nxt = State.LOGGING_IN
        fields["login_started_at"] = _ts(now)
    elif event is Event.LOGIN_SUCCEEDED:
        nxt = State.ONLINE
        fields.update(retry_count="0", last_heartbeat_at=_ts(now), login_started_at="")
    elif event in (Event.LOGIN_FAILED, Event.LOGIN_EXPIRED):
        nxt = State.IDLE
        fields["login_started_at"] = ""
        alert = ALERT_NEED_LOGIN
    elif event is Event.LIVENESS_FAILED:
        nxt = State.RECONNECTING
        reconnect_in = policy.backoff_s(0, rand)
        fields.update(retry_count="0", next_attempt_at=_ts(now + reconnect_in))
    elif event is Event.RECONNECT_SUCCEEDED:
        nxt = State.ONLINE
        fields.update(retry_count="0", next_attempt_at="", last_heartbeat_at=_ts(now))
    elif event is Event.RECONNECT_FAILED:
        retries = account.retry_count + 1
        fields["retry_count"] = str(retries)
        if retries >= policy.max_retry:
            nxt = State.ERROR
            fields["next_attempt_at"] = _ts(now + policy.error_retry_interval_s)
            alert = ALERT_MAX_RETRY
        else:
            nxt = State.RECONNECTING
            reconnect_in = policy.backoff_s(retries, rand)
            fields["next_attempt_at"] = _ts(now + reconnect_in)
    elif event is Event.RECONNECT_RESUMED:
        nxt = State.RECONNECTING
        reconnect_in = 0.0
        fields["next_attempt_at"] = _ts(now)
    else:  # RETRY_PLAN, RESET
        nxt = State.IDLE
        fields.update(retry_count="0", next_attempt_at="", login_started_at="")

    fields["last_error"] = reason if nxt is not State.ONLINE else ""
    if nxt is not prev:
        fields["state_since"] = _ts(now)
    return Decision(prev, nxt, event, reason, fields, alert, reconnect_in)


class Chore(StrEnum):
    """What a heartbeat tick should do for an account, by its state and the time."""

    PROBE = "probe"
    RESUME_RECONNECT = "resume_reconnect"
    RETRY_PLAN = "retry_plan"
    EXPIRE_LOGIN = "expire_login"
    NOTHING = "nothing"


def heartbeat_chore(account: Snapshot, now: float, policy: Policy) -> Chore:
    """The heartbeat schedule is the one timer per account; it also watches over the
    states that have their own timers, so a chain lost with a killed worker resumes."""
    if account.state is State.ONLINE:
        return Chore.PROBE
    if account.state is State.RECONNECTING:
        grace = policy.backoff_max_s * 2 + policy.heartbeat_interval_s
        if account.next_attempt_at and now > account.next_attempt_at + grace:
            return Chore.RESUME_RECONNECT
        return Chore.NOTHING
    if account.state is State.ERROR:
        due = account.next_attempt_at or account.state_since + policy.error_retry_interval_s
        return Chore.RETRY_PLAN if now >= due else Chore.NOTHING
    if account.state is State.LOGGING_IN:
        started = account.login_started_at or account.state_since
        return Chore.EXPIRE_LOGIN if now >= started + policy.login_qr_ttl_s else Chore.NOTHING
    return Chore.NOTHING


def _ts(t: float) -> str:
    return f"{t:.3f}"
