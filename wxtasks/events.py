"""The events stream (every transition, every alert) and alert webhooks.

Transitions are appended by ``transition.lua`` itself, atomically with the change.
Alerts that need a human (``needLogin``, ``maxRetryReached``) are appended here and posted
to ``WXTASKS_ALERT_WEBHOOK_URL`` in the robot format of DingTalk, Feishu or WeCom (or plain
JSON) by the ``wxtasks.alert`` task, retried, off the lifecycle's path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import redis

if TYPE_CHECKING:
    import requests

from wxtasks.config import Settings
from wxtasks.keys import Keys

logger = logging.getLogger(__name__)

_ALERT_TEXT = {
    "needLogin": "账号需要扫码登录 (needs a QR login)",
    "maxRetryReached": "账号重连失败次数已达上限 (reconnect retries exhausted)",
    "gatewayDown": "网关无响应，其账号暂停 (gateway down; its accounts wait)",
    "gatewayUp": "网关已恢复 (gateway back)",
    "redisMemory": "Redis 内存将满 (Redis memory nearly full; writes fail when full)",
}


def publish_alert(
    client: redis.Redis,
    settings: Settings,
    app_id: str,
    alert: str,
    reason: str = "",
    state: str = "",
    *,
    gateway: str = "",
    campaign: str = "",
) -> str:
    """Append an alert to the events stream; returns its stream id. A gateway's alert
    (``gatewayDown``, ``gatewayUp``) names the gateway and no account; a campaign's
    (``campaignFinished``, ``campaignStalled``) names it in ``campaign``."""
    entry = {
        "kind": "alert",
        "alert": alert,
        "app_id": app_id,
        "curr": state,
        "reason": reason,
        "at": f"{time.time():.3f}",
    }
    if gateway:
        entry["gateway"] = gateway
    if campaign:
        entry["campaign"] = campaign
    stream_id = client.xadd(
        Keys(settings.key_prefix).events,
        entry,  # type: ignore[arg-type]
        maxlen=settings.events_maxlen,
        approximate=True,
    )
    if gateway:
        logger.warning("alert %s gateway=%s: %s", alert, gateway, reason or "-")
    elif campaign:
        logger.warning("alert %s campaign=%s: %s", alert, campaign, reason or "-")
    else:
        logger.warning("alert %s appId=%s: %s", alert, app_id, reason or "-")
    return stream_id.decode() if isinstance(stream_id, bytes) else str(stream_id)


def read_events(
    client: redis.Redis, settings: Settings, *, count: int = 50, app_id: str | None = None
) -> list[dict[str, str]]:
    """The newest ``count`` events, oldest first."""
    raw: Any = client.xrevrange(
        Keys(settings.key_prefix).events, count=count * (4 if app_id else 1)
    )
    events = [stream_entry(i, f) for i, f in raw or []]
    if app_id:
        events = [e for e in events if e.get("app_id") == app_id][:count]
    return list(reversed(events))


def follow_events(
    client: redis.Redis, settings: Settings, *, since: str = "$", block_ms: int = 1000
) -> Iterator[dict[str, str]]:
    """Yield events as they arrive (XREAD BLOCK), forever."""
    key = Keys(settings.key_prefix).events
    last = since
    while True:
        reply: Any = client.xread({key: last}, block=block_ms, count=100)
        for _stream, entries in reply or []:
            for stream_id, fields in entries:
                event = stream_entry(stream_id, fields)
                last = event["id"]
                yield event


def stream_entry(stream_id: Any, fields: dict[Any, Any]) -> dict[str, str]:
    """One stream entry as a dict of strings, its stream id as ``id``."""

    def s(x: Any) -> str:
        return x.decode() if isinstance(x, bytes) else str(x)

    return {"id": s(stream_id), **{s(k): s(v) for k, v in fields.items()}}


def alert_payload(
    fmt: str,
    alert: str,
    app_id: str,
    reason: str,
    at: float,
    link: str = "",
    gateway: str = "",
) -> dict[str, Any]:
    """The webhook body for ``fmt`` (dingtalk | feishu | wecom | json); ``link`` is where
    a human acts on it (the console's QR login page); ``gateway`` names the gateway of a
    gateway's alert (``gatewayDown``, ``gatewayUp``), which names no account."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
    who = f"gateway: {gateway}" if gateway else f"appId: {app_id}"
    text = (
        f"[wxtasks] {alert}: {_ALERT_TEXT.get(alert, alert)}\n"
        f"{who}\nreason: {reason or '-'}\ntime: {stamp}"
    )
    if link:
        text += f"\nlog in: {link}"
    if fmt == "dingtalk":
        return {"msgtype": "text", "text": {"content": text}}
    if fmt == "feishu":
        return {"msg_type": "text", "content": {"text": text}}
    if fmt == "wecom":
        return {"msgtype": "text", "text": {"content": text}}
    body: dict[str, Any] = {"alert": alert, "app_id": app_id, "reason": reason, "at": at}
    if link:
        body["link"] = link
    if gateway:
        body["gateway"] = gateway
    return {**body, "text": text}


def console_link(settings: Settings, alert: str, app_id: str) -> str:
    """The console page that acts on ``alert``, when ``WXTASKS_CONSOLE_URL`` is set."""
    if not settings.console_url or alert != "needLogin":
        return ""
    from urllib.parse import quote

    return f"{settings.console_url.rstrip('/')}/accounts/{quote(app_id, safe='')}/login"


def post_alert(
    settings: Settings,
    alert: str,
    app_id: str,
    reason: str,
    at: float,
    session: requests.Session | None = None,
    gateway: str = "",
) -> int:
    """POST one alert to the webhook; returns the HTTP status. Raises on network errors."""
    import requests  # here: reading events (the CLI) does not need an HTTP client

    link = console_link(settings, alert, app_id)
    body = alert_payload(settings.alert_format, alert, app_id, reason, at, link, gateway)
    http = session or requests
    try:
        response = http.post(settings.alert_webhook_url, json=body, timeout=5)
    except requests.RequestException as exc:
        # the URL itself stays out: robot URLs carry their access token in the query
        raise ConnectionError(f"alert webhook unreachable: {type(exc).__name__}") from exc
    if response.status_code >= 500:
        raise ConnectionError(f"alert webhook answered HTTP {response.status_code}")
    return response.status_code
