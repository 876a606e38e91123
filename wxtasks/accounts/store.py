"""The account registry in Redis, and atomic state transitions.

Any process can register, read, update and remove accounts; all of them see the same
records. A transition reads the account, asks :func:`wxtasks.accounts.machine.decide` for the next
state, and writes it with one compare-and-set on the record's version (``transition.lua``),
which also appends the change to the events stream. When two processes race on the same
edge, exactly one write lands; the loser re-reads and finds the edge already taken.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import redis

from wxtasks.accounts.machine import Decision, Event, Policy, Snapshot, State, decide
from wxtasks.config import Settings
from wxtasks.errors import BadInputError, TransitionRefused, UnknownAccountError
from wxtasks.keys import Keys, validate_app_id, validate_gateway_name
from wxtasks.scripts import Scripts

logger = logging.getLogger(__name__)

_CAS_ATTEMPTS = 16


@dataclass(frozen=True)
class Account:
    app_id: str
    state: State
    version: int
    retry_count: int = 0
    rate: float | None = None
    burst: int | None = None
    note: str = ""
    tags: tuple[str, ...] = ()
    created_at: float = 0.0
    state_since: float = 0.0
    last_heartbeat_at: float | None = None
    next_attempt_at: float | None = None
    login_started_at: float | None = None
    last_error: str = ""
    wxid: str = ""
    nick_name: str = ""
    #: the gateway serving the account (``default``: the environment's)
    gateway: str = "default"
    extra: dict[str, str] = field(default_factory=dict, compare=False)

    @classmethod
    def from_hash(cls, app_id: str, h: dict[str, str]) -> Account:
        return cls(
            app_id=app_id,
            state=State(h.get("state", "IDLE")),
            version=int(h.get("version", "0")),
            retry_count=int(h.get("retry_count") or 0),
            rate=_float(h.get("rate")),
            burst=_int(h.get("burst")),
            note=h.get("note", ""),
            tags=tuple(json.loads(h["tags"])) if h.get("tags") else (),
            created_at=_float(h.get("created_at")) or 0.0,
            state_since=_float(h.get("state_since")) or 0.0,
            last_heartbeat_at=_float(h.get("last_heartbeat_at")),
            next_attempt_at=_float(h.get("next_attempt_at")),
            login_started_at=_float(h.get("login_started_at")),
            last_error=h.get("last_error", ""),
            wxid=h.get("wxid", ""),
            nick_name=h.get("nick_name", ""),
            gateway=h.get("gateway") or "default",
        )

    def snapshot(self) -> Snapshot:
        return Snapshot(
            self.app_id,
            self.state,
            self.version,
            self.retry_count,
            self.state_since,
            self.next_attempt_at or 0.0,
            self.login_started_at or 0.0,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "app_id": self.app_id,
            "state": self.state.value,
            "version": self.version,
            "retry_count": self.retry_count,
            "rate": self.rate,
            "burst": self.burst,
            "note": self.note,
            "tags": list(self.tags),
            "created_at": self.created_at,
            "state_since": self.state_since,
            "last_heartbeat_at": self.last_heartbeat_at,
            "next_attempt_at": self.next_attempt_at,
            "last_error": self.last_error,
            "wxid": self.wxid,
            "nick_name": self.nick_name,
            "gateway": self.gateway,
        }


def policy_from(settings: Settings) -> Policy:
    return Policy(
        max_retry=settings.max_retry,
        backoff_base_s=settings.backoff_base_s,
        backoff_max_s=settings.backoff_max_s,
        error_retry_interval_s=settings.error_retry_interval_s,
        login_qr_ttl_s=settings.login_qr_ttl_s,
        heartbeat_interval_s=settings.heartbeat_interval_s,
    )


class AccountStore:
    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        keys: Keys,
        scripts: Scripts,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = client
        self.settings = settings
        self.keys = keys
        self.scripts = scripts
        self.policy = policy_from(settings)
        self.clock = clock

    # -- registry ------------------------------------------------------------------------

    def register(
        self,
        app_id: str,
        *,
        rate: float | None = None,
        burst: int | None = None,
        note: str | None = None,
        tags: Iterable[str] | None = None,
        pacing: Mapping[str, str] | None = None,
        gateway: str | None = None,
    ) -> tuple[Account, bool]:
        """Register ``app_id`` (IDLE, heartbeat scheduled); an existing one gets the options.
        ``gateway``: the registered gateway serving it (default: ``default``).

        Returns the account and whether it was new.
        """
        validate_app_id(app_id)
        options = {**_options(rate, burst, note, tags), **pacing_options(pacing)}
        if gateway is not None:
            options["gateway"] = self._known_gateway(gateway)
        now = self.clock()
        # the first heartbeat is spread over one interval, so thousands never align
        first_due = now + random.uniform(0, self.settings.heartbeat_interval_s)
        created = self.scripts.register(
            keys=[self.keys.account(app_id), self.keys.heartbeat_schedule, self.keys.accounts],
            args=[
                app_id,
                f"{first_due:.3f}",
                f"{now:.3f}",
                *[x for kv in options.items() for x in kv],
            ],
        )
        return self.get(app_id), bool(created)

    def update(
        self,
        app_id: str,
        *,
        rate: float | None = None,
        burst: int | None = None,
        note: str | None = None,
        tags: Iterable[str] | None = None,
        pacing: Mapping[str, str] | None = None,
        gateway: str | None = None,
    ) -> Account:
        options = {**_options(rate, burst, note, tags), **pacing_options(pacing)}
        if gateway is not None:
            options["gateway"] = self._known_gateway(gateway)
        if options:
            flat = [x for kv in options.items() for x in kv]
            if not self.scripts.hset_existing(keys=[self.keys.account(app_id)], args=flat):
                raise UnknownAccountError(app_id)
        return self.get(app_id)

    def _known_gateway(self, name: str) -> str:
        validate_gateway_name(name)
        if name != "default" and not self.redis.sismember(self.keys.gateways, name):
            raise BadInputError(
                f"gateway {name!r} is not registered; add it first: wxtasks gateways add {name} "
                "--base-url URL --profile P --token-env VAR"
            )
        return name

    def on_gateway(self, name: str) -> list[Account]:
        """The accounts ``name`` serves (reads every account: for rare moments, such as a
        gateway coming back or being removed)."""
        return [a for a in self.get_many(self.app_ids()) if a.gateway == name]

    def remove(self, app_id: str) -> bool:
        """Forget the account: record, schedule entry, bucket. Its timers stop."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.keys.account(app_id), self.keys.account_bucket(app_id))
        pipe.zrem(self.keys.heartbeat_schedule, app_id)
        pipe.srem(self.keys.accounts, app_id)
        removed = pipe.execute()[0]
        return bool(removed)

    def get(self, app_id: str) -> Account:
        h = self.redis.hgetall(self.keys.account(app_id))
        if not h:
            raise UnknownAccountError(app_id)
        return Account.from_hash(app_id, _decode(h))

    def get_many(self, app_ids: Iterable[str]) -> Iterator[Account]:
        """Accounts for ``app_ids`` in one pipelined round trip per 500; missing ones skipped."""
        ids = list(app_ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            pipe = self.redis.pipeline(transaction=False)
            for app_id in chunk:
                pipe.hgetall(self.keys.account(app_id))
            for app_id, h in zip(chunk, pipe.execute(), strict=True):
                if h:
                    yield Account.from_hash(app_id, _decode(h))

    def brief_many(self, app_ids: Iterable[str]) -> Iterator[tuple[str, State, tuple[str, ...]]]:
        """(appId, state, tags) for ``app_ids``: two fields each, pipelined in chunks, for
        lists that filter thousands of accounts before reading one page of them in full."""
        ids = list(app_ids)
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            pipe = self.redis.pipeline(transaction=False)
            for app_id in chunk:
                pipe.hmget(self.keys.account(app_id), "state", "tags")
            for app_id, (state, tags) in zip(chunk, pipe.execute(), strict=True):
                if state:
                    yield app_id, State(_s(state)), tuple(json.loads(tags)) if tags else ()

    def app_ids(self) -> list[str]:
        return sorted(_s(x) for x in self.redis.smembers(self.keys.accounts))

    def list(self, state: State | str | None = None) -> list[Account]:
        wanted = State(state) if state else None
        return [a for a in self.get_many(self.app_ids()) if wanted is None or a.state is wanted]

    def count_by_state(self) -> dict[str, int]:
        counts = {s.value: 0 for s in State}
        for account in self.get_many(self.app_ids()):
            counts[account.state.value] += 1
        return counts

    # -- transitions ---------------------------------------------------------------------

    def transition(
        self,
        app_id: str,
        event: Event,
        *,
        reason: str = "",
        expect: Iterable[State] | None = None,
        version: int | None = None,
        extra: dict[str, str] | None = None,
    ) -> Decision | None:
        """Apply ``event`` atomically. Returns the decision that landed (with the new
        version), or None when the account is not in a state listed in ``expect``, or no
        longer at ``version``: someone else took the edge.

        Raises TransitionRefused when the rules refuse the event and ``expect`` is not
        given, UnknownAccountError when the account does not exist.
        """
        wanted = frozenset(expect) if expect is not None else None
        for _ in range(_CAS_ATTEMPTS):
            account = self.get(app_id)
            if wanted is not None and account.state not in wanted:
                return None
            if version is not None and account.version != version:
                return None
            try:
                decision = decide(
                    account.snapshot(), event, self.clock(), self.policy, reason=reason
                )
            except TransitionRefused:
                if wanted is not None:
                    return None
                raise
            fields = {**decision.fields, **(extra or {})}
            flat = [x for kv in fields.items() for x in kv]
            landed = self.scripts.transition(
                keys=[self.keys.account(app_id), self.keys.events],
                args=[
                    account.version,
                    decision.state.value,
                    event.value,
                    reason,
                    f"{self.clock():.3f}",
                    self.settings.events_maxlen,
                    app_id,
                    *flat,
                ],
            )
            landed = int(landed)
            if landed == 0:
                raise UnknownAccountError(app_id)
            if landed > 0:
                logger.info(
                    "account %s appId=%s %s -> %s (%s)",
                    event.value,
                    app_id,
                    decision.prev.value,
                    decision.state.value,
                    reason or "-",
                )
                return replace(decision, version=landed)
            if version is not None:
                return None
        raise RuntimeError(f"transition of appId={app_id} kept losing the race")  # pragma: no cover

    def note_first_login(self, app_id: str) -> None:
        """A QR login succeeded: the first one of an appId is its new device's first login
        (bulk sends warm up after it, WXTASKS_WARMUP_S)."""
        self.redis.hsetnx(self.keys.account(app_id), "first_login_at", f"{self.clock():.3f}")

    def reschedule_heartbeat(self, app_id: str, delay_s: float | None = None) -> None:
        due = self.clock() + (self.settings.heartbeat_interval_s if delay_s is None else delay_s)
        self.redis.zadd(self.keys.heartbeat_schedule, {app_id: due}, xx=True)


#: an account's own pacing (overrides the fleet's WXTASKS_* defaults; see wxtasks.send.pacing)
PACING_FIELDS = ("bulk_jitter", "group_jitter", "quiet_hours", "warmup_s", "daily_bulk_cap")


def pacing_options(pacing: Mapping[str, str] | None) -> dict[str, str]:
    """Validated pacing overrides: ``bulk_jitter``/``group_jitter`` "MIN-MAX" seconds,
    ``quiet_hours`` "HH:MM-HH:MM" ("" none), ``warmup_s`` seconds, ``daily_bulk_cap``."""
    from wxtasks.send.pacing import QuietHours, Span

    out: dict[str, str] = {}
    for name, value in (pacing or {}).items():
        if name not in PACING_FIELDS:
            raise BadInputError(
                f"unknown pacing option {name!r}; one of {', '.join(PACING_FIELDS)}"
            )
        if name.endswith("jitter"):
            out[name] = str(Span.parse(value, name))
        elif name == "quiet_hours":
            QuietHours.parse(value)
            out[name] = value.strip()
        else:
            try:
                number = float(value)
            except ValueError:
                raise BadInputError(f"{name} must be a number, got {value!r}") from None
            if number < 0:
                raise BadInputError(f"{name} must be >= 0, got {value!r}")
            out[name] = str(int(number)) if name == "daily_bulk_cap" else f"{number:g}"
    return out


def _options(
    rate: float | None, burst: int | None, note: str | None, tags: Iterable[str] | None
) -> dict[str, str]:
    options: dict[str, str] = {}
    if rate is not None:
        if not rate > 0:
            raise BadInputError(f"rate must be > 0, got {rate!r}")
        options["rate"] = repr(float(rate))
    if burst is not None:
        if int(burst) < 1:
            raise BadInputError(f"burst must be >= 1, got {burst!r}")
        options["burst"] = str(int(burst))
    if note is not None:
        options["note"] = note
    if tags is not None:
        options["tags"] = json.dumps(sorted(set(tags)), ensure_ascii=False)
    return options


def _decode(h: dict[Any, Any]) -> dict[str, str]:
    return {_s(k): _s(v) for k, v in h.items()}


def _s(x: bytes | str) -> str:
    return x.decode() if isinstance(x, bytes) else x


def _float(x: str | None) -> float | None:
    return float(x) if x else None


def _int(x: str | None) -> int | None:
    return int(x) if x else None
