"""Campaign tasks on queue ``send``: ``wxtasks.campaign`` and the two thin campaigns,
``wxtasks.bulk_send`` (one account to many recipients, 群发) and ``wxtasks.broadcast``
(one message from many accounts).

Each creates a campaign (:mod:`wxtasks.campaigns.store`) whose targets wait in the accounts'
bulk lanes, so they get progress, pause, resume and cancel. A bulk_send or broadcast is
the campaign named by its own task id; its task result shows state ``RUNNING`` with the
progress until the last target ends, then the report (``AsyncResult(id).get()``).
"""

from __future__ import annotations

from typing import Any

from celery import shared_task
from celery.exceptions import Ignore

from wxtasks.campaigns.store import Content
from wxtasks.campaigns.targets import check_targets, pairs_of
from wxtasks.errors import BadInputError
from wxtasks.send.outcome import DeadLetter, Ending, Status
from wxtasks.send.pacing import Span
from wxtasks.tasks.base import WxTask

RUNNING_STATE = "RUNNING"


def _strings(value: Any) -> list[str] | None:
    """``value`` when it is a non-empty list of strings, else None."""
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    return None


def _bad_input(task: WxTask, raw: dict[str, Any], problem: str) -> dict[str, Any]:
    entry = DeadLetter.of(
        str(task.request.id), str(task.name), raw, Status.FAILED, f"bad input: {problem}"
    )
    return task.rt.endings.end(Ending(entry.result(), entry), store_result=False)


def _run_campaign(
    task: WxTask,
    source: str,
    pairs: list[tuple[str, str]],
    content: Any,
    raw: dict[str, Any],
    **options: Any,
) -> dict[str, Any]:
    campaign_id = str(task.request.id)
    try:
        summary = task.rt.campaigns.create(
            campaign_id,
            Content.parse("text", {"content": content}),
            dict.fromkeys(pairs),
            source=source,
            **options,
        )
    except BadInputError as exc:
        return _bad_input(task, raw, str(exc))
    summary.pop("accounts", None)
    task.update_state(state=RUNNING_STATE, meta=summary)
    raise Ignore()


@shared_task(name="wxtasks.broadcast", base=WxTask, bind=True, acks_late=True)
def broadcast(
    self: WxTask,
    app_ids: list[str] | None = None,
    to_wxid: str | None = None,
    content: str | None = None,
    dedup_key: str | None = None,
) -> dict[str, Any]:
    """One message from many accounts; the result reports each account's outcome."""
    raw = {"app_ids": app_ids, "to_wxid": to_wxid, "content": content}
    senders = _strings(app_ids)
    if not senders:
        return _bad_input(self, raw, "app_ids must be a non-empty list of appIds")
    if not isinstance(to_wxid, str) or not to_wxid:
        return _bad_input(self, raw, "to_wxid is required")
    return _run_campaign(self, "broadcast", [(a, to_wxid) for a in senders], content, raw)


@shared_task(name="wxtasks.bulk_send", base=WxTask, bind=True, acks_late=True)
def bulk_send(
    self: WxTask,
    app_id: str | None = None,
    to_wxids: list[str] | None = None,
    content: str | None = None,
    dedup_key: str | None = None,
) -> dict[str, Any]:
    """One account to many recipients (群发), each its own message, paced in the bulk lane."""
    raw = {"app_id": app_id, "to_wxids": to_wxids, "content": content}
    recipients = _strings(to_wxids)
    if not recipients:
        return _bad_input(self, raw, "to_wxids must be a non-empty list of wxids")
    if not isinstance(app_id, str):
        return _bad_input(self, raw, "app_id is required")
    return _run_campaign(self, "bulk_send", [(app_id, t) for t in recipients], content, raw)


@shared_task(name="wxtasks.campaign", base=WxTask, bind=True, acks_late=True)
def campaign(
    self: WxTask,
    campaign_id: str | None = None,
    kind: str = "text",
    content: dict[str, Any] | str | None = None,
    targets: list[list[str]] | dict[str, list[str]] | None = None,
    start_at: float | None = None,
    jitter: str | None = None,
    allow_unregistered: bool = False,
) -> dict[str, Any]:
    """Create a campaign (idempotent by ``campaign_id``) and return its summary.

    ``content``: the text, or the send task's fields for ``kind`` (``{"img_url": ...}``);
    ``targets``: ``[[app_id, to_wxid], ...]`` or ``{app_id: [to_wxid, ...]}``;
    ``start_at``: unix seconds; ``jitter``: ``"MIN-MAX"`` seconds between its sends.
    Every target is checked first (as ``wxtasks campaigns create`` does): a bad one, or an
    appId that is not registered (unless ``allow_unregistered``), refuses the campaign —
    a ``failed`` result whose ``error`` lists the reasons, and nothing created.
    """
    raw = {"campaign_id": campaign_id, "kind": kind, "content": content, "targets": "..."}
    try:
        fields = {"content": content} if isinstance(content, str) else dict(content or {})
        parsed = Content.parse(kind, fields)
        if jitter:
            Span.parse(jitter)
        pairs, problems = pairs_of(targets)
        check_targets(
            self.rt.redis,
            self.rt.keys,
            pairs,
            problems,
            allow_unregistered=bool(allow_unregistered),
            allow_hint="allow_unregistered=True",
        )
        summary = self.rt.campaigns.create(
            str(campaign_id or self.request.id),
            parsed,
            pairs,
            start_at=float(start_at) if start_at else None,
            jitter=jitter,
            source="campaign",
        )
    except (BadInputError, TypeError, ValueError) as exc:
        return _bad_input(self, raw, str(exc))
    return summary
