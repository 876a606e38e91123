"""Inbound tasks on queue ``control``: a received message, an account dropped offline."""

from __future__ import annotations

import time
from typing import Any

from celery import shared_task

from wxtasks.errors import BadInputError
from wxtasks.inbound.messages import GatewayEvent, HandlerContext, InboundMessage, run_handlers
from wxtasks.send.breaker import risk_signal
from wxtasks.tasks.base import WxTask

#: WeChat's MsgType of a system notice ("操作过于频繁" arrives as one)
SYSTEM_MESSAGE = 10000


@shared_task(
    name="wxtasks.on_message", base=WxTask, bind=True, acks_late=True, reject_on_worker_lost=True
)
def on_message(self: WxTask, event: dict[str, Any], gateway: str = "") -> dict[str, Any]:
    """Record a received message once and run the handlers on it (``gateway``: whose
    callback URL it came in on, already checked by the receiver)."""
    rt = self.rt
    try:
        message = InboundMessage.from_event(GatewayEvent(**event))
    except (BadInputError, TypeError, ValueError) as exc:
        return {"status": "rejected", "error": str(exc)}
    outcome = rt.inbound.claim(message, str(self.request.id))
    if outcome == "duplicate":
        return {"status": "duplicate", "app_id": message.app_id, "new_msg_id": message.new_msg_id}
    if message.msg_type == SYSTEM_MESSAGE and risk_signal(message.content, rt.settings):
        # throttled sends can be answered "ok" and the risk notice come later, as this
        rt.breaker.trip(
            message.app_id, f"risk control notice: {message.content[:200]}", time.time()
        )

    def send_text(app_id: str, to_wxid: str, content: str, *, dedup_key: str | None = None) -> None:
        kwargs = {"app_id": app_id, "to_wxid": to_wxid, "content": content}
        if dedup_key:
            kwargs["dedup_key"] = dedup_key
        self.app.send_task("wxtasks.send_text", kwargs=kwargs)

    errors = run_handlers(message, HandlerContext(rt.settings, send_text), rt.handlers)
    return {
        "status": "handled",
        "app_id": message.app_id,
        "new_msg_id": message.new_msg_id,
        "is_self": message.is_self,
        "errors": errors,
    }


@shared_task(name="wxtasks.on_offline", base=WxTask, bind=True, acks_late=True)
def on_offline(
    self: WxTask, app_id: str, reason: str = "gateway Offline callback"
) -> dict[str, Any]:
    """The gateway says the account dropped: leave ONLINE now, start the reconnect chain."""
    decision = self.rt.lifecycle.liveness_failed(app_id, reason)
    return {"app_id": app_id, "state": decision.state.value if decision else None}
