"""Bucket levels as admission sees them, for ``status`` and the metrics.

The token-bucket arithmetic lives once, in ``lua/lib/gcra.lua``: admission, the
dispatcher and :func:`levels` (``bucket_levels.lua``) all run it, so what an operator sees
is what the next send will meet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from wxtasks.scripts import Scripts


@dataclass(frozen=True)
class Level:
    """A bucket now: tokens it could hand out, and seconds until the next one."""

    tokens: float
    next_token_s: float


def levels(
    scripts: Scripts, buckets: Sequence[tuple[str, float, int]], now_ms: float | None = None
) -> list[Level]:
    """``buckets``: (key, rate per second, burst) each; one round trip for all of them."""
    if not buckets:
        return []
    args: list[Any] = ["" if now_ms is None else repr(now_ms)]
    for _, rate, burst in buckets:
        args += [rate, burst]
    reply = scripts.bucket_levels(keys=[key for key, _, _ in buckets], args=args)
    return [Level(float(reply[i]), float(reply[i + 1]) / 1000) for i in range(0, len(reply), 2)]
