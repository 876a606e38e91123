"""The send path's decisions, as one pure function.

``decide(ticket, answer, now)`` says what to do with each admission answer (the gates'
named answers, :class:`wxtasks.send.gates.Answer`) or gateway answer for one message:
send it now, sleep a moment (≤ 1 s) and ask again, park it in the Redis outbox, or end it
(sent, duplicate, failed, unknown, cancelled; failed and unknown also dead-lettered). It
decides no gate again: whether a message may go is the gates' to say. It reads no clock
and touches no Redis, so the whole table is tested with an injected clock, as
:func:`wxtasks.accounts.machine.decide` is for accounts; the Celery task in
:mod:`wxtasks.tasks.send` only carries the actions out, and :mod:`wxtasks.send.outcome`
writes how a message ended.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from wxtasks.backoff import backoff_s
from wxtasks.send.gates import PACING, TOKENS, Admission, Answer, Lane
from wxtasks.send.outcome import Status

#: a wait up to this long sleeps in the worker; a longer one parks the message in Redis
SHORT_WAIT_S = 1.0
#: ... but a wait for one account's own token sleeps only this long (see decide)
SHORT_ACCOUNT_WAIT_S = 0.05
#: generic gateway errors (ret != 200, not offline) are tried this many times in all
BUSINESS_ATTEMPTS = 4
#: a send's retries back off up to this long
RETRY_CAP_S = 30.0
#: how often the dispatcher looks again at an account that cannot send yet
HOLD_POLL_S = 1.0


class Gateway(StrEnum):
    """What the gateway call came to (the error classes of :mod:`wxtasks.errors`)."""

    SENT = "sent"
    OFFLINE = "offline"
    AUTH = "auth"
    BUSINESS = "business"
    UNAVAILABLE = "unavailable"
    UNKNOWN = "unknown"
    BAD_INPUT = "bad_input"


@dataclass(frozen=True)
class Ticket:
    """What the send path knows of a message besides its content: its lane, when it was
    first enqueued (a redelivery never restarts the clock) and how often it was tried."""

    task_id: str
    lane: Lane
    enqueued_at: float
    window_s: float
    attempt: int = 0
    from_outbox: bool = False
    #: the campaign this message is a target of ("" for none)
    campaign: str = ""

    @property
    def deadline_at(self) -> float:
        return self.enqueued_at + self.window_s


@dataclass(frozen=True)
class GatewayAnswer:
    outcome: Gateway
    error: str = ""


class Do(StrEnum):
    SEND = "send"
    SLEEP = "sleep"
    PARK = "park"
    FINISH = "finish"


@dataclass(frozen=True)
class Action:
    do: Do
    status: Status | None = None
    reason: str = ""
    wait_s: float = 0.0
    #: free the message's dedup claim first (it did not go out)
    release: bool = False
    dead_letter: bool = False
    #: tell the account's lifecycle that the gateway says it is offline
    offline: bool = False
    #: a retry after a failed gateway call: counts an attempt, and holds the account's
    #: lane for ``wait_s`` (other parks only ask to be looked at again that soon)
    retry: bool = False


def decide(
    ticket: Ticket,
    answer: Admission | GatewayAnswer,
    now: float,
    rand: Callable[[], float] = random.random,
) -> Action:
    """The send path's whole decision table (shared/DESIGN.md, "Send path")."""
    if isinstance(answer, GatewayAnswer):
        return _after_gateway(ticket, answer, rand)
    return _after_admission(ticket, answer, now)


def _after_admission(ticket: Ticket, a: Admission, now: float) -> Action:
    answer = a.answer
    match answer:
        case Answer.ADMITTED:
            return Action(Do.SEND)
        case Answer.UNKNOWN_ACCOUNT:
            return _fail(answer.reason)
        case Answer.EXPIRED:
            enqueued = a.enqueued_at if a.enqueued_at is not None else ticket.enqueued_at
            return _fail(
                f"deadline passed: enqueued {now - enqueued:.0f}s ago, the {ticket.lane} "
                f"lane's window is {ticket.window_s:.0f}s"
            )
        case Answer.DUPLICATE:
            return Action(Do.FINISH, Status.DUPLICATE)
        case Answer.REDELIVERED:
            status = a.claim.get("status", "")
            if status == Status.SENT:
                return Action(Do.FINISH, Status.SENT)
            if status == "inflight" and a.wait_s > 0:
                # another worker may still be at the gateway with it: look again when its
                # hold ends (then the claim says sent, or that the holder died)
                return Action(
                    Do.PARK, reason="another worker is sending it", wait_s=a.wait_s, retry=True
                )
            return Action(
                Do.FINISH,
                Status.UNKNOWN,
                "redelivered after a worker stopped mid-send: the gateway may have sent "
                "it, so it was not sent again",
                dead_letter=True,
            )
        case Answer.ACCOUNT_WAITING:
            return Action(Do.PARK, reason=f"account is {a.detail}", wait_s=HOLD_POLL_S)
        case Answer.ACCOUNT_UNUSABLE:
            return _fail(f"account is {a.detail}: it cannot send until it logs in")
        case Answer.GATEWAY_DOWN:
            return Action(Do.PARK, reason=f"gateway {a.detail} is down", wait_s=HOLD_POLL_S)
        case Answer.CAMPAIGN_CANCELLED:
            return Action(Do.FINISH, Status.CANCELLED, answer.reason)
        case Answer.CAMPAIGN_PAUSED | Answer.BEHIND:
            return Action(Do.PARK, reason=answer.reason)
        case _ if answer in PACING:
            return Action(Do.PARK, reason=answer.reason, wait_s=a.wait_s)
        case _ if answer in TOKENS:
            # the global bucket is everyone's: sleeping for it costs nobody a turn. An
            # account's own bucket is not: a worker sleeping for one busy account holds
            # up other accounts' replies queued behind it, so that wait parks
            short = SHORT_WAIT_S if answer is Answer.GLOBAL_TOKENS else SHORT_ACCOUNT_WAIT_S
            if a.wait_s <= short and now + a.wait_s <= ticket.deadline_at:
                return Action(Do.SLEEP, reason=answer.reason, wait_s=a.wait_s)
            return Action(Do.PARK, reason=answer.reason, wait_s=a.wait_s)
    raise ValueError(f"unhandled admission {a.answer!r}")  # pragma: no cover


def _after_gateway(ticket: Ticket, g: GatewayAnswer, rand: Callable[[], float]) -> Action:
    def retry(reason: str, *, offline: bool = False) -> Action:
        """Free the claim and park it for a backoff that grows with its attempts."""
        wait = backoff_s(ticket.attempt, cap_s=RETRY_CAP_S, rand=rand())
        return Action(
            Do.PARK, reason=reason, wait_s=wait, release=True, offline=offline, retry=True
        )

    match g.outcome:
        case Gateway.SENT:
            return Action(Do.FINISH, Status.SENT)
        case Gateway.UNKNOWN:
            return Action(Do.FINISH, Status.UNKNOWN, f"{g.error}; not resent", dead_letter=True)
        case Gateway.OFFLINE:
            return retry(f"send failed: account offline: {g.error}", offline=True)
        case Gateway.UNAVAILABLE:
            return retry(f"gateway unavailable: {g.error}")
        case Gateway.BUSINESS if ticket.attempt + 1 < BUSINESS_ATTEMPTS:
            return retry(f"gateway error: {g.error}")
        case Gateway.BUSINESS | Gateway.AUTH:
            return Action(Do.FINISH, Status.FAILED, g.error, release=True, dead_letter=True)
        case Gateway.BAD_INPUT:
            return _fail(f"bad input: {g.error}")
    raise ValueError(f"unhandled gateway answer {g.outcome!r}")  # pragma: no cover


def _fail(reason: str) -> Action:
    return Action(Do.FINISH, Status.FAILED, reason, release=True, dead_letter=True)
