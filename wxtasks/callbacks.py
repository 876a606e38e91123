"""The callback receiver: ``wxtasks callbacks --port P``.

Gateways push events to one URL per token; this serves ``POST /callback/<secret>``. It
validates, enqueues, and answers within milliseconds (gateways give ~3 s), never doing
the work inline: ``AddMsg`` becomes a ``wxtasks.on_message`` task, ``Offline`` a
``wxtasks.on_offline`` task; other event types are acknowledged and ignored. Gateways sign
nothing, so the secret in the path is the protection: keep it long.

It refuses what it cannot use, before doing any work on it:

=====================================================  ======================================
request                                                answer
=====================================================  ======================================
wrong secret                                           403; the body is not read
body over ``WXTASKS_CALLBACK_MAX_BODY_BYTES`` (1 MiB)  413; read no further, never parsed
not UTF-8 JSON, nested too deeply, not an event,       400 with the reason
no ``Appid`` or one outside the appId rule, an
``AddMsg`` without ``NewMsgId``
=====================================================  ======================================
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from typing import Any

from celery import Celery
from tornado import web
from tornado.httpserver import HTTPServer

from wxtasks.config import Settings
from wxtasks.errors import BadInputError, ConfigError
from wxtasks.inbound import GatewayEvent, InboundMessage, parse_event
from wxtasks.runtime import Runtime

logger = logging.getLogger(__name__)


def decode_event(body: bytes) -> GatewayEvent:
    """A callback body as a gateway event; BadInputError says why it is not one."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInputError(f"body is not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        document = json.loads(text)
    except RecursionError:
        raise BadInputError("body is JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and numbers too long to convert
        raise BadInputError(f"body is not JSON: {exc}") from None
    event = parse_event(document)
    if event.type_name == "AddMsg":
        try:
            InboundMessage.from_event(event)  # reject a message the task could not read, now
        except (TypeError, ValueError) as exc:
            raise BadInputError(f"AddMsg cannot be read: {exc}") from None
    return event


@web.stream_request_body
class CallbackHandler(web.RequestHandler):
    """Streams the body in, so one over the limit is refused without being held."""

    def initialize(self, secret: str, app: Celery, max_body_bytes: int) -> None:
        self.secret = secret
        self.celery = app
        self.max_body_bytes = max_body_bytes
        self.body = bytearray()

    def check_xsrf_cookie(self) -> None:
        return None

    def prepare(self) -> None:
        if self.request.method != "POST":
            return  # tornado answers 405
        if not hmac.compare_digest(self.path_args[0].encode(), self.secret.encode()):
            self.refuse(403, "forbidden")
            return
        length = self.request.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > self.max_body_bytes:
            self.refuse_too_large()

    def data_received(self, chunk: bytes) -> None:
        if self._finished:
            return
        if len(self.body) + len(chunk) > self.max_body_bytes:
            self.body = bytearray()
            self.refuse_too_large()
            return
        self.body += chunk

    def refuse(self, status: int, error: str) -> None:
        self.set_status(status)
        self.finish({"ok": False, "error": error})

    def refuse_too_large(self) -> None:
        self.refuse(413, f"body is larger than {self.max_body_bytes} bytes")

    def post(self, secret: str) -> None:
        if self._finished:
            return
        try:
            event = decode_event(bytes(self.body))
        except BadInputError as exc:
            self.refuse(400, str(exc))
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


def make_app(settings: Settings, celery_app: Celery) -> web.Application:
    if not settings.callback_secret:
        raise ConfigError("WXTASKS_CALLBACK_SECRET must be set to receive callbacks")
    options: dict[str, Any] = {
        "secret": settings.callback_secret,
        "app": celery_app,
        "max_body_bytes": settings.callback_max_body_bytes,
    }
    return web.Application([(r"/callback/([^/]+)", CallbackHandler, options)])


def serve(rt: Runtime, *, host: str, port: int) -> None:
    app = make_app(rt.settings, rt.celery)

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
