"""What an operator does to messages, shared by the CLI and the console."""

from __future__ import annotations

from typing import Any

from wxtasks.campaigns.store import target_of
from wxtasks.runtime import Runtime
from wxtasks.send.policy import SendResult, Status


def cancel_waiting(rt: Runtime, task_id: str) -> dict[str, Any] | None:
    """Cancel a message waiting in the outbox: it ends ``cancelled`` (its result says so;
    it is not dead-lettered). None when it is not waiting (dispatched, done or unknown)."""
    waiting = rt.outbox.cancel(task_id)
    if waiting is None:
        return None
    result = SendResult(
        Status.CANCELLED,
        waiting.app_id,
        str(waiting.kwargs.get("to_wxid") or ""),
        task_id,
        error="cancelled by an operator while waiting",
    ).as_dict()
    pipe = rt.redis.pipeline(transaction=False)
    pipe.hincrby(rt.keys.send_stats, Status.CANCELLED.value, 1)
    if waiting.campaign:
        campaign_id, index = target_of(task_id)
        outcome = {"to_wxid": result["to_wxid"], "error": result["error"]}
        rt.campaigns.record(campaign_id, index, waiting.app_id, Status.CANCELLED, outcome, pipe)
    replies = pipe.execute()
    if waiting.campaign:
        rt.campaigns.ended(target_of(task_id)[0], replies[-1])
    rt.celery.backend.store_result(task_id, result, "SUCCESS")
    return result
