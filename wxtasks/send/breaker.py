"""The bulk circuit breaker: an account whose gateway shows risk control stops bulk sends.

Tripped by an answer that contains a risk-control sign (``WXTASKS_RISK_PATTERNS``,
default "操作过于频繁") or by ``WXTASKS_BREAKER_ERRORS`` gateway errors in a row on bulk
sends. The account's bulk lane then cools off for ``WXTASKS_COOLOFF_S`` (the pacing gate
holds it, :mod:`wxtasks.send.pacing`), with one event and one alert; its replies still go out,
and other accounts go on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import redis

from wxtasks.config import Settings
from wxtasks.events import publish_alert
from wxtasks.keys import Keys
from wxtasks.scripts import Scripts

logger = logging.getLogger(__name__)

ALERT_COOLOFF = "bulkCoolOff"


def risk_signal(text: str, settings: Settings) -> bool:
    """Whether a gateway's answer shows risk control."""
    return any(p and p in text for p in settings.risk_patterns.split("|"))


class Breaker:
    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        keys: Keys,
        scripts: Scripts,
        alert: Callable[[str, str, str], None] | None = None,
    ) -> None:
        """``alert(alert, app_id, reason)`` posts to the robot webhook (the lifecycle's)."""
        self.redis = client
        self.settings = settings
        self.keys = keys
        self.scripts = scripts
        self.alert = alert

    def trip(self, app_id: str, why: str, now: float) -> bool:
        """Cool the account's bulk lane off; True when this call tripped it."""
        tripped = bool(
            self.scripts.breaker_trip(
                keys=[self.keys.account(app_id)],
                args=[f"{now:.3f}", f"{now + self.settings.cooloff_s:.3f}", why],
            )
        )
        if tripped:
            reason = f"bulk sends paused for {self.settings.cooloff_s:.0f}s: {why}"
            logger.warning("appId=%s %s", app_id, reason)
            if self.alert is not None:
                self.alert(ALERT_COOLOFF, app_id, reason)
            else:
                publish_alert(self.redis, self.settings, app_id, ALERT_COOLOFF, reason)
        return tripped

    def after_bulk_send(self, app_id: str, error: str, now: float) -> bool:
        """Count a bulk send's error; trips on a risk sign or on too many errors in a row
        (a bulk send that goes out starts the count over: ``finish.lua``). True when it
        tripped."""
        if risk_signal(error, self.settings):
            return self.trip(app_id, f"risk control: {error}", now)
        errors = int(self.redis.hincrby(self.keys.account(app_id), "bulk_errors", 1))
        if errors >= self.settings.breaker_errors:
            return self.trip(app_id, f"{errors} gateway errors in a row: {error}", now)
        return False


def describe(account: dict[str, Any], now: float) -> str | None:
    """What an account's breaker says now, for operators (None when not cooling off)."""
    until = float(account.get("bulk_cooloff_until") or 0)
    if until <= now:
        return None
    return f"cooling off for {until - now:.0f}s: {account.get('bulk_cooloff_why', '')}"
