"""Received messages and gateway events: parse, dedupe, record, hand to handlers.

Gateways push one JSON event per callback with ``TypeName`` (``AddMsg``, ``Offline``,
``ModContacts``, ...), ``Appid``, ``Wxid`` and ``Data`` — some deployments spell them
``type_name``, ``appid``, ``wxid``, ``data``; both are accepted, and two keys that are one
key after that (``TypeName`` beside ``Type_Name``) are refused. Duplicates are normal
(gateways resend after restarts): a message is handled once per ``Appid + NewMsgId``.
Messages the account sent itself come back too; they are recorded with ``is_self`` and
never reach handlers. A group message's content starts with ``"wxid_sender:\\n"``.

Handlers are plain functions ``handler(message, ctx)``, named in
``WXTASKS_MESSAGE_HANDLERS`` (``module:function``) or registered under the entry point
group ``wxtasks.handlers``. They reply through ``ctx.send_text``, which enqueues a normal
``wxtasks.send_text``: limits and dedup apply.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from importlib.metadata import entry_points
from typing import Any, Protocol

import redis

from wxtasks.config import Settings
from wxtasks.errors import BadInputError, ConfigError
from wxtasks.keys import Keys, validate_app_id
from wxtasks.scripts import Scripts

logger = logging.getLogger(__name__)

SEEN_TTL_S = 86_400
ENTRY_POINT_GROUP = "wxtasks.handlers"


@dataclass(frozen=True)
class GatewayEvent:
    type_name: str
    app_id: str
    wxid: str
    data: dict[str, Any]


def normalized(obj: Mapping[Any, Any], where: str) -> dict[str, Any]:
    """``obj`` with its keys lower-cased and without ``_`` (the spellings gateways use);
    BadInputError when two keys become one (which to believe would be a guess)."""
    out: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for key, value in obj.items():
        norm = str(key).lower().replace("_", "")
        if norm in out:
            raise BadInputError(
                f"{where} has the keys {spelled[norm][:40]!r} and {str(key)[:40]!r}, which are "
                "the same key"
            )
        out[norm], spelled[norm] = value, str(key)
    return out


def parse_event(body: object) -> GatewayEvent:
    """A callback body as a GatewayEvent; BadInputError when it is not one."""
    if not isinstance(body, Mapping):
        raise BadInputError("a gateway event is a JSON object")
    lowered = normalized(body, "the event")
    type_name, app_id = lowered.get("typename"), lowered.get("appid")
    if not isinstance(type_name, str) or not type_name:
        raise BadInputError("TypeName is missing")
    if app_id is None or app_id == "":
        raise BadInputError("Appid is missing")
    app_id = validate_app_id(app_id)
    data = lowered.get("data") or {}
    if not isinstance(data, Mapping):
        raise BadInputError("Data must be an object")
    wxid = lowered.get("wxid")
    return GatewayEvent(type_name, app_id, wxid if isinstance(wxid, str) else "", dict(data))


@dataclass(frozen=True)
class InboundMessage:
    app_id: str
    new_msg_id: str
    msg_type: int
    from_wxid: str
    to_wxid: str
    content: str
    create_time: int | None
    is_self: bool
    is_group: bool
    sender_wxid: str
    account_wxid: str

    @property
    def chat(self) -> str:
        """Where a reply goes: the group, or the other person."""
        if self.is_group:
            return self.from_wxid if self.from_wxid.endswith("@chatroom") else self.to_wxid
        return self.to_wxid if self.is_self else self.from_wxid

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_event(cls, event: GatewayEvent) -> InboundMessage:
        d = normalized(event.data, "Data")
        new_msg_id = d.get("newmsgid")
        if new_msg_id is None or str(new_msg_id) == "":
            raise BadInputError("AddMsg without NewMsgId")
        from_wxid, to_wxid = _string(d.get("fromusername")), _string(d.get("tousername"))
        content = _string(d.get("content"))
        is_group = from_wxid.endswith("@chatroom") or to_wxid.endswith("@chatroom")
        sender = from_wxid
        if from_wxid.endswith("@chatroom"):
            head, sep, rest = content.partition(":\n")
            if sep and head and " " not in head:
                sender, content = head, rest
            else:
                sender = ""
        is_self = bool(event.wxid) and (from_wxid == event.wxid or sender == event.wxid)
        create_time = d.get("createtime")
        return cls(
            app_id=event.app_id,
            new_msg_id=str(new_msg_id),
            msg_type=int(d.get("msgtype") or 0),
            from_wxid=from_wxid,
            to_wxid=to_wxid,
            content=content,
            create_time=int(create_time)
            if isinstance(create_time, int | str) and str(create_time).isdigit()
            else None,
            is_self=is_self,
            is_group=is_group,
            sender_wxid=sender,
            account_wxid=event.wxid,
        )


def stored_record(message: InboundMessage, max_bytes: int) -> str:
    """The JSON kept of ``message``: whole when it fits in ``max_bytes``; otherwise its
    content cut (at a character boundary) so that it fits, flagged ``truncated``, with
    ``content_bytes`` the whole content's size."""
    record = message.as_dict()
    whole = json.dumps(record, ensure_ascii=False)
    if len(whole.encode()) <= max_bytes:
        return whole
    content = message.content.encode()
    record.update(truncated=True, content_bytes=len(content), content="")
    room = max_bytes - len(json.dumps(record, ensure_ascii=False).encode())
    # JSON escaping can make a character longer than its UTF-8 bytes: shrink until it fits
    keep = max(0, room)
    while True:
        record["content"] = content[:keep].decode("utf-8", "ignore")
        text = json.dumps(record, ensure_ascii=False)
        if len(text.encode()) <= max_bytes or keep == 0:
            return text
        keep = max(0, keep - max(1, len(text.encode()) - max_bytes))


def _string(value: Any) -> str:
    """GeWe wraps strings as {"string": "..."}; some deployments send them bare."""
    if isinstance(value, Mapping):
        value = value.get("string", "")
    return "" if value is None else str(value)


class InboundStore:
    def __init__(
        self, client: redis.Redis, settings: Settings, keys: Keys, scripts: Scripts
    ) -> None:
        self.redis = client
        self.settings = settings
        self.keys = keys
        self.scripts = scripts

    def claim(self, message: InboundMessage, owner: str) -> str:
        """Record ``message`` once: "new", "redelivered" (same task again) or "duplicate".
        What is stored is at most ``WXTASKS_INBOUND_MAX_BYTES``: a longer message's content
        is cut, and the record says ``truncated`` and how long the content was."""
        reply = self.scripts.inbound_claim(
            keys=[self.keys.inbound_seen(message.app_id, message.new_msg_id), self.keys.inbound],
            args=[
                owner,
                SEEN_TTL_S,
                stored_record(message, self.settings.inbound_max_bytes),
                self.settings.inbound_maxlen,
            ],
        )
        return reply.decode() if isinstance(reply, bytes) else str(reply)

    def list(self, limit: int = 50, app_id: str | None = None) -> list[dict[str, Any]]:
        raw = self.redis.lrange(self.keys.inbound, 0, (limit * 5 if app_id else limit) - 1)
        items = [json.loads(x) for x in raw]
        if app_id:
            items = [m for m in items if m["app_id"] == app_id]
        return items[:limit]


class SendText(Protocol):
    def __call__(
        self, app_id: str, to_wxid: str, content: str, *, dedup_key: str | None = None
    ) -> None: ...


@dataclass(frozen=True)
class HandlerContext:
    settings: Settings
    send_text: SendText


Handler = Callable[[InboundMessage, HandlerContext], None]


def load_handlers(settings: Settings) -> list[tuple[str, Handler]]:
    """Handlers named in settings, then those registered as entry points."""
    found: list[tuple[str, Handler]] = []
    for name in filter(None, (n.strip() for n in settings.message_handlers.split(","))):
        module, _, attr = name.partition(":")
        try:
            handler = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"WXTASKS_MESSAGE_HANDLERS: cannot load {name!r}: {exc}") from None
        found.append((name, handler))
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.append((f"{ep.module}:{ep.attr}", ep.load()))
    return found


def run_handlers(
    message: InboundMessage, ctx: HandlerContext, handlers: list[tuple[str, Handler]]
) -> list[str]:
    """Run every handler on a message (never on the account's own); returns the errors."""
    if message.is_self:
        return []
    errors = []
    for name, handler in handlers:
        try:
            handler(message, ctx)
        except Exception as exc:
            logger.exception(
                "handler %s failed on appId=%s newMsgId=%s",
                name,
                message.app_id,
                message.new_msg_id,
            )
            errors.append(f"{name}: {exc}")
    return errors
