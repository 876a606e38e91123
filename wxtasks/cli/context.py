"""What the CLI commands share: settings, the runtime, a producer, the lifecycle."""

from __future__ import annotations

from functools import cache
from typing import Any

from celery import Celery

from wxtasks.celeryconf import configure
from wxtasks.config import Settings
from wxtasks.lifecycle import Lifecycle
from wxtasks.runtime import Runtime


@cache
def runtime() -> Runtime:
    return Runtime(Settings.from_env())


@cache
def celery_app() -> Celery:
    """A producer-only app with wxtasks' routes (no tasks registered, no worker)."""
    return configure(Celery("wxtasks-cli"), runtime().settings)


def dispatch(
    task: str, kwargs: dict[str, Any], countdown: float | None = None, expires: float | None = None
) -> None:
    celery_app().send_task(task, kwargs=kwargs, countdown=countdown, expires=expires)


@cache
def lifecycle() -> Lifecycle:
    rt = runtime()
    return Lifecycle(rt.redis, rt.settings, rt.accounts, rt.gateway, dispatch)
