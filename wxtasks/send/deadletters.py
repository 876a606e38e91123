"""Dead letters: every message that ended ``failed`` or ``unknown``, kept for an operator.

An entry keeps what is needed to send the message again (task name and keyword arguments)
and why it stopped. ``requeue`` publishes it again under a new task id and then removes it,
so a crash between the two can duplicate an entry but never lose one.
"""

from __future__ import annotations

import builtins
import json
import time
from collections.abc import Callable
from typing import Any

import redis

from wxtasks.keys import Keys


class DeadLetters:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys

    def add(self, entry: dict[str, Any], *, pipe: Any = None) -> None:
        """Store ``entry`` (must carry ``task_id``); a later entry for the same id replaces
        it. With ``pipe``, only queue the commands on it."""
        entry = {**entry, "dead_lettered_at": time.time()}
        own = pipe is None
        if own:
            pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.keys.deadletters, entry["task_id"], json.dumps(entry, ensure_ascii=False))
        pipe.zadd(self.keys.deadletters_order, {entry["task_id"]: entry["dead_lettered_at"]})
        if own:
            pipe.execute()

    def count(self) -> int:
        return int(self.redis.zcard(self.keys.deadletters_order))

    def list(
        self, limit: int | None = None, status: str | None = None
    ) -> builtins.list[dict[str, Any]]:
        """Oldest first."""
        ids: Any = self.redis.zrange(self.keys.deadletters_order, 0, -1)
        if not ids:
            return []
        raw = self.redis.hmget(self.keys.deadletters, ids)
        entries = [json.loads(r) for r in raw if r]
        if status:
            entries = [e for e in entries if e.get("status") == status]
        return entries[:limit] if limit else entries

    def get(self, task_id: str) -> dict[str, Any] | None:
        raw = self.redis.hget(self.keys.deadletters, task_id)
        return json.loads(raw) if raw else None

    def remove(self, task_id: str) -> bool:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hdel(self.keys.deadletters, task_id)
        pipe.zrem(self.keys.deadletters_order, task_id)
        return bool(pipe.execute()[0])

    def purge(self) -> int:
        n = self.count()
        self.redis.delete(self.keys.deadletters, self.keys.deadletters_order)
        return n

    def requeue(
        self, task_ids: builtins.list[str] | None, publish: Callable[[dict[str, Any]], str]
    ) -> builtins.list[tuple[str, str]]:
        """Publish the listed entries (all when None) again; returns (old, new) task ids.

        ``publish(entry)`` sends the task and returns the new id. An ``unknown`` entry's
        send claim is dropped first, since requeueing it is the operator saying "send it".
        """
        entries = (
            self.list()
            if task_ids is None
            else [e for e in (self.get(t) for t in task_ids) if e is not None]
        )
        moved = []
        for entry in entries:
            if entry.get("claim_key"):
                self.redis.delete(entry["claim_key"])
            new_id = publish(entry)
            self.remove(entry["task_id"])
            moved.append((entry["task_id"], new_id))
        return moved
