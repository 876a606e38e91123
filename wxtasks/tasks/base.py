"""The base class of every wxtasks task: per-process resources on the task base, the way
Celery's documentation puts a database connection on one."""

from __future__ import annotations

from celery import Task

from wxtasks.runtime import Runtime, runtime_for


class WxTask(Task):
    """A wxtasks task. ``self.rt`` is this worker process's :class:`Runtime` (Redis, the
    gateway client, the lifecycle, the send pipeline, ...), built on first use."""

    @property
    def rt(self) -> Runtime:
        return runtime_for(self.app)
