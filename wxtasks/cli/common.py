"""Helpers every CLI command uses: one-line errors, JSON output."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from wxtasks.errors import WxTasksError

F = TypeVar("F", bound=Callable[..., Any])


def friendly(fn: F) -> F:
    """Turn wxtasks and connection errors into one line on stderr, exit code 1."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import redis

        try:
            return fn(*args, **kwargs)
        except WxTasksError as exc:
            click.echo(f"error: {exc}", err=True)
        except redis.ConnectionError as exc:
            click.echo(f"error: cannot reach Redis ({exc}); is WXTASKS_REDIS_URL right?", err=True)
        except redis.RedisError as exc:
            click.echo(f"error: Redis: {exc}", err=True)
        sys.exit(1)

    return wrapper  # type: ignore[return-value]


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False, indent=2, default=str))
