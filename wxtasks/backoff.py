"""The one backoff formula: reconnects, a send's retries, a login or an alert tried again."""

from __future__ import annotations

import random


def backoff_s(
    attempt: int, *, cap_s: float, base_s: float = 1.0, rand: float | None = None
) -> float:
    """Seconds before try ``attempt + 1``: base, 2·base, 4·base … up to ``cap_s``, each
    ±25 % (``rand`` in [0, 1); a random draw when None), never over ``cap_s``."""
    doubled = min(cap_s, base_s * 2.0 ** min(attempt, 30))
    jitter = 0.75 + 0.5 * (random.random() if rand is None else rand)
    return min(cap_s, doubled * jitter)
