"""What the task modules share: the per-process runtime and the dispatcher."""

from __future__ import annotations

from typing import Any

from celery import Celery

from wxtasks.lifecycle import Lifecycle
from wxtasks.runtime import Runtime, runtime_for
from wxtasks.sending import SendPipeline


def runtime(app: Celery) -> Runtime:
    return runtime_for(app)


def dispatcher(app: Celery) -> Any:
    def dispatch(
        task: str,
        kwargs: dict[str, Any],
        countdown: float | None = None,
        expires: float | None = None,
    ) -> None:
        app.send_task(task, kwargs=kwargs, countdown=countdown, expires=expires)

    return dispatch


def lifecycle(app: Celery) -> Lifecycle:
    rt = runtime_for(app)
    cached: Lifecycle | None = rt.__dict__.get("_lifecycle")
    if cached is None:
        cached = Lifecycle(rt.redis, rt.settings, rt.accounts, rt.gateway, dispatcher(app))
        rt.__dict__["_lifecycle"] = cached
    return cached


def pipeline(app: Celery) -> SendPipeline:
    rt = runtime_for(app)
    cached: SendPipeline | None = rt.__dict__.get("_pipeline")
    if cached is None:
        cached = SendPipeline(rt.redis, rt.settings, rt.gateway, rt.scripts)
        rt.__dict__["_pipeline"] = cached
    return cached
