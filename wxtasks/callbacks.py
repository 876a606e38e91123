"""The callback receiver: ``wxtasks callbacks --port P``.

Gateways push events to one URL per token; this serves ``POST /callback/<secret>``. It
validates, enqueues, and answers within milliseconds (gateways give ~3 s), never doing
the work inline: ``AddMsg`` becomes a ``wxtasks.on_message`` task, ``Offline`` a
``wxtasks.on_offline`` task; other event types are acknowledged and ignored. A wrong
secret gets 403 and nothing is enqueued; a body that is not a gateway event gets 400.
Gateways sign nothing, so the secret in the path is the protection: keep it long.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging

from celery import Celery
from tornado import web
from tornado.httpserver import HTTPServer

from wxtasks.config import Settings
from wxtasks.errors import BadInputError, ConfigError
from wxtasks.inbound import InboundMessage, parse_event
from wxtasks.runtime import Runtime

logger = logging.getLogger(__name__)


class CallbackHandler(web.RequestHandler):
    def initialize(self, secret: str, app: Celery) -> None:
        self.secret = secret
        self.celery = app

    def check_xsrf_cookie(self) -> None:
        return None

    def post(self, secret: str) -> None:
        if not hmac.compare_digest(secret.encode(), self.secret.encode()):
            self.set_status(403)
            self.finish({"ok": False, "error": "forbidden"})
            return
        try:
            event = parse_event(json.loads(self.request.body or b""))
            if event.type_name == "AddMsg":
                InboundMessage.from_event(event)  # reject a message without NewMsgId now
        except (ValueError, BadInputError) as exc:
            self.set_status(400)
            self.finish({"ok": False, "error": str(exc)})
            return
        if event.type_name == "AddMsg":
            self.celery.send_task(
                "wxtasks.on_message",
                kwargs={
                    "event": {
                        "type_name": event.type_name,
                        "app_id": event.app_id,
                        "wxid": event.wxid,
                        "data": event.data,
                    }
                },
            )
        elif event.type_name == "Offline":
            self.celery.send_task(
                "wxtasks.on_offline",
                kwargs={"app_id": event.app_id, "reason": "gateway Offline callback"},
            )
        else:
            logger.debug("ignored %s event appId=%s", event.type_name, event.app_id)
            self.finish({"ok": True, "handled": False})
            return
        self.finish({"ok": True, "handled": True})


def make_app(secret: str, celery_app: Celery) -> web.Application:
    if not secret:
        raise ConfigError("WXTASKS_CALLBACK_SECRET must be set to receive callbacks")
    return web.Application(
        [(r"/callback/([^/]+)", CallbackHandler, {"secret": secret, "app": celery_app})]
    )


def serve(rt: Runtime, *, host: str, port: int) -> None:
    app = make_app(rt.settings.callback_secret, rt.celery)

    async def main() -> None:
        server = HTTPServer(app)
        server.listen(port, address=host)
        print(f"wxtasks callbacks: POST http://{host}:{port}/callback/<secret>", flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


def callback_url(base: str, settings: Settings) -> str:
    return f"{base.rstrip('/')}/callback/{settings.callback_secret}"
