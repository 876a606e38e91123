"""How a message ends: the result a caller gets (:class:`SendResult`), the dead letter an
operator sees (:class:`DeadLetter`), and the one place every ending is written
(:class:`Endings`).

A message ends ``sent``, ``duplicate``, ``failed``, ``unknown`` or ``cancelled``, whichever
way it ends — its send task, an operator cancelling it while it waits, its campaign's
cancel, its deadline passing in the outbox (the send task then fails it), or a requeued
dead letter's new send. Each of them goes through :meth:`Endings.end`, which writes every
record of the ending in one round trip (``finish.lua``): its outcome on the send claim, the
count, the dead letter, the outbox forgetting it, its campaign's record, the bulk breaker's
reset and, for an ending an operator may act on (failed, unknown, cancelled), an event; and
the result, in the result backend, unless the caller is the task that returns it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from wxtasks.trends import TTL_S as TREND_TTL_S
from wxtasks.trends import minute_of


class Status(StrEnum):
    SENT = "sent"
    DUPLICATE = "duplicate"
    FAILED = "failed"
    UNKNOWN = "unknown"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class SendResult:
    """The JSON dict a send task returns (the public contract)."""

    status: Status
    app_id: str | None
    to_wxid: str | None
    task_id: str
    msgId: str = ""
    newMsgId: str = ""
    createTime: int | None = None
    error: str | None = None
    first_task_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        # by hand: dataclasses.asdict deep-copies, three times the cost on every send
        out: dict[str, Any] = {
            "status": self.status.value,
            "app_id": self.app_id,
            "to_wxid": self.to_wxid,
            "task_id": self.task_id,
            "msgId": self.msgId,
            "newMsgId": self.newMsgId,
            "createTime": self.createTime,
        }
        if self.error is not None:
            out["error"] = self.error
        if self.first_task_id is not None:
            out["first_task_id"] = self.first_task_id
        return out

    @classmethod
    def from_ids(
        cls,
        status: Status,
        app_id: str | None,
        to_wxid: str | None,
        task_id: str,
        ids: Mapping[str, Any] | None = None,
        **extra: Any,
    ) -> SendResult:
        """``ids``: a gateway receipt's or a claim's msgId / newMsgId / createTime."""
        ids = ids or {}
        created = ids.get("createTime")
        return cls(
            status,
            app_id,
            to_wxid,
            task_id,
            msgId=str(ids.get("msgId") or ""),
            newMsgId=str(ids.get("newMsgId") or ""),
            createTime=int(created) if created not in (None, "") else None,
            **extra,
        )


#: the fields whose value says what a message was (its text, or the media it sent)
CONTENT_FIELDS = ("content", "img_url", "file_url", "link_url")


@dataclass(frozen=True)
class DeadLetter:
    """A message that ended failed or unknown, kept so an operator can see and requeue it."""

    task_id: str
    task: str
    kwargs: dict[str, Any]
    status: str
    error: str
    app_id: str | None = None
    to_wxid: str | None = None
    content: str | None = None
    attempts: int = 0
    lane: str = "interactive"
    claim_key: str = ""

    @classmethod
    def of(
        cls,
        task_id: str,
        task: str,
        raw: Mapping[str, Any],
        status: Status | str,
        error: str,
        **extra: Any,
    ) -> DeadLetter:
        """From a task's raw keyword arguments, whatever their shape."""
        content = next((raw[f] for f in CONTENT_FIELDS if raw.get(f)), None)
        return cls(
            task_id=task_id,
            task=task,
            kwargs=jsonable(raw),
            status=str(status),
            error=error,
            app_id=short_text(raw.get("app_id")),
            to_wxid=short_text(raw.get("to_wxid")),
            content=short_text(content),
            **extra,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def result(self) -> SendResult:
        return SendResult(
            Status(self.status), self.app_id, self.to_wxid, self.task_id, error=self.error
        )


def jsonable(raw: Mapping[str, Any]) -> dict[str, Any]:
    """``raw`` with every value JSON can carry kept and the rest shown as text."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, str):
            out[str(key)] = value.encode("utf-8", "replace").decode("utf-8")
        elif value is None or isinstance(value, int | float | bool | list | dict):
            out[str(key)] = value
        else:
            out[str(key)] = repr(value)
    return out


def short_text(value: Any, limit: int = 500) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else repr(value)
    return text.encode("utf-8", "replace").decode("utf-8")[:limit]


def task_id_of(campaign_id: str, index: int) -> str:
    """The send task id of a campaign's target."""
    return f"{campaign_id}:{index}"


def target_of(task_id: str) -> tuple[str, int]:
    """(campaign id, target index) of a campaign target's task id."""
    campaign_id, _, index = task_id.rpartition(":")
    return campaign_id, int(index)


#: why a message an operator cancelled while it waited ended so
CANCELLED_BY_OPERATOR = "cancelled by an operator while waiting"

#: the fields of a result a campaign's report keeps for each target
_OUTCOME_FIELDS = ("status", "to_wxid", "msgId", "newMsgId", "createTime", "error")
#: the endings that write an event (an operator may act on them)
_EVENTFUL = frozenset({Status.FAILED, Status.UNKNOWN, Status.CANCELLED})


@dataclass(frozen=True)
class Ending:
    """How one message ended, and what the records of it need to know."""

    result: SendResult
    #: a failed or unknown message's dead letter
    dead_letter: DeadLetter | None = None
    #: the send claim to record a gateway call's outcome on (sent or unknown), or ""
    claim_key: str = ""
    #: the campaign it is a target of ("" for none) and its index there
    campaign: str = ""
    index: int = -1
    #: a bulk send that went out (the breaker's count of errors in a row starts over)
    bulk_sent: bool = False
    #: it was dispatched from the outbox, which forgets it now (one taken out of the
    #: outbox to be ended, or one that never waited, has nothing left there)
    from_outbox: bool = False


class Endings:
    """The one place a message's ending is written (see the module's docstring)."""

    def __init__(
        self,
        client: Any,
        settings: Any,
        keys: Any,
        scripts: Any,
        store_result: Callable[[str, dict[str, Any]], None],
        on_campaign_end: Callable[[str], None],
        gateway_of: Callable[[str], str] = lambda _app_id: "",
    ) -> None:
        """``store_result(task_id, result)`` writes a result to the result backend;
        ``on_campaign_end(campaign_id)`` runs once, after a campaign's last target ended."""
        self.redis = client
        self.settings = settings
        self.keys = keys
        self.scripts = scripts
        self.store_result = store_result
        self.on_campaign_end = on_campaign_end
        #: appId -> its gateway, no round trip (Fleet.guess): the Overview counts per gateway
        self.gateway_of = gateway_of

    def end(self, ending: Ending, *, store_result: bool = True) -> dict[str, Any]:
        """Write every record of ``ending`` (one round trip) and, unless the caller is the
        send task that returns it (``store_result=False``), its result; returns the result."""
        reply = self._finish(ending, None)
        return self._after(ending, reply, store_result)

    def end_many(self, endings: list[Ending]) -> None:
        """:meth:`end` for many messages at once (a cancelled campaign's targets)."""
        if not endings:
            return
        pipe = self.redis.pipeline(transaction=False)
        for ending in endings:
            self._finish(ending, pipe)
        for ending, reply in zip(endings, pipe.execute(), strict=True):
            self._after(ending, reply, True)

    def cancel_waiting(self, outbox: Any, task_id: str, why: str) -> dict[str, Any] | None:
        """End a message waiting in ``outbox`` ``cancelled`` (not dead-lettered; its
        result says so); None when it is not waiting (dispatched, done or unknown)."""
        waiting = outbox.take_out(task_id)
        if waiting is None:
            return None
        to_wxid = str(waiting.kwargs.get("to_wxid") or "")
        result = SendResult(Status.CANCELLED, waiting.app_id, to_wxid, task_id, error=why)
        campaign, index = target_of(task_id) if waiting.campaign else ("", -1)
        return self.end(Ending(result, campaign=campaign, index=index))

    def _finish(self, e: Ending, pipe: Any) -> Any:
        r, k = e.result, self.keys
        shard = k.shard(str(r.app_id))
        keys = [
            k.send_stats,
            k.deadletters,
            k.deadletters_order,
            k.outbox_messages(shard),
            k.outbox_inflight(shard),
            k.outbox_campaign_of(shard),
            k.outbox_to_group(shard),
            k.events,
            k.trends(minute_of(now := time.time())),
        ]
        claim_status = ""
        if e.claim_key and r.status in (Status.SENT, Status.UNKNOWN):
            claim_status = r.status.value
            keys.append(e.claim_key)
        outcome = ""
        if e.campaign:
            keys += [
                k.campaign(e.campaign),
                k.campaign_counts(e.campaign),
                k.campaign_results(e.campaign),
            ]
            shown = r.as_dict()
            outcome = json.dumps(
                {f: shown[f] for f in _OUTCOME_FIELDS if f in shown}, ensure_ascii=False
            )
        if e.bulk_sent:
            keys.append(k.account(str(r.app_id)))
        dead = ""
        if e.dead_letter is not None:
            entry = {**e.dead_letter.as_dict(), "dead_lettered_at": now}
            dead = json.dumps(entry, ensure_ascii=False)
        return self.scripts.finish(
            keys=keys,
            args=[
                r.task_id,
                r.status.value,
                f"{now:.3f}",
                claim_status,
                r.msgId,
                r.newMsgId,
                "" if r.createTime is None else r.createTime,
                dead,
                e.campaign,
                e.index,
                outcome,
                "1" if e.bulk_sent else "0",
                r.app_id or "",
                r.error or "" if r.status in _EVENTFUL else "",
                self.settings.events_maxlen,
                self.gateway_of(r.app_id) if r.app_id else "",
                TREND_TTL_S,
                "1" if e.from_outbox else "0",
            ],
            client=pipe,
        )

    def _after(self, e: Ending, reply: Any, store_result: bool) -> dict[str, Any]:
        result = e.result.as_dict()
        if store_result:
            self.store_result(e.result.task_id, result)
        if e.campaign and reply and int(reply[0]) >= int(reply[1]):
            self.on_campaign_end(e.campaign)
        return result
