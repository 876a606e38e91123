"""The Lua scripts in ``wxtasks/lua/``, registered once per Redis client.

Each ``.lua`` file starts with its KEYS / ARGV / returns header. ``Scripts(client)`` wraps
them in redis-py ``Script`` objects, which run by SHA and reload on NOSCRIPT; pass
``client=pipe`` to run one inside a pipeline.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

import redis
from redis.commands.core import Script

_NAMES = (
    "admit",
    "borrow",
    "breaker_trip",
    "bucket_levels",
    "campaign_add",
    "campaign_unhold",
    "claim_release",
    "dispatch",
    "dispatchers",
    "due",
    "finish",
    "gateway_health",
    "heartbeat_ok",
    "hset_existing",
    "inbound_claim",
    "lease",
    "login_attempt",
    "mirror",
    "migrate_messages",
    "migrate_rename",
    "migrate_split",
    "outbox_cancel",
    "park",
    "register",
    "sweep_schedule",
    "take_due",
    "transition",
)


#: a script whose header has ``-- uses: <lib>`` gets ``lua/lib/<lib>.lua`` put in front
_USES = re.compile(r"^-- uses: (\w+)$", re.MULTILINE)


@cache
def _source(name: str) -> str:
    text = _read(name)
    libs = _USES.findall(text)
    return "".join(_read(f"lib/{lib}") + "\n" for lib in libs) + text


def _read(name: str) -> str:
    return (resources.files("wxtasks") / "lua" / f"{name}.lua").read_text(encoding="utf-8")


class Scripts:
    admit: Script
    borrow: Script
    breaker_trip: Script
    bucket_levels: Script
    campaign_add: Script
    campaign_unhold: Script
    claim_release: Script
    dispatch: Script
    dispatchers: Script
    due: Script
    finish: Script
    gateway_health: Script
    heartbeat_ok: Script
    hset_existing: Script
    inbound_claim: Script
    lease: Script
    login_attempt: Script
    mirror: Script
    migrate_messages: Script
    migrate_rename: Script
    migrate_split: Script
    outbox_cancel: Script
    park: Script
    register: Script
    sweep_schedule: Script
    take_due: Script
    transition: Script

    def __init__(self, client: redis.Redis) -> None:
        for name in _NAMES:
            setattr(self, name, client.register_script(_source(name)))
