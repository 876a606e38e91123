"""Account lifecycle: login, heartbeat, reconnect — plain functions over Redis state.

The Celery tasks in :mod:`wxtasks.tasks.lifecycle` are thin wrappers around ``Lifecycle``;
follow-up work (the next reconnect attempt, an alert) leaves through ``dispatch``, so
this module never imports Celery and tests can run it against a real Redis directly.

Exactly one reconnect chain per account: the process whose compare-and-set moved the
account into RECONNECTING schedules attempt 1 and tags it with the new version; each
attempt acts only if the account is still at that version, and its own transition
(again one compare-and-set) schedules the next.

A gateway that does not answer says nothing about its accounts: a probe or reconnect
that never reached it (refused, 503, timeout) is counted against the *gateway*
(:class:`wxtasks.gateway.fleet.Fleet`), never as the account's liveness failure or reconnect
attempt. Once the gateway is marked down, its accounts keep their state with the
condition "gateway down": no probes, no reconnect attempts, no sends go to it; one probe
per gateway per ``WXTASKS_GATEWAY_PROBE_INTERVAL_S`` (fleet-wide) watches it, one
``gatewayDown`` alert names it. The first answer marks it up (``gatewayUp``) and its
accounts are probed at once and their paused reconnect chains resumed.
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

from wxtasks.accounts.machine import (
    ALERT_NEED_LOGIN,
    Chore,
    Decision,
    Event,
    State,
    heartbeat_chore,
)
from wxtasks.accounts.store import AccountStore
from wxtasks.config import Settings
from wxtasks.errors import (
    GatewayAuthError,
    GatewayError,
    GatewayOutcomeUnknownError,
    GatewayUnavailableError,
    UnknownAccountError,
)
from wxtasks.events import publish_alert
from wxtasks.gateway.fleet import Fleet
from wxtasks.keys import Keys

logger = logging.getLogger(__name__)

RECONNECT_TASK = "wxtasks.reconnect"
LOGIN_TASK = "wxtasks.login"
ALERT_TASK = "wxtasks.alert"
HEARTBEAT_TASK = "wxtasks.heartbeat"

LATENESS_SAMPLES = 10_000
_NO_ANSWER = "gateway did not answer: "

ALERT_GATEWAY_DOWN = "gatewayDown"
ALERT_GATEWAY_UP = "gatewayUp"
#: what says nothing about an account, only that its gateway did not answer
NO_ANSWER = (GatewayUnavailableError, GatewayOutcomeUnknownError)
#: heartbeat chores that would call a gateway: held while it is down
_CALLS_GATEWAY = frozenset({Chore.PROBE, Chore.RESUME_RECONNECT, Chore.RETRY_PLAN})


class Enqueue(Protocol):
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
    #: accounts not probed because their gateway is down
    gateway_down: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "probed": self.probed,
            "alive": self.alive,
            "failed": self.failed,
            "gateway_down": self.gateway_down,
            "chores": self.chores,
            "max_lateness_s": max(self.lateness_s, default=0.0),
        }


class Lifecycle:
    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        keys: Keys,
        accounts: AccountStore,
        fleet: Fleet,
        enqueue: Enqueue,
        *,
        probe_threads: int = 16,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``fleet``: the gateways (which serves each account, a client for each, their
        health); ``enqueue(task, kwargs)``: how follow-up work is sent (a task by name)."""
        self.redis = client
        self.settings = settings
        self.accounts = accounts
        self.fleet = fleet
        self.enqueue = enqueue
        self.keys = keys
        self.clock = clock
        self._probe_threads = probe_threads
        self._pool: ThreadPoolExecutor | None = None

    def close(self) -> None:
        """Stop the probe threads (a heartbeat batch's), if any were started."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

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

    def alert(
        self, app_id: str, alert: str, reason: str, state: str = "", *, gateway: str = ""
    ) -> None:
        publish_alert(self.redis, self.settings, app_id, alert, reason, state, gateway=gateway)
        if self.settings.alert_webhook_url:
            kwargs: dict[str, Any] = {
                "alert": alert,
                "app_id": app_id,
                "reason": reason,
                "at": self.clock(),
            }
            if gateway:
                kwargs["gateway"] = gateway
            self.enqueue(ALERT_TASK, kwargs)

    # -- gateway health ---------------------------------------------------------------------

    def gateway_failed(self, name: str, error: str, count: int = 1) -> None:
        """A call did not reach gateway ``name``; the one that marks it down alerts."""
        if self.fleet.failed(name, error, count) == "down":
            h = self.fleet.health(name)
            self.alert(
                "",
                ALERT_GATEWAY_DOWN,
                f"gateway {name} is not answering ({h['failures']} calls in a row): {error}",
                gateway=name,
            )

    def alert_by(self, alert: str, app_id: str, reason: str) -> None:
        """An alert that no state change carries (a breaker tripped, say)."""
        self.alert(app_id, alert, reason)

    def gateway_answered(self, name: str, *, force: bool = False) -> None:
        """Gateway ``name`` answered; the answer that marks it up brings its accounts back."""
        if self.fleet.answered(name, force=force) == "up":
            self.alert("", ALERT_GATEWAY_UP, f"gateway {name} answers again", gateway=name)
            self.recover(name)

    def recover(self, name: str) -> int:
        """Gateway ``name`` is back: probe its ONLINE accounts now (not at their next
        heartbeat) and resume the reconnect chains its outage paused. Returns how many
        accounts were looked at."""
        accounts = self.accounts.on_gateway(name)
        online = [a.app_id for a in accounts if a.state is State.ONLINE]
        batch = self.settings.heartbeat_batch
        for start in range(0, len(online), batch):
            self.enqueue(
                HEARTBEAT_TASK,
                {"app_ids": online[start : start + batch]},
                expires=self.settings.heartbeat_interval_s,
            )
        for a in accounts:
            if a.state is State.RECONNECTING:
                self._timer_chore(a.app_id, a.version, Chore.RESUME_RECONNECT)
        logger.info("gateway %s is back: %d account(s) probed or resumed", name, len(accounts))
        return len(accounts)

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
        down = self.fleet.down()
        to_probe: list[tuple[str, str]] = []
        held: dict[str, list[str]] = {}
        for account in self.accounts.get_many(app_ids):
            chore = heartbeat_chore(account.snapshot(), now, self.accounts.policy)
            if account.gateway in down and chore in _CALLS_GATEWAY:
                # its gateway is down: nothing to ask it; the gateway's probe watches it
                held.setdefault(account.gateway, []).append(account.app_id)
                report.gateway_down.append(account.app_id)
                chore = Chore.NOTHING
            report.chores[chore.value] = report.chores.get(chore.value, 0) + 1
            if chore is Chore.PROBE:
                to_probe.append((account.app_id, account.gateway))
            elif chore is not Chore.NOTHING:
                self._timer_chore(account.app_id, account.version, chore)
        for name, ids in held.items():
            if self.fleet.take_probe_slot(name):  # one probe per gateway per interval
                to_probe.append((ids[0], name))
        alive: list[str] = []
        unanswered: dict[str, tuple[int, str]] = {}
        answered: set[str] = set()
        for (app_id, name), (ok, reason) in zip(to_probe, self._probe_all(to_probe), strict=True):
            report.probed += 1
            if ok is None and reason.startswith(_NO_ANSWER):
                n, _ = unanswered.get(name, (0, ""))
                unanswered[name] = (n + 1, reason)
                continue
            answered.add(name)
            if name in down:
                continue  # the gateway's probe: what it says of the account waits for recover
            if ok:
                alive.append(app_id)
            elif ok is False:
                report.failed.append(app_id)
                self.liveness_failed(app_id, reason)
        for name, (n, reason) in unanswered.items():
            self.gateway_failed(name, reason, n)
        for name in answered - set(unanswered):
            self.gateway_answered(name)
        report.alive = len(alive)
        self._record(alive, report.lateness_s)
        return report

    def _probe_all(self, targets: list[tuple[str, str]]) -> list[tuple[bool | None, str]]:
        if len(targets) <= 1:
            return [self._probe(*t) for t in targets]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._probe_threads, thread_name_prefix="probe")
        return list(self._pool.map(lambda t: self._probe(*t), targets))

    def _probe(self, app_id: str, gateway: str = "default") -> tuple[bool | None, str]:
        """(alive?, reason); alive is None when the probe says nothing about the account:
        the token was refused, or (reason starting with ``_NO_ANSWER``) the gateway did not
        answer."""
        try:
            if self.fleet.client(gateway).heartbeat(app_id):
                return True, ""
            return False, "heartbeat: gateway says offline"
        except GatewayAuthError as exc:
            logger.error("heartbeat appId=%s gateway=%s: %s", app_id, gateway, exc)
            return None, str(exc)
        except NO_ANSWER as exc:
            return None, f"{_NO_ANSWER}{exc}"
        except GatewayError as exc:
            return False, f"heartbeat: {exc}"

    def _record(self, alive: list[str], lateness: list[float]) -> None:
        """One round trip for the batch (``heartbeat_ok.lua``): who answered, and how late."""
        if not alive and not lateness:
            return
        self.accounts.scripts.heartbeat_ok(
            keys=[self.keys.heartbeat_lateness, *map(self.keys.account, alive)],
            args=[f"{self.clock():.3f}", LATENESS_SAMPLES, *(f"{x:.4f}" for x in lateness)],
        )

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
            self.enqueue(then, {"app_id": app_id})

    # -- reconnect -----------------------------------------------------------------------------

    def reconnect(self, app_id: str, version: int) -> str:
        """One attempt of the chain tagged ``version``; returns what happened. While the
        account's gateway is down the chain pauses (``recover`` resumes it); an attempt the
        gateway did not answer is tried again later and does not count."""
        try:
            account = self.accounts.get(app_id)
        except UnknownAccountError:
            return "removed"
        if account.state is not State.RECONNECTING or account.version != version:
            return "stale"
        if self.fleet.is_down(account.gateway):
            return "gateway down"
        try:
            ok = self.fleet.client(account.gateway).reconnect(app_id)
            reason = "" if ok else "gateway: still offline"
        except NO_ANSWER as exc:
            self.gateway_failed(account.gateway, f"reconnect: {exc}")
            delay = self.accounts.policy.backoff_s(account.retry_count)
            self.later(RECONNECT_TASK, {"app_id": app_id, "version": version}, delay)
            return "gateway unavailable"
        except GatewayError as exc:
            ok, reason = False, f"reconnect: {exc}"
        else:
            self.gateway_answered(account.gateway)
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
        down = self.fleet.is_down(account.gateway)
        if down and not self.fleet.take_probe_slot(account.gateway):
            # a gateway that is down gets one call per probe interval: look again then
            self.later(LOGIN_TASK, {"app_id": app_id}, self.settings.gateway_probe_interval_s)
            return "gateway down"
        try:
            online = self.fleet.client(account.gateway).check_online(app_id)
        except NO_ANSWER as exc:
            self.gateway_failed(account.gateway, f"login: {exc}")
            if down:
                self.later(LOGIN_TASK, {"app_id": app_id}, self.settings.gateway_probe_interval_s)
                return "gateway down"
            raise
        self.gateway_answered(account.gateway, force=down)
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
            self.enqueue(LOGIN_TASK, {"app_id": app_id})
        return decision

    # -- schedule --------------------------------------------------------------------------------

    def later(self, task: str, kwargs: dict[str, Any], delay_s: float) -> None:
        """Send ``task`` in ``delay_s``. The timer waits in Redis (``wx:schedule:later``,
        taken by the sweep every second), never as a countdown in the broker, where it
        would outlive the visibility timeout and be handed out twice."""
        if delay_s <= 0:
            self.enqueue(task, kwargs)
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
            self.enqueue(entry["task"], entry["kwargs"])
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
                self.enqueue(
                    HEARTBEAT_TASK,
                    {"app_ids": [a for a, _ in chunk], "due": [d for _, d in chunk]},
                    expires=self.settings.heartbeat_interval_s,
                )
            taken += len(pairs)
            if len(pairs) < 2000:
                break
        return taken
