"""Helpers every CLI command uses: one-line errors, JSON output, the appId argument."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from wxtasks.errors import BadInputError, WxTasksError
from wxtasks.keys import validate_app_id

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


def check_app_ids(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Click callback for appId arguments: refused at once, naming the rule, unless each
    follows :data:`wxtasks.keys.APP_ID_RULE`. Commands that only look an account up or
    remove it take any string, so one registered under an older rule can be cleaned up."""
    for app_id in value if isinstance(value, tuple) else (value,):
        try:
            validate_app_id(app_id)
        except BadInputError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None
    return value
