"""Campaigns: a 群发 as an object you can watch, pause, resume and cancel.

A campaign is one content (text, image, file or link) for many targets (appId, wxid),
with an optional start time and its own spacing (``jitter``). Its targets are streamed
into Redis in chunks — 100,000 of them never pass through one Celery message — and, once
it starts, parked in their accounts' **bulk** lanes of the outbox, where the dispatcher
paces them (:mod:`wxtasks.send.pacing`) behind every reply. Each target is one send task
``<campaign id>:<index>``; its outcome is recorded once on the campaign, so ``show``
counts every target exactly once and ``report`` lists each with its ids or error.

States: ``scheduled`` (start in the future) → ``running`` → ``done``; ``paused`` (the
dispatcher sets its messages aside within one tick; in-flight sends finish) and back;
``cancelled`` (what had not gone out is counted ``cancelled`` and never sent).
``wxtasks.bulk_send`` and ``wxtasks.broadcast`` are thin campaigns.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from itertools import islice
from typing import Any

import redis

from wxtasks import mirrors
from wxtasks.config import Settings
from wxtasks.errors import BadInputError, WxTasksError
from wxtasks.events import publish_alert
from wxtasks.keys import APP_ID_PATTERN, Keys, validate_app_id
from wxtasks.scripts import Scripts
from wxtasks.send.gates import Lane, pacing_reason
from wxtasks.send.outbox import Outbox, Waiting
from wxtasks.send.outcome import (
    Ending,
    Endings,
    SendResult,
    Status,
    task_id_of,
)
from wxtasks.send.pacing import Span
from wxtasks.send.pipeline import KINDS, Message

logger = logging.getLogger(__name__)

CHUNK = 1000
#: target i of a campaign counts as enqueued i * this after its start (its place in line)
TARGET_STEP_S = 1e-5
#: the outcomes a target can end with, as counted
OUTCOMES = tuple(s.value for s in Status)
CAMPAIGN_ID_RULE = "1 to 64 characters, each an ASCII letter, a digit or one of _ . @ -"


class CampaignState(StrEnum):
    LOADING = "loading"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    DONE = "done"


class CampaignNotFound(WxTasksError):
    def __init__(self, campaign_id: str) -> None:
        super().__init__(f"no campaign {campaign_id!r}")
        self.campaign_id = campaign_id


@dataclass(frozen=True)
class Content:
    """What a campaign sends: a message kind and its fields (as the send tasks take them)."""

    kind: str
    fields: dict[str, str]

    @classmethod
    def parse(cls, kind: str, fields: dict[str, Any]) -> Content:
        if kind not in KINDS:
            raise BadInputError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
        probe = Message.parse(kind, {"app_id": "x", "to_wxid": "x", **fields})
        return cls(kind, probe.fields)


#: a cell starting with one of these is a formula to a spreadsheet (=HYPERLINK(...))
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: Any) -> Any:
    """A report cell a spreadsheet reads as text: one that would start a formula gets a
    leading ``'`` (OWASP's CSV injection advice); other values are returned as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def validate_campaign_id(campaign_id: object) -> str:
    import re

    if isinstance(campaign_id, str) and re.fullmatch(APP_ID_PATTERN, campaign_id):
        return campaign_id
    raise BadInputError(
        f"campaign id {campaign_id!r} is not valid: a campaign id is {CAMPAIGN_ID_RULE}"
    )


#: campaigns that a bulk_send or broadcast task made: their task's result is the report
FANOUT_SOURCES = ("bulk_send", "broadcast")
#: the per-target report goes into the task result up to this many targets
REPORT_IN_RESULT = 1000


class Campaigns:
    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        keys: Keys,
        scripts: Scripts,
        outbox: Outbox,
        endings: Endings,
        store_result: Callable[[str, dict[str, Any]], None],
        *,
        clock: Any = time.time,
    ) -> None:
        """``endings``: where a cancelled target's ending is written; ``store_result(task
        id, result)`` writes a bulk_send or broadcast task's report when it ends."""
        #: decode_responses=True: replies are str (redis-py's types say bytes | str)
        self.redis: Any = client
        self.settings = settings
        self.keys = keys
        self.scripts = scripts
        self.outbox = outbox
        self.endings = endings
        self.store_result = store_result
        self.clock = clock

    # -- create ------------------------------------------------------------------------------

    def create(
        self,
        campaign_id: str,
        content: Content,
        targets: Iterable[tuple[str, str]],
        *,
        start_at: float | None = None,
        jitter: str | None = None,
        source: str = "campaign",
    ) -> dict[str, Any]:
        """Create the campaign and stream its targets in (idempotent by ``campaign_id``:
        creating it again adds nothing, and finishes a create that was cut short)."""
        validate_campaign_id(campaign_id)
        if jitter:
            jitter = str(Span.parse(jitter))
        key = self.keys.campaign(campaign_id)
        now = self.clock()
        meta = {
            "id": campaign_id,
            "state": CampaignState.LOADING.value,
            "kind": content.kind,
            "fields": json.dumps(content.fields, ensure_ascii=False),
            "created_at": f"{now:.3f}",
            "start_at": f"{start_at:.3f}" if start_at else "",
            "jitter": jitter or "",
            "source": source,
            "total": "0",
            "ended": "0",
        }
        pipe = self.redis.pipeline(transaction=True)
        for field, value in meta.items():
            pipe.hsetnx(key, field, value)
        pipe.hgetall(key)
        pipe.zadd(self.keys.campaigns, {campaign_id: now}, nx=True)
        if jitter:
            pipe.hsetnx(self.keys.campaigns_jitter, campaign_id, jitter)
        stored = pipe.execute()[len(meta)]
        if jitter:
            self._mirror()
        if stored["state"] != CampaignState.LOADING:
            return self.show(campaign_id)  # created before: nothing more to do
        starts = float(stored["start_at"] or 0)
        running = starts <= now
        enqueued_at = max(starts, float(stored["created_at"]))
        index = 0
        for chunk in _chunks(targets, CHUNK):
            if self.redis.hget(key, "state") != CampaignState.LOADING:
                # cancelled while it was still loading: what is left is not added
                logger.info("campaign %s stopped while loading", campaign_id)
                return self.show(campaign_id)
            entries = [f"{validate_app_id(a)}\t{_wxid(t)}" for a, t in chunk]
            added = self.scripts.campaign_add(
                keys=[
                    key,
                    self.keys.campaign_targets(campaign_id),
                    self.keys.campaign_counts(campaign_id),
                ],
                args=[index, *entries],
            )
            if running and added:
                by_index = dict(zip(range(index, index + len(entries)), chunk, strict=True))
                self._park(
                    campaign_id, stored, [(int(i), *by_index[int(i)]) for i in added], enqueued_at
                )
            index += len(entries)
        if int(self.redis.hget(key, "total") or 0) == 0:
            self.redis.delete(key)
            self.redis.zrem(self.keys.campaigns, campaign_id)
            raise BadInputError("a campaign needs at least one target")
        state = CampaignState.RUNNING if running else CampaignState.SCHEDULED
        if self.redis.hget(key, "state") != CampaignState.LOADING:
            return self.show(campaign_id)  # cancelled during its last chunk
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(
            key, mapping={"state": state.value, "started_at": f"{now:.3f}" if running else ""}
        )
        if not running:
            pipe.zadd(self.keys.campaigns_scheduled, {campaign_id: starts})
        pipe.execute()
        logger.info("campaign %s created: %s", campaign_id, state.value)
        return self.show(campaign_id)

    def _park(
        self,
        campaign_id: str,
        meta: dict[str, str],
        targets: list[tuple[int, str, str]],
        enqueued_at: float,
    ) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for index, app_id, to_wxid in targets:
            waiting = Waiting(
                task_id=task_id_of(campaign_id, index),
                task=f"wxtasks.send_{meta['kind']}",
                kwargs={
                    "app_id": app_id,
                    "to_wxid": to_wxid,
                    "lane": Lane.BULK.value,
                    "dedup_key": f"campaign:{campaign_id}:{app_id}:{to_wxid}",
                },
                app_id=app_id,
                lane=Lane.BULK.value,
                # a lane is ordered by first enqueue, and ties by task id as text
                # ("c:10" before "c:2"): 10 µs a target keeps the targets' own order
                enqueued_at=enqueued_at + index * TARGET_STEP_S,
                campaign=campaign_id,
            )
            self.outbox.park(waiting, 0.0, client=pipe)
        pipe.execute()

    def _targets(self, campaign_id: str) -> Iterator[list[tuple[int, str, str]]]:
        """Every target, in chunks of (index, appId, wxid)."""
        total = int(self.redis.hget(self.keys.campaign(campaign_id), "total") or 0)
        for start in range(0, total, CHUNK):
            indexes = list(range(start, min(start + CHUNK, total)))
            raw = self.redis.hmget(self.keys.campaign_targets(campaign_id), indexes)
            chunk = []
            for i, entry in zip(indexes, raw, strict=True):
                if entry:
                    app_id, _, to_wxid = entry.partition("\t")
                    chunk.append((i, app_id, to_wxid))
            yield chunk

    # -- control -----------------------------------------------------------------------------

    def _mirror(self) -> None:
        """Copy the stopped campaigns and their own spacing into every shard now (what
        a dispatch call reads): a pause takes effect everywhere at once."""
        mirrors.refresh(self.redis, self.keys, self.scripts)

    def pause(self, campaign_id: str) -> dict[str, Any]:
        """Stop new dispatches now (the dispatcher's next tick, well within 1 s)."""
        meta = self._meta(campaign_id)
        if meta["state"] in (CampaignState.RUNNING, CampaignState.SCHEDULED):
            pipe = self.redis.pipeline(transaction=True)
            pipe.hset(self.keys.campaigns_stopped, campaign_id, CampaignState.PAUSED.value)
            pipe.hset(
                self.keys.campaign(campaign_id),
                mapping={"state": CampaignState.PAUSED.value, "paused_from": meta["state"]},
            )
            pipe.execute()
            self._mirror()
        return self.show(campaign_id)

    def resume(self, campaign_id: str) -> dict[str, Any]:
        """Carry on where it stopped: its set-aside messages go back to their places."""
        meta = self._meta(campaign_id)
        if meta["state"] != CampaignState.PAUSED:
            return self.show(campaign_id)
        back = CampaignState(meta.get("paused_from") or CampaignState.RUNNING)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hdel(self.keys.campaigns_stopped, campaign_id)
        pipe.hset(self.keys.campaign(campaign_id), "state", back.value)
        pipe.execute()
        self._mirror()
        now_ms = self.clock() * 1000
        for chunk in self._targets(campaign_id):
            pipe = self.redis.pipeline(transaction=False)
            for index, app_id, _ in chunk:
                self.scripts.campaign_unhold(
                    keys=[
                        self.keys.outbox_held(self.keys.shard(app_id)),
                        self.keys.outbox_lane(app_id, Lane.BULK),
                        self.keys.outbox_ready(self.keys.shard(app_id), Lane.BULK),
                    ],
                    args=[task_id_of(campaign_id, index), app_id, repr(now_ms)],
                    client=pipe,
                )
            pipe.execute()
        return self.show(campaign_id)

    def cancel(self, campaign_id: str) -> dict[str, Any]:
        """End what is left: those targets are counted ``cancelled`` and never sent."""
        meta = self._meta(campaign_id)
        if meta["state"] in (CampaignState.CANCELLED, CampaignState.DONE):
            return self.show(campaign_id)
        loading_now = (
            meta["state"] == CampaignState.LOADING
            and float(meta.get("start_at") or 0) <= self.clock()
        )  # a create still streaming parks its targets as it goes
        started = (
            meta["state"] == CampaignState.RUNNING
            or loading_now
            or (meta["state"] == CampaignState.PAUSED and meta.get("paused_from") == "running")
        )
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.keys.campaigns_stopped, campaign_id, CampaignState.CANCELLED.value)
        pipe.hset(self.keys.campaign(campaign_id), "state", CampaignState.CANCELLED.value)
        pipe.zrem(self.keys.campaigns_scheduled, campaign_id)
        pipe.execute()
        self._mirror()
        for chunk in self._targets(campaign_id):
            if started:
                pipe = self.redis.pipeline(transaction=False)
                for index, app_id, _ in chunk:
                    self.outbox.take_out_queued(
                        task_id_of(campaign_id, index), app_id, Lane.BULK, pipe
                    )
                removed = pipe.execute()
                chunk = [t for t, body in zip(chunk, removed, strict=True) if body]
            self.endings.end_many(
                [
                    Ending(
                        SendResult(
                            Status.CANCELLED,
                            app_id,
                            to_wxid,
                            task_id_of(campaign_id, index),
                            error="campaign cancelled",
                        ),
                        campaign=campaign_id,
                        index=index,
                    )
                    for index, app_id, to_wxid in chunk
                ]
            )
        self.complete(campaign_id)
        return self.show(campaign_id)

    # -- outcomes ----------------------------------------------------------------------------

    def complete(self, campaign_id: str) -> None:
        """Once every target has ended: the campaign is done (or cancelled), announced
        once; a bulk_send's or broadcast's task gets the report as its result."""
        summary = self._complete_if_ended(campaign_id)
        if summary is not None and summary.get("source") in FANOUT_SOURCES:
            self.store_result(campaign_id, self.fanout_report(summary))

    def fanout_report(self, summary: dict[str, Any]) -> dict[str, Any]:
        """What ``AsyncResult(bulk_send_id).get()`` returns: counts, and each target's
        result (up to REPORT_IN_RESULT; ``wxtasks campaigns report`` has them all)."""
        report = {"status": "done", "kind": summary["source"], "campaign_id": summary["id"]}
        report.update({k: summary[k] for k in ("total", *OUTCOMES)})
        if summary["total"] <= REPORT_IN_RESULT:
            report["results"] = list(self.report(summary["id"]))
        return report

    def _complete_if_ended(self, campaign_id: str) -> dict[str, Any] | None:
        key = self.keys.campaign(campaign_id)
        total, ended, state = self.redis.hmget(key, "total", "ended", "state")
        if int(ended or 0) < int(total or 0):
            return None
        final = CampaignState.CANCELLED if state == CampaignState.CANCELLED else CampaignState.DONE
        # one process gets to announce it: whoever moves finished_at from unset
        if not self.redis.hsetnx(key, "finished_at", f"{self.clock():.3f}"):
            return None
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, "state", final.value)
        pipe.hdel(self.keys.campaigns_stopped, campaign_id)
        pipe.execute()
        self._mirror()
        summary = self.show(campaign_id)
        counts = ", ".join(f"{k} {summary[k]}" for k in OUTCOMES if summary[k])
        publish_alert(
            self.redis,
            self.settings,
            "",
            "campaignFinished",
            f"campaign {campaign_id} {final.value}: {counts}",
            final.value,
            campaign=campaign_id,
        )
        return summary

    # -- reading ------------------------------------------------------------------------------

    def _meta(self, campaign_id: str) -> dict[str, str]:
        meta: dict[str, str] = self.redis.hgetall(self.keys.campaign(campaign_id))
        if not meta:
            raise CampaignNotFound(campaign_id)
        return meta

    def content(self, campaign_id: str) -> dict[str, str]:
        raw = self.redis.hget(self.keys.campaign(campaign_id), "fields")
        return dict(json.loads(raw)) if raw else {}

    def show(self, campaign_id: str) -> dict[str, Any]:
        meta = self._meta(campaign_id)
        counts = {
            k: int(v) for k, v in self.redis.hgetall(self.keys.campaign_counts(campaign_id)).items()
        }
        total = int(meta.get("total") or 0)
        out: dict[str, Any] = {
            "id": campaign_id,
            "state": meta["state"],
            "kind": meta["kind"],
            "content": json.loads(meta["fields"]),
            "source": meta.get("source", ""),
            "created_at": float(meta["created_at"]),
            "start_at": float(meta["start_at"]) if meta.get("start_at") else None,
            "finished_at": float(meta["finished_at"]) if meta.get("finished_at") else None,
            "jitter": meta.get("jitter") or None,
            "total": total,
            **{k: counts.get(k, 0) for k in OUTCOMES},
        }
        out["waiting"] = total - sum(counts.get(k, 0) for k in OUTCOMES)
        apps = sorted({k.split("|", 1)[0] for k in counts if "|" in k})
        reasons = self._waiting_reasons(apps) if out["waiting"] else {}
        paused = meta["state"] == CampaignState.PAUSED
        accounts: dict[str, Any] = {}
        for app in apps:
            row: dict[str, Any] = {k: counts.get(f"{app}|{k}", 0) for k in OUTCOMES}
            row["total"] = counts.get(f"{app}|total", 0)
            row["waiting"] = row["total"] - sum(row[k] for k in OUTCOMES)
            if row["waiting"]:
                row["waiting_reason"] = "paused" if paused else reasons.get(app, "")
            accounts[app] = row
        out["accounts"] = accounts
        return out

    def _waiting_reasons(self, apps: list[str]) -> dict[str, str]:
        pipe = self.redis.pipeline(transaction=False)
        for app in apps:
            pipe.hmget(self.keys.account(app), "bulk_wait", "state")
        reasons = {}
        for app, (why, state) in zip(apps, pipe.execute() if apps else [], strict=True):
            if state and state != "ONLINE":
                reasons[app] = f"account is {state}"
            else:
                reasons[app] = pacing_reason(why) or "in line for the account's send slots"
        return reasons

    def list(self) -> list[dict[str, Any]]:
        ids = self.redis.zrange(self.keys.campaigns, 0, -1)
        out = []
        for campaign_id in ids:
            try:
                s = self.show(campaign_id)
            except CampaignNotFound:
                continue
            s.pop("accounts")
            out.append(s)
        return out

    def report(self, campaign_id: str) -> Iterator[dict[str, Any]]:
        """Every target once, in order: its outcome (or ``waiting``), ids and error.
        An unknown id raises CampaignNotFound here, not at the first row."""
        self._meta(campaign_id)
        return self._report(campaign_id)

    def _report(self, campaign_id: str) -> Iterator[dict[str, Any]]:
        results_key = self.keys.campaign_results(campaign_id)
        for chunk in self._targets(campaign_id):
            results = self.redis.hmget(results_key, [i for i, _, _ in chunk]) if chunk else []
            for (index, app_id, to_wxid), raw in zip(chunk, results, strict=True):
                outcome = json.loads(raw) if raw else {"status": "waiting"}
                yield {
                    "index": index,
                    "task_id": task_id_of(campaign_id, index),
                    "app_id": app_id,
                    "to_wxid": to_wxid,
                    "status": outcome.get("status", ""),
                    "msgId": outcome.get("msgId", ""),
                    "newMsgId": outcome.get("newMsgId", ""),
                    "error": outcome.get("error", ""),
                }

    # -- beat's once-a-second chores ---------------------------------------------------------------

    def tick(self) -> None:
        """Start the scheduled campaigns that are due; alert on a stalled one."""
        now = self.clock()
        for campaign_id in self.redis.zrangebyscore(self.keys.campaigns_scheduled, "-inf", now):
            if self.redis.zrem(self.keys.campaigns_scheduled, campaign_id):
                self._start(campaign_id, now)
        for campaign_id in self.redis.zrange(self.keys.campaigns, -200, -1):
            meta = self.redis.hmget(
                self.keys.campaign(campaign_id),
                "state",
                "started_at",
                "last_sent_at",
                "stall_alerted",
            )
            state, started, last_sent, alerted = meta
            if state != CampaignState.RUNNING:
                continue
            since = max(float(started or 0), float(last_sent or 0))
            stalled = since and now - since > self.settings.campaign_stall_s
            if stalled and alerted != (last_sent or "-"):
                self.redis.hset(self.keys.campaign(campaign_id), "stall_alerted", last_sent or "-")
                publish_alert(
                    self.redis,
                    self.settings,
                    "",
                    "campaignStalled",
                    f"campaign {campaign_id}: nothing sent for {now - since:.0f}s",
                    state,
                    campaign=campaign_id,
                )

    def _start(self, campaign_id: str, now: float) -> None:
        meta = self._meta(campaign_id)
        if meta["state"] == CampaignState.SCHEDULED:
            self.redis.hset(
                self.keys.campaign(campaign_id),
                mapping={"state": CampaignState.RUNNING.value, "started_at": f"{now:.3f}"},
            )
        elif not (meta["state"] == CampaignState.PAUSED and meta.get("paused_from") == "scheduled"):
            return
        else:  # paused before it started: it starts paused
            self.redis.hset(self.keys.campaign(campaign_id), "paused_from", "running")
        enqueued_at = float(meta.get("start_at") or now)
        for chunk in self._targets(campaign_id):
            self._park(campaign_id, meta, chunk, enqueued_at)
        logger.info("campaign %s started", campaign_id)


def _chunks(items: Iterable[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def _wxid(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 2048 or "\t" in value:
        raise BadInputError(f"a target's wxid must be a non-empty string, got {value!r}")
    return value
