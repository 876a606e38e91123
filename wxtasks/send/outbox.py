"""The outbox: where a message that cannot go out now waits — in Redis, never in the broker.

::

    send task ── admit now? ──yes──▶ gateway ──▶ record
         │ no (token, account not ONLINE yet, older messages ahead, a retry's backoff)
         ▼
     outbox: per account, lanes  interactive > bulk,  FIFO in a lane
         ▲                                 │
         │ lease ran out (holder died)     ▼  Dispatcher.tick (in the active beat): what
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
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any

import redis

from wxtasks.config import Settings
from wxtasks.errors import BadInputError
from wxtasks.gateway.fleet import Fleet
from wxtasks.keys import Keys
from wxtasks.scripts import Scripts
from wxtasks.send import pacing
from wxtasks.send.policy import HOLD_POLL_S, Lane

logger = logging.getLogger(__name__)

#: a dispatched message that is not finished (or parked again) within this is parked
#: again; the broker's own redelivery covers a worker that dies, this covers a
#: dispatcher that dies between taking a message and publishing it
LEASE_S = 60.0
#: most messages one dispatch call hands out, and most accounts it looks at
DISPATCH_BATCH = 500
ACCOUNTS_PER_CALL = 200
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
    #: the campaign's own spacing between its bulk sends, "MIN-MAX" seconds
    jitter: str = ""

    def body(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_body(cls, body: str) -> Waiting:
        return cls(**json.loads(body))


@dataclass(frozen=True)
class Dispatched:
    waiting: Waiting
    #: the dispatcher took the message's tokens at this Redis time (ms); None: not taken
    paid_at_ms: float | None


class Outbox:
    def __init__(
        self, client: redis.Redis, settings: Settings, keys: Keys, scripts: Scripts
    ) -> None:
        #: decode_responses=True: replies are str (redis-py's types say bytes | str)
        self.redis: Any = client
        self.settings = settings
        self.keys = keys
        self.scripts = scripts

    def window_s(self, lane: str) -> float:
        """How long a message of ``lane`` may wait to go out, from its first enqueue."""
        if lane == Lane.BULK:
            return float(self.settings.bulk_deadline_s)
        return float(self.settings.send_deadline_s)

    @staticmethod
    def reserve(lane: str) -> int:
        """Tokens a lane leaves in each bucket: bulk leaves one, so replies find it."""
        return 1 if lane == Lane.BULK else 0

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
        reply = self.scripts.park(
            keys=[
                self.keys.outbox_messages,
                self.keys.outbox_lane(waiting.app_id, waiting.lane),
                self.keys.outbox_ready(waiting.lane),
                self.keys.outbox_inflight,
            ],
            args=[
                waiting.task_id,
                waiting.body(),
                repr(waiting.enqueued_at * 1000),
                waiting.app_id,
                int(max(0.0, due_in_s) * 1000),
                mode,
                lease_by,
            ],
            client=client,
        )
        return -1 if client is not None else int(reply)

    def finished(self, task_id: str, pipe: Any) -> None:
        """The message ended: forget it (queued on ``pipe``, with the outcome's record)."""
        pipe.hdel(self.keys.outbox_messages, task_id)
        pipe.zrem(self.keys.outbox_inflight, task_id)

    # -- operators -----------------------------------------------------------------------------

    def waiting(
        self, app_id: str | None = None, lane: str | None = None, limit: int = 1000
    ) -> list[Waiting]:
        """Waiting messages (not the dispatched ones), oldest first per account's lane."""
        lanes: list[Lane] = [Lane(lane)] if lane else list(LANES)
        pairs: list[tuple[str, str]] = []
        for ln in lanes:
            apps = [app_id] if app_id else self.redis.zrange(self.keys.outbox_ready(ln), 0, -1)
            pairs.extend((str(a), ln.value) for a in apps)
        pipe = self.redis.pipeline(transaction=False)
        for a, lane_name in pairs:
            pipe.zrange(self.keys.outbox_lane(a, lane_name), 0, limit - 1)
        ids = [i for chunk in (pipe.execute() if pairs else []) for i in chunk]
        out: list[Waiting] = []
        for start in range(0, min(len(ids), limit), 1000):
            chunk = ids[start : min(start + 1000, limit)]
            for body in self.redis.hmget(self.keys.outbox_messages, chunk):
                if body:
                    out.append(Waiting.from_body(body))
        # a bulk message held by its account's pacing says so (quiet hours, warm-up, ...)
        held = {w.app_id for w in out if w.lane == Lane.BULK}
        if held:
            pipe = self.redis.pipeline(transaction=False)
            for a in held:
                pipe.hget(self.keys.account(a), "bulk_wait")
            gates = dict(zip(held, pipe.execute(), strict=True))
            out = [
                replace(w, why=str(gates[w.app_id]))
                if w.lane == Lane.BULK and gates[w.app_id]
                else w
                for w in out
            ]
        out.sort(key=lambda w: w.enqueued_at)
        return out

    def get(self, task_id: str) -> Waiting | None:
        body = self.redis.hget(self.keys.outbox_messages, task_id)
        return Waiting.from_body(body) if body else None

    def cancel(self, task_id: str) -> Waiting | None:
        """Take a waiting message out; None when it is not waiting (unknown, dispatched
        or already done)."""
        waiting = self.get(task_id)
        if waiting is None:
            return None
        body = self.scripts.outbox_cancel(
            keys=[
                self.keys.outbox_messages,
                self.keys.outbox_lane(waiting.app_id, waiting.lane),
                self.keys.outbox_held,
            ],
            args=[task_id],
        )
        return Waiting.from_body(body) if body else None

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
        now_s, now_us = self.redis.time()
        now_ms = now_s * 1000 + now_us / 1000
        out: dict[str, dict[str, Any]] = {}
        figures = self.redis.hgetall(self.keys.outbox_stats)
        for ln in LANES:
            ready = self.redis.zrange(self.keys.outbox_ready(ln), 0, -1, withscores=True)
            pipe = self.redis.pipeline(transaction=False)
            for a, _ in ready:
                pipe.zcard(self.keys.outbox_lane(a, ln))
                pipe.zrange(self.keys.outbox_lane(a, ln), 0, 0, withscores=True)
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
        out["inflight"] = {"dispatched": int(self.redis.zcard(self.keys.outbox_inflight))}
        return out


class Dispatcher:
    """Moves due messages from the outbox onto the send queue as the buckets allow.

    ``tick()`` runs often (the active beat calls it every ``TICK_S``); every step is one
    atomic script, so even two dispatchers at once never hand out one message twice.
    ``publish`` puts the dispatched send tasks on the broker.
    """

    TICK_S = 0.05
    #: a tick stops taking more batches after this long (interactive gets its batch first)
    TICK_BUDGET_S = 0.5

    def __init__(
        self,
        outbox: Outbox,
        publish: Callable[[list[Dispatched]], None],
        *,
        clock: Callable[[], float] | None = None,
        fleet: Fleet | None = None,
    ) -> None:
        """``clock``: unix seconds; by default Redis ``TIME``, the clock of every bucket.
        ``fleet``: which gateway serves each account (its bucket's key and limits)."""
        self.outbox = outbox
        self.publish = publish
        self.clock = clock
        self.fleet = fleet or Fleet(
            outbox.redis, outbox.settings, keys=outbox.keys, scripts=outbox.scripts
        )
        self.policy = pacing.policy_from(outbox.settings)
        self._random = random.Random()

    def now_ms(self) -> float:
        if self.clock is not None:
            return self.clock() * 1000
        now_s, now_us = self.outbox.redis.time()
        return float(now_s * 1000 + now_us / 1000)

    def tick(self) -> int:
        """Dispatch what is due now, for at most ``TICK_BUDGET_S`` (a backlog that is all
        due at once goes out over several ticks, so the beat keeps its lock and no lease
        runs out while its message waits to be published); returns how many went out."""
        now_ms = self.now_ms()
        self.reclaim(now_ms)
        sent = 0
        budget_ends = time.monotonic() + self.TICK_BUDGET_S
        for lane in LANES:
            while True:
                n, full = self._dispatch_lane(lane, now_ms)
                sent += n
                if not full or time.monotonic() > budget_ends:
                    break
        return sent

    def _dispatch_lane(self, lane: Lane, now_ms: float) -> tuple[int, bool]:
        ob, keys, s = self.outbox, self.outbox.keys, self.outbox.settings
        due = ob.redis.zrangebyscore(
            keys.outbox_ready(lane), "-inf", now_ms, start=0, num=ACCOUNTS_PER_CALL, withscores=True
        )
        if not due:
            return 0, False
        apps = [str(app_id) for app_id, _ in due]
        day = pacing.local_day(now_ms / 1000, self.policy.timezone)
        gates = self._gates(apps, day, now_ms) if lane is Lane.BULK else {}
        # read now, checked again inside the script (an account that moved meanwhile waits
        # for the next call)
        gateway_of = self.fleet.gateways_of(apps)
        account_keys: list[str] = []
        account_args: list[Any] = []
        for app_id in apps:
            gateway = gateway_of[app_id]
            account_keys += [
                keys.account(app_id),
                keys.account_bucket(app_id),
                keys.outbox_lane(app_id, lane),
                keys.bulk_day(app_id, day),
                keys.gateway_bucket(gateway),
            ]
            g = gates.get(app_id)
            account_args += [
                app_id,
                int(g.open_at * 1000) if g else 0,
                g.sends_left_today if g else -1,
                *((int(g.bulk_jitter.low * 1000), int(g.bulk_jitter.high * 1000)) if g else (0, 0)),
                *(
                    (int(g.group_jitter.low * 1000), int(g.group_jitter.high * 1000))
                    if g
                    else (0, 0)
                ),
                gateway,
                *self.fleet.limits(gateway),
            ]
        reply = ob.scripts.dispatch(
            keys=[
                keys.global_bucket,
                keys.outbox_ready(lane),
                keys.outbox_inflight,
                keys.outbox_messages,
                keys.campaigns_stopped,
                keys.outbox_held,
                keys.gateways_down,
                *account_keys,
            ],
            args=[
                repr(now_ms),
                int(LEASE_S * 1000),
                s.rate_per_second,
                s.burst,
                s.account_rate_per_second,
                s.account_burst,
                ob.reserve(lane),
                int(ob.window_s(lane) * 1000),
                DISPATCH_BATCH,
                int(HOLD_POLL_S * 1000),
                self._random.randrange(1 << 30),
                "1" if lane is Lane.BULK else "0",
                *account_args,
            ],
        )
        at = float(reply[0])
        batch = [
            Dispatched(Waiting.from_body(reply[i + 1]), at if reply[i + 2] == "1" else None)
            for i in range(1, len(reply), 3)
        ]
        lag_ms = max(0.0, now_ms - min(score for _, score in due))
        pipe = ob.redis.pipeline(transaction=False)
        pipe.hset(keys.outbox_stats, f"{lane.value}:lag_ms", f"{lag_ms:.0f}")
        pipe.hset(keys.outbox_stats, f"{lane.value}:tick_at", f"{now_ms:.0f}")
        if batch:
            pipe.hincrby(keys.outbox_stats, f"{lane.value}:dispatched", len(batch))
        pipe.execute()
        if batch:
            self.publish(batch)
        return len(batch), len(batch) >= DISPATCH_BATCH

    def _gates(self, apps: list[str], day: str, now_ms: float) -> dict[str, pacing.Gate]:
        """Each account's bulk gate now (quiet hours, warm-up, cap, cool-off); the reason a
        closed one gives is kept on the account (``bulk_wait``) for operators."""
        ob, keys = self.outbox, self.outbox.keys
        pipe = ob.redis.pipeline(transaction=False)
        for app_id in apps:
            pipe.hmget(keys.account(app_id), pacing.GATE_FIELDS)
            pipe.get(keys.bulk_day(app_id, day))
        replies = pipe.execute()
        gates: dict[str, pacing.Gate] = {}
        pipe = ob.redis.pipeline(transaction=False)
        for i, app_id in enumerate(apps):
            fields = {
                k: v
                for k, v in zip(pacing.GATE_FIELDS, replies[2 * i], strict=True)
                if v is not None
            }
            try:
                g = pacing.gate(fields, int(replies[2 * i + 1] or 0), now_ms / 1000, self.policy)
            except BadInputError as exc:  # an account's own policy is unreadable: say so
                g = pacing.Gate(
                    now_ms / 1000 + 60,
                    -1,
                    f"bad pacing setting: {exc}",
                    self.policy.bulk_jitter,
                    self.policy.group_jitter,
                )
            gates[app_id] = g
            ob.scripts.hset_existing(
                keys=[keys.account(app_id)], args=["bulk_wait", g.reason], client=pipe
            )
        pipe.execute()
        return gates

    def reclaim(self, now_ms: float, limit: int = 500) -> int:
        """Park again what was dispatched and whose lease ran out (its holder died, or
        the dispatcher died before publishing it); the claim keeps it from going out
        twice."""
        ob, keys = self.outbox, self.outbox.keys
        expired = ob.redis.zrangebyscore(
            keys.outbox_inflight, "-inf", now_ms, start=0, num=limit, withscores=True
        )
        if not expired:
            return 0
        bodies = ob.redis.hmget(keys.outbox_messages, [task_id for task_id, _ in expired])
        taken = 0
        for (task_id, lease_end), body in zip(expired, bodies, strict=True):
            if body is None:  # finished meanwhile
                ob.redis.zrem(keys.outbox_inflight, task_id)
                continue
            waiting = Waiting.from_body(body)
            if ob._park(waiting, 0.0, "soon", repr(lease_end), None) >= 0:
                taken += 1
                logger.warning(
                    "outbox: %s appId=%s lease ran out; parked again", task_id, waiting.app_id
                )
        return taken
