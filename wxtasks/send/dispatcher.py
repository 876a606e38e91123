"""The dispatcher: moves due messages from the outbox onto the send queue as the gates allow,
from the shards it holds.

``tick()`` runs often (``wxtasks dispatcher`` calls it every ``TICK_S``). A dispatcher
holds some of the shards (:mod:`wxtasks.send.leases`; any number of dispatchers split them)
and for each lane, interactive first, dispatches from its shards the most overdue first.
Every step is one atomic script (``dispatch.lua``, which runs the same gates as
admission, ``lua/lib/gates.lua``, and checks the shard's fencing token first), so no
message is ever handed out twice and a dispatcher whose lease passed to another hands out
nothing. ``publish`` puts one call's dispatched send tasks on the broker together.

The shared buckets (the fleet's, each gateway's) are not touched by a shard's dispatch
call: each shard spends a quota of them, borrowed from the bucket (``borrow.lua``) for just
what its due accounts could send now, and a borrowed token lapses unspent after
:data:`REFILL_S`. So a shard with nothing waiting holds nothing, the busy ones get the
tokens, and the gateway sees at most burst + rate * (T + REFILL_S) in any window T.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wxtasks.config import Settings
from wxtasks.gateway.fleet import Fleet
from wxtasks.send.gates import Lane
from wxtasks.send.leases import ShardLeases
from wxtasks.send.outbox import LANES, Dispatched, Outbox, Waiting
from wxtasks.send.pacing import Policy
from wxtasks.send.policy import HOLD_POLL_S

__all__ = ["Dispatched", "Dispatcher"]

logger = logging.getLogger(__name__)

#: a dispatched message that is not finished (or parked again) within this is parked
#: again; the broker's own redelivery covers a worker that dies, this covers a
#: dispatcher that dies between taking a message and publishing it
LEASE_S = 60.0
#: most messages one dispatch call hands out, and most accounts it looks at
DISPATCH_BATCH = 500
ACCOUNTS_PER_CALL = 200
#: a token a shard borrowed from a shared bucket lapses after this long unspent, so the
#: gateway's envelope holds to within one refill period's worth of tokens
REFILL_S = 0.1
#: the dispatcher's own figures (``wx:dispatcher:<id>``) outlive it this long
REPORT_TTL_S = 60


@dataclass
class Grant:
    """Tokens a shard borrowed for its next dispatch call, and when they lapse (ms)."""

    lapse_at_ms: float
    global_tokens: int = 0
    gateway_tokens: dict[str, int] = field(default_factory=dict)


def _reserve(lane: Lane) -> int:
    """Tokens a lane's borrowing leaves in each shared bucket (a reply always finds one)."""
    return 1 if lane is Lane.BULK else 0


class Dispatcher:
    TICK_S = 0.05
    #: a tick stops taking more batches after this long (interactive gets its batch first)
    TICK_BUDGET_S = 0.5

    def __init__(
        self,
        settings: Settings,
        outbox: Outbox,
        fleet: Fleet,
        pacing: Policy,
        publish: Callable[[list[Dispatched]], None],
        leases: ShardLeases,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """``fleet``: which gateway serves each account (its bucket's key and limits);
        ``leases``: the shards this dispatcher holds; ``clock``: unix seconds, by default
        Redis ``TIME``, the clock of every bucket."""
        self.settings = settings
        self.outbox = outbox
        self.fleet = fleet
        self.pacing = pacing
        self.publish = publish
        self.leases = leases
        self.clock = clock
        self._random = random.Random()
        self.dispatched = 0
        self.fenced = 0
        self.lag_ms = 0.0
        self._started = time.time()
        #: per lane: shard -> the shared tokens its last dispatch call wanted
        self._wants: dict[Lane, dict[int, dict[str, int]]] = {lane: {} for lane in LANES}
        #: (shared bucket, tokens left) -> until when it is known empty (bucket clock, ms)
        self._empty_until: dict[tuple[str, int], float] = {}
        self._reported = (time.monotonic(), 0)

    def _now_arg(self) -> str:
        return "" if self.clock is None else repr(self.clock() * 1000)

    def tick(self) -> int:
        """Renew the leases when due, then dispatch what is due now in the held shards,
        for at most ``TICK_BUDGET_S`` (a backlog that is all due at once goes out over
        several ticks); returns how many went out. With nothing due it costs one round
        trip (``due.lua`` for every held shard, pipelined)."""
        if not self.leases.due():
            return self._tick()
        self.leases.cycle()
        try:
            return self._tick()
        finally:
            self._report()

    def _tick(self) -> int:
        shards = sorted(self.leases.held)
        if not shards:
            return 0
        ob, keys = self.outbox, self.outbox.keys
        pipe = ob.redis.pipeline(transaction=False)
        now_arg = self._now_arg()
        for shard in shards:
            ob.scripts.due(
                keys=[
                    keys.outbox_inflight(shard),
                    *(keys.outbox_ready(shard, lane) for lane in LANES),
                ],
                args=[now_arg],
                client=pipe,
            )
        due: dict[Lane, list[tuple[float, int]]] = {lane: [] for lane in LANES}
        now_ms = 0.0
        for shard, reply in zip(shards, pipe.execute(), strict=True):
            now_ms = float(reply[0])
            reclaimed = int(reply[1]) > 0 and self.reclaim(shard, now_ms) > 0
            for i, lane in enumerate(LANES):
                if int(reply[2 + 2 * i]) or reclaimed:
                    due[lane].append((float(reply[3 + 2 * i] or now_ms), shard))
        sent = 0
        budget_ends = time.monotonic() + self.TICK_BUDGET_S
        for lane in LANES:
            if due[lane]:
                shards_due = [s for _, s in sorted(due[lane])]
                n = self._dispatch_lane(lane, shards_due, now_ms, budget_ends)
                self._note(lane, now_ms - min(head for head, _ in due[lane]), now_ms, n)
                sent += n
        return sent

    def _dispatch_lane(
        self, lane: Lane, shards: list[int], now_ms: float, budget_ends: float
    ) -> int:
        """Dispatch one lane from ``shards``, the most overdue first, in rounds of one call
        per shard (so one busy shard does not take a round's tokens from the others). A
        shard whose call wanted shared tokens borrows them just before its next call, so
        they are spent within milliseconds of leaving the shared bucket; one that got none
        is done for this tick."""
        sent = 0
        wants = self._wants[lane]  # what each shard's last call wanted, this tick or before
        for shard in set(wants) - set(shards):
            del wants[shard]  # no longer due: what it wanted is stale
        pending = shards
        while pending:
            again: list[int] = []
            for shard in pending:
                if time.monotonic() > budget_ends:
                    return sent
                grant = None
                if shard in wants:
                    if self._dry(wants[shard], lane, now_ms):
                        continue  # its buckets are known empty just now: no call at all
                    grant = self._borrow({shard: wants.pop(shard)}, lane).get(shard)
                    if grant is None:  # nothing to lend now: the next tick asks again
                        continue
                n, full, want = self._dispatch(shard, lane, grant, now_ms)
                sent += n
                if want:
                    wants[shard] = want
                if want or full:
                    again.append(shard)
            pending = again
        return sent

    def _dry(self, want: dict[str, int], lane: Lane, now_ms: float) -> bool:
        """True when a shared bucket ``want`` names was found empty until after ``now_ms``
        (the bucket clock): with the fleet's bucket binding, the waiting shards then cost
        no round trip each, only the one that finds the next token."""
        reserve = _reserve(lane)
        return any(self._empty_until.get((name, reserve), 0.0) > now_ms for name in want)

    def _dispatch(
        self, shard: int, lane: Lane, grant: Grant | None, now_ms: float
    ) -> tuple[int, bool, dict[str, int]]:
        """One dispatch call in one shard, with the accounts due at ``now_ms`` (the tick's
        Redis time): (dispatched, a full batch, tokens wanted from each shared bucket)."""
        ob, keys, s = self.outbox, self.outbox.keys, self.settings
        token = self.leases.held.get(shard)
        if token is None:
            return 0, False, {}
        due = ob.redis.zrangebyscore(
            keys.outbox_ready(shard, lane), "-inf", now_ms, start=0, num=ACCOUNTS_PER_CALL
        )
        if not due:
            return 0, False, {}
        apps = [str(app_id) for app_id in due]
        now_s = now_ms / 1000
        day = self.pacing.day(now_s)
        # read now, checked again inside the script (an account that moved meanwhile waits
        # for the next call)
        gateway_of = self.fleet.gateways_of(apps)
        granted = grant or Grant(0.0)
        account_keys: list[str] = []
        account_args: list[Any] = []
        for app_id in apps:
            gateway = gateway_of[app_id]
            account_keys += [
                keys.account(app_id),
                keys.account_bucket(app_id),
                keys.outbox_lane(app_id, lane),
                keys.bulk_day(app_id, day),
                keys.quota(shard, f"gw:{gateway}"),
            ]
            account_args += [
                app_id,
                gateway,
                "1" if self.fleet.limits(gateway)[0] > 0 else "0",
                granted.gateway_tokens.pop(gateway, 0),
            ]
        reply = ob.scripts.dispatch(
            keys=[
                keys.quota(shard, "global"),
                keys.outbox_ready(shard, lane),
                keys.outbox_inflight(shard),
                keys.outbox_messages(shard),
                keys.mirror_campaigns_stopped(shard),
                keys.outbox_held(shard),
                keys.mirror_gateways_down(shard),
                keys.outbox_campaign_of(shard),
                keys.outbox_to_group(shard),
                keys.mirror_campaigns_jitter(shard),
                keys.shard_lease(shard),
                *account_keys,
            ],
            args=[
                self._now_arg(),
                int(LEASE_S * 1000),
                granted.global_tokens,
                repr(granted.lapse_at_ms),
                s.account_rate_per_second,
                s.account_burst,
                lane.value,
                int(lane.window_s(s) * 1000),
                DISPATCH_BATCH,
                int(HOLD_POLL_S * 1000),
                *self.pacing.args(now_s, self._random.randrange(1 << 30)),
                token,
                *account_args,
            ],
        )
        if reply[0] == "fenced":
            self.fenced += 1
            self.leases.lost(shard)
            return 0, False, {}
        at = float(reply[0])
        want: dict[str, int] = {}
        if reply[1]:
            want = {str(k): int(v) for k, v in json.loads(reply[1]).items()}
        batch = [
            Dispatched(Waiting.from_body(reply[i + 1]), at if reply[i + 2] == "1" else None)
            for i in range(2, len(reply), 3)
            if reply[i + 1]
        ]
        if batch:
            try:
                self.publish(batch)
            except Exception:
                ob.unpublished([d.waiting for d in batch], repr(at + LEASE_S * 1000))
                raise
            self.dispatched += len(batch)
        return len(batch), (len(reply) - 2) // 3 >= DISPATCH_BATCH, want

    def _borrow(self, wants: dict[int, dict[str, int]], lane: Lane) -> dict[int, Grant]:
        """Borrow from the shared buckets what each shard wants, the fleet's first (a
        gateway's tokens for a shard that got none of the fleet's would only lapse), in the
        order the shards are in (the most overdue first); the bulk lane leaves one token in
        each bucket, so a reply always finds it."""
        reserve = _reserve(lane)
        grants: dict[int, Grant] = {}
        got_global = self._borrow_from(
            [
                (shard, "global", want["global"])
                for shard, want in wants.items()
                if "global" in want
            ],
            reserve,
            grants,
        )
        gateway_asks = []
        for shard, want in wants.items():
            for name, n in want.items():
                if name.startswith("gw:"):
                    cap = got_global.get(shard, 0) if "global" in want else n
                    if cap > 0:
                        gateway_asks.append((shard, name, min(n, cap)))
        self._borrow_from(gateway_asks, reserve, grants)
        return grants

    def _borrow_from(
        self, asks: list[tuple[int, str, int]], reserve: int, grants: dict[int, Grant]
    ) -> dict[int, int]:
        """One pipelined round trip of ``borrow.lua`` calls; adds to ``grants``; returns
        shard -> tokens granted."""
        if not asks:
            return {}
        ob, keys, s = self.outbox, self.outbox.keys, self.settings
        pipe = ob.redis.pipeline(transaction=False)
        now_arg = self._now_arg()
        for _, name, n in asks:
            if name == "global":
                key, (rate, burst) = keys.global_bucket, (s.rate_per_second, s.burst)
            else:
                key, (rate, burst) = keys.gateway_bucket(name[3:]), self.fleet.limits(name[3:])
            ob.scripts.borrow(
                keys=[key],
                args=[rate, burst, reserve, min(n, DISPATCH_BATCH), now_arg],
                client=pipe,
            )
        got: dict[int, int] = {}
        for (shard, name, _), (granted, now, empty_ms) in zip(asks, pipe.execute(), strict=True):
            if float(empty_ms) > 0:
                self._empty_until[(name, reserve)] = float(now) + float(empty_ms)
            if not int(granted):
                continue
            lapse_at = float(now) + REFILL_S * 1000
            grant = grants.setdefault(shard, Grant(lapse_at))
            grant.lapse_at_ms = min(grant.lapse_at_ms, lapse_at)
            if name == "global":
                grant.global_tokens += int(granted)
            else:
                grant.gateway_tokens[name[3:]] = int(granted)
            got[shard] = got.get(shard, 0) + int(granted)
        return got

    def _note(self, lane: Lane, lag_ms: float, now_ms: float, dispatched: int) -> None:
        """The lane's dispatch figures, for status and metrics."""
        keys = self.outbox.keys
        self.lag_ms = max(0.0, lag_ms)
        pipe = self.outbox.redis.pipeline(transaction=False)
        pipe.hset(keys.outbox_stats, f"{lane.value}:lag_ms", f"{self.lag_ms:.0f}")
        pipe.hset(keys.outbox_stats, f"{lane.value}:tick_at", f"{now_ms:.0f}")
        if dispatched:
            pipe.hincrby(keys.outbox_stats, f"{lane.value}:dispatched", dispatched)
        pipe.execute()

    def _report(self) -> None:
        """This dispatcher's own figures (``wx:dispatcher:<id>``): its shards, when its
        leases were renewed, what it dispatched, how fast, how late, how often fenced."""
        at, before = self._reported
        now = time.monotonic()
        self._reported = (now, self.dispatched)
        leases, keys = self.leases, self.outbox.keys
        key = keys.dispatcher(leases.me)
        pipe = self.outbox.redis.pipeline(transaction=False)
        pipe.hset(
            key,
            mapping={
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started": f"{self._started:.3f}",
                "shards": ",".join(map(str, sorted(leases.held))),
                "leases_at": f"{leases.renewed_at_ms:.0f}",
                "dispatched": self.dispatched,
                "fenced": self.fenced,
                "rate": f"{(self.dispatched - before) / max(now - at, 1e-3):.1f}",
                "lag_ms": f"{self.lag_ms:.0f}",
            },
        )
        pipe.expire(key, REPORT_TTL_S)
        pipe.execute()

    def stop(self) -> None:
        """Give the shards up at once (their next holders need not wait for the leases)."""
        self.leases.leave()
        self.outbox.redis.delete(self.outbox.keys.dispatcher(self.leases.me))

    def reclaim(self, shard: int, now_ms: float, limit: int = 500) -> int:
        """Park again what was dispatched from ``shard`` and whose lease ran out (its
        holder died, or the dispatcher died before publishing it); the claim keeps it
        from going out twice."""
        ob, keys = self.outbox, self.outbox.keys
        expired = ob.redis.zrangebyscore(
            keys.outbox_inflight(shard), "-inf", now_ms, start=0, num=limit, withscores=True
        )
        if not expired:
            return 0
        bodies = ob.redis.hmget(keys.outbox_messages(shard), [task_id for task_id, _ in expired])
        taken = 0
        for (task_id, lease_end), body in zip(expired, bodies, strict=True):
            if body is None:  # finished meanwhile
                ob.redis.zrem(keys.outbox_inflight(shard), task_id)
                continue
            waiting = Waiting.from_body(body)
            if ob.park_again(waiting, repr(lease_end)):
                taken += 1
                logger.warning(
                    "outbox: %s appId=%s lease ran out; parked again", task_id, waiting.app_id
                )
        return taken
