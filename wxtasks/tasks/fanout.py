"""Fan-out tasks on queue ``send``: ``wxtasks.broadcast`` (one message from many accounts)
and ``wxtasks.bulk_send`` (one account to many recipients, 群发).

Each replaces itself with one ``wxtasks.send_text`` per message plus a report task under
the same task id (a chord), so every message passes the same limits and dedup, and
``AsyncResult(broadcast_id).get()`` returns the per-message report.
"""

from __future__ import annotations

from typing import Any

from celery import Task, chord, shared_task

from wxtasks.sending import Status
from wxtasks.tasks.base import WxTask
from wxtasks.tasks.send import dead_letter, send_text


@shared_task(name="wxtasks.send_report", bind=True)
def send_report(self: Task, results: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """Sum up the results of a broadcast or bulk send."""
    counts = {s.value: 0 for s in Status}
    for r in results:
        status = r.get("status") if isinstance(r, dict) else None
        counts[status if status in counts else Status.FAILED.value] += 1
    return {"status": "done", "kind": kind, "total": len(results), **counts, "results": results}


def _fan_out(
    task: Task,
    kind: str,
    pairs: list[tuple[Any, Any]] | None,
    content: Any,
    dedup_key: str | None,
    raw: dict[str, Any],
    problem: str,
) -> Any:
    """Replace ``task`` with one send_text per (app_id, to_wxid) plus a report, under the
    same task id, so ``AsyncResult(task_id).get()`` returns the report."""
    if not pairs:
        return dead_letter(task, kind, raw, Status.FAILED, f"bad input: {problem}")
    sends = [
        send_text.signature(
            kwargs={
                "app_id": a,
                "to_wxid": t,
                "content": content,
                **({"dedup_key": f"{dedup_key}:{a}:{t}"} if dedup_key else {}),
            },
            immutable=True,
        )
        for a, t in dict.fromkeys(pairs)
    ]
    return task.replace(chord(sends, send_report.s(kind)))


def _strings(value: Any) -> list[str] | None:
    """``value`` when it is a non-empty list of strings, else None."""
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    return None


@shared_task(name="wxtasks.broadcast", base=WxTask, bind=True, acks_late=True)
def broadcast(
    self: Task,
    app_ids: list[str] | None = None,
    to_wxid: str | None = None,
    content: str | None = None,
    dedup_key: str | None = None,
) -> dict[str, Any]:
    """One message from many accounts; the result reports each account's outcome."""
    senders = _strings(app_ids)
    pairs = [(a, to_wxid) for a in senders] if senders else None
    raw = {"app_ids": app_ids, "to_wxid": to_wxid, "content": content}
    return _fan_out(  # type: ignore[no-any-return]
        self,
        "broadcast",
        pairs,
        content,
        dedup_key,
        raw,
        "app_ids must be a non-empty list of appIds",
    )


@shared_task(name="wxtasks.bulk_send", base=WxTask, bind=True, acks_late=True)
def bulk_send(
    self: Task,
    app_id: str | None = None,
    to_wxids: list[str] | None = None,
    content: str | None = None,
    dedup_key: str | None = None,
) -> dict[str, Any]:
    """One account to many recipients (群发), each its own message through the limits."""
    recipients = _strings(to_wxids)
    pairs = [(app_id, t) for t in recipients] if recipients else None
    raw = {"app_id": app_id, "to_wxids": to_wxids, "content": content}
    return _fan_out(  # type: ignore[no-any-return]
        self,
        "bulk_send",
        pairs,
        content,
        dedup_key,
        raw,
        "to_wxids must be a non-empty list of wxids",
    )
