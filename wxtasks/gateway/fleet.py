"""One process's view of the gateways: which serves an account, a pooled client per
gateway, and each gateway's health.

What this process remembers is a cache, never the truth: admission uses its last guess
and checks the account's ``gateway`` field inside its one Lua round trip, answering
``regateway`` when the guess was wrong (then, and only then, it asks again); the dispatcher
reads the field before each call and its script checks it too. Registry records (base
URL, profile, limits) are re-read after ``CACHE_TTL_S``; a client is rebuilt when its
record changed.

Health: every call that did not reach a gateway (refused, 503, connect timeout; a probe's
read timeout too) is counted in Redis by ``gateway_health.lua``; after
``WXTASKS_GATEWAY_DOWN_FAILURES`` in a row over at least ``WXTASKS_GATEWAY_DOWN_AFTER_S``
the gateway is marked down (``wx:gateways:down``). The first answer after that marks it up.
Exactly one caller sees each edge; :class:`wxtasks.accounts.lifecycle.Lifecycle` raises the
alert and brings the gateway's accounts back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from wxtasks import mirrors
from wxtasks.config import Settings
from wxtasks.errors import ConfigError, GatewayAuthError
from wxtasks.gateway.client import GatewayClient
from wxtasks.gateway.registry import DEFAULT, Gateway, GatewayRegistry, token_of
from wxtasks.keys import Keys
from wxtasks.scripts import Scripts

logger = logging.getLogger(__name__)

#: how long this process trusts what it read about an account's gateway or a record
CACHE_TTL_S = 5.0
#: how long this process trusts the set of gateways marked down
HEALTH_TTL_S = 1.0


class Fleet:
    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        keys: Keys,
        scripts: Scripts,
        registry: GatewayRegistry,
        *,
        default_client: GatewayClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``default_client``: the environment's gateway's client (built from Settings when
        first used if none is given: the fleet's job is one pooled client per gateway)."""
        self.redis = client
        self.settings = settings
        self.keys = keys
        self.scripts = scripts
        self.registry = registry
        self.clock = clock
        self._lock = threading.Lock()
        self._of: dict[str, tuple[str, float]] = {}
        self._specs: dict[str, tuple[Gateway, float]] = {}
        self._clients: dict[str, tuple[Gateway, GatewayClient]] = {}
        self._default = Gateway.default(settings)
        if default_client is not None:
            self._clients[DEFAULT] = (self._default, default_client)
        self._down: tuple[frozenset[str], float] = (frozenset(), 0.0)
        #: gateways this process saw fail lately: their next answer resets the count
        self._failing: set[str] = set()

    # -- which gateway -------------------------------------------------------------------

    def gateway_of(self, app_id: str) -> str:
        """The gateway serving ``app_id`` as this process last read it (``default`` when
        the account names none, or is not registered)."""
        now = time.monotonic()
        hit = self._of.get(app_id)
        if hit is not None and hit[1] > now:
            return hit[0]
        name = self.redis.hget(self.keys.account(app_id), "gateway")
        return self.remember(app_id, _s(name) if name else DEFAULT)

    def guess(self, app_id: str) -> str:
        """The gateway this process last saw serving ``app_id`` however long ago, else
        ``default``; no round trip. For callers that check it in Redis anyway (admission
        answers ``regateway`` when it is wrong), so a stale guess costs one more trip."""
        hit = self._of.get(app_id)
        return hit[0] if hit is not None else DEFAULT

    def remember(self, app_id: str, name: str) -> str:
        if len(self._of) > 100_000:
            self._of.clear()
        self._of[app_id] = (name, time.monotonic() + CACHE_TTL_S)
        return name

    def gateways_of(self, app_ids: list[str]) -> dict[str, str]:
        """appId -> gateway, read now in one round trip (the dispatcher's per-call read)."""
        pipe = self.redis.pipeline(transaction=False)
        for app_id in app_ids:
            pipe.hget(self.keys.account(app_id), "gateway")
        out = {}
        for app_id, name in zip(app_ids, pipe.execute() if app_ids else [], strict=True):
            out[app_id] = self.remember(app_id, _s(name) if name else DEFAULT)
        return out

    def spec(self, name: str) -> Gateway:
        """The gateway's record (UnknownGatewayError when it is not registered)."""
        if name == DEFAULT:
            return self._default
        now = time.monotonic()
        hit = self._specs.get(name)
        if hit is not None and hit[1] > now:
            return hit[0]
        spec = self.registry.get(name)
        self._specs[name] = (spec, now + CACHE_TTL_S)
        return spec

    def limits(self, name: str) -> tuple[float, int]:
        """(rate, burst) of the gateway's bucket; an unknown gateway gets the defaults.
        (0, 0) when it is no tighter than the fleet's bucket: a gateway's sends are a part
        of the fleet's, so such a bucket could never hold one back, and admission skips it."""
        try:
            spec = self.spec(name)
            rate, burst = spec.rate, spec.burst
        except LookupError:
            rate, burst = self.settings.gateway_rate_per_second, self.settings.gateway_burst
        if rate >= self.settings.rate_per_second and burst >= self.settings.burst:
            return 0.0, 0
        return rate, burst

    def client(self, name: str) -> GatewayClient:
        """A pooled client for gateway ``name``, with its token (read from the environment
        or the secrets directory when the client is built, never stored)."""
        spec = self.spec(name)
        with self._lock:
            held = self._clients.get(name)
            if held is not None and _same_endpoint(held[0], spec):
                return held[1]
            try:
                token = token_of(spec, self.settings)
            except ConfigError as exc:
                # a send or probe with no token is the token being refused: said, not retried
                raise GatewayAuthError(str(exc), operation="token") from None
            client = GatewayClient(
                spec.base_url, token, spec.profile, timeout_s=self.settings.gateway_timeout_s
            )
            if held is not None:
                held[1].close()
            self._clients[name] = (spec, client)
            return client

    def client_for(self, app_id: str) -> GatewayClient:
        return self.client(self.gateway_of(app_id))

    def close(self) -> None:
        with self._lock:
            for _, client in self._clients.values():
                client.close()
            self._clients.clear()

    # -- health --------------------------------------------------------------------------

    def down(self) -> frozenset[str]:
        """The gateways marked down (read at most every ``HEALTH_TTL_S``)."""
        names, until = self._down
        now = time.monotonic()
        if until > now:
            return names
        fresh = frozenset(_s(n) for n in self.redis.smembers(self.keys.gateways_down))
        self._down = (fresh, now + HEALTH_TTL_S)
        return fresh

    def is_down(self, name: str) -> bool:
        return name in self.down()

    def failed(self, name: str, error: str, count: int = 1) -> str:
        """Count ``count`` calls that did not reach ``name``; "down" when this marked it
        down."""
        self._failing.add(name)
        s = self.settings
        edge = _s(
            self.scripts.gateway_health(
                keys=[self.keys.gateway_health(name), self.keys.gateways_down],
                args=[
                    name,
                    "fail",
                    f"{self.clock():.3f}",
                    s.gateway_down_failures,
                    s.gateway_down_after_s,
                    error[:300],
                    count,
                ],
            )
        )
        if edge == "down":
            self._down = (self._down[0] | {name}, self._down[1])
            mirrors.refresh(self.redis, self.keys, self.scripts)  # every shard holds it now
        return edge

    def answered(self, name: str, *, force: bool = False) -> str:
        """The gateway answered: "up" when this marked it up again. Costs a round trip only
        when it is down or this process saw it fail lately (``force``: always)."""
        if not force and name not in self._failing and name not in self.down():
            return ""
        self._failing.discard(name)
        edge = _s(
            self.scripts.gateway_health(
                keys=[self.keys.gateway_health(name), self.keys.gateways_down],
                args=[name, "ok", f"{self.clock():.3f}", 1, 0, "", 0],
            )
        )
        if edge == "up":
            self._down = (self._down[0] - {name}, self._down[1])
            mirrors.refresh(self.redis, self.keys, self.scripts)
        return edge

    def health(self, name: str) -> dict[str, Any]:
        """What operators see: down since, failures in a row, the last error."""
        h = {_s(k): _s(v) for k, v in self.redis.hgetall(self.keys.gateway_health(name)).items()}
        return {
            "down": "down_since" in h,
            "down_since": float(h["down_since"]) if h.get("down_since") else None,
            "failures": int(h.get("failures") or 0),
            "last_error": h.get("last_error", ""),
        }

    def take_probe_slot(self, name: str) -> bool:
        """True for one caller per probe interval, fleet-wide: it may probe the down gateway."""
        ms = int(self.settings.gateway_probe_interval_s * 1000)
        return bool(self.redis.set(self.keys.gateway_probe(name), "1", nx=True, px=ms))


def _same_endpoint(a: Gateway, b: Gateway) -> bool:
    return (a.base_url, a.profile, a.token_env) == (b.base_url, b.profile, b.token_env)


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)
