"""Pacing for bulk sends: when an account's bulk lane may send, as pure functions.

Community experience ties bans to fixed machine spacing, bursts at night and sending
right after a new-device login (shared/GATEWAY.md, risk guidance), so bulk sends — never
replies — pass these gates on top of the token buckets:

- **spacing**: a random gap after each bulk send, ``WXTASKS_BULK_JITTER_S`` (default
  1–3 s) after a private recipient, ``WXTASKS_GROUP_JITTER_S`` (2–5 s) after a group
  (``…@chatroom``); a campaign's ``--jitter`` replaces both. The dispatcher draws it.
- **quiet hours**: none inside ``WXTASKS_QUIET_HOURS`` (00:00–07:00) local time in
  ``WXTASKS_TIMEZONE`` (Asia/Shanghai);
- **warm-up**: none for ``WXTASKS_WARMUP_S`` (4 h) after the account's first login on a
  new device;
- **daily cap**: at most ``WXTASKS_DAILY_BULK_CAP`` a local day (0: no cap);
- **cool-off**: none while the circuit breaker holds the lane (``WXTASKS_COOLOFF_S``
  after a risk-control answer such as "操作过于频繁").

Each account may override each policy (its hash fields ``bulk_jitter``, ``group_jitter``,
``quiet_hours``, ``warmup_s``, ``daily_bulk_cap``); :func:`gate` is the whole decision,
tested with an injected clock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from wxtasks.config import Settings
from wxtasks.errors import BadInputError


@dataclass(frozen=True)
class Span:
    """A range of seconds, ``"1-3"``; ``"0-0"`` is none."""

    low: float
    high: float

    @classmethod
    def parse(cls, text: str, what: str = "jitter") -> Span:
        try:
            low, high = (float(x) for x in text.strip().split("-", 1))
        except ValueError:
            raise BadInputError(f"{what} must look like MIN-MAX in seconds, got {text!r}") from None
        if not 0 <= low <= high:
            raise BadInputError(f"{what} must have 0 <= MIN <= MAX, got {text!r}")
        return cls(low, high)

    def __str__(self) -> str:
        return f"{self.low:g}-{self.high:g}"


@dataclass(frozen=True)
class QuietHours:
    """A local-time window, ``"00:00-07:00"`` (it may wrap midnight); ``""`` is none."""

    start: dt.time | None
    end: dt.time | None

    @classmethod
    def parse(cls, text: str) -> QuietHours:
        text = text.strip()
        if not text:
            return cls(None, None)
        try:
            start, end = (dt.time.fromisoformat(x.strip()) for x in text.split("-", 1))
        except ValueError:
            raise BadInputError(
                f"quiet hours must look like HH:MM-HH:MM (or be empty), got {text!r}"
            ) from None
        return cls(start, end)

    def ends_at(self, local: dt.datetime) -> dt.datetime | None:
        """When the window around ``local`` ends, or None when ``local`` is outside it."""
        if self.start is None or self.end is None or self.start == self.end:
            return None
        t = local.timetz().replace(tzinfo=None)
        day = local.replace(hour=0, minute=0, second=0, microsecond=0)
        if self.start < self.end:
            inside = self.start <= t < self.end
            end_day = day
        else:  # wraps midnight: 22:00-06:00
            inside = t >= self.start or t < self.end
            end_day = day + dt.timedelta(days=1) if t >= self.start else day
        if not inside:
            return None
        return end_day.replace(hour=self.end.hour, minute=self.end.minute, second=0)


@dataclass(frozen=True)
class Policy:
    """The fleet's pacing defaults (from Settings)."""

    bulk_jitter: Span
    group_jitter: Span
    quiet_hours: QuietHours
    timezone: ZoneInfo
    warmup_s: float
    daily_cap: int
    cooloff_s: float


@dataclass(frozen=True)
class Gate:
    """An account's bulk lane now: open, or closed until ``open_at`` for ``reason``."""

    open_at: float  # unix seconds; 0 when open
    sends_left_today: int  # -1: no cap
    reason: str
    bulk_jitter: Span
    group_jitter: Span


def local_day(now: float, tz: ZoneInfo) -> str:
    """The account's calendar day for the daily cap, ``YYYYMMDD`` in the fleet's zone."""
    return dt.datetime.fromtimestamp(now, tz).strftime("%Y%m%d")


def gate(account: Mapping[str, str], sent_today: int, now: float, policy: Policy) -> Gate:
    """Whether ``account`` (its Redis hash fields) may send bulk now, and if not, until when
    and why. ``sent_today``: bulk sends dispatched on its local day so far."""
    bulk = Span.parse(account["bulk_jitter"]) if account.get("bulk_jitter") else policy.bulk_jitter
    group = (
        Span.parse(account["group_jitter"]) if account.get("group_jitter") else policy.group_jitter
    )
    quiet = (
        QuietHours.parse(account["quiet_hours"]) if "quiet_hours" in account else policy.quiet_hours
    )
    warmup = float(account["warmup_s"]) if account.get("warmup_s") else policy.warmup_s
    cap = int(account["daily_bulk_cap"]) if account.get("daily_bulk_cap") else policy.daily_cap
    local = dt.datetime.fromtimestamp(now, policy.timezone)

    closed: list[tuple[float, str]] = []
    cooloff_until = float(account.get("bulk_cooloff_until") or 0)
    if cooloff_until > now:
        closed.append((cooloff_until, "cool-off: the gateway showed risk control"))
    first_login = float(account.get("first_login_at") or 0)
    if warmup > 0 and first_login and now < first_login + warmup:
        closed.append((first_login + warmup, "warm-up after a new-device login"))
    quiet_end = quiet.ends_at(local)
    if quiet_end is not None:
        closed.append((quiet_end.timestamp(), "quiet hours"))
    left = -1
    if cap > 0:
        left = max(0, cap - sent_today)
        if left == 0:
            tomorrow = (local + dt.timedelta(days=1)).replace(
                hour=0, minute=0, second=0, microsecond=0
            )
            closed.append((tomorrow.timestamp(), f"daily bulk cap of {cap} reached"))
    if closed:
        open_at, reason = max(closed)
        return Gate(open_at, left, reason, bulk, group)
    return Gate(0.0, left, "", bulk, group)


def policy_from(settings: Settings) -> Policy:
    return Policy(
        bulk_jitter=Span.parse(settings.bulk_jitter_s, "WXTASKS_BULK_JITTER_S"),
        group_jitter=Span.parse(settings.group_jitter_s, "WXTASKS_GROUP_JITTER_S"),
        quiet_hours=QuietHours.parse(settings.quiet_hours),
        timezone=ZoneInfo(settings.timezone),
        warmup_s=settings.warmup_s,
        daily_cap=settings.daily_bulk_cap,
        cooloff_s=settings.cooloff_s,
    )


#: the account hash fields :func:`gate` reads
GATE_FIELDS = (
    "bulk_jitter",
    "group_jitter",
    "quiet_hours",
    "warmup_s",
    "daily_bulk_cap",
    "bulk_cooloff_until",
    "first_login_at",
)
