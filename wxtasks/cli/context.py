"""What the CLI commands share: one Runtime per invocation, built from the environment."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wxtasks.runtime import Runtime


@cache
def runtime() -> Runtime:
    """The CLI's Runtime: settings from the environment and a producer-only Celery app
    (wxtasks' routes, no tasks registered), the same composition a worker has."""
    from wxtasks.config import Settings
    from wxtasks.runtime import Runtime

    return Runtime(Settings.from_env())
