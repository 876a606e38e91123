"""The wxtasks worker app, counting what its process says to the state Redis.

``bench/hotpaths.py`` runs it as ``celery -A hotpaths_app worker -P solo``: one process,
so the consumer, the task and this counter share it. Every redis-py connection to
``WXTASKS_REDIS_URL`` (host, port and db; the broker and the result backend are elsewhere)
counts:

- a round trip per ``send_packed_command`` (one write the client then waits on: a single
  command, a whole pipeline, or a hidden ``SCRIPT EXISTS`` / ``SCRIPT LOAD``), and what it
  held (its commands by name, a script by its name in ``Runtime.scripts``);
- a command per ``read_response`` (every command, ``MULTI`` and ``EXEC`` included, gets
  exactly one reply).

The health-check ``PING`` redis-py sends before a command on a connection idle for
``health_check_interval`` (30 s) is left out: it depends on the pauses between sends, not
on what a send does.

``bench.redis_counts`` returns the counts so far (and zeroes them with ``reset=True``).
It runs in the same process and never touches the state Redis itself.
"""

from __future__ import annotations

from collections import Counter
from typing import Any
from urllib.parse import urlsplit

from redis.connection import AbstractConnection

from workers import app
from wxtasks.config import Settings
from wxtasks.runtime import runtime_for

_url = urlsplit(Settings.from_env().redis_url)
_STATE = (_url.hostname or "localhost", _url.port or 6379, int((_url.path or "/0")[1:] or 0))
counts = {"round_trips": 0, "commands": 0}
shapes: Counter[str] = Counter()

_send = AbstractConnection.send_packed_command
_read = AbstractConnection.read_response
_ping = AbstractConnection._send_ping
_in_health_check: set[int] = set()


def _is_state(conn: Any) -> bool:
    if id(conn) in _in_health_check:
        return False
    return (getattr(conn, "host", None), getattr(conn, "port", None), conn.db) == _STATE


def _uncounted_ping(self: Any) -> None:
    _in_health_check.add(id(self))
    try:
        _ping(self)
    finally:
        _in_health_check.discard(id(self))


def _commands(packed: Any) -> list[list[bytes]]:
    """The commands in a packed RESP payload (arrays of bulk strings)."""
    if isinstance(packed, str):
        packed = packed.encode()
    data = packed if isinstance(packed, bytes) else b"".join(bytes(c) for c in packed)
    out, i = [], 0
    while i < len(data):
        j = data.index(b"\r\n", i)
        n, i = int(data[i + 1 : j]), j + 2
        args = []
        for _ in range(n):
            j = data.index(b"\r\n", i)
            size, i = int(data[i + 1 : j]), j + 2
            args.append(data[i : i + size])
            i += size + 2
        out.append(args)
    return out


def _name(args: list[bytes], scripts: dict[str, str]) -> str:
    name = args[0].decode().upper()
    if name == "EVALSHA":
        sha = args[1].decode()
        return scripts.get(sha, f"EVALSHA {sha[:8]}")
    if name in ("SCRIPT", "CLIENT", "CONFIG"):
        return f"{name} {args[1].decode().upper()}"
    return name


def _script_names() -> dict[str, str]:
    """Script SHA -> its name, from this process's Runtime (whatever scripts it holds)."""
    found = vars(runtime_for(app).scripts)
    return {s.sha: f"{name}.lua" for name, s in found.items() if getattr(s, "sha", None)}


def _counted_send(self: Any, command: Any, check_health: bool = True) -> None:
    if _is_state(self):
        counts["round_trips"] += 1
        names = [_name(c, _script_names()) for c in _commands(command)]
        shapes[" + ".join(names)] += 1
    _send(self, command, check_health)


def _counted_read(self: Any, *args: Any, **kwargs: Any) -> Any:
    if _is_state(self):
        counts["commands"] += 1
    return _read(self, *args, **kwargs)


AbstractConnection.send_packed_command = _counted_send  # type: ignore[method-assign]
AbstractConnection.read_response = _counted_read  # type: ignore[method-assign]
AbstractConnection._send_ping = _uncounted_ping  # type: ignore[method-assign]


@app.task(name="bench.redis_counts")
def redis_counts(reset: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {**counts, "shapes": dict(shapes)}
    if reset:
        counts.update(round_trips=0, commands=0)
        shapes.clear()
    return out


__all__ = ["app"]
