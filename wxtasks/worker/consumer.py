"""The worker's message consumer, with one change: a message that cannot even be read
(a body that is not valid UTF-8 / JSON, a malformed task message) is dead-lettered with
the reason before it is dropped, instead of only being logged. Celery's default
acknowledges such a message and it is gone; an operator should see it.

Enabled by ``worker_consumer = "wxtasks.worker.consumer:Consumer"`` (see celeryconf).
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer

from wxtasks.runtime import runtime_for
from wxtasks.send.outcome import DeadLetter, Ending, Status

logger = logging.getLogger(__name__)


class Consumer(CeleryConsumer):
    def on_decode_error(self, message: Any, exc: Exception) -> None:
        self._dead_letter(message, f"undecodable message: {type(exc).__name__}: {exc}")
        super().on_decode_error(message, exc)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._dead_letter(message, f"invalid task message: {type(exc).__name__}: {exc}")
        super().on_invalid_task(body, message, exc)

    def _dead_letter(self, message: Any, error: str) -> None:
        headers = getattr(message, "headers", None) or {}
        task_id = str(headers.get("id") or f"undecodable-{id(message)}")
        raw = message.body if isinstance(message.body, bytes) else str(message.body).encode()
        entry = DeadLetter.of(
            task_id,
            str(headers.get("task") or ""),
            {"content": raw[:500].decode("utf-8", "replace")},
            Status.FAILED,
            error,
        )
        try:
            runtime_for(self.app).endings.end(Ending(entry.result(), entry, from_outbox=True))
        except Exception:
            logger.exception("could not dead-letter the unreadable message %s", task_id)
