"""The dispatcher: moves due messages from the outbox onto the send queue as the gates allow.

``tick()`` runs often (the active beat calls it every ``TICK_S``); every step is one atomic
script (``dispatch.lua``, which runs the same gates as admission, ``lua/lib/gates.lua``),
so even two dispatchers at once never hand out one message twice. ``publish`` puts the
dispatched send tasks on the broker.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wxtasks.config import Settings
from wxtasks.gateway.fleet import Fleet
from wxtasks.send.gates import Lane
from wxtasks.send.outbox import LANES, Outbox, Waiting
from wxtasks.send.pacing import Policy
from wxtasks.send.policy import HOLD_POLL_S

logger = logging.getLogger(__name__)

#: a dispatched message that is not finished (or parked again) within this is parked
#: again; the broker's own redelivery covers a worker that dies, this covers a
#: dispatcher that dies between taking a message and publishing it
LEASE_S = 60.0
#: most messages one dispatch call hands out, and most accounts it looks at
DISPATCH_BATCH = 500
ACCOUNTS_PER_CALL = 200


@dataclass(frozen=True)
class Dispatched:
    waiting: Waiting
    #: the dispatcher took the message's tokens at this Redis time (ms); None: not taken
    paid_at_ms: float | None


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
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """``fleet``: which gateway serves each account (its bucket's key and limits);
        ``clock``: unix seconds, by default Redis ``TIME``, the clock of every bucket."""
        self.settings = settings
        self.outbox = outbox
        self.fleet = fleet
        self.pacing = pacing
        self.publish = publish
        self.clock = clock
        self._random = random.Random()

    def tick(self) -> int:
        """Dispatch what is due now, for at most ``TICK_BUDGET_S`` (a backlog that is all
        due at once goes out over several ticks, so the beat keeps its lock and no lease
        runs out while its message waits to be published); returns how many went out.
        A tick with nothing due costs one round trip (``due.lua``)."""
        ob, keys = self.outbox, self.outbox.keys
        reply = ob.scripts.due(
            keys=[keys.outbox_inflight, *(keys.outbox_ready(lane) for lane in LANES)],
            args=["" if self.clock is None else repr(self.clock() * 1000)],
        )
        now_ms, leases_out, *due = float(reply[0]), int(reply[1]), *map(int, reply[2:])
        if leases_out and self.reclaim(now_ms):
            due = [1] * len(due)  # parked again just now: its lane has an account due
        sent = 0
        budget_ends = time.monotonic() + self.TICK_BUDGET_S
        for lane, accounts_due in zip(LANES, due, strict=True):
            while accounts_due:
                n, full = self._dispatch_lane(lane, now_ms)
                sent += n
                if not full or time.monotonic() > budget_ends:
                    break
        return sent

    def _dispatch_lane(self, lane: Lane, now_ms: float) -> tuple[int, bool]:
        ob, keys, s = self.outbox, self.outbox.keys, self.settings
        due = ob.redis.zrangebyscore(
            keys.outbox_ready(lane), "-inf", now_ms, start=0, num=ACCOUNTS_PER_CALL, withscores=True
        )
        if not due:
            return 0, False
        apps = [str(app_id) for app_id, _ in due]
        day = self.pacing.day(now_ms / 1000)
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
            account_args += [app_id, gateway, *self.fleet.limits(gateway)]
        reply = ob.scripts.dispatch(
            keys=[
                keys.global_bucket,
                keys.outbox_ready(lane),
                keys.outbox_inflight,
                keys.outbox_messages,
                keys.campaigns_stopped,
                keys.outbox_held,
                keys.gateways_down,
                keys.outbox_campaign_of,
                keys.outbox_to_group,
                keys.campaigns_jitter,
                *account_keys,
            ],
            args=[
                repr(now_ms),
                int(LEASE_S * 1000),
                s.rate_per_second,
                s.burst,
                s.account_rate_per_second,
                s.account_burst,
                lane.value,
                int(lane.window_s(s) * 1000),
                DISPATCH_BATCH,
                int(HOLD_POLL_S * 1000),
                *self.pacing.args(now_ms / 1000, self._random.randrange(1 << 30)),
                *account_args,
            ],
        )
        at = float(reply[0])
        batch = [
            Dispatched(Waiting.from_body(reply[i + 1]), at if reply[i + 2] == "1" else None)
            for i in range(1, len(reply), 3)
            if reply[i + 1]
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
        return len(batch), len(reply) // 3 >= DISPATCH_BATCH

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
            if ob.park_again(waiting, repr(lease_end)):
                taken += 1
                logger.warning(
                    "outbox: %s appId=%s lease ran out; parked again", task_id, waiting.app_id
                )
        return taken
