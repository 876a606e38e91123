"""Move a Redis from key layout 1 (the release before shards) to layout 2 (``wxtasks migrate``).

Layout 1 named an account's keys ``wx:<kind>:{appId}...`` and kept the outbox in
fleet-wide structures (``wx:outbox:messages``, ``:inflight``, ``:ready:<lane>``, ...);
layout 2 (:mod:`wxtasks.keys`) puts both in the account's shard, ``wx:{s<N>}:...``.
:func:`migrate` renames the per-account keys (RENAME keeps TTLs), splits the fleet-wide
outbox structures per shard, and then marks the layout (:func:`wxtasks.layout.mark`).

Every step is idempotent and works in bounded batches (SCAN / HSCAN / ZSCAN, one small
Lua call per batch), so a run that was killed halfway is finished by running again, and a
run on a migrated Redis changes nothing. It must run with every wxtasks process stopped:
:func:`alive` tells when some still look alive.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from wxtasks import layout, mirrors
from wxtasks.errors import WxTasksError
from wxtasks.keys import LAYOUT_VERSION, Keys, validate_app_id
from wxtasks.scripts import Scripts
from wxtasks.send.gates import to_group
from wxtasks.send.outbox import LANES, Waiting

#: keys or entries handled per round trip
BATCH = 1000

#: per-account keys of layout 1, ``<prefix>:<kind>:{appId}<rest>``: kind -> (what the
#: report calls them, the key's layout-2 name from appId and rest)
_RENAMED: dict[str, tuple[str, Callable[[Keys, str, str], str]]] = {
    "acct": ("accounts", lambda k, a, rest: k.account(a)),
    "bucket": ("buckets", lambda k, a, rest: k.account_bucket(a)),
    "claim": ("claims", lambda k, a, rest: k.claim(a, rest)),
    "seen": ("seen", lambda k, a, rest: k.seen(a, rest)),
    "inbound:seen": ("inbound_seen", lambda k, a, rest: k.inbound_seen(a, rest)),
    "bulkday": ("bulkday", lambda k, a, rest: k.bulk_day(a, rest)),
    "outbox": ("lanes", lambda k, a, rest: k.outbox_lane(a, rest)),
}
#: kinds whose layout-1 key has a ``:<rest>`` after the appId
_WITH_REST = frozenset({"claim", "seen", "inbound:seen", "bulkday", "outbox"})

#: what a report counts, in the order it is shown
COUNTED = (
    *(name for name, _ in _RENAMED.values()),
    "ready",
    "messages",
    "dispatched",
    "held",
    "campaign_of_filled",
    "to_group_filled",
    "orphans_dropped",
    "deadletter_claim_keys",
    "campaign_jitter_filled",
    "unreadable",
)


class MigrateError(WxTasksError):
    """The migration cannot run now (processes alive, or another shard count)."""


@dataclass
class Report:
    """What a run did (or, with ``dry_run``, would do)."""

    #: migrated | already (layout 2 already) | dry-run
    status: str
    shards: int
    dry_run: bool = False
    moved: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTED, 0))


def _old(keys: Keys, kind: str) -> str:
    return f"{keys.prefix}:outbox:{kind}"


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def alive(client: Any, keys: Keys) -> list[str]:
    """What says wxtasks processes are running: the beat's lock (any release's beat), live
    dispatchers (this release's). Empty when none look alive."""
    found = []
    if client.exists(keys.beat_lock):
        found.append(f"the beat's lock {keys.beat_lock} is held")
    now_s, now_us = client.time()
    live = int(client.zcount(keys.dispatchers, f"({now_s * 1000 + now_us // 1000}", "+inf"))
    if live:
        found.append(f"{live} dispatcher(s) alive in {keys.dispatchers}")
    return found


def migrate(client: Any, keys: Keys, *, dry_run: bool = False, force: bool = False) -> Report:
    """Move the Redis behind ``client`` (decode_responses=True) from layout 1 to layout 2
    with ``keys.shards`` shards, then mark it; see the module's docstring."""
    marked = layout.read(client, keys)
    if marked is not None:
        version, shards = marked
        if version == LAYOUT_VERSION and shards == keys.shards:
            return Report("already", keys.shards, dry_run)
        raise MigrateError(
            f"this Redis is marked with layout {version} and {shards} shards; `wxtasks "
            f"migrate` moves layout 1 to layout {LAYOUT_VERSION} only (WXTASKS_SHARDS is "
            f"{keys.shards})"
        )
    running = [] if force else alive(client, keys)
    if running:
        raise MigrateError(
            f"wxtasks processes look alive ({'; '.join(running)}): stop every wxtasks "
            "process first (or pass --force if they are gone)"
        )
    report = Report("dry-run" if dry_run else "migrated", keys.shards, dry_run)
    scripts = None if dry_run else Scripts(client)
    for kind, (name, _) in _RENAMED.items():
        report.moved[name] = _rename(client, keys, scripts, kind)
    report.moved["ready"] = _split_ready(client, keys, scripts)
    _messages(client, keys, scripts, report.moved)
    report.moved["deadletter_claim_keys"] = _deadletter_claims(client, keys, dry_run)
    report.moved["campaign_jitter_filled"] = _campaign_jitter(client, keys, dry_run)
    if not dry_run:
        report.moved["orphans_dropped"] = _drop_orphans(client, keys)
        mirrors.refresh(client, keys, Scripts(client))  # paused campaigns stay paused
        layout.mark(client, keys)
    return report


def _campaign_jitter(client: Any, keys: Keys, dry_run: bool) -> int:
    """Campaigns created before their own spacing had a fleet-wide index
    (``wx:campaigns:jitter``, which the gates read) get their entry from their record."""
    filled = 0
    ids = [str(c) for c in client.zrange(keys.campaigns, 0, -1)]
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        pipe = client.pipeline(transaction=False)
        for campaign_id in chunk:
            pipe.hget(keys.campaign(campaign_id), "jitter")
        jitters = pipe.execute()
        known = client.hmget(keys.campaigns_jitter, chunk)
        missing = {c: j for c, j, k in zip(chunk, jitters, known, strict=True) if j and k is None}
        if missing and not dry_run:
            client.hset(keys.campaigns_jitter, mapping=missing)
        filled += len(missing)
    return filled


def _rename(client: Any, keys: Keys, scripts: Scripts | None, kind: str) -> int:
    """Rename every layout-1 key of ``kind`` (found by SCAN MATCH) to its layout-2 name."""
    prefix = f"{keys.prefix}:{kind}:"
    pattern = _glob_escape(prefix) + "{*}" + (":*" if kind in _WITH_REST else "")
    shape = re.compile(r"\{([^{}]+)\}(?::(.+))?")
    to_new = _RENAMED[kind][1]
    moved = 0
    for batch in _scan(client, pattern):
        pairs: list[str] = []
        for old in batch:
            m = shape.fullmatch(old[len(prefix) :])
            if m is None or (m.group(2) is None) == (kind in _WITH_REST):
                continue  # not a layout-1 key of this kind after all
            pairs += [old, to_new(keys, m.group(1), m.group(2) or "")]
        if scripts is None:
            moved += len(pairs) // 2
        elif pairs:
            moved += int(scripts.migrate_rename(keys=pairs, args=[]))
    return moved


def _scan(client: Any, pattern: str) -> Iterator[list[str]]:
    """Batches of the keys matching ``pattern`` (SCAN: a key renamed meanwhile may come
    twice or not at all, harmless for an idempotent rename)."""
    cursor = 0
    while True:
        cursor, found = client.scan(cursor, match=pattern, count=BATCH)
        if found:
            yield [str(k) for k in found]
        if int(cursor) == 0:
            return


def _split_ready(client: Any, keys: Keys, scripts: Scripts | None) -> int:
    """Split each lane's fleet-wide ready set into its shards' (appId -> due, kept)."""
    moved = 0
    for lane in LANES:
        old = _old(keys, f"ready:{lane.value}")
        if scripts is None:
            moved += int(client.zcard(old))
            continue
        while members := [str(m) for m in client.zrange(old, 0, BATCH - 1)]:
            targets = [keys.outbox_ready(keys.shard(a), lane) for a in members]
            moved += int(scripts.migrate_split(keys=[old, *targets], args=members))
    return moved


def _shard_keys(keys: Keys, shard: int) -> list[str]:
    return [
        keys.outbox_messages(shard),
        keys.outbox_inflight(shard),
        keys.outbox_held(shard),
        keys.outbox_campaign_of(shard),
        keys.outbox_to_group(shard),
    ]


def _old_outbox(keys: Keys) -> list[str]:
    """Layout 1's messages, inflight, held, campaign_of, to_group (as in _shard_keys)."""
    return [_old(keys, kind) for kind in ("messages", "inflight", "held", "campaign_of")] + [
        _old(keys, "to_group")
    ]


def _messages(client: Any, keys: Keys, scripts: Scripts | None, moved: dict[str, int]) -> None:
    """Move every message of the fleet-wide outbox to its shard (HSCAN batches, each moved
    by one atomic script call); a body without a valid appId stays and is counted."""
    old = _old_outbox(keys)
    cursor = 0
    while True:
        cursor, entries = client.hscan(old[0], cursor, count=BATCH)
        batch: list[tuple[str, str, str]] = []  # task id, campaign, "1" | "0"
        new_keys: list[str] = []
        for task_id, body in entries.items():
            parsed = _parse(body)
            if parsed is None:
                moved["unreadable"] += 1
                continue
            waiting, campaign = parsed
            group = to_group(str(waiting.kwargs.get("to_wxid") or ""))
            batch.append((str(task_id), campaign, "1" if group else "0"))
            new_keys += _shard_keys(keys, keys.shard(waiting.app_id))
        if batch and scripts is not None:
            args = [arg for entry in batch for arg in entry]
            counts = scripts.migrate_messages(keys=[*old, *new_keys], args=args)
        elif batch:
            counts = _count_messages(client, old, batch)
        else:
            counts = [0] * 5
        for name, n in zip(
            ("messages", "dispatched", "held", "campaign_of_filled", "to_group_filled"),
            counts,
            strict=True,
        ):
            moved[name] += int(n)
        if int(cursor) == 0:
            return


def _parse(body: str) -> tuple[Waiting, str] | None:
    """A stored message and its campaign, or None when it names no valid appId."""
    try:
        waiting = Waiting.from_body(body)
        validate_app_id(waiting.app_id)
        campaign = str(json.loads(body).get("campaign") or "")
    except (ValueError, TypeError, WxTasksError):
        return None
    return waiting, campaign


def _count_messages(client: Any, old: list[str], batch: list[tuple[str, str, str]]) -> list[int]:
    """What :data:`migrate_messages` would return for ``batch`` (a dry run's counts)."""
    ids = [task_id for task_id, _, _ in batch]
    pipe = client.pipeline(transaction=False)
    pipe.zmscore(old[1], ids)
    pipe.zmscore(old[2], ids)
    pipe.hmget(old[3], ids)
    pipe.smismember(old[4], ids)
    leases, held, campaigns, groups = pipe.execute()
    return [
        len(ids),
        sum(1 for s in leases if s is not None),
        sum(1 for s in held if s is not None),
        sum(1 for (_, c, _), known in zip(batch, campaigns, strict=True) if c and not known),
        sum(1 for (_, _, g), known in zip(batch, groups, strict=True) if g == "1" and not known),
    ]


def _drop_orphans(client: Any, keys: Keys) -> int:
    """Remove what is left in layout 1's inflight, held, campaign_of and to_group once the
    messages moved: entries of messages that ended (no body), which nothing reads."""
    messages, *others = _old_outbox(keys)
    dropped = 0
    for key in others:
        kind = client.type(key)
        if kind == "zset":
            members = [str(m) for m, _ in client.zscan_iter(key, count=BATCH)]
        elif kind == "hash":
            members = [str(m) for m, _ in client.hscan_iter(key, count=BATCH)]
        elif kind == "set":
            members = [str(m) for m in client.sscan_iter(key, count=BATCH)]
        else:
            continue
        for start in range(0, len(members), BATCH):
            chunk = members[start : start + BATCH]
            bodies = client.hmget(messages, chunk)
            gone = [m for m, body in zip(chunk, bodies, strict=True) if body is None]
            if gone:
                remove = {"zset": client.zrem, "hash": client.hdel, "set": client.srem}[kind]
                dropped += int(remove(key, *gone))
    return dropped


def _deadletter_claims(client: Any, keys: Keys, dry_run: bool) -> int:
    """Rename the send claim an ``unknown`` dead letter names (``claim_key``, which a
    requeue drops): the claim itself moved to its layout-2 name."""
    shape = re.compile(re.escape(f"{keys.prefix}:claim:") + r"\{([^{}]+)\}:(.+)")
    renamed = 0
    cursor = 0
    while True:
        cursor, entries = client.hscan(keys.deadletters, cursor, count=BATCH)
        pipe = client.pipeline(transaction=False)
        for task_id, raw in entries.items():
            try:
                entry = json.loads(raw)
                m = shape.fullmatch(str(entry.get("claim_key") or ""))
            except (ValueError, AttributeError):
                continue
            if m is None:
                continue
            renamed += 1
            entry["claim_key"] = keys.claim(m.group(1), m.group(2))
            pipe.hset(keys.deadletters, task_id, json.dumps(entry, ensure_ascii=False))
        if not dry_run:
            pipe.execute()
        if int(cursor) == 0:
            return renamed
