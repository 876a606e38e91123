"""The audit trail: who changed what, to which object, when and from where.

Every state-changing console action and CLI command appends one entry to the events stream
(``wx:events``, beside the transitions and alerts) with ``kind=audit`` and:

=========  ==================================================================================
field      meaning
=========  ==================================================================================
user       the console user, or the OS user who ran the CLI command
via        ``console`` or ``cli``
action     what was done: ``campaign.cancel``, ``deadletter.purge``, ``account.reset``, ...
object     what it was done to: ``account:<appId>``, ``campaign:<id>``, ``task:<id>``,
           ``gateway:<name>``, ``deadletters`` (all of them), ``session``
app_id     the appId, when the object is an account (so the account's events show it)
from       the client address (console) or the host name (CLI)
detail     a short note (new options, the new task id, ...); never a password, token or secret
at         unix time
=========  ==================================================================================

``wxtasks events`` prints them; the console's Activity page filters them by user and
object. The stream is capped (``WXTASKS_EVENTS_MAXLEN``), so each entry is also logged
(``audit ...`` at INFO) for a log pipeline to keep.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

import redis

from wxtasks.config import Settings
from wxtasks.keys import Keys

logger = logging.getLogger(__name__)

AUDIT = "audit"
DETAIL_MAX = 300


@dataclass(frozen=True)
class Actor:
    """Who acts: a user, through the console or the CLI, from an address or a host."""

    user: str
    via: str
    source: str


def cli_actor() -> Actor:
    """The OS user running this command (from the password database, not the
    environment), on this host."""
    try:
        import pwd

        user = pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        user = f"uid:{os.geteuid()}" if hasattr(os, "geteuid") else "unknown"
    return Actor(user, "cli", socket.gethostname())


def record(
    client: redis.Redis,
    settings: Settings,
    actor: Actor,
    action: str,
    kind: str,
    object_id: str = "",
    detail: str = "",
) -> str:
    """Append one audit entry; returns its stream id. ``kind`` is the object's kind
    (``account``, ``campaign``, ``task``, ``gateway``, ``deadletters``, ``session``)."""
    obj = f"{kind}:{object_id}" if object_id else kind
    if len(detail) > DETAIL_MAX:
        detail = detail[: DETAIL_MAX - 1] + "…"
    entry = {
        "kind": AUDIT,
        "user": actor.user,
        "via": actor.via,
        "action": action,
        "object": obj,
        "from": actor.source,
        "detail": detail,
        "at": f"{time.time():.3f}",
    }
    if kind == "account" and object_id:
        entry["app_id"] = object_id
    stream_id: Any = client.xadd(
        Keys(settings.key_prefix).events,
        entry,  # type: ignore[arg-type]
        maxlen=settings.events_maxlen,
        approximate=True,
    )
    where = f" appId={object_id}" if kind == "account" and object_id else ""
    logger.info(
        "audit %s %s by %s via %s from %s%s%s",
        action,
        obj,
        actor.user,
        actor.via,
        actor.source,
        where,
        f": {detail}" if detail else "",
    )
    return stream_id.decode() if isinstance(stream_id, bytes) else str(stream_id)


def matches(event: dict[str, str], user: str = "", obj: str = "") -> bool:
    """An audit entry by ``user`` (exactly) about ``obj`` (a part of its object: an id,
    ``campaign:spring``, ...); empty filters match everything."""
    return (
        event.get("kind") == AUDIT
        and (not user or event.get("user") == user)
        and (not obj or obj in event.get("object", ""))
    )


def read_audit(
    client: redis.Redis,
    settings: Settings,
    *,
    user: str = "",
    obj: str = "",
    count: int = 100,
    page: int = 1000,
) -> list[dict[str, str]]:
    """The newest ``count`` audit entries that match, newest first (the stream is read
    backwards in pages until enough are found or it ends)."""
    from wxtasks.events import stream_entry

    key = Keys(settings.key_prefix).events
    found: list[dict[str, str]] = []
    end = "+"
    while len(found) < count:
        raw: Any = client.xrevrange(key, max=end, count=page)
        if not raw:
            break
        for stream_id, fields in raw:
            event = stream_entry(stream_id, fields)
            if matches(event, user, obj):
                found.append(event)
                if len(found) == count:
                    break
        if len(raw) < page:
            break
        last = stream_entry(raw[-1][0], {})["id"]
        end = "(" + last
    return found
