"""The send path's decisions, as one pure function.

``decide(ticket, answer, now)`` says what to do with each admission or gateway answer for
one message: send it now, sleep a moment (≤ 1 s) and ask again, park it in the Redis
outbox, or finish it (sent, duplicate, failed, unknown, cancelled; failed and unknown also
dead-lettered). It reads no clock and touches no Redis, so the whole table is tested with
an injected clock, as :func:`wxtasks.machine.decide` is for accounts; the Celery task in
:mod:`wxtasks.tasks.send` only carries the actions out.

The result a caller gets and the dead-letter record an operator sees are one dataclass
each (:class:`SendResult`, :class:`DeadLetter`), built here and nowhere else.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

#: a wait up to this long sleeps in the worker; a longer one parks the message in Redis
SHORT_WAIT_S = 1.0
#: ... but a wait for one account's own token sleeps only this long (see decide)
SHORT_ACCOUNT_WAIT_S = 0.05
#: generic gateway errors (ret != 200, not offline) are tried this many times in all
BUSINESS_ATTEMPTS = 4
#: how often the dispatcher looks again at an account that cannot send yet
HOLD_POLL_S = 1.0


class Lane(StrEnum):
    """Each account's outbox has two lanes; interactive goes first for every token."""

    INTERACTIVE = "interactive"
    BULK = "bulk"


class Status(StrEnum):
    SENT = "sent"
    DUPLICATE = "duplicate"
    FAILED = "failed"
    UNKNOWN = "unknown"
    CANCELLED = "cancelled"


class Admit(StrEnum):
    """What ``admit.lua`` answered."""

    ADMITTED = "admitted"
    UNKNOWN_ACCOUNT = "unknown_account"
    EXPIRED = "expired"
    DUPLICATE = "duplicate"
    REDELIVERED = "redelivered"
    NOT_ONLINE = "not_online"
    STOPPED = "stopped"
    WAIT = "wait"
    #: the account's gateway is marked down: wait in the outbox, do not call it
    GATEWAY_DOWN = "gateway_down"


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
class Admission:
    outcome: Admit
    state: str = ""
    wait_s: float = 0.0
    why: str = ""
    enqueued_at: float | None = None
    claim: dict[str, str] = field(default_factory=dict)
    #: the gateway serving the account, as admission checked it
    gateway: str = ""


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


def backoff_s(attempt: int, jitter: float) -> float:
    """1, 2, 4 … 30 s, ±25 % (``jitter`` in [0, 1))."""
    return min(30.0, 2.0 ** min(attempt, 5)) * (0.75 + 0.5 * jitter)


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
    match a.outcome:
        case Admit.ADMITTED:
            return Action(Do.SEND)
        case Admit.UNKNOWN_ACCOUNT:
            return _fail("unknown account: the appId is not registered")
        case Admit.EXPIRED:
            enqueued = a.enqueued_at if a.enqueued_at is not None else ticket.enqueued_at
            return _fail(
                f"deadline passed: enqueued {now - enqueued:.0f}s ago, the {ticket.lane} "
                f"lane's window is {ticket.window_s:.0f}s"
            )
        case Admit.DUPLICATE:
            return Action(Do.FINISH, Status.DUPLICATE)
        case Admit.REDELIVERED:
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
        case Admit.NOT_ONLINE:
            if a.state in ("RECONNECTING", "LOGGING_IN"):
                return Action(Do.PARK, reason=f"account is {a.state}", wait_s=HOLD_POLL_S)
            return _fail(f"account is {a.state}: it cannot send until it logs in")
        case Admit.GATEWAY_DOWN:
            return Action(Do.PARK, reason=f"gateway {a.gateway or '?'} is down", wait_s=HOLD_POLL_S)
        case Admit.STOPPED:
            if a.state == "cancelled":
                return Action(Do.FINISH, Status.CANCELLED, "campaign cancelled")
            return Action(Do.PARK, reason="campaign paused")
        case Admit.WAIT:
            reason = _WAIT_REASONS.get(a.why, a.why)
            # the global bucket is everyone's: sleeping for it costs nobody a turn. An
            # account's own bucket is not: a worker sleeping for one busy account holds
            # up other accounts' replies queued behind it, so that wait parks
            short = SHORT_WAIT_S if a.why == "global" else SHORT_ACCOUNT_WAIT_S
            if a.why != "behind" and a.wait_s <= short and now + a.wait_s <= (ticket.deadline_at):
                return Action(Do.SLEEP, reason=reason, wait_s=a.wait_s)
            return Action(Do.PARK, reason=reason, wait_s=a.wait_s)
    raise ValueError(f"unhandled admission {a.outcome!r}")  # pragma: no cover


_WAIT_REASONS = {
    "global": "waiting for a global send token",
    "account": "waiting for the account's send token",
    "gateway": "waiting for the gateway's send token",
    "behind": "behind older messages in its lane",
}


def _after_gateway(ticket: Ticket, g: GatewayAnswer, rand: Callable[[], float]) -> Action:
    def retry(reason: str, *, offline: bool = False) -> Action:
        """Free the claim and park it for a backoff that grows with its attempts."""
        wait = backoff_s(ticket.attempt, rand())
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


# -- what a message ends as ------------------------------------------------------------------


@dataclass(frozen=True)
class SendResult:
    """The JSON dict a send task returns (the public contract)."""

    status: Status
    app_id: str | None
    to_wxid: str | None
    task_id: str
    msgId: str = ""
    newMsgId: str = ""
    createTime: int | None = None
    error: str | None = None
    first_task_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["status"] = self.status.value
        for optional in ("error", "first_task_id"):
            if out[optional] is None:
                del out[optional]
        return out

    @classmethod
    def from_ids(
        cls,
        status: Status,
        app_id: str | None,
        to_wxid: str | None,
        task_id: str,
        ids: Mapping[str, Any] | None = None,
        **extra: Any,
    ) -> SendResult:
        """``ids``: a gateway receipt's or a claim's msgId / newMsgId / createTime."""
        ids = ids or {}
        created = ids.get("createTime")
        return cls(
            status,
            app_id,
            to_wxid,
            task_id,
            msgId=str(ids.get("msgId") or ""),
            newMsgId=str(ids.get("newMsgId") or ""),
            createTime=int(created) if created not in (None, "") else None,
            **extra,
        )


#: the fields whose value says what a message was (its text, or the media it sent)
CONTENT_FIELDS = ("content", "img_url", "file_url", "link_url")


@dataclass(frozen=True)
class DeadLetter:
    """A message that ended failed or unknown, kept so an operator can see and requeue it."""

    task_id: str
    task: str
    kwargs: dict[str, Any]
    status: str
    error: str
    app_id: str | None = None
    to_wxid: str | None = None
    content: str | None = None
    attempts: int = 0
    lane: str = Lane.INTERACTIVE.value
    claim_key: str = ""

    @classmethod
    def of(
        cls,
        task_id: str,
        task: str,
        raw: Mapping[str, Any],
        status: Status | str,
        error: str,
        **extra: Any,
    ) -> DeadLetter:
        """From a task's raw keyword arguments, whatever their shape."""
        content = next((raw[f] for f in CONTENT_FIELDS if raw.get(f)), None)
        return cls(
            task_id=task_id,
            task=task,
            kwargs=jsonable(raw),
            status=str(status),
            error=error,
            app_id=short_text(raw.get("app_id")),
            to_wxid=short_text(raw.get("to_wxid")),
            content=short_text(content),
            **extra,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def result(self) -> SendResult:
        return SendResult(
            Status(self.status), self.app_id, self.to_wxid, self.task_id, error=self.error
        )


def jsonable(raw: Mapping[str, Any]) -> dict[str, Any]:
    """``raw`` with every value JSON can carry kept and the rest shown as text."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, str):
            out[str(key)] = value.encode("utf-8", "replace").decode("utf-8")
        elif value is None or isinstance(value, int | float | bool | list | dict):
            out[str(key)] = value
        else:
            out[str(key)] = repr(value)
    return out


def short_text(value: Any, limit: int = 500) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else repr(value)
    return text.encode("utf-8", "replace").decode("utf-8")[:limit]
