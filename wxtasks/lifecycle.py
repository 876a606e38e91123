"""Account lifecycle: login, heartbeat, reconnect — plain functions over Redis state.

The Celery tasks in :mod:`wxtasks.tasks.lifecycle` are thin wrappers around ``Lifecycle``;
follow-up work (the next reconnect attempt, an alert) leaves through ``dispatch``, so
this module never imports Celery and tests can run it against a real Redis directly.

Exactly one reconnect chain per account: the process whose compare-and-set moved the
account into RECONNECTING schedules attempt 1 and tags it with the new version; each
attempt acts only if the account is still at that version, and its own transition
(again one compare-and-set) schedules the next.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis

from wxtasks.accounts import AccountStore
from wxtasks.config import Settings
from wxtasks.errors import GatewayAuthError, GatewayError, UnknownAccountError
from wxtasks.events import publish_alert
from wxtasks.gateway.client import GatewayClient
from wxtasks.keys import Keys
from wxtasks.machine import ALERT_NEED_LOGIN, Chore, Decision, Event, State, heartbeat_chore

logger = logging.getLogger(__name__)

RECONNECT_TASK = "wxtasks.reconnect"
LOGIN_TASK = "wxtasks.login"
ALERT_TASK = "wxtasks.alert"
HEARTBEAT_TASK = "wxtasks.heartbeat"

LATENESS_SAMPLES = 10_000


class Dispatch(Protocol):
    def __call__(
        self,
        task: str,
        kwargs: dict[str, Any],
        countdown: float | None = None,
        expires: float | None = None,
    ) -> None: ...


@dataclass
class HeartbeatReport:
    probed: int = 0
    alive: int = 0
    failed: list[str] = field(default_factory=list)
    chores: dict[str, int] = field(default_factory=dict)
    lateness_s: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "probed": self.probed,
            "alive": self.alive,
            "failed": self.failed,
            "chores": self.chores,
            "max_lateness_s": max(self.lateness_s, default=0.0),
        }


class Lifecycle:
    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        accounts: AccountStore,
        gateway: GatewayClient,
        dispatch: Dispatch,
        *,
        probe_threads: int = 16,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = client
        self.settings = settings
        self.accounts = accounts
        self.gateway = gateway
        self.dispatch = dispatch
        self.keys = Keys(settings.key_prefix)
        self.clock = clock
        self._probe_threads = probe_threads
        self._pool: ThreadPoolExecutor | None = None

    # -- what follows a transition --------------------------------------------------------

    def follow_up(self, app_id: str, decision: Decision) -> None:
        if decision.reconnect_in_s is not None:
            self.later(
                RECONNECT_TASK,
                {"app_id": app_id, "version": decision.version},
                decision.reconnect_in_s,
            )
        if decision.alert:
            self.alert(app_id, decision.alert, decision.reason, decision.state.value)
        if decision.state is State.ONLINE:
            self.accounts.reschedule_heartbeat(app_id)

    def alert(self, app_id: str, alert: str, reason: str, state: str = "") -> None:
        publish_alert(self.redis, self.settings, app_id, alert, reason, state)
        if self.settings.alert_webhook_url:
            self.dispatch(
                ALERT_TASK, {"alert": alert, "app_id": app_id, "reason": reason, "at": self.clock()}
            )

    def alert_by(self, alert: str, app_id: str, reason: str) -> None:
        """An alert that no state change carries (a breaker tripped, say)."""
        self.alert(app_id, alert, reason)

    def liveness_failed(self, app_id: str, reason: str) -> Decision | None:
        """ONLINE -> RECONNECTING, once, however many signals arrive together."""
        try:
            decision = self.accounts.transition(
                app_id, Event.LIVENESS_FAILED, reason=reason, expect=[State.ONLINE]
            )
        except UnknownAccountError:
            return None
        if decision is not None:
            self.follow_up(app_id, decision)
        return decision

    # -- heartbeat ---------------------------------------------------------------------------

    def heartbeat(
        self, app_ids: Sequence[str], due: Sequence[float] | None = None
    ) -> HeartbeatReport:
        """One tick for each account: probe ONLINE ones, and watch the other states' timers."""
        now = self.clock()
        report = HeartbeatReport()
        if due:
            report.lateness_s = [max(0.0, now - float(d)) for d in due]
        to_probe = []
        for account in self.accounts.get_many(app_ids):
            chore = heartbeat_chore(account.snapshot(), now, self.accounts.policy)
            report.chores[chore.value] = report.chores.get(chore.value, 0) + 1
            if chore is Chore.PROBE:
                to_probe.append(account.app_id)
            elif chore is not Chore.NOTHING:
                self._timer_chore(account.app_id, account.version, chore)
        alive: list[str] = []
        for app_id, ok, reason in self._probe_all(to_probe):
            report.probed += 1
            if ok:
                alive.append(app_id)
            elif ok is False:
                report.failed.append(app_id)
                self.liveness_failed(app_id, reason)
        report.alive = len(alive)
        self._record(alive, report.lateness_s)
        return report

    def _probe_all(self, app_ids: list[str]) -> list[tuple[str, bool | None, str]]:
        if len(app_ids) <= 1:
            return [self._probe(a) for a in app_ids]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._probe_threads, thread_name_prefix="probe")
        return list(self._pool.map(self._probe, app_ids))

    def _probe(self, app_id: str) -> tuple[str, bool | None, str]:
        """(appId, alive?, reason); alive is None when the probe says nothing about it."""
        try:
            if self.gateway.heartbeat(app_id):
                return app_id, True, ""
            return app_id, False, "heartbeat: gateway says offline"
        except GatewayAuthError as exc:
            logger.error("heartbeat appId=%s: %s", app_id, exc)
            return app_id, None, str(exc)
        except GatewayError as exc:
            return app_id, False, f"heartbeat: {exc}"

    def _record(self, alive: list[str], lateness: list[float]) -> None:
        now = f"{self.clock():.3f}"
        pipe = self.redis.pipeline(transaction=False)
        for app_id in alive:
            self.accounts.scripts.heartbeat_ok(
                keys=[self.keys.account(app_id)], args=[now], client=pipe
            )
        if lateness:
            pipe.lpush(self.keys.heartbeat_lateness, *[f"{x:.4f}" for x in lateness])
            pipe.ltrim(self.keys.heartbeat_lateness, 0, LATENESS_SAMPLES - 1)
        if len(pipe):
            pipe.execute()

    def _timer_chore(self, app_id: str, version: int, chore: Chore) -> None:
        event, then = {
            Chore.RESUME_RECONNECT: (Event.RECONNECT_RESUMED, None),
            Chore.RETRY_PLAN: (Event.RETRY_PLAN, LOGIN_TASK),
            Chore.EXPIRE_LOGIN: (Event.LOGIN_EXPIRED, None),
        }[chore]
        reason = {
            Chore.RESUME_RECONNECT: "reconnect chain overdue; resumed",
            Chore.RETRY_PLAN: "automatic retry plan",
            Chore.EXPIRE_LOGIN: "QR code expired before the login finished",
        }[chore]
        try:
            decision = self.accounts.transition(app_id, event, reason=reason, version=version)
        except UnknownAccountError:
            return
        if decision is None:
            return
        self.follow_up(app_id, decision)
        if then:
            self.dispatch(then, {"app_id": app_id})

    # -- reconnect -----------------------------------------------------------------------------

    def reconnect(self, app_id: str, version: int) -> str:
        """One attempt of the chain tagged ``version``; returns what happened."""
        try:
            account = self.accounts.get(app_id)
        except UnknownAccountError:
            return "removed"
        if account.state is not State.RECONNECTING or account.version != version:
            return "stale"
        try:
            ok = self.gateway.reconnect(app_id)
            reason = "" if ok else "gateway: still offline"
        except GatewayError as exc:
            ok, reason = False, f"reconnect: {exc}"
        event = Event.RECONNECT_SUCCEEDED if ok else Event.RECONNECT_FAILED
        decision = self.accounts.transition(
            app_id, event, reason=reason or "reconnected", version=version
        )
        if decision is None:
            return "stale"
        self.follow_up(app_id, decision)
        return decision.state.value

    # -- login -----------------------------------------------------------------------------------

    def login(self, app_id: str) -> str:
        """Bring a registered IDLE account ONLINE if the gateway already has its session;
        otherwise raise the needLogin alert (a human must scan a QR code)."""
        account = self.accounts.get(app_id)
        if account.state is not State.IDLE:
            return account.state.value
        online = self.gateway.check_online(app_id)
        if online:
            decision = self.accounts.transition(
                app_id,
                Event.LOGIN_SUCCEEDED,
                reason="gateway session is online",
                version=account.version,
            )
            if decision is not None:
                self.follow_up(app_id, decision)
                return decision.state.value
            return self.accounts.get(app_id).state.value
        self.alert(
            app_id, ALERT_NEED_LOGIN, "gateway has no session: scan a QR code", State.IDLE.value
        )
        return State.IDLE.value

    def reset(self, app_id: str, reason: str = "operator reset") -> Decision | None:
        decision = self.accounts.transition(app_id, Event.RESET, reason=reason)
        if decision is not None:
            self.follow_up(app_id, decision)
            self.dispatch(LOGIN_TASK, {"app_id": app_id})
        return decision

    # -- schedule --------------------------------------------------------------------------------

    def later(self, task: str, kwargs: dict[str, Any], delay_s: float) -> None:
        """Send ``task`` in ``delay_s``. The timer waits in Redis (``wx:schedule:later``,
        taken by the sweep every second), never as a countdown in the broker, where it
        would outlive the visibility timeout and be handed out twice."""
        if delay_s <= 0:
            self.dispatch(task, kwargs)
            return
        member = json.dumps({"task": task, "kwargs": kwargs, "id": uuid.uuid4().hex})
        self.redis.zadd(self.keys.later, {member: self.clock() + delay_s})

    def sweep_later(self, limit: int = 1000) -> int:
        """Send the control tasks whose time has come; returns how many."""
        due = self.accounts.scripts.take_due(
            keys=[self.keys.later], args=[f"{self.clock():.3f}", limit]
        )
        for member in due:
            entry = json.loads(member)
            self.dispatch(entry["task"], entry["kwargs"])
        return len(due)

    def sweep(self, limit: int = 20_000) -> int:
        """Take the due heartbeats (and timers) and dispatch them in batches; returns how
        many heartbeats."""
        self.sweep_later()
        batch_size = self.settings.heartbeat_batch
        taken = 0
        while taken < limit:
            raw = self.accounts.scripts.sweep_schedule(
                keys=[self.keys.heartbeat_schedule],
                args=[f"{self.clock():.3f}", self.settings.heartbeat_interval_s, 2000],
            )
            if not raw:
                break
            pairs = [(str(raw[i]), float(raw[i + 1])) for i in range(0, len(raw), 2)]
            for start in range(0, len(pairs), batch_size):
                chunk = pairs[start : start + batch_size]
                self.dispatch(
                    HEARTBEAT_TASK,
                    {"app_ids": [a for a, _ in chunk], "due": [d for _, d in chunk]},
                    expires=self.settings.heartbeat_interval_s,
                )
            taken += len(pairs)
            if len(pairs) < 2000:
                break
        return taken
