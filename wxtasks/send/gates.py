"""The send path's gates, as Python knows them: by the names ``lua/lib/gates.lua`` answers.

Every rule a message meets before it may go to the gateway — the account's state, its
gateway being down, its campaign stopped, its deadline, the three buckets with the bulk
lane's reserve, and the bulk pacing gates (spacing, quiet hours, warm-up, daily cap,
cool-off) — is decided once, in that Lua library, which ``admit.lua`` (a send task asking
for its message) and ``dispatch.lua`` (the dispatcher taking messages from the outbox)
both run. Python never decides one of them again: it reads the answer here
(:func:`read_admission`) and :func:`wxtasks.send.policy.decide` says what to do about it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from wxtasks.config import Settings


class Lane(StrEnum):
    """Each account's outbox has two lanes; interactive goes first for every token. The
    bulk lane leaves one token in each bucket for replies and passes the pacing gates."""

    INTERACTIVE = "interactive"
    BULK = "bulk"

    def window_s(self, settings: Settings) -> float:
        """How long a message of this lane may wait to go out, from its first enqueue
        (the deadline gate's window)."""
        if self is Lane.BULK:
            return float(settings.bulk_deadline_s)
        return float(settings.send_deadline_s)


def to_group(wxid: str) -> bool:
    """Whether a recipient is a group (``…@chatroom``): its bulk spacing is a group's."""
    return wxid.endswith("@chatroom")


class Answer(StrEnum):
    """What the gates said of one message: exactly the names of ``ANSWERS`` in
    ``lua/lib/gates.lua`` (a test holds the two equal)."""

    ADMITTED = "admitted"
    UNKNOWN_ACCOUNT = "unknown_account"
    REGATEWAY = "regateway"
    DUPLICATE = "duplicate"
    REDELIVERED = "redelivered"
    CAMPAIGN_PAUSED = "campaign_paused"
    CAMPAIGN_CANCELLED = "campaign_cancelled"
    EXPIRED = "expired"
    ACCOUNT_WAITING = "account_waiting"
    ACCOUNT_UNUSABLE = "account_unusable"
    GATEWAY_DOWN = "gateway_down"
    BEHIND = "behind"
    ACCOUNT_TOKENS = "account_tokens"
    GATEWAY_TOKENS = "gateway_tokens"
    GLOBAL_TOKENS = "global_tokens"
    SPACING = "spacing"
    QUIET_HOURS = "quiet_hours"
    WARMUP = "warmup"
    DAILY_CAP = "daily_cap"
    COOLOFF = "cooloff"
    BAD_PACING = "bad_pacing"

    @property
    def reason(self) -> str:
        """What an operator reads: why a message waits (or ended)."""
        return _REASONS.get(self, self.value.replace("_", " "))


#: the answers of a closed bulk pacing gate (a message waits for it in the outbox)
PACING = frozenset(
    {
        Answer.SPACING,
        Answer.QUIET_HOURS,
        Answer.WARMUP,
        Answer.DAILY_CAP,
        Answer.COOLOFF,
        Answer.BAD_PACING,
    }
)
#: the answers of an empty bucket
TOKENS = frozenset({Answer.ACCOUNT_TOKENS, Answer.GATEWAY_TOKENS, Answer.GLOBAL_TOKENS})

_REASONS = {
    Answer.UNKNOWN_ACCOUNT: "unknown account: the appId is not registered",
    Answer.ACCOUNT_TOKENS: "waiting for the account's send token",
    Answer.GATEWAY_TOKENS: "waiting for the gateway's send token",
    Answer.GLOBAL_TOKENS: "waiting for a global send token",
    Answer.BEHIND: "behind older messages in its lane",
    Answer.CAMPAIGN_PAUSED: "campaign paused",
    Answer.CAMPAIGN_CANCELLED: "campaign cancelled",
    Answer.SPACING: "bulk spacing after the account's last bulk send",
    Answer.QUIET_HOURS: "quiet hours",
    Answer.WARMUP: "warm-up after a new-device login",
    Answer.DAILY_CAP: "daily bulk cap reached",
    Answer.COOLOFF: "cool-off: the gateway showed risk control",
    Answer.BAD_PACING: "the account's own pacing setting cannot be read",
}


def pacing_reason(stored: str | None) -> str:
    """The reason a closed pacing gate gives, from what the gates keep on the account
    (``bulk_wait``: an answer's name, or "" when the gate is open)."""
    if not stored:
        return ""
    try:
        return Answer(stored).reason
    except ValueError:
        return stored


@dataclass(frozen=True)
class Admission:
    """``admit.lua``'s answer for one message."""

    answer: Answer
    #: what the answer is about: the account's state, the gateway, or the campaign
    detail: str = ""
    #: how long until it may go (a closed gate's wait), or a redelivered claim's hold left
    wait_s: float = 0.0
    #: its first enqueue (unix seconds), when admission knows it
    enqueued_at: float | None = None
    #: the claim's owner, status, msgId, newMsgId, createTime (duplicate, redelivered)
    claim: dict[str, str] = field(default_factory=dict)
    #: the gateway serving the account, as admission checked it
    gateway: str = ""


_CLAIM_FIELDS = ("owner", "status", "msgId", "newMsgId", "createTime")


def read_admission(reply: list[Any], gateway: str = "") -> Admission:
    """The one reader of ``admit.lua``'s reply: ``{answer, detail, ms, enqueued[, claim]}``."""
    answer, detail, ms, enqueued = (_s(x) for x in reply[:4])
    return Admission(
        Answer(answer),
        detail,
        int(ms) / 1000.0,
        float(enqueued) / 1000 if enqueued else None,
        dict(zip(_CLAIM_FIELDS, map(_s, reply[4:]), strict=True)) if len(reply) > 4 else {},
        gateway,
    )


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)
