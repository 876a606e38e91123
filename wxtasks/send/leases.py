"""Shard leases: how any number of dispatchers split the shards among themselves.

Every dispatcher says it is alive in ``wx:dispatchers`` each :data:`CYCLE_S`; each live
one's share is an even split of the shards (:func:`share`). A dispatcher holds a shard by
its lease (``wx:{s}:lease``, :data:`LEASE_S`, renewed each cycle); each cycle it keeps
what it holds up to its share, gives up the rest, and takes shards nobody holds up to its
share. So a dispatcher that joins gets its share within a cycle or two (the others give
shards up as their share shrinks), and only shards that must move do. One
that dies (or is paused) drops out of the split after :data:`MEMBER_TTL_S` and its leases
run out after :data:`LEASE_S`, so its shards dispatch again within ``LEASE_S + CYCLE_S``.

Each new lease takes the shard's next fencing number, and ``dispatch.lua`` checks the
caller's token first: a holder whose lease has passed to another (paused by SIGSTOP, cut
off from Redis) dispatches nothing from that shard, whatever its own clock says.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import socket
import time
from typing import Any

from wxtasks.keys import Keys
from wxtasks.scripts import Scripts

logger = logging.getLogger(__name__)

#: a lease not renewed within this long passes to another dispatcher (Inngest: 4 s)
LEASE_S = 4.0
#: leases are renewed, and the split looked at, this often (a dead dispatcher's shards
#: dispatch again within LEASE_S + CYCLE_S)
CYCLE_S = 0.25
#: a dispatcher not heard from within this long is out of the split
MEMBER_TTL_S = 3.0


def dispatcher_id() -> str:
    """A new dispatcher's id: host, pid and a random part (a restarted pid is another)."""
    host = "".join(c if c.isalnum() or c in "-._" else "_" for c in socket.gethostname())
    return f"{host[:40]}:{os.getpid()}:{secrets.token_hex(3)}"


def share(members: list[str], me: str, shards: int) -> int:
    """How many shards ``me`` should hold: an even split among the live dispatchers (the
    first ``shards % n`` of them by id hold one more); 0 when it is not among them."""
    ordered = sorted(members)
    if me not in ordered:
        return 0
    base, extra = divmod(shards, len(ordered))
    return base + (1 if ordered.index(me) < extra else 0)


class ShardLeases:
    """The shards one dispatcher holds now: shard -> the fencing token it holds it with."""

    def __init__(self, client: Any, keys: Keys, scripts: Scripts, me: str | None = None) -> None:
        self.redis = client
        self.keys = keys
        self.scripts = scripts
        self.me = me or dispatcher_id()
        self.held: dict[int, str] = {}
        self.members: list[str] = []
        self._random = random.Random()
        #: when the leases were last renewed (Redis time, ms)
        self.renewed_at_ms = 0.0
        self._next_cycle = 0.0

    def due(self) -> bool:
        return time.monotonic() >= self._next_cycle

    def cycle(self) -> None:
        """Say this dispatcher is alive, and keep, give up or take shards towards its even
        share (two round trips; three while it is short of its share). Sticky: it keeps
        what it holds up to its share and takes only shards nobody holds (random ones, so
        two dispatchers rarely reach for the same), so a dispatcher that joins or leaves
        moves only the shards it must."""
        self._next_cycle = time.monotonic() + CYCLE_S
        k = self.keys
        reply = self.scripts.dispatchers(
            keys=[k.dispatchers], args=["join", self.me, int(MEMBER_TTL_S * 1000)]
        )
        now_ms, self.members = float(reply[0]), [str(m) for m in reply[1:]]
        target = share(self.members, self.me, k.shards)
        kept = sorted(self.held)[:target]
        free: list[int] = []
        if len(kept) < target:  # short of its share: which shards does nobody hold?
            pipe = self.redis.pipeline(transaction=False)
            for shard in range(k.shards):
                pipe.exists(k.shard_lease(shard))
            leased = pipe.execute()
            free = [s for s in range(k.shards) if not int(leased[s]) and s not in self.held]
            self._random.shuffle(free)
        plan = [(s, "renew") for s in kept]
        plan += [(s, "release") for s in sorted(self.held)[target:]]
        plan += [(s, "acquire") for s in free[: max(0, target - len(kept))]]
        lease_ms = int(LEASE_S * 1000)
        pipe = self.redis.pipeline(transaction=False)
        for shard, mode in plan:
            self.scripts.lease(
                keys=[k.shard_lease(shard), k.shard_fence(shard)],
                args=[mode, self.me, lease_ms, self.held.get(shard, "")],
                client=pipe,
            )
        asks = [shard for shard, _ in plan]
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
