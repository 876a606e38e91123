"""What a worker process needs, built once per process from Settings.

Celery tasks reach it through their app (``runtime_for(task.app)``); library code takes
its parts as arguments. Nothing here connects at import time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import redis

from wxtasks.accounts import AccountStore
from wxtasks.config import Settings
from wxtasks.deadletters import DeadLetters
from wxtasks.gateway.client import GatewayClient
from wxtasks.keys import Keys
from wxtasks.scripts import Scripts


def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        health_check_interval=30,
        socket_keepalive=True,
        retry_on_timeout=True,
    )


@dataclass
class Runtime:
    settings: Settings

    @cached_property
    def redis(self) -> redis.Redis:
        return redis_client(self.settings.redis_url)

    @cached_property
    def keys(self) -> Keys:
        return Keys(self.settings.key_prefix)

    @cached_property
    def scripts(self) -> Scripts:
        return Scripts(self.redis)

    @cached_property
    def accounts(self) -> AccountStore:
        return AccountStore(self.redis, self.settings, scripts=self.scripts)

    @cached_property
    def deadletters(self) -> DeadLetters:
        return DeadLetters(self.redis, self.keys)

    @cached_property
    def gateway(self) -> GatewayClient:
        return GatewayClient.from_settings(self.settings)


def runtime_for(app: Any) -> Runtime:
    """The runtime of this process for a Celery app configured by wxtasks."""
    cached: tuple[int, Runtime] | None = getattr(app, "_wxtasks_runtime", None)
    if cached is None or cached[0] != os.getpid():
        settings = getattr(app, "wxtasks_settings", None) or Settings.from_env()
        cached = (os.getpid(), Runtime(settings))
        app._wxtasks_runtime = cached
    return cached[1]
