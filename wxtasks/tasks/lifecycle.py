"""Lifecycle tasks on queue ``control``: login, heartbeat, reconnect, alert, sweep."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from wxtasks.backoff import backoff_s
from wxtasks.errors import GatewayUnavailableError, UnknownAccountError
from wxtasks.events import post_alert
from wxtasks.tasks.base import WxTask

logger = logging.getLogger(__name__)


#: retries of a login the gateway could not take, and of an alert the robot did not take;
#: each waits in Redis (Lifecycle.later), never as a countdown in the broker
LOGIN_RETRIES = 5
ALERT_RETRIES = 8


@shared_task(name="wxtasks.login", base=WxTask, bind=True, acks_late=True)
def login(self: WxTask, app_id: str, attempt: int = 0) -> dict[str, Any]:
    """Bring a registered account ONLINE when the gateway has its session; else needLogin."""
    try:
        state = self.rt.lifecycle.login(app_id)
    except UnknownAccountError as exc:
        return {"app_id": app_id, "state": None, "error": str(exc)}
    except GatewayUnavailableError as exc:
        if attempt >= LOGIN_RETRIES:
            raise
        delay = backoff_s(attempt, cap_s=60, base_s=2)
        self.rt.lifecycle.later("wxtasks.login", {"app_id": app_id, "attempt": attempt + 1}, delay)
        return {"app_id": app_id, "state": None, "error": str(exc), "retry_in_s": delay}
    return {"app_id": app_id, "state": state}


@shared_task(name="wxtasks.heartbeat", base=WxTask, bind=True, acks_late=True, ignore_result=True)
def heartbeat(
    self: WxTask,
    app_ids: list[str] | None = None,
    due: list[float] | None = None,
    app_id: str | None = None,
) -> dict[str, Any]:
    """Probe a batch of accounts (or one, ``app_id``) and watch their timers."""
    ids = list(app_ids or []) + ([app_id] if app_id else [])
    return self.rt.lifecycle.heartbeat(ids, due).as_dict()


@shared_task(name="wxtasks.reconnect", base=WxTask, bind=True, acks_late=True)
def reconnect(self: WxTask, app_id: str, version: int) -> dict[str, Any]:
    """One attempt of an account's reconnect chain (the chain is tagged by ``version``)."""
    return {"app_id": app_id, "outcome": self.rt.lifecycle.reconnect(app_id, int(version))}


@shared_task(
    name="wxtasks.sweep_heartbeats", base=WxTask, bind=True, ignore_result=True, send_events=False
)
def sweep_heartbeats(self: WxTask) -> int:
    """Dispatch every heartbeat that is due (run by beat every second). It sends no
    monitoring events: 86,400 sweeps a day would bury the sends in Flower."""
    return self.rt.lifecycle.sweep()


@shared_task(
    name="wxtasks.sample_trends", base=WxTask, bind=True, ignore_result=True, send_events=False
)
def sample_trends(self: WxTask) -> bool:
    """Write this minute's gauges for the console's Overview (backlog, accounts by state,
    heartbeat lateness, gateways up), once a minute whichever run comes first."""
    from wxtasks.metrics import sample

    return sample(self.rt)


@shared_task(name="wxtasks.alert", base=WxTask, bind=True, acks_late=True, ignore_result=True)
def alert(
    self: WxTask,
    alert: str,
    app_id: str,
    reason: str = "",
    at: float = 0.0,
    attempt: int = 0,
    gateway: str = "",
) -> int:
    """POST an alert to the configured robot webhook, retried with backoff."""
    settings = self.rt.settings
    if not settings.alert_webhook_url:
        return 0
    try:
        return post_alert(settings, alert, app_id, reason, at, gateway=gateway)
    except ConnectionError:
        if attempt >= ALERT_RETRIES:
            raise
        kwargs = {"alert": alert, "app_id": app_id, "reason": reason, "at": at, "gateway": gateway}
        delay = backoff_s(attempt, cap_s=300, base_s=2)
        self.rt.lifecycle.later("wxtasks.alert", {**kwargs, "attempt": attempt + 1}, delay)
        return 0
