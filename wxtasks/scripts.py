"""The Lua scripts in ``wxtasks/lua/``, registered once per Redis client.

Each ``.lua`` file starts with its KEYS / ARGV / returns header. ``Scripts(client)`` wraps
them in redis-py ``Script`` objects, which run by SHA and reload on NOSCRIPT; pass
``client=pipe`` to run one inside a pipeline.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import redis
from redis.commands.core import Script

_NAMES = (
    "admit",
    "claim_record",
    "claim_release",
    "heartbeat_ok",
    "hset_existing",
    "inbound_claim",
    "register",
    "sweep_schedule",
    "transition",
)


@cache
def _source(name: str) -> str:
    return (resources.files("wxtasks") / "lua" / f"{name}.lua").read_text(encoding="utf-8")


class Scripts:
    admit: Script
    claim_record: Script
    claim_release: Script
    heartbeat_ok: Script
    hset_existing: Script
    inbound_claim: Script
    register: Script
    sweep_schedule: Script
    transition: Script

    def __init__(self, client: redis.Redis) -> None:
        for name in _NAMES:
            setattr(self, name, client.register_script(_source(name)))
