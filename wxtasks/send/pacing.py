"""Pacing for bulk sends: the fleet's policy and the settings' syntax.

Community experience ties bans to fixed machine spacing, bursts at night and sending
right after a new-device login (shared/GATEWAY.md, risk guidance), so bulk sends — never
replies — pass these gates on top of the token buckets:

- **spacing**: a random gap after each bulk send, ``WXTASKS_BULK_JITTER_S`` (default
  1–3 s) after a private recipient, ``WXTASKS_GROUP_JITTER_S`` (2–5 s) after a group
  (``…@chatroom``); a campaign's ``--jitter`` replaces both. The gates draw it when a
  bulk send is let through, by a worker or by the dispatcher.
- **quiet hours**: none inside ``WXTASKS_QUIET_HOURS`` (00:00–07:00) local time in
  ``WXTASKS_TIMEZONE`` (Asia/Shanghai);
- **warm-up**: none for ``WXTASKS_WARMUP_S`` (4 h) after the account's first login on a
  new device;
- **daily cap**: at most ``WXTASKS_DAILY_BULK_CAP`` a local day (0: no cap);
- **cool-off**: none while the circuit breaker holds the lane (``WXTASKS_COOLOFF_S``
  after a risk-control answer such as "操作过于频繁").

Each account may override each policy (its hash fields ``bulk_jitter``, ``group_jitter``,
``quiet_hours``, ``warmup_s``, ``daily_bulk_cap``). The gates themselves are decided in
``lua/lib/gates.lua``, for every bulk send whichever way it arrives (admission and the
dispatcher); this module validates the settings and hands the gates the fleet's defaults.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any
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


class Policy:
    """The fleet's pacing defaults (from Settings), as the gates take them: the seven
    arguments ``read_policy`` in ``lua/lib/gates.lua`` reads. Each account may override
    each of them with its own hash field (``bulk_jitter``, ``group_jitter``,
    ``quiet_hours``, ``warmup_s``, ``daily_bulk_cap``); the gates read those themselves."""

    def __init__(self, settings: Settings) -> None:
        Span.parse(settings.bulk_jitter_s, "WXTASKS_BULK_JITTER_S")
        Span.parse(settings.group_jitter_s, "WXTASKS_GROUP_JITTER_S")
        QuietHours.parse(settings.quiet_hours)
        self.timezone = ZoneInfo(settings.timezone)
        self._fixed = [
            settings.quiet_hours.strip(),
            int(settings.warmup_s * 1000),
            settings.daily_bulk_cap,
            settings.bulk_jitter_s,
            settings.group_jitter_s,
        ]
        self._offset: tuple[int, int] = (-1, 0)

    def args(self, now: float, seed: int) -> list[Any]:
        """The gates' policy arguments at ``now`` (unix seconds): the time zone's offset
        then, the defaults, and a seed for the spacing's random gaps."""
        minute = int(now // 60)
        if self._offset[0] != minute:
            offset = dt.datetime.fromtimestamp(now, self.timezone).utcoffset()
            self._offset = (minute, int(offset.total_seconds() * 1000) if offset else 0)
        return [self._offset[1], *self._fixed, seed]

    def day(self, now: float) -> str:
        """The local day of ``now`` (the daily cap's key)."""
        return local_day(now, self.timezone)


def local_day(now: float, tz: ZoneInfo) -> str:
    """The account's calendar day for the daily cap, ``YYYYMMDD`` in the fleet's zone."""
    return dt.datetime.fromtimestamp(now, tz).strftime("%Y%m%d")
