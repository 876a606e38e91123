"""The baseline the send benchmarks compare against: bare Celery tasks that only POST to
the gateway, on the same broker with the same worker settings as wxtasks' send tasks.

``bench.post`` has no limit (it POSTs to the configured profile's send_text route);
``bench.post_rate_limited`` uses Celery's own ``rate_limit="20/s"`` (per worker
instance, which is the point being measured).
"""

from __future__ import annotations

from typing import Any

import layout
import requests
from celery import Celery

from wxtasks.config import Settings
from wxtasks.gateway.profiles import PROFILES

settings = Settings.from_env()
profile = PROFILES[settings.gateway_profile]
app = layout.celeryconf().configure(Celery("bench"), settings)
app.conf.task_routes = {"bench.*": {"queue": "send"}}
_session: requests.Session | None = None


def _post(app_id: str, to_wxid: str, content: str) -> dict[str, Any]:
    global _session
    if _session is None:
        _session = requests.Session()
        _session.headers[profile.token_header] = settings.gateway_token
    reply = _session.post(
        settings.gateway_base_url + str(profile.path("send_text")),
        json=profile.wire({"appId": app_id, "toWxid": to_wxid, "content": content}),
        timeout=settings.gateway_timeout_s,
    )
    data = reply.json()["data"]
    # the v1 profile answers without newMsgId
    return {"status": "sent", "newMsgId": str(data.get("newMsgId") or data["msgId"])}


@app.task(name="bench.post", acks_late=True)
def post(app_id: str, to_wxid: str, content: str) -> dict[str, Any]:
    return _post(app_id, to_wxid, content)


@app.task(name="bench.post_rate_limited", acks_late=True, rate_limit="20/s")
def post_rate_limited(app_id: str, to_wxid: str, content: str) -> dict[str, Any]:
    return _post(app_id, to_wxid, content)
