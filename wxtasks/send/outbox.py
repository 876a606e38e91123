"""The outbox: where a message that cannot go out now waits — in Redis, never in the broker.

::

    send task ── admit now? ──yes──▶ gateway ──▶ record
         │ no (token, account not ONLINE yet, older messages ahead, a retry's backoff)
         ▼
     outbox: per account, lanes  interactive > bulk,  FIFO in a lane
         ▲                                 │
         │ lease ran out (holder died)     ▼  Dispatcher.tick (`wxtasks dispatcher`): what
         └──────── dispatched (lease) ◀─── the buckets allow, interactive first, the most
                                            overdue account first ──▶ send queue ──▶ admit

A parked message's Celery message is acknowledged, so how long it may wait (its lane's
window: minutes for replies, a day for a 群发) has nothing to do with the broker's
visibility timeout, and a crashed worker holds nothing that waits. The dispatcher takes
the tokens when it dispatches, so a dispatched message admits at once; the claim (dedup
key + owner) makes a second dispatch of the same message harmless.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import redis

from wxtasks.keys import Keys
from wxtasks.scripts import Scripts
from wxtasks.send.gates import Lane, pacing_reason, to_group

logger = logging.getLogger(__name__)

LANES = (Lane.INTERACTIVE, Lane.BULK)


@dataclass(frozen=True)
class Waiting:
    """One message in the outbox: enough to publish its send task again."""

    task_id: str
    task: str
    kwargs: dict[str, Any]
    app_id: str
    lane: str
    enqueued_at: float
    attempt: int = 0
    why: str = ""
    parked_at: float = 0.0
    #: a campaign's target: the content comes from the campaign when it is published
    campaign: str = ""

    def body(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_body(cls, body: str) -> Waiting:
        known = _WAITING_FIELDS
        return cls(**{k: v for k, v in json.loads(body).items() if k in known})

    @property
    def to_group(self) -> bool:
        return to_group(str(self.kwargs.get("to_wxid") or ""))


_WAITING_FIELDS = frozenset(f.name for f in fields(Waiting))


@dataclass(frozen=True)
class Dispatched:
    waiting: Waiting
    #: the dispatcher took the message's tokens at this Redis time (ms); None: not taken
    paid_at_ms: float | None


class Outbox:
    def __init__(self, client: redis.Redis, keys: Keys, scripts: Scripts) -> None:
        #: decode_responses=True: replies are str (redis-py's types say bytes | str)
        self.redis: Any = client
        self.keys = keys
        self.scripts = scripts

    # -- the send task's side --------------------------------------------------------------

    def park(
        self, waiting: Waiting, due_in_s: float, *, hold: bool = False, client: Any = None
    ) -> int:
        """Put ``waiting`` in its lane (FIFO by first enqueue); the dispatcher looks at the
        account again in ``due_in_s`` — at the latest, or with ``hold`` not before (a
        retry's backoff holds the account's lane)."""
        return self._park(waiting, due_in_s, "hold" if hold else "soon", "", client)

    def _park(
        self, waiting: Waiting, due_in_s: float, mode: str, lease_by: str, client: Any
    ) -> int:
        k, shard = self.keys, self.keys.shard(waiting.app_id)
        reply = self.scripts.park(
            keys=[
                k.outbox_messages(shard),
                k.outbox_lane(waiting.app_id, waiting.lane),
                k.outbox_ready(shard, waiting.lane),
                k.outbox_inflight(shard),
                k.outbox_campaign_of(shard),
                k.outbox_to_group(shard),
            ],
            args=[
                waiting.task_id,
                waiting.body(),
                repr(waiting.enqueued_at * 1000),
                waiting.app_id,
                int(max(0.0, due_in_s) * 1000),
                mode,
                lease_by,
                waiting.campaign,
                "1" if waiting.to_group else "0",
            ],
            client=client,
        )
        return -1 if client is not None else int(reply)

    def park_again(self, waiting: Waiting, lease_end: str) -> bool:
        """Park a dispatched message whose lease ended by ``lease_end`` (its holder died);
        False when it is no longer dispatched with such a lease."""
        return self._park(waiting, 0.0, "soon", lease_end, None) >= 0

    def unpublished(self, batch: list[Waiting], lease_end: str) -> None:
        """Park a dispatched batch again at once: publishing it failed (the broker away),
        so nobody holds it; some may have reached the broker all the same, and the claim
        keeps those from going out twice."""
        pipe = self.redis.pipeline(transaction=False)
        for waiting in batch:
            self._park(waiting, 0.0, "soon", lease_end, pipe)
        pipe.execute()

    # -- operators -----------------------------------------------------------------------------

    def waiting(
        self, app_id: str | None = None, lane: str | None = None, limit: int = 1000
    ) -> list[Waiting]:
        """Waiting messages (not the dispatched ones), oldest first per account's lane."""
        k = self.keys
        lanes: list[Lane] = [Lane(lane)] if lane else list(LANES)
        pairs: list[tuple[str, str]] = []
        if app_id:
            pairs = [(app_id, ln.value) for ln in lanes]
        else:
            pipe = self.redis.pipeline(transaction=False)
            for shard in range(k.shards):
                for ln in lanes:
                    pipe.zrange(k.outbox_ready(shard, ln), 0, -1)
            found = iter(pipe.execute())
            pairs = [
                (str(a), ln.value) for _ in range(k.shards) for ln in lanes for a in next(found)
            ]
        pipe = self.redis.pipeline(transaction=False)
        for a, lane_name in pairs:
            pipe.zrange(k.outbox_lane(a, lane_name), 0, limit - 1)
        ids = [
            (a, i)
            for (a, _), chunk in zip(pairs, pipe.execute() if pairs else [], strict=True)
            for i in chunk
        ][:limit]
        pipe = self.redis.pipeline(transaction=False)
        for a, task_id in ids:
            pipe.hget(k.outbox_messages(k.shard(a)), task_id)
        out = [Waiting.from_body(body) for body in (pipe.execute() if ids else []) if body]
        # a bulk message held by its account's pacing says so (quiet hours, warm-up, ...)
        held = {w.app_id for w in out if w.lane == Lane.BULK}
        if held:
            pipe = self.redis.pipeline(transaction=False)
            for a in held:
                pipe.hget(self.keys.account(a), "bulk_wait")
            gates = dict(zip(held, pipe.execute(), strict=True))
            out = [
                replace(w, why=pacing_reason(gates[w.app_id]))
                if w.lane == Lane.BULK and gates[w.app_id]
                else w
                for w in out
            ]
        out.sort(key=lambda w: w.enqueued_at)
        return out

    def get(self, task_id: str) -> Waiting | None:
        """The waiting or dispatched message ``task_id`` (its shard is not known from the
        id: one pipelined look in every shard; an operator's command, not a hot path)."""
        pipe = self.redis.pipeline(transaction=False)
        for shard in range(self.keys.shards):
            pipe.hget(self.keys.outbox_messages(shard), task_id)
        body = next((b for b in pipe.execute() if b), None)
        return Waiting.from_body(body) if body else None

    def take_out(self, task_id: str) -> Waiting | None:
        """Take a waiting message out (to end it); None when it is not waiting (unknown,
        dispatched or already done)."""
        waiting = self.get(task_id)
        if waiting is None:
            return None
        body = self.take_out_queued(task_id, waiting.app_id, waiting.lane, None)
        return Waiting.from_body(body) if body else None

    def take_out_queued(self, task_id: str, app_id: str, lane: str, pipe: Any) -> Any:
        """:meth:`take_out` of a message whose account and lane the caller knows, queued
        on ``pipe`` (its reply: the body, or nothing when it was not waiting)."""
        k, shard = self.keys, self.keys.shard(app_id)
        return self.scripts.outbox_cancel(
            keys=[
                k.outbox_messages(shard),
                k.outbox_lane(app_id, lane),
                k.outbox_held(shard),
                k.outbox_campaign_of(shard),
                k.outbox_to_group(shard),
            ],
            args=[task_id],
            client=pipe,
        )

    def backlog(self, app_ids: Iterable[str]) -> dict[str, dict[str, int]]:
        """appId -> lane -> waiting messages."""
        apps = list(app_ids)
        pipe = self.redis.pipeline(transaction=False)
        for a in apps:
            for ln in LANES:
                pipe.zcard(self.keys.outbox_lane(a, ln))
        counts = iter(pipe.execute() if apps else [])
        return {a: {ln.value: int(next(counts)) for ln in LANES} for a in apps}

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per lane: backlog, accounts with a backlog, the oldest waiting message's age,
        dispatch lag (how long the most overdue account has been due), dispatched."""
        k = self.keys
        now_s, now_us = self.redis.time()
        now_ms = now_s * 1000 + now_us / 1000
        out: dict[str, dict[str, Any]] = {}
        figures = self.redis.hgetall(k.outbox_stats)
        for ln in LANES:
            pipe = self.redis.pipeline(transaction=False)
            for shard in range(k.shards):
                pipe.zrange(k.outbox_ready(shard, ln), 0, -1, withscores=True)
            ready = [pair for chunk in pipe.execute() for pair in chunk]
            pipe = self.redis.pipeline(transaction=False)
            for a, _ in ready:
                pipe.zcard(k.outbox_lane(a, ln))
                pipe.zrange(k.outbox_lane(a, ln), 0, 0, withscores=True)
            replies = pipe.execute() if ready else []
            backlog = sum(int(n) for n in replies[0::2])
            heads = [h[0][1] for h in replies[1::2] if h]
            overdue = [now_ms - score for _, score in ready if score <= now_ms]
            out[ln.value] = {
                "backlog": backlog,
                "accounts": sum(1 for n in replies[0::2] if int(n)),
                "oldest_age_s": round(max(0.0, now_ms - min(heads)) / 1000, 3) if heads else 0.0,
                "dispatch_lag_s": round(max(overdue) / 1000, 3) if overdue else 0.0,
                "dispatched": int(figures.get(f"{ln.value}:dispatched", 0)),
            }
        pipe = self.redis.pipeline(transaction=False)
        for shard in range(k.shards):
            pipe.zcard(k.outbox_inflight(shard))
        out["inflight"] = {"dispatched": sum(int(n) for n in pipe.execute())}
        return out
