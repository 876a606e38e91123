"""The send path's steps: validate → admit (one Lua round trip) → gateway → finish (one
round trip).

``Message`` is one outgoing message; ``SendPipeline`` runs the steps. What to do after each
answer (send, sleep, park in the outbox, finish) is :func:`wxtasks.sendcore.decide`; the
``send`` tasks carry it out. Tests call these plain methods directly too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from wxtasks.config import Settings
from wxtasks.errors import BadInputError
from wxtasks.gateway.client import GatewayClient, SendReceipt
from wxtasks.gateway.fleet import Fleet
from wxtasks.keys import Keys, validate_app_id
from wxtasks.scripts import Scripts
from wxtasks.send.deadletters import DeadLetters
from wxtasks.send.outbox import Outbox
from wxtasks.send.policy import Admission, Admit, DeadLetter, Lane, Status, Ticket

logger = logging.getLogger(__name__)

MAX_TEXT_CHARS = 20_000
MAX_FIELD_CHARS = 2_048

#: message kind -> (required fields, optional fields); field names are the task kwargs
KINDS: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "text": (("content",), ("ats",)),
    "image": (("img_url",), ()),
    "file": (("file_url", "file_name"), ()),
    "link": (("title", "desc", "link_url", "thumb_url"), ()),
}


@dataclass(frozen=True)
class Message:
    kind: str
    app_id: str
    to_wxid: str
    fields: dict[str, str]
    dedup_key: str | None = None

    @classmethod
    def parse(cls, kind: str, kwargs: Mapping[str, Any]) -> Message:
        """Validate task arguments into a Message; BadInputError says what is wrong."""
        required, optional = KINDS[kind]
        unknown = set(kwargs) - {"app_id", "to_wxid", "dedup_key", *required, *optional}
        if unknown:
            raise BadInputError(f"unexpected argument(s): {', '.join(sorted(unknown))}")
        app_id = _text(kwargs, "app_id", MAX_FIELD_CHARS)
        to_wxid = _text(kwargs, "to_wxid", MAX_FIELD_CHARS)
        validate_app_id(app_id)
        fields = {}
        for name in required:
            fields[name] = _text(
                kwargs, name, MAX_TEXT_CHARS if name == "content" else MAX_FIELD_CHARS
            )
        for name in optional:
            if kwargs.get(name) not in (None, ""):
                fields[name] = _text(kwargs, name, MAX_FIELD_CHARS)
        dedup_key = kwargs.get("dedup_key")
        if dedup_key is not None and (not isinstance(dedup_key, str) or not dedup_key):
            raise BadInputError("dedup_key must be a non-empty string when given")
        return cls(kind, app_id, to_wxid, fields, dedup_key)

    @property
    def digest(self) -> str:
        """What makes two messages "the same": the caller's dedup_key, or the content."""
        if self.dedup_key:
            basis = "key\0" + self.dedup_key
        else:
            basis = json.dumps(
                [self.kind, self.to_wxid, self.fields], sort_keys=True, ensure_ascii=False
            )
        return hashlib.sha256(basis.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _text(kwargs: Mapping[str, Any], name: str, limit: int) -> str:
    value = kwargs.get(name)
    if value is None or value == "":
        raise BadInputError(f"{name} is required")
    if not isinstance(value, str):
        raise BadInputError(f"{name} must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise BadInputError(f"{name} is too long: {len(value)} characters (limit {limit})")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInputError(f"{name} is not valid UTF-8 text") from None
    return value


#: a dispatched message admits on the tokens the dispatcher took for it if it reaches a
#: worker this soon; one that sat in the broker longer (workers were down) asks the
#: buckets again, so a backlog never bursts out at the gateway
PAID_FRESH_MS = 2000


class SendPipeline:
    """The send path's Redis and gateway steps; :func:`wxtasks.sendcore.decide` says
    which to take."""

    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        gateway: GatewayClient | Fleet,
        scripts: Scripts | None = None,
        *,
        outbox: Outbox | None = None,
    ) -> None:
        """``gateway``: the fleet (which gateway serves each account), or one client that
        serves the ``default`` gateway."""
        self.redis = client
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.scripts = scripts or Scripts(client)
        if isinstance(gateway, Fleet):
            self.fleet = gateway
        else:
            self.fleet = Fleet(client, settings, scripts=self.scripts, default_client=gateway)
        self.outbox = outbox or Outbox(client, settings, self.keys, self.scripts)
        self.deadletters = DeadLetters(client, self.keys)
        #: how long an admitted send may take: its claim's hold (connect + read timeout)
        self.hold_ms = int((2 * settings.gateway_timeout_s + 5) * 1000)
        #: admit.lua's arguments that never change, encoded once (packing ~25 arguments
        #: is a good part of an admission's cost in the client)
        self._constants = [
            str(x).encode()
            for x in (
                settings.dedup_ttl_s,
                settings.rate_per_second,
                settings.burst,
                settings.account_rate_per_second,
                settings.account_burst,
                self.hold_ms,
                PAID_FRESH_MS,
            )
        ]
        self._unreplicated_logged_at = -1e9

    def claim_key(self, message: Message) -> str:
        return self.keys.claim(message.app_id, message.digest)

    def ticket(
        self,
        task_id: str,
        lane: Lane,
        enqueued_at: float | None,
        attempt: int = 0,
        *,
        from_outbox: bool = False,
        campaign: str = "",
    ) -> Ticket:
        """``enqueued_at`` None: the message does not say; admission finds out."""
        return Ticket(
            task_id,
            lane,
            enqueued_at if enqueued_at is not None else -1.0,
            self.outbox.window_s(lane),
            attempt,
            from_outbox,
            campaign,
        )

    def admit(
        self,
        message: Message,
        ticket: Ticket,
        *,
        paid_at_ms: float | None = None,
        now_ms: float | None = None,
    ) -> Admission:
        """One Lua round trip (``admit.lua``). The account's gateway (which bucket) is this
        process's last guess; the script checks it against the account record and says
        ``regateway`` when it was wrong: then, and only then, a second trip."""
        gateway = self.fleet.guess(message.app_id)
        reply = self._admit(message, ticket, gateway, paid_at_ms, now_ms)
        if _s(reply[0]) == "regateway":
            gateway = self.fleet.remember(message.app_id, _s(reply[1]))
            reply = self._admit(message, ticket, gateway, paid_at_ms, now_ms)
        return _admission(reply, gateway)

    def _admit(
        self,
        message: Message,
        ticket: Ticket,
        gateway: str,
        paid_at_ms: float | None,
        now_ms: float | None,
    ) -> list[Any]:
        s = self.settings
        rate, burst = self.fleet.limits(gateway)
        # with Sentinel, the claim must be on a replica before the gateway call: a failover
        # right after an asynchronously replicated claim would forget it and let a
        # redelivery send the message again. WAIT rides in the same round trip.
        wait = s.replica_wait_ms if s.sentinel_master else 0
        client: Any = self.redis.pipeline(transaction=False) if wait else None
        c = self._constants
        reply = self.scripts.admit(
            keys=[
                self.keys.account(message.app_id),
                self.keys.account_bucket(message.app_id),
                self.keys.global_bucket,
                self.claim_key(message),
                self.keys.outbox_lane(message.app_id, ticket.lane),
                self.keys.seen(message.app_id, ticket.task_id),
                self.keys.campaigns_stopped,
                self.keys.gateway_bucket(gateway),
                self.keys.gateways_down,
            ],
            args=[
                ticket.task_id,
                *c[:5],
                "" if now_ms is None else repr(now_ms),
                repr(ticket.enqueued_at * 1000) if ticket.enqueued_at >= 0 else "",
                int(ticket.window_s * 1000),
                self.outbox.reserve(ticket.lane),
                "0" if ticket.from_outbox else "1",
                "" if paid_at_ms is None else repr(paid_at_ms),
                c[5],
                ticket.campaign,
                c[6],
                gateway,
                rate,
                burst,
            ],
            client=client,
        )
        if client is None:
            return list(reply)
        client.execute_command("WAIT", 1, wait)
        admitted, replicas = client.execute()
        if not replicas and _s(admitted[0]) == "admitted":
            now = time.monotonic()
            if now - self._unreplicated_logged_at > 60:  # once a minute, not per send
                self._unreplicated_logged_at = now
                logger.warning(
                    "appId=%s: no replica acknowledged a send claim within %d ms (the "
                    "primary has no replica in sync?): a failover now could forget it",
                    message.app_id,
                    wait,
                )
        return list(admitted)

    def deliver(self, message: Message, gateway: str | None = None) -> SendReceipt:
        """Send through the account's gateway (``gateway``: as admission checked it)."""
        f = message.fields
        g = self.fleet.client(gateway or self.fleet.gateway_of(message.app_id))
        if message.kind == "text":
            return g.send_text(message.app_id, message.to_wxid, f["content"], f.get("ats"))
        if message.kind == "image":
            return g.send_image(message.app_id, message.to_wxid, f["img_url"])
        if message.kind == "file":
            return g.send_file(message.app_id, message.to_wxid, f["file_url"], f["file_name"])
        return g.send_link(
            message.app_id, message.to_wxid, f["title"], f["desc"], f["link_url"], f["thumb_url"]
        )

    def finish(
        self,
        message: Message | None,
        ticket: Ticket,
        status: Status,
        *,
        receipt: SendReceipt | None = None,
        dead_letter: DeadLetter | None = None,
        also: Callable[[Any], None] | None = None,
    ) -> list[Any]:
        """Record how the message ended, in one round trip: its outcome on the claim (sent
        or unknown after a gateway call), the count, the dead letter, the outbox
        forgetting it, and whatever ``also`` queues (a campaign's record, last)."""
        pipe = self.redis.pipeline(transaction=False)
        if message is not None and (receipt is not None or status is Status.UNKNOWN):
            r = receipt
            self.scripts.claim_record(
                keys=[self.claim_key(message)],
                args=[
                    ticket.task_id,
                    status.value,
                    r.msg_id if r else "",
                    r.new_msg_id if r else "",
                    r.create_time if r and r.create_time is not None else "",
                ],
                client=pipe,
            )
        pipe.hincrby(self.keys.send_stats, status.value, 1)
        if dead_letter is not None:
            self.deadletters.add(dead_letter.as_dict(), pipe=pipe)
        if ticket.from_outbox:
            self.outbox.finished(ticket.task_id, pipe)
        if also is not None:
            also(pipe)
        return list(pipe.execute())

    def count_wait(self, wait_s: float) -> None:
        """A send slept for a token (``wxtasks_token_waits_total`` and its seconds)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(self.keys.send_stats, "token_waits", 1)
        pipe.hincrbyfloat(self.keys.send_stats, "token_wait_seconds", wait_s)
        pipe.execute()

    def release(self, message: Message, owner: str) -> None:
        """The message did not go out: free its claim so a retry (or a repeat) may send."""
        self.scripts.claim_release(keys=[self.claim_key(message)], args=[owner])


def _admission(reply: list[Any], gateway: str = "") -> Admission:
    admission = _read(reply)
    if gateway:
        object.__setattr__(admission, "gateway", gateway)  # built just now, not shared yet
    return admission


def _read(reply: list[Any]) -> Admission:
    outcome = Admit(_s(reply[0]))
    if outcome in (Admit.ADMITTED, Admit.EXPIRED):
        return Admission(outcome, enqueued_at=float(reply[1]) / 1000)
    if outcome is Admit.GATEWAY_DOWN:
        return Admission(outcome, enqueued_at=float(reply[1]) / 1000)
    if outcome is Admit.WAIT:
        return Admission(
            outcome,
            wait_s=int(reply[1]) / 1000.0,
            why=_s(reply[2]),
            enqueued_at=float(reply[3]) / 1000,
        )
    if outcome in (Admit.NOT_ONLINE, Admit.STOPPED):
        return Admission(outcome, state=_s(reply[1]), enqueued_at=float(reply[2]) / 1000)
    if outcome is Admit.DUPLICATE:
        return Admission(
            outcome, claim=dict(zip(_DUPLICATE_FIELDS, map(_s, reply[1:]), strict=True))
        )
    if outcome is Admit.REDELIVERED:
        claim = dict(zip(_REDELIVERED_FIELDS, map(_s, reply[1:5]), strict=True))
        return Admission(outcome, claim=claim, wait_s=int(reply[5]) / 1000.0)
    return Admission(outcome)


_DUPLICATE_FIELDS = ("owner", "status", "msgId", "newMsgId", "createTime")
_REDELIVERED_FIELDS = ("status", "msgId", "newMsgId", "createTime")


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)
