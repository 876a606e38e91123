"""Which key layout a Redis holds, so no process runs on a layout it does not understand.

``wx:layout`` names the layout (:data:`wxtasks.keys.LAYOUT_VERSION`) and the shard count.
Every long-running process (send and control workers, beat, dispatchers, the console)
calls :func:`ensure` as it starts: on a Redis written by the release before shards
(layout 1: ``wx:acct:{appId}``, one ``wx:outbox:messages``) it refuses, saying to run
``wxtasks migrate``; on a Redis laid out for another ``WXTASKS_SHARDS`` it refuses too (an
account's keys name its shard); on a Redis with no wxtasks data it writes the marker.
"""

from __future__ import annotations

from typing import Any

from wxtasks.errors import ConfigError
from wxtasks.keys import LAYOUT_VERSION, Keys

#: accounts looked at to tell an unmarked Redis of the previous release
SAMPLE = 20


class LayoutError(ConfigError):
    """The Redis holds another key layout than this release's."""


def old_account_key(keys: Keys, app_id: str) -> str:
    """An account's hash in layout 1 (before shards)."""
    return f"{keys.prefix}:acct:{{{app_id}}}"


def old_outbox_keys(keys: Keys) -> list[str]:
    """Layout 1's fleet-wide outbox keys (the waiting messages, the dispatched ones)."""
    return [f"{keys.prefix}:outbox:messages", f"{keys.prefix}:outbox:inflight"]


def holds_old_layout(client: Any, keys: Keys) -> bool:
    """True when this Redis holds data written with layout 1."""
    sample = [str(a) for a in client.srandmember(keys.accounts, SAMPLE) or []]
    olds = [old_account_key(keys, a) for a in sample] + old_outbox_keys(keys)
    return bool(client.exists(*olds))


def read(client: Any, keys: Keys) -> tuple[int, int] | None:
    """(layout version, shards) the Redis is marked with, or None when unmarked."""
    marker = client.hgetall(keys.layout)
    if not marker:
        return None
    return int(marker.get("version", 0)), int(marker.get("shards", 0))


def mark(client: Any, keys: Keys) -> None:
    client.hset(keys.layout, mapping={"version": LAYOUT_VERSION, "shards": keys.shards})


def ensure(client: Any, keys: Keys) -> None:
    """Return when the Redis holds this release's layout with ``keys.shards`` shards (or no
    data, which is then marked so); else raise :class:`LayoutError` saying what to run."""
    marked = read(client, keys)
    if marked is None:
        if holds_old_layout(client, keys):
            raise LayoutError(
                "this Redis holds data of the previous wxtasks release (key layout 1, before "
                "shards): stop every wxtasks process and run `wxtasks migrate` first"
            )
        client.hsetnx(keys.layout, "version", LAYOUT_VERSION)
        client.hsetnx(keys.layout, "shards", keys.shards)
        marked = read(client, keys)
        assert marked is not None
    version, shards = marked
    if version != LAYOUT_VERSION:
        raise LayoutError(
            f"this Redis holds key layout {version}; this release uses layout "
            f"{LAYOUT_VERSION}: run `wxtasks migrate`"
        )
    if shards != keys.shards:
        raise LayoutError(
            f"this Redis is laid out for {shards} shards but WXTASKS_SHARDS is "
            f"{keys.shards}: the shard count is fixed for a deployment (set "
            f"WXTASKS_SHARDS={shards})"
        )
