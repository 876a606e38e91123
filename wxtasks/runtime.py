"""The composition root: every per-process object wxtasks uses, built once from Settings.

A worker's tasks reach their process's Runtime as ``self.rt`` (the task base class,
:class:`wxtasks.tasks.base.WxTask`), the beat scheduler through :func:`runtime_for`; the
CLI, the metrics exporter, the callback receiver and ``wxtasks dev`` build one from
``Settings.from_env()``. Library code takes the parts it needs as arguments and never
builds them itself. Nothing here connects at import time: each part is built on first use.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from wxtasks.config import SENTINEL_SCHEME, Settings, parse_sentinel_url
from wxtasks.keys import Keys

# Every part is imported where it is built: a CLI command that lists accounts never
# imports Celery, kombu or requests (`python bench/cli_latency.py`).
if TYPE_CHECKING:
    import redis
    from celery import Celery

    from wxtasks.accounts.lifecycle import Lifecycle
    from wxtasks.accounts.store import AccountStore
    from wxtasks.campaigns.store import Campaigns
    from wxtasks.gateway.client import GatewayClient
    from wxtasks.gateway.fleet import Fleet
    from wxtasks.gateway.registry import GatewayRegistry
    from wxtasks.inbound.messages import Handler, InboundStore
    from wxtasks.scripts import Scripts
    from wxtasks.send.breaker import Breaker
    from wxtasks.send.deadletters import DeadLetters
    from wxtasks.send.dispatcher import Dispatched, Dispatcher
    from wxtasks.send.outbox import Outbox
    from wxtasks.send.outcome import Endings
    from wxtasks.send.pacing import Policy
    from wxtasks.send.pipeline import SendPipeline


def redis_client(url: str, **options: Any) -> redis.Redis:
    """A client for ``url``: ``redis://``, ``rediss://``, ``unix://``, or
    ``redis+sentinel://[:password@]host1:26379,host2:26379/<master name>/<db>``, which asks
    the sentinels for the current primary and asks again after a failover (a connection
    error, or the old primary answering READONLY)."""
    import redis

    params: dict[str, Any] = {
        "decode_responses": True,
        "health_check_interval": 30,
        "socket_keepalive": True,
        "retry_on_timeout": True,
        **options,
    }
    if urlsplit(url).scheme != SENTINEL_SCHEME:
        return redis.Redis.from_url(url, **params)
    from redis.sentinel import Sentinel

    from wxtasks.worker.celeryconf import SENTINEL_SOCKET_TIMEOUT_S

    spec = parse_sentinel_url(url)
    params.setdefault("socket_timeout", SENTINEL_SOCKET_TIMEOUT_S)
    params.setdefault("socket_connect_timeout", 2.0)
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(spec.sentinels),
        sentinel_kwargs={"socket_timeout": 1.0, "socket_connect_timeout": 1.0},
        password=spec.password,
        db=spec.db,
        **params,
    )
    client: redis.Redis = sentinel.master_for(spec.master)  # type: ignore[no-untyped-call]
    return client


def redis_answers(url: str, timeout_s: float = 0.5) -> bool:
    """True when a Redis answers PING at ``url`` within ``timeout_s``."""
    import redis
    from redis.sentinel import MasterNotFoundError

    try:
        client = redis_client(
            url,
            decode_responses=False,
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s,
            retry_on_timeout=False,
        )
    except ValueError:
        return False
    try:
        return bool(client.ping())
    except (
        redis.ConnectionError,
        redis.TimeoutError,
        redis.AuthenticationError,
        redis.ResponseError,
        MasterNotFoundError,
    ):
        return False
    finally:
        client.close()


@dataclass
class Runtime:
    """One process's objects, each built on first use and then kept; :meth:`close`
    releases its pools and connections."""

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
        from celery import Celery

        from wxtasks.worker.celeryconf import configure

        return configure(Celery("wxtasks-producer"), self.settings)

    @cached_property
    def redis(self) -> redis.Redis:
        return redis_client(self.settings.redis_url)

    @cached_property
    def keys(self) -> Keys:
        return Keys(self.settings.key_prefix, self.settings.shards)

    @cached_property
    def scripts(self) -> Scripts:
        from wxtasks.scripts import Scripts

        return Scripts(self.redis)

    @cached_property
    def accounts(self) -> AccountStore:
        from wxtasks.accounts.store import AccountStore

        return AccountStore(self.redis, self.settings, self.keys, self.scripts)

    @cached_property
    def deadletters(self) -> DeadLetters:
        from wxtasks.send.deadletters import DeadLetters

        return DeadLetters(self.redis, self.keys)

    @cached_property
    def gateways(self) -> GatewayRegistry:
        """The gateway registry (``default`` from the environment, the rest in Redis)."""
        from wxtasks.gateway.registry import GatewayRegistry

        return GatewayRegistry(self.redis, self.settings, self.keys)

    @cached_property
    def fleet(self) -> Fleet:
        """Which gateway serves each account, one pooled client per gateway, health."""
        from wxtasks.gateway.fleet import Fleet

        return Fleet(self.redis, self.settings, self.keys, self.scripts, self.gateways)

    @property
    def gateway(self) -> GatewayClient:
        """The ``default`` gateway's client (the environment's)."""
        from wxtasks.gateway.registry import DEFAULT

        return self.fleet.client(DEFAULT)

    def gateway_for(self, app_id: str) -> GatewayClient:
        """The client of the gateway serving ``app_id``."""
        return self.fleet.client_for(app_id)

    @cached_property
    def lifecycle(self) -> Lifecycle:
        from wxtasks.accounts.lifecycle import Lifecycle

        return Lifecycle(
            self.redis, self.settings, self.keys, self.accounts, self.fleet, self.enqueue
        )

    @cached_property
    def pacing(self) -> Policy:
        """The fleet's bulk pacing defaults, as the gates take them."""
        from wxtasks.send.pacing import Policy

        return Policy(self.settings)

    @cached_property
    def outbox(self) -> Outbox:
        from wxtasks.send.outbox import Outbox

        return Outbox(self.redis, self.keys, self.scripts)

    @cached_property
    def endings(self) -> Endings:
        """The one place a message's ending is written."""
        from wxtasks.send.outcome import Endings

        return Endings(
            self.redis,
            self.settings,
            self.keys,
            self.scripts,
            self.store_result,
            lambda campaign_id: self.campaigns.complete(campaign_id),
            self.fleet.guess,
        )

    @cached_property
    def breaker(self) -> Breaker:
        from wxtasks.send.breaker import Breaker

        return Breaker(self.redis, self.settings, self.keys, self.scripts, self.lifecycle.alert_by)

    @cached_property
    def campaigns(self) -> Campaigns:
        from wxtasks.campaigns.store import Campaigns

        return Campaigns(
            self.redis,
            self.settings,
            self.keys,
            self.scripts,
            self.outbox,
            self.endings,
            self.store_result,
        )

    @cached_property
    def pipeline(self) -> SendPipeline:
        from wxtasks.send.pipeline import SendPipeline

        return SendPipeline(
            self.redis, self.settings, self.keys, self.scripts, self.fleet, self.pacing
        )

    def dispatcher(
        self,
        publish: Callable[[list[Dispatched]], None],
        clock: Callable[[], float] | None = None,
        me: str | None = None,
    ) -> Dispatcher:
        """A dispatcher of this process's outbox that hands what it takes to ``publish``;
        it takes its share of the shards (leases) at its first tick. ``me``: its id."""
        from wxtasks.send.dispatcher import Dispatcher
        from wxtasks.send.leases import ShardLeases

        leases = ShardLeases(self.redis, self.keys, self.scripts, me)
        return Dispatcher(
            self.settings, self.outbox, self.fleet, self.pacing, publish, leases, clock=clock
        )

    @cached_property
    def inbound(self) -> InboundStore:
        from wxtasks.inbound.messages import InboundStore

        return InboundStore(self.redis, self.settings, self.keys, self.scripts)

    @cached_property
    def handlers(self) -> list[tuple[str, Handler]]:
        """The message handlers (WXTASKS_MESSAGE_HANDLERS, then entry points), loaded once."""
        from wxtasks.inbound.messages import load_handlers

        return load_handlers(self.settings)

    def enqueue(
        self,
        task: str,
        kwargs: dict[str, Any],
        countdown: float | None = None,
        expires: float | None = None,
    ) -> None:
        """Send a task by name (the lifecycle's way of scheduling its next step)."""
        self.celery.send_task(task, kwargs=kwargs, countdown=countdown, expires=expires)

    def store_result(self, task_id: str, result: dict[str, Any]) -> None:
        """Write a task's result to the result backend (an ending no task returns)."""
        self.celery.backend.store_result(task_id, result, "SUCCESS")

    def close(self) -> None:
        """Release what was built: the gateways' HTTP pools, the Redis pool, the producer
        app's broker pool (a worker's own app is the worker's to close)."""
        built = self.__dict__
        if "fleet" in built:
            self.fleet.close()
        if "lifecycle" in built:
            self.lifecycle.close()
        if "redis" in built:
            self.redis.close()
        if "celery" in built and self.app is None:
            self.celery.close()


def runtime_for(app: Celery) -> Runtime:
    """This process's Runtime for a Celery app configured by wxtasks: one per app and
    process, built on first use (in a prefork pool, in each child)."""
    rt: Runtime | None = getattr(app, "wxtasks_runtime", None)
    if rt is None or rt.pid != os.getpid():
        settings = getattr(app, "wxtasks_settings", None) or Settings.from_env()
        rt = Runtime(settings, app)
        app.wxtasks_runtime = rt
    return rt


def close_runtime(app: Celery) -> None:
    """Close this process's Runtime for ``app``, if it built one."""
    rt: Runtime | None = getattr(app, "wxtasks_runtime", None)
    if rt is not None and rt.pid == os.getpid():
        rt.close()
        app.wxtasks_runtime = None
