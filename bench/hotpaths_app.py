"""The wxtasks worker app, counting what its process says to the state Redis.

``bench/hotpaths.py`` runs it as ``celery -A hotpaths_app worker -P solo``: one process,
so the consumer, the task and this counter share it. Every redis-py connection to
``WXTASKS_REDIS_URL`` (host, port and db; the broker and the result backend are elsewhere)
counts:

- a round trip per ``send_packed_command`` (one write the client then waits on: a single
  command, a whole pipeline, or a hidden ``SCRIPT EXISTS`` / ``SCRIPT LOAD``);
- a command per ``read_response`` (every command, ``MULTI`` and ``EXEC`` included, gets
  exactly one reply).

``bench.redis_counts`` returns the counts so far (and zeroes them with ``reset=True``).
It runs in the same process and never touches the state Redis itself.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from redis.connection import AbstractConnection

from workers import app
from wxtasks.config import Settings

_url = urlsplit(Settings.from_env().redis_url)
_STATE = (_url.hostname or "localhost", _url.port or 6379, int((_url.path or "/0")[1:] or 0))
counts = {"round_trips": 0, "commands": 0}

_send = AbstractConnection.send_packed_command
_read = AbstractConnection.read_response


def _is_state(conn: Any) -> bool:
    return (getattr(conn, "host", None), getattr(conn, "port", None), conn.db) == _STATE


def _counted_send(self: Any, command: Any, check_health: bool = True) -> None:
    if _is_state(self):
        counts["round_trips"] += 1
    _send(self, command, check_health)


def _counted_read(self: Any, *args: Any, **kwargs: Any) -> Any:
    if _is_state(self):
        counts["commands"] += 1
    return _read(self, *args, **kwargs)


AbstractConnection.send_packed_command = _counted_send  # type: ignore[method-assign]
AbstractConnection.read_response = _counted_read  # type: ignore[method-assign]


@app.task(name="bench.redis_counts")
def redis_counts(reset: bool = False) -> dict[str, int]:
    out = dict(counts)
    if reset:
        counts.update(round_trips=0, commands=0)
    return out


__all__ = ["app"]
