"""Trends for the console's Overview: per-minute buckets in Redis, kept a day.

Each minute has one hash, ``keys.trends(minute)`` (minute = unix seconds // 60, TTL
:data:`TTL_S`). Two kinds of fields land in it:

- **counts**, incremented where the event already writes to Redis, inside the script
  that already runs (no send pays an extra round trip, nothing scans per send): the one
  ending (``lua/finish.lua``) adds ``send:<outcome>``, ``gw:<gateway>`` and, for a
  dead-lettered message, ``deadletters``;
- **gauges**, sampled once a minute (:func:`wxtasks.metrics.sample`, the
  ``wxtasks.sample_trends`` task beat sends): ``backlog:<lane>``, ``state:<STATE>``,
  ``hb_p99_ms`` (heartbeat lateness p99 of the recent probes) and ``up:<gateway>`` (1 up,
  0 marked down).

:func:`read` returns the minutes of a window as plain dicts (the console turns them into
charts); finished minutes never change again, so a reader may keep them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from wxtasks.keys import Keys

#: a minute's bucket lives a day and an hour (the Overview's longest window is a day)
TTL_S = 25 * 3600
#: beat sends the sampler this often; each minute is sampled once (the first run in it)
SAMPLE_EVERY_S = 10.0
SAMPLED = "sampled"
#: a reader keeps finished minutes this long (the longest window, and some)
KEEP_MINUTES = 1500


def minute_of(ts: float) -> int:
    return int(ts // 60)


def read(redis: Any, keys: Keys, minutes: Iterable[int]) -> dict[int, dict[str, float]]:
    """minute -> its fields as numbers (an empty dict for a minute with nothing), in one
    round trip."""
    wanted = list(minutes)
    pipe = redis.pipeline(transaction=False)
    for minute in wanted:
        pipe.hgetall(keys.trends(minute))
    out: dict[int, dict[str, float]] = {}
    for minute, raw in zip(wanted, pipe.execute() if wanted else [], strict=True):
        out[minute] = {_s(k): float(v) for k, v in raw.items()}
    return out


@dataclass(frozen=True)
class Block:
    """A run of minutes summed up: counts added, gauges' highest and latest samples."""

    sums: dict[str, float]
    maxs: dict[str, float]
    lasts: dict[str, float]

    @classmethod
    def of(cls, minutes: Iterable[dict[str, float]]) -> Block:
        sums: dict[str, float] = {}
        maxs: dict[str, float] = {}
        lasts: dict[str, float] = {}
        for fields in minutes:
            for k, v in fields.items():
                sums[k] = sums.get(k, 0.0) + v
                if v > maxs.get(k, -1.0):
                    maxs[k] = v
            lasts.update(fields)
        return cls(sums, maxs, lasts)


class TrendCache:
    """What a reader keeps: finished minutes' buckets and finished blocks of them, so a
    page reads and adds up only the last minutes (a day and an hour at most)."""

    def __init__(self, redis: Any, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._done: dict[int, dict[str, float]] = {}
        self._blocks: dict[tuple[int, int], Block] = {}
        self._lock = threading.Lock()

    def minutes(self, first: int, last: int) -> dict[int, dict[str, float]]:
        """minute -> fields for ``first .. last`` (the last two read afresh each time)."""
        with self._lock:
            have = {m: self._done[m] for m in range(first, last + 1) if m in self._done}
        wanted = [m for m in range(first, last + 1) if m not in have]
        fresh = read(self.redis, self.keys, wanted)
        with self._lock:
            for m, fields in fresh.items():
                if m < last - 1:  # a finished minute: a late count is at most a second old
                    self._done[m] = fields
            for m in [m for m in self._done if m < last - KEEP_MINUTES]:
                del self._done[m]
        return {**have, **fresh}

    def blocks(self, first: int, last: int, step: int) -> list[Block]:
        """``first .. last`` in blocks of ``step`` minutes, oldest first."""
        starts = range(first, last + 1, step)
        with self._lock:
            kept = {b: self._blocks[(step, b)] for b in starts if (step, b) in self._blocks}
        missing = [b for b in starts if b not in kept]
        data = self.minutes(missing[0], last) if missing else {}
        out = []
        for b in starts:
            block = kept.get(b)
            if block is None:
                block = Block.of(data[m] for m in range(b, min(b + step, last + 1)) if data[m])
                if b + step - 1 < last - 1:  # every minute in it is finished
                    with self._lock:
                        self._blocks[(step, b)] = block
            out.append(block)
        with self._lock:
            for key in [k for k in self._blocks if k[1] < last - KEEP_MINUTES]:
                del self._blocks[key]
        return out


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)
