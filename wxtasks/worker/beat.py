"""A Celery beat scheduler that runs only while it holds a Redis lock (one active beat).

The active beat sends the schedule (heartbeat sweeps) and runs the chores: scheduled
campaigns' starts, the shards' copies of the fleet-wide sets (:mod:`wxtasks.mirrors`)
and the Redis memory check. It does not dispatch: dispatchers are their
own processes (``wxtasks dispatcher``, :mod:`wxtasks.worker.dispatcher`).

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
from typing import Any

import redis
from celery import beat
from redis.exceptions import LockError

from wxtasks import layout, mirrors, redismemory
from wxtasks.runtime import close_runtime, runtime_for

logger = logging.getLogger(__name__)

#: scheduled campaigns are started this often (and no later than this after their time)
CHORES_EVERY_S = 1.0


class LockedScheduler(beat.Scheduler):
    #: how often a standby checks whether the lock is free
    standby_interval_s = 1.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._lock: Any = None
        self._active = False
        self._lock_checked = 0.0
        self._chores_failing = False
        self._chores_at = 0.0
        self._memory_at = 0.0
        super().__init__(*args, **kwargs)
        rt = runtime_for(self.app)
        layout.ensure(rt.redis, rt.keys)
        self.lock_ttl_s = rt.settings.beat_lock_ttl_s

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
        self._chores()
        next_in: float = super().tick(*args, **kwargs)
        return min(next_in, self.lock_ttl_s / 3, CHORES_EVERY_S)

    def _chores(self) -> None:
        try:
            if time.monotonic() - self._chores_at >= CHORES_EVERY_S:
                self._chores_at = time.monotonic()
                rt = runtime_for(self.app)
                rt.campaigns.tick()
                mirrors.refresh(rt.redis, rt.keys, rt.scripts)
            if time.monotonic() - self._memory_at >= redismemory.CHECK_EVERY_S:
                self._memory_at = time.monotonic()
                rt = runtime_for(self.app)
                redismemory.check(rt.redis, rt.keys, rt.lifecycle.alert)
            if self._chores_failing:
                logger.info("beat: chores working again")
            self._chores_failing = False
        except Exception as exc:  # Redis away: the next tick tries again
            if not self._chores_failing:
                logger.warning("beat: chores: %s: %s (retrying)", type(exc).__name__, exc)
            self._chores_failing = True

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
