"""Shard leases: how any number of dispatchers split the shards among themselves.

Every dispatcher says it is alive in ``wx:dispatchers`` each :data:`CYCLE_S`; the live
ones, sorted by id, split the shards round-robin (shard ``s`` is the ``s % n``-th one's).
A dispatcher holds a shard by its lease (``wx:{s}:lease``, :data:`LEASE_S`, renewed each
cycle), and gives up at once a shard the split gives to another, which takes it at its
next cycle: a dispatcher that joins or leaves is balanced in within about a second. One
that dies (or is paused) drops out of the split after :data:`MEMBER_TTL_S` and its leases
run out after :data:`LEASE_S`, so its shards dispatch again within ``LEASE_S + CYCLE_S``.

Each new lease takes the shard's next fencing number, and ``dispatch.lua`` checks the
caller's token first: a holder whose lease has passed to another (paused by SIGSTOP, cut
off from Redis) dispatches nothing from that shard, whatever its own clock says.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from typing import Any

from wxtasks.keys import Keys
from wxtasks.scripts import Scripts

logger = logging.getLogger(__name__)

#: a lease not renewed within this long passes to another dispatcher (Inngest: 4 s)
LEASE_S = 4.0
#: leases are renewed, and the split looked at, this often
CYCLE_S = 0.5
#: a dispatcher not heard from within this long is out of the split
MEMBER_TTL_S = 3.0


def dispatcher_id() -> str:
    """A new dispatcher's id: host, pid and a random part (a restarted pid is another)."""
    host = "".join(c if c.isalnum() or c in "-._" else "_" for c in socket.gethostname())
    return f"{host[:40]}:{os.getpid()}:{secrets.token_hex(3)}"


def split(members: list[str], shards: int) -> dict[str, list[int]]:
    """Which shards each live dispatcher should hold: round-robin over the sorted ids."""
    ordered = sorted(members)
    out: dict[str, list[int]] = {m: [] for m in ordered}
    for shard in range(shards):
        out[ordered[shard % len(ordered)]].append(shard)
    return out


class ShardLeases:
    """The shards one dispatcher holds now: shard -> the fencing token it holds it with."""

    def __init__(self, client: Any, keys: Keys, scripts: Scripts, me: str | None = None) -> None:
        self.redis = client
        self.keys = keys
        self.scripts = scripts
        self.me = me or dispatcher_id()
        self.held: dict[int, str] = {}
        self.members: list[str] = []
        #: when the leases were last renewed (Redis time, ms)
        self.renewed_at_ms = 0.0
        self._next_cycle = 0.0

    def due(self) -> bool:
        return time.monotonic() >= self._next_cycle

    def cycle(self) -> None:
        """Say this dispatcher is alive, and take, keep or give up shards as the split of
        the live dispatchers says (two round trips)."""
        self._next_cycle = time.monotonic() + CYCLE_S
        k = self.keys
        reply = self.scripts.dispatchers(
            keys=[k.dispatchers], args=["join", self.me, int(MEMBER_TTL_S * 1000)]
        )
        now_ms, self.members = float(reply[0]), [str(m) for m in reply[1:]]
        mine = set(split(self.members, k.shards).get(self.me, []))
        lease_ms = int(LEASE_S * 1000)
        asks: list[int] = []
        pipe = self.redis.pipeline(transaction=False)
        for shard in sorted(mine | set(self.held)):
            token = self.held.get(shard, "")
            mode = "acquire" if not token else ("renew" if shard in mine else "release")
            self.scripts.lease(
                keys=[k.shard_lease(shard), k.shard_fence(shard)],
                args=[mode, self.me, lease_ms, token],
                client=pipe,
            )
            asks.append(shard)
        before = set(self.held)
        for shard, token in zip(asks, pipe.execute() if asks else [], strict=True):
            if token:
                self.held[shard] = str(token)
            else:
                self.held.pop(shard, None)
        self.renewed_at_ms = now_ms
        if set(self.held) != before:
            logger.info(
                "dispatcher %s: holds %d of %d shards (%d dispatchers live)",
                self.me,
                len(self.held),
                k.shards,
                len(self.members),
            )

    def lost(self, shard: int) -> None:
        """``shard``'s lease turned out to be another's (a dispatch call was fenced)."""
        if self.held.pop(shard, None) is not None:
            logger.warning("dispatcher %s: shard %d has passed to another", self.me, shard)

    def leave(self) -> None:
        """Give every shard up and leave the split (a clean stop: no wait for the leases)."""
        k = self.keys
        pipe = self.redis.pipeline(transaction=False)
        for shard, token in self.held.items():
            self.scripts.lease(
                keys=[k.shard_lease(shard), k.shard_fence(shard)],
                args=["release", self.me, 0, token],
                client=pipe,
            )
        self.scripts.dispatchers(keys=[k.dispatchers], args=["leave", self.me, 0], client=pipe)
        pipe.execute()
        self.held.clear()


def dispatchers_view(client: Any, keys: Keys) -> dict[str, Any]:
    """What status and metrics show of the dispatchers: each live one's shards, lease age,
    dispatch rate and lag, and how many shards no dispatcher holds now."""
    seconds, micros = client.time()
    now_ms = seconds * 1000 + micros / 1000
    live = [str(m) for m in client.zrangebyscore(keys.dispatchers, now_ms, "+inf")]
    pipe = client.pipeline(transaction=False)
    for me in live:
        pipe.hgetall(keys.dispatcher(me))
    for shard in range(keys.shards):
        pipe.exists(keys.shard_lease(shard))
    replies = pipe.execute()
    figures, held = replies[: len(live)], replies[len(live) :]
    out = []
    for me, f in zip(live, figures, strict=True):
        shards = [int(s) for s in (f.get("shards") or "").split(",") if s]
        leases_at = float(f.get("leases_at") or 0)
        out.append(
            {
                "id": me,
                "shards": len(shards),
                "shard_list": shards,
                "lease_age_s": round(max(0.0, now_ms - leases_at) / 1000, 3) if leases_at else None,
                "rate_per_s": float(f.get("rate") or 0),
                "lag_s": round(float(f.get("lag_ms") or 0) / 1000, 3),
                "dispatched": int(f.get("dispatched") or 0),
                "fenced": int(f.get("fenced") or 0),
            }
        )
    return {
        "shards": keys.shards,
        "unheld_shards": sum(1 for h in held if not int(h)),
        "dispatchers": out,
    }
