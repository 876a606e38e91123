"""Redis's memory against its ``maxmemory``, and the alert before it is full.

wxtasks keeps all its state in Redis, so Redis must never evict a key to make room: the
compose file runs it with ``maxmemory`` and ``maxmemory-policy noeviction`` (when full,
writes fail and say so, and nothing is silently lost). The active beat looks once a minute
(:func:`check`); at :data:`THRESHOLD` of ``maxmemory`` it raises the ``redisMemory`` alert
(events stream and webhook), at most once per :data:`QUIET_S`. ``wxtasks metrics``
exports both figures.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis

from wxtasks.keys import Keys

ALERT = "redisMemory"
THRESHOLD = 0.8
QUIET_S = 3600
CHECK_EVERY_S = 60.0


def usage(client: redis.Redis) -> tuple[int, int]:
    """(bytes used, ``maxmemory`` in bytes; 0: no limit set)."""
    info: Any = client.info("memory")
    return int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))


def check(
    client: redis.Redis,
    keys: Keys,
    alert: Callable[[str, str, str], None],
    *,
    threshold: float = THRESHOLD,
    quiet_s: int = QUIET_S,
) -> bool:
    """Raise the alert (``alert(app_id, name, reason)``) when Redis is past ``threshold``
    of its ``maxmemory`` and it was not raised within ``quiet_s``; True when raised."""
    used, limit = usage(client)
    if not limit or used < threshold * limit:
        return False
    if not client.set(keys.alerted(ALERT), "1", nx=True, ex=quiet_s):
        return False
    alert(
        "",
        ALERT,
        f"Redis uses {used / 2**20:.0f} MiB, {100 * used / limit:.0f}% of its maxmemory "
        f"({limit / 2**20:.0f} MiB); at 100% (noeviction) every write fails: raise maxmemory "
        "or lower WXTASKS_INBOUND_MAXLEN / WXTASKS_EVENTS_MAXLEN",
    )
    return True
