"""The composition root: every per-process object wxtasks uses, built once from Settings.

A worker's tasks reach their process's Runtime as ``self.rt`` (the task base class,
:class:`wxtasks.tasks.base.WxTask`), the beat scheduler through :func:`runtime_for`; the
CLI, the metrics exporter, the callback receiver and ``wxtasks dev`` build one from
``Settings.from_env()``. Library code takes the parts it needs as arguments and never
builds them itself. Nothing here connects at import time: each part is built on first use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import redis
from celery import Celery

from wxtasks.accounts import AccountStore
from wxtasks.breaker import Breaker
from wxtasks.campaigns import Campaigns
from wxtasks.celeryconf import configure
from wxtasks.config import Settings
from wxtasks.deadletters import DeadLetters
from wxtasks.gateway.client import GatewayClient
from wxtasks.inbound import Handler, InboundStore, load_handlers
from wxtasks.keys import Keys
from wxtasks.lifecycle import Lifecycle
from wxtasks.outbox import Outbox
from wxtasks.scripts import Scripts
from wxtasks.sending import SendPipeline


def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        health_check_interval=30,
        socket_keepalive=True,
        retry_on_timeout=True,
    )


def redis_answers(url: str, timeout_s: float = 0.5) -> bool:
    """True when a Redis answers PING at ``url`` within ``timeout_s``."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        return bool(client.ping())
    except (
        redis.ConnectionError,
        redis.TimeoutError,
        redis.AuthenticationError,
        redis.ResponseError,
    ):
        return False
    finally:
        client.close()


@dataclass
class Runtime:
    """One process's objects, each built on first use and then kept."""

    settings: Settings
    #: the Celery app tasks are sent with: a worker's own app, or None for a producer-only
    #: app configured from ``settings`` (the CLI, metrics, callbacks, ``wxtasks dev``)
    app: Celery | None = None
    #: the process this runtime belongs to (a forked pool child builds its own)
    pid: int = field(default_factory=os.getpid)

    @cached_property
    def celery(self) -> Celery:
        if self.app is not None:
            return self.app
        return configure(Celery("wxtasks-producer"), self.settings)

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

    @cached_property
    def lifecycle(self) -> Lifecycle:
        return Lifecycle(self.redis, self.settings, self.accounts, self.gateway, self.dispatch)

    @cached_property
    def outbox(self) -> Outbox:
        return Outbox(self.redis, self.settings, self.keys, self.scripts)

    @cached_property
    def breaker(self) -> Breaker:
        return Breaker(self.redis, self.settings, self.keys, self.scripts, self.lifecycle.alert_by)

    @cached_property
    def campaigns(self) -> Campaigns:
        return Campaigns(self.redis, self.settings, self.keys, self.scripts, self.outbox)

    @cached_property
    def pipeline(self) -> SendPipeline:
        return SendPipeline(
            self.redis, self.settings, self.gateway, self.scripts, outbox=self.outbox
        )

    @cached_property
    def inbound(self) -> InboundStore:
        return InboundStore(self.redis, self.settings, self.scripts)

    @cached_property
    def handlers(self) -> list[tuple[str, Handler]]:
        """The message handlers (WXTASKS_MESSAGE_HANDLERS, then entry points), loaded once."""
        return load_handlers(self.settings)

    def dispatch(
        self,
        task: str,
        kwargs: dict[str, Any],
        countdown: float | None = None,
        expires: float | None = None,
    ) -> None:
        """Send a task by name (the lifecycle's way of scheduling its next step)."""
        self.celery.send_task(task, kwargs=kwargs, countdown=countdown, expires=expires)


def runtime_for(app: Celery) -> Runtime:
    """This process's Runtime for a Celery app configured by wxtasks: one per app and
    process, built on first use (in a prefork pool, in each child)."""
    rt: Runtime | None = getattr(app, "wxtasks_runtime", None)
    if rt is None or rt.pid != os.getpid():
        settings = getattr(app, "wxtasks_settings", None) or Settings.from_env()
        rt = Runtime(settings, app)
        app.wxtasks_runtime = rt
    return rt
