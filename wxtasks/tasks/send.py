"""Send tasks on queue ``send`` — the public contract other apps call by name.

Each message ends ``sent``, ``duplicate``, ``failed``, ``unknown`` or (an operator's
doing) ``cancelled``; failed and unknown ones are also dead-lettered. A task is a thin
adapter: it asks :func:`wxtasks.send.policy.decide` after each step and carries the answer
out. A message that cannot go out now is parked in the Redis outbox and its Celery
message acknowledged (the task ends IGNORED, its result shows state ``WAITING``); the
dispatcher publishes it again under the same task id, so ``AsyncResult(id).get()`` returns
the final result whenever it comes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import redis
from celery import shared_task, signals
from celery.exceptions import Ignore, Reject

from wxtasks.errors import BadInputError
from wxtasks.gateway.client import SendReceipt
from wxtasks.send.breaker import risk_signal
from wxtasks.send.gates import Admission, Lane
from wxtasks.send.outbox import Waiting
from wxtasks.send.outcome import DeadLetter, Ending, SendResult, Status, target_of
from wxtasks.send.pipeline import Message, SendPipeline
from wxtasks.send.policy import Action, Do, Gateway, GatewayAnswer, Ticket, decide
from wxtasks.tasks.base import WxTask
from wxtasks.worker.celeryconf import (
    ATTEMPT_HEADER,
    CAMPAIGN_HEADER,
    ENQUEUED_HEADER,
    OUTBOX_HEADER,
    PAID_HEADER,
)

logger = logging.getLogger(__name__)

#: how long a send waits for Redis to come back before handing the message back
REDIS_OUTAGE_WAIT_S = 60.0
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.BusyLoadingError)
#: the state a parked message's result shows until it ends
WAITING_STATE = "WAITING"

#: positional parameter order per kind, as in the public signatures
_POSITIONAL = {
    "text": ("app_id", "to_wxid", "content", "ats", "dedup_key", "lane"),
    "image": ("app_id", "to_wxid", "img_url", "dedup_key", "lane"),
    "file": ("app_id", "to_wxid", "file_url", "file_name", "dedup_key", "lane"),
    "link": ("app_id", "to_wxid", "title", "desc", "link_url", "thumb_url", "dedup_key", "lane"),
}
TASK_NAMES = {kind: f"wxtasks.send_{kind}" for kind in _POSITIONAL}

_SEND_OPTIONS: dict[str, Any] = {
    "base": WxTask,
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "max_retries": None,
}


def run_send(
    task: WxTask, kind: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """Carry one message as far as it can go now; returns its result dict, or parks it
    (raising Ignore).

    Redis going away mid-attempt (a restart, a failover) does not lose the message: the
    attempt waits for Redis to answer again and starts over (the claim tells a send that
    already left apart from one that did not); if Redis stays away, the message is
    rejected back to the broker instead of being acknowledged.
    """
    try:
        return _run_send(task, kind, args, kwargs)
    except REDIS_DOWN as exc:
        logger.warning("send %s: Redis unavailable (%s); waiting for it", task.request.id, exc)
        if not wait_for_redis(task.rt.redis, REDIS_OUTAGE_WAIT_S):
            raise Reject(f"Redis unavailable for {REDIS_OUTAGE_WAIT_S}s", requeue=True) from exc
        return _run_send(task, kind, args, kwargs)


def wait_for_redis(client: redis.Redis, timeout_s: float) -> bool:
    """Poll Redis until it answers (True) or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    pause = 0.2
    while time.monotonic() < deadline:
        try:
            client.ping()
            return True
        except REDIS_DOWN:
            time.sleep(pause)
            pause = min(pause * 2, 2.0)
    return False


def _run_send(
    task: WxTask, kind: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    pipe = task.rt.pipeline
    task_id = str(task.request.id)
    raw = _merge(kind, args, kwargs)
    from_outbox = _header(task.request, OUTBOX_HEADER) == "1"
    campaign = str(_header(task.request, CAMPAIGN_HEADER) or "")
    try:
        lane = parse_lane(raw.get("lane"))
        message = Message.parse(kind, {k: v for k, v in raw.items() if k != "lane"})
    except BadInputError as exc:
        ticket = pipe.ticket(task_id, Lane.INTERACTIVE, time.time(), from_outbox=from_outbox)
        return _finish(
            task,
            pipe,
            None,
            raw,
            ticket,
            Action(Do.FINISH, Status.FAILED, f"bad input: {exc}", dead_letter=True),
        )
    ticket = pipe.ticket(
        task_id,
        lane,
        _float(_header(task.request, ENQUEUED_HEADER)),
        int(_float(_header(task.request, ATTEMPT_HEADER)) or 0),
        from_outbox=from_outbox,
        campaign=campaign,
    )
    paid_at = _float(_header(task.request, PAID_HEADER))

    while True:
        admission = pipe.admit(message, ticket, paid_at_ms=paid_at)
        if admission.enqueued_at is not None and ticket.enqueued_at < 0:
            ticket = replace(ticket, enqueued_at=admission.enqueued_at)
        action = decide(ticket, admission, time.time())
        if action.do is not Do.SLEEP:
            break
        pipe.count_wait(action.wait_s)  # off the fast path: it is about to sleep anyway
        time.sleep(action.wait_s)
        paid_at = None  # the tokens it was dispatched with are spent; ask the buckets
    receipt: SendReceipt | None = None
    if action.do is Do.SEND:
        receipt, answer = pipe.deliver(message, admission.gateway)
        _note_gateway(task, admission.gateway, answer)
        action = decide(ticket, answer, time.time())
        if ticket.lane is Lane.BULK and answer.outcome is not Gateway.SENT:
            _watch_bulk(task, message.app_id, answer)
    if action.do is Do.PARK:
        _park(task, pipe, message, raw, ticket, action)
    return _finish(task, pipe, message, raw, ticket, action, receipt=receipt, admission=admission)


def _note_gateway(task: WxTask, gateway: str, answer: GatewayAnswer) -> None:
    """Feed the gateway's health: a call that never reached it counts toward "down"; any
    answer clears the count (no round trip unless it was failing)."""
    lifecycle = task.rt.lifecycle
    if answer.outcome is Gateway.UNAVAILABLE:
        lifecycle.gateway_failed(gateway, answer.error)
    elif answer.outcome is not Gateway.UNKNOWN:
        lifecycle.gateway_answered(gateway)


def _watch_bulk(task: WxTask, app_id: str, answer: GatewayAnswer) -> None:
    """Feed the account's bulk circuit breaker a failed bulk send (risk-control signs,
    errors in a row); a bulk send that went out starts its count over as it ends."""
    if answer.outcome is Gateway.BUSINESS or risk_signal(answer.error, task.rt.settings):
        task.rt.breaker.after_bulk_send(app_id, answer.error, time.time())


def _park(
    task: WxTask,
    pipe: SendPipeline,
    message: Message,
    raw: dict[str, Any],
    ticket: Ticket,
    action: Action,
) -> None:
    """Hand the message to the outbox and end this attempt without a result."""
    if action.release:
        pipe.release(message, ticket.task_id)
    if action.offline:
        task.rt.lifecycle.liveness_failed(message.app_id, action.reason)
    waiting = Waiting(
        task_id=ticket.task_id,
        task=TASK_NAMES[message.kind],
        kwargs={**_kwargs_of(message), "lane": ticket.lane.value},
        app_id=message.app_id,
        lane=ticket.lane.value,
        enqueued_at=ticket.enqueued_at,
        attempt=ticket.attempt + (1 if action.retry else 0),
        why=action.reason,
        parked_at=time.time(),
        campaign=ticket.campaign,
    )
    task.rt.outbox.park(waiting, action.wait_s, hold=action.retry)
    logger.info(
        "send %s appId=%s parked (%s lane): %s",
        ticket.task_id,
        message.app_id,
        ticket.lane,
        action.reason,
    )
    task.update_state(
        state=WAITING_STATE,
        meta={
            "app_id": message.app_id,
            "to_wxid": message.to_wxid,
            "lane": ticket.lane.value,
            "why": action.reason,
            "enqueued_at": ticket.enqueued_at,
        },
    )
    raise Ignore()


def _finish(
    task: WxTask,
    pipe: SendPipeline,
    message: Message | None,
    raw: dict[str, Any],
    ticket: Ticket,
    action: Action,
    *,
    receipt: SendReceipt | None = None,
    admission: Admission | None = None,
) -> dict[str, Any]:
    """End the message (:class:`wxtasks.send.outcome.Endings`); Celery stores the result
    this returns."""
    assert action.status is not None
    status = action.status
    if action.release and message is not None:
        pipe.release(message, ticket.task_id)
    claim = admission.claim if admission is not None else {}
    dead = None
    if action.dead_letter:
        dead = DeadLetter.of(
            ticket.task_id,
            TASK_NAMES.get(message.kind if message else "", str(task.name)),
            raw,
            status,
            action.reason,
            attempts=ticket.attempt,
            lane=ticket.lane.value,
            claim_key=pipe.claim_key(message) if message and status is Status.UNKNOWN else "",
        )
    if dead is not None:
        result = dead.result()
    else:
        assert message is not None
        ids: Any = receipt.as_dict() if receipt is not None else claim
        extra: dict[str, Any] = {}
        if status is Status.DUPLICATE:
            extra["first_task_id"] = claim.get("owner")
        if status is Status.CANCELLED:
            extra["error"] = action.reason
        result = SendResult.from_ids(
            status, message.app_id, message.to_wxid, ticket.task_id, ids, **extra
        )
    campaign, index = target_of(ticket.task_id) if ticket.campaign else ("", -1)
    ending = Ending(
        result,
        dead,
        claim_key=pipe.claim_key(message)
        if message is not None and (receipt is not None or status is Status.UNKNOWN)
        else "",
        campaign=campaign,
        index=index,
        bulk_sent=receipt is not None and ticket.lane is Lane.BULK,
        from_outbox=ticket.from_outbox,
    )
    endings = task.rt.endings
    try:
        out = endings.end(ending, store_result=False)
    except REDIS_DOWN:
        # the outcome must land even across a Redis restart (a sent message above all)
        if not wait_for_redis(pipe.redis, REDIS_OUTAGE_WAIT_S):
            raise
        out = endings.end(ending, store_result=False)
    if dead is not None:
        logger.warning(
            "send %s appId=%s %s: %s", ticket.task_id, dead.app_id, status.value, action.reason
        )
    return out


def parse_lane(value: Any) -> Lane:
    """The ``lane`` task argument: interactive (the default) or bulk."""
    if value in (None, ""):
        return Lane.INTERACTIVE
    try:
        return Lane(value)
    except ValueError:
        lanes = ", ".join(lane.value for lane in Lane)
        raise BadInputError(f"lane must be one of {lanes}; got {value!r}") from None


def _merge(kind: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    names = _POSITIONAL[kind]
    merged = dict(zip(names, args, strict=False))
    if len(args) > len(names):
        merged["_extra_positional"] = list(args[len(names) :])
    merged.update(kwargs)
    return merged


def _kwargs_of(message: Message) -> dict[str, Any]:
    raw: dict[str, Any] = {"app_id": message.app_id, "to_wxid": message.to_wxid, **message.fields}
    if message.dedup_key:
        raw["dedup_key"] = message.dedup_key
    return raw


def _header(request: Any, name: str) -> Any:
    headers = getattr(request, "headers", None)
    if isinstance(headers, dict) and headers.get(name) is not None:
        return headers[name]
    return getattr(request, name, None)


def _float(value: Any) -> float | None:
    try:
        return float(str(value)) if value not in (None, "") else None
    except ValueError:
        return None


@signals.task_failure.connect
@signals.task_internal_error.connect
def _dead_letter_failures(
    sender: WxTask | None = None,
    task_id: str | None = None,
    exception: BaseException | None = None,
    args: Any = None,
    kwargs: Any = None,
    **_: Any,
) -> None:
    """A send task that raised instead of returning, or that Celery could not even call
    (say its keyword arguments were not a mapping), still ends in the dead-letter list
    with the reason."""
    name = str(getattr(sender, "name", ""))
    if not name.startswith("wxtasks.send_") or task_id is None:
        return
    raw = kwargs if isinstance(kwargs, dict) else {"_arguments": repr((args, kwargs))[:500]}
    entry = DeadLetter.of(
        task_id, name, raw, Status.FAILED, f"task raised {type(exception).__name__}: {exception}"
    )
    try:
        # Celery stores the task's failure as its result; the rest of the ending is ours (a
        # dispatched message's outbox entry too: it may have come from there)
        ending = Ending(entry.result(), entry, from_outbox=True)
        sender.rt.endings.end(ending, store_result=False)  # type: ignore[union-attr]
    except Exception:
        logger.exception("could not dead-letter failed task %s", task_id)


# -- the public tasks ----------------------------------------------------------------------


@shared_task(name="wxtasks.send_text", **_SEND_OPTIONS)
def send_text(self: WxTask, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """send_text(app_id, to_wxid, content, ats=None, dedup_key=None, lane="interactive")"""
    return run_send(self, "text", args, kwargs)


@shared_task(name="wxtasks.send_image", **_SEND_OPTIONS)
def send_image(self: WxTask, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """send_image(app_id, to_wxid, img_url, dedup_key=None, lane="interactive")"""
    return run_send(self, "image", args, kwargs)


@shared_task(name="wxtasks.send_file", **_SEND_OPTIONS)
def send_file(self: WxTask, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """send_file(app_id, to_wxid, file_url, file_name, dedup_key=None, lane="interactive")"""
    return run_send(self, "file", args, kwargs)


@shared_task(name="wxtasks.send_link", **_SEND_OPTIONS)
def send_link(self: WxTask, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """send_link(app_id, to_wxid, title, desc, link_url, thumb_url, dedup_key=None,
    lane="interactive")"""
    return run_send(self, "link", args, kwargs)
