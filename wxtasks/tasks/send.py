"""Send tasks on queue ``send`` — the public contract other apps call by name.

Each message ends as ``sent``, ``duplicate``, ``failed`` or ``unknown``; ``failed`` and
``unknown`` ones also land in the dead-letter list. The order of work per attempt:

    validate → deadline → admit (Lua) → gateway → record

and what each admission or gateway answer leads to is the table in shared/DESIGN.md.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import redis
from celery import Task, shared_task, signals
from celery.exceptions import Reject

from wxtasks.errors import (
    AccountOfflineError,
    BadInputError,
    GatewayAuthError,
    GatewayBusinessError,
    GatewayOutcomeUnknownError,
    GatewayUnavailableError,
)
from wxtasks.sending import Admit, Message, Status
from wxtasks.tasks.base import WxTask

logger = logging.getLogger(__name__)

#: a global-token wait up to this long sleeps in the task; a longer one requeues it
SHORT_WAIT_S = 1.0
#: a booked account slot this close is slept for; a later one requeues the task, so one
#: busy account (a 群发 at 1 msg/s) never holds the workers other accounts need
SHORT_SCHEDULE_S = 0.25
#: generic gateway errors (ret != 200, not offline) are retried this many times
BUSINESS_RETRIES = 3
DEADLINE_HEADER = "wx_deadline"
#: how long a send waits for Redis to come back before handing the message back
REDIS_OUTAGE_WAIT_S = 60.0
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.BusyLoadingError)

#: positional parameter order per kind, as in the public signatures
_POSITIONAL = {
    "text": ("app_id", "to_wxid", "content", "ats", "dedup_key"),
    "image": ("app_id", "to_wxid", "img_url", "dedup_key"),
    "file": ("app_id", "to_wxid", "file_url", "file_name", "dedup_key"),
    "link": ("app_id", "to_wxid", "title", "desc", "link_url", "thumb_url", "dedup_key"),
}
_TASK_NAMES = {kind: f"wxtasks.send_{kind}" for kind in _POSITIONAL}

_SEND_OPTIONS: dict[str, Any] = {
    "base": WxTask,
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "max_retries": None,
}


class _Retry(Exception):
    def __init__(self, countdown: float, reason: str) -> None:
        super().__init__(reason)
        self.countdown = countdown


def run_send(
    task: Task, kind: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """One attempt at one message; returns the result dict or raises Celery's Retry.

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


def _run_send(
    task: Task, kind: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    task_id = str(task.request.id)
    raw = _merge(kind, args, kwargs)
    try:
        message = Message.parse(kind, raw)
    except BadInputError as exc:
        return dead_letter(task, kind, raw, Status.FAILED, f"bad input: {exc}")
    deadline = _deadline(task)
    try:
        return _attempt(task, message, task_id, deadline)
    except _Retry as retry:
        left = deadline - time.time()
        if retry.countdown >= left:
            task.rt.pipeline.release(message, task_id)  # a booked slot, if any
            return dead_letter(
                task,
                kind,
                raw,
                Status.FAILED,
                f"deadline passed: {retry} (message waited {task.rt.settings.send_deadline_s}s)",
            )
        headers = {**(task.request.headers or {}), DEADLINE_HEADER: deadline}
        logger.info(
            "send %s appId=%s retry in %.1fs: %s", task_id, message.app_id, retry.countdown, retry
        )
        raise task.retry(countdown=retry.countdown, headers=headers, max_retries=None) from None


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


def _attempt(task: Task, message: Message, task_id: str, deadline: float) -> dict[str, Any]:
    pipe = task.rt.pipeline
    kind, raw = message.kind, _kwargs_of(message)
    while True:
        if time.time() > deadline:
            pipe.release(message, task_id)  # a booked slot, if any
            return dead_letter(task, kind, raw, Status.FAILED, "deadline passed before a send slot")
        admission = pipe.admit(message, task_id, max_wait_s=max(0.0, deadline - time.time()))
        outcome = admission.outcome
        if outcome is Admit.ADMITTED:
            break
        if outcome is Admit.WAIT:  # the global bucket: every process waits alike
            pipe.count_wait(admission.wait_s)  # off the fast path: we are about to wait
            if admission.wait_s <= SHORT_WAIT_S:
                time.sleep(admission.wait_s)
                continue
            raise _Retry(admission.wait_s, "waiting for a send token")
        if outcome is Admit.SCHEDULED:  # the account's slot is booked: free the worker
            pipe.count_wait(admission.wait_s)
            if admission.wait_s <= SHORT_SCHEDULE_S:
                time.sleep(admission.wait_s)
                continue
            raise _Retry(admission.wait_s, "waiting for the account's send slot")
        if outcome is Admit.DUPLICATE:
            pipe.record(message, task_id, Status.DUPLICATE)
            claim = admission.claim
            return _result(
                message, task_id, Status.DUPLICATE, claim=claim, first_task_id=claim.get("owner")
            )
        if outcome is Admit.REDELIVERED:
            claim = admission.claim
            if claim.get("status") == Status.SENT:
                return _result(message, task_id, Status.SENT, claim=claim)
            pipe.record(message, task_id, Status.UNKNOWN)
            return dead_letter(
                task,
                kind,
                raw,
                Status.UNKNOWN,
                "redelivered after a worker stopped mid-send: the gateway may have "
                "sent it, so it was not sent again",
                claim_key=pipe.claim_key(message),
            )
        if outcome is Admit.UNKNOWN_ACCOUNT:
            return dead_letter(
                task,
                kind,
                raw,
                Status.FAILED,
                f"unknown account: appId {message.app_id} is not registered",
            )
        # NOT_ONLINE
        if admission.state in ("RECONNECTING", "LOGGING_IN"):
            raise _Retry(_backoff(task.request.retries), f"account is {admission.state}")
        return dead_letter(
            task,
            kind,
            raw,
            Status.FAILED,
            f"account is {admission.state}: it cannot send until it logs in",
        )

    try:
        receipt = pipe.deliver(message)
    except AccountOfflineError as exc:
        pipe.release(message, task_id)
        task.rt.lifecycle.liveness_failed(message.app_id, f"send failed: {exc.msg}")
        raise _Retry(_backoff(task.request.retries), f"account offline: {exc.msg}") from None
    except GatewayAuthError as exc:
        pipe.release(message, task_id)
        return dead_letter(task, kind, raw, Status.FAILED, str(exc))
    except GatewayBusinessError as exc:
        pipe.release(message, task_id)
        if task.request.retries < BUSINESS_RETRIES:
            raise _Retry(_backoff(task.request.retries), str(exc)) from None
        return dead_letter(task, kind, raw, Status.FAILED, str(exc))
    except GatewayUnavailableError as exc:
        pipe.release(message, task_id)
        raise _Retry(_backoff(task.request.retries), str(exc)) from None
    except GatewayOutcomeUnknownError as exc:
        pipe.record(message, task_id, Status.UNKNOWN)
        return dead_letter(
            task, kind, raw, Status.UNKNOWN, f"{exc}; not resent", claim_key=pipe.claim_key(message)
        )
    except BadInputError as exc:
        pipe.release(message, task_id)
        return dead_letter(task, kind, raw, Status.FAILED, f"bad input: {exc}")
    # the message went out: its record must land even across a Redis restart
    try:
        pipe.record(message, task_id, Status.SENT, receipt)
    except REDIS_DOWN:
        if not wait_for_redis(pipe.redis, REDIS_OUTAGE_WAIT_S):
            raise
        pipe.record(message, task_id, Status.SENT, receipt)
    return _result(message, task_id, Status.SENT, receipt=receipt.as_dict())


def _result(
    message: Message,
    task_id: str,
    status: Status,
    *,
    receipt: dict[str, Any] | None = None,
    claim: dict[str, str] | None = None,
    error: str | None = None,
    first_task_id: str | None = None,
) -> dict[str, Any]:
    ids = receipt or {}
    if claim:
        ids = {
            "msgId": claim.get("msgId", ""),
            "newMsgId": claim.get("newMsgId", ""),
            "createTime": int(claim["createTime"]) if claim.get("createTime") else None,
        }
    result: dict[str, Any] = {
        "status": status.value,
        "app_id": message.app_id,
        "to_wxid": message.to_wxid,
        "msgId": ids.get("msgId", ""),
        "newMsgId": ids.get("newMsgId", ""),
        "createTime": ids.get("createTime"),
        "task_id": task_id,
    }
    if error:
        result["error"] = error
    if first_task_id:
        result["first_task_id"] = first_task_id
    return result


def dead_letter(
    task: Task, kind: str, raw: dict[str, Any], status: Status, error: str, *, claim_key: str = ""
) -> dict[str, Any]:
    """End the message as failed/unknown: keep it in the dead-letter list, return why."""
    rt = task.rt
    task_id = str(task.request.id)
    entry = {
        "task_id": task_id,
        "task": _TASK_NAMES.get(kind, str(task.name)),
        "kwargs": _jsonable(raw),
        "status": status.value,
        "error": error,
        "app_id": _str_or_none(raw.get("app_id")),
        "to_wxid": _str_or_none(raw.get("to_wxid")),
        "content": _str_or_none(
            raw.get("content") or raw.get("img_url") or raw.get("file_url") or raw.get("link_url")
        ),
        "retries": task.request.retries,
        "claim_key": claim_key,
    }
    rt.deadletters.add(entry)
    if status is Status.FAILED:
        rt.redis.hincrby(rt.keys.send_stats, status.value, 1)
    logger.warning("send %s appId=%s %s: %s", task_id, entry["app_id"], status.value, error)
    return {
        "status": status.value,
        "app_id": entry["app_id"],
        "to_wxid": entry["to_wxid"],
        "msgId": "",
        "newMsgId": "",
        "createTime": None,
        "error": error,
        "task_id": task_id,
    }


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


def _deadline(task: WxTask) -> float:
    headers = task.request.headers or {}
    value = headers.get(DEADLINE_HEADER) or getattr(task.request, DEADLINE_HEADER, None)
    try:
        return float(str(value))
    except (TypeError, ValueError):
        return time.time() + task.rt.settings.send_deadline_s


def _backoff(retries: int) -> float:
    return min(30.0, 2.0 ** min(retries, 5)) * (0.75 + 0.5 * random.random())


def _jsonable(raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, str):
            out[key] = value.encode("utf-8", "replace").decode("utf-8")
        elif value is None or isinstance(value, int | float | bool | list | dict):
            out[key] = value
        else:
            out[key] = repr(value)
    return out


def _str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else repr(value)
    return text.encode("utf-8", "replace").decode("utf-8")[:500]


@signals.task_failure.connect
@signals.task_internal_error.connect
def _dead_letter_failures(
    sender: Task | None = None,
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
    entry = {
        "task_id": task_id,
        "task": name,
        "kwargs": _jsonable(raw),
        "status": "failed",
        "error": f"task raised {type(exception).__name__}: {exception}",
        "app_id": _str_or_none(raw.get("app_id")),
        "to_wxid": _str_or_none(raw.get("to_wxid")),
        "content": _str_or_none(raw.get("content")),
        "retries": 0,
        "claim_key": "",
    }
    try:
        sender.rt.deadletters.add(entry)  # type: ignore[union-attr]
    except Exception:
        logger.exception("could not dead-letter failed task %s", task_id)


# -- the public tasks ----------------------------------------------------------------------


@shared_task(name="wxtasks.send_text", **_SEND_OPTIONS)
def send_text(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """send_text(app_id, to_wxid, content, ats=None, dedup_key=None)"""
    return run_send(self, "text", args, kwargs)


@shared_task(name="wxtasks.send_image", **_SEND_OPTIONS)
def send_image(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """send_image(app_id, to_wxid, img_url, dedup_key=None)"""
    return run_send(self, "image", args, kwargs)


@shared_task(name="wxtasks.send_file", **_SEND_OPTIONS)
def send_file(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """send_file(app_id, to_wxid, file_url, file_name, dedup_key=None)"""
    return run_send(self, "file", args, kwargs)


@shared_task(name="wxtasks.send_link", **_SEND_OPTIONS)
def send_link(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """send_link(app_id, to_wxid, title, desc, link_url, thumb_url, dedup_key=None)"""
    return run_send(self, "link", args, kwargs)
