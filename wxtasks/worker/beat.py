"""A Celery beat scheduler that runs only while it holds a Redis lock (one active beat),
and the outbox's dispatcher, which the active beat runs every ``Dispatcher.TICK_S``.

Start as many beats as you like (``celery -A workers beat``); the one holding
``wx:beat:lock`` sends the schedule, the others wait and take over within one lock period
(``WXTASKS_BEAT_LOCK_TTL_S``, default 10 s) of the active one dying. The lock is redis-py's
``Lock`` (random token, compare-and-extend, compare-and-delete). The heartbeat schedule
itself lives in Redis (``wx:schedule:heartbeat``) and is taken atomically by the sweep, so
even two beats running at once could not double a heartbeat.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import redis
from celery import beat
from redis.exceptions import LockError

from wxtasks import redismemory
from wxtasks.campaigns.store import Campaigns
from wxtasks.runtime import close_runtime, runtime_for
from wxtasks.send.dispatcher import Dispatched, Dispatcher
from wxtasks.worker.celeryconf import (
    ATTEMPT_HEADER,
    CAMPAIGN_HEADER,
    ENQUEUED_HEADER,
    OUTBOX_HEADER,
    PAID_HEADER,
    SEND_QUEUE,
)

logger = logging.getLogger(__name__)


def publisher(app: Any, campaigns: Campaigns) -> Callable[[list[Dispatched]], None]:
    """Publish dispatched messages as send tasks under their own task ids (a campaign's
    target gets the campaign's content)."""

    def publish(batch: list[Dispatched]) -> None:
        contents: dict[str, dict[str, str]] = {}
        with app.producer_or_acquire() as producer:
            for d in batch:
                w = d.waiting
                headers: dict[str, Any] = {
                    ENQUEUED_HEADER: w.enqueued_at,
                    ATTEMPT_HEADER: w.attempt,
                    OUTBOX_HEADER: "1",
                }
                if d.paid_at_ms is not None:
                    headers[PAID_HEADER] = d.paid_at_ms
                kwargs = w.kwargs
                if w.campaign:
                    headers[CAMPAIGN_HEADER] = w.campaign
                    if w.campaign not in contents:
                        contents[w.campaign] = campaigns.content(w.campaign)
                    kwargs = {**contents[w.campaign], **kwargs}
                app.send_task(
                    w.task,
                    kwargs=kwargs,
                    task_id=w.task_id,
                    queue=SEND_QUEUE,
                    headers=headers,
                    producer=producer,
                )

    return publish


class LockedScheduler(beat.Scheduler):
    #: how often a standby checks whether the lock is free
    standby_interval_s = 1.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._lock: Any = None
        self._active = False
        self._lock_checked = 0.0
        self._dispatcher: Dispatcher | None = None
        self._dispatch_failing = False
        self._chores_at = 0.0
        self._memory_at = 0.0
        super().__init__(*args, **kwargs)
        self.lock_ttl_s = runtime_for(self.app).settings.beat_lock_ttl_s

    def _hold_lock(self) -> bool:
        rt = runtime_for(self.app)
        if self._active and time.monotonic() - self._lock_checked < self.lock_ttl_s / 5:
            return True
        self._lock_checked = time.monotonic()
        try:
            if self._lock is None:
                self._lock = rt.redis.lock(
                    rt.keys.beat_lock,
                    timeout=self.lock_ttl_s,
                    thread_local=False,
                )
            if self._active:
                try:
                    self._lock.reacquire()
                    return True
                except LockError:
                    logger.warning("beat lost its lock; standing by")
                    self._active = False
            if self._lock.acquire(blocking=False):
                logger.info("beat holds the lock: this beat is active")
                self._active = True
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            logger.warning("beat cannot reach Redis (%s); standing by", exc)
            self._active = False
        return self._active

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if not self._hold_lock():
            return self.standby_interval_s
        self._dispatch()
        next_in: float = super().tick(*args, **kwargs)
        return min(next_in, self.lock_ttl_s / 3, Dispatcher.TICK_S)

    def _dispatch(self) -> None:
        if self._dispatcher is None:
            rt = runtime_for(self.app)
            self._dispatcher = rt.dispatcher(publisher(self.app, rt.campaigns))
        try:
            self._dispatcher.tick()
            if time.monotonic() - self._chores_at >= 1.0:
                self._chores_at = time.monotonic()
                runtime_for(self.app).campaigns.tick()
            if time.monotonic() - self._memory_at >= redismemory.CHECK_EVERY_S:
                self._memory_at = time.monotonic()
                rt = runtime_for(self.app)
                redismemory.check(rt.redis, rt.keys, rt.lifecycle.alert)
            if self._dispatch_failing:
                logger.info("dispatcher: working again")
            self._dispatch_failing = False
        except Exception as exc:  # Redis or the broker away: leases bring it all back
            if not self._dispatch_failing:
                logger.warning("dispatcher: %s: %s (retrying)", type(exc).__name__, exc)
            self._dispatch_failing = True

    def close(self) -> None:
        if self._active and self._lock is not None:
            try:
                self._lock.release()
            except (LockError, redis.RedisError):
                pass
            self._active = False
        close_runtime(self.app)
        super().close()

    @property
    def info(self) -> str:
        return f"    . lock -> {self.lock_ttl_s:.0f}s redis lock (one active beat)"
