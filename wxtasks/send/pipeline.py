"""The send path's steps: validate → admit (one Lua round trip) → gateway → finish (one
round trip).

``Message`` is one outgoing message; ``SendPipeline`` runs the steps. What to do after each
answer (send, sleep, park in the outbox, finish) is :func:`wxtasks.send.policy.decide`; the
``send`` tasks carry it out. Tests call these plain methods directly too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import redis

from wxtasks.config import Settings
from wxtasks.errors import (
    AccountOfflineError,
    BadInputError,
    GatewayAuthError,
    GatewayBusinessError,
    GatewayOutcomeUnknownError,
    GatewayUnavailableError,
)
from wxtasks.gateway.client import SendReceipt
from wxtasks.gateway.fleet import Fleet
from wxtasks.keys import Keys, validate_app_id
from wxtasks.scripts import Scripts
from wxtasks.send.gates import Admission, Answer, Lane, read_admission, to_group
from wxtasks.send.pacing import Policy
from wxtasks.send.policy import Gateway, GatewayAnswer, Ticket

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
    def to_group(self) -> bool:
        return to_group(self.to_wxid)

    @cached_property  # the claim's key: admission and the ending both need it
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
    """The send path's Redis and gateway steps; :func:`wxtasks.send.policy.decide` says
    which to take."""

    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        keys: Keys,
        scripts: Scripts,
        fleet: Fleet,
        pacing: Policy,
    ) -> None:
        """``fleet``: which gateway serves each account, with a pooled client per gateway."""
        self.redis = client
        self.settings = settings
        self.keys = keys
        self.scripts = scripts
        self.fleet = fleet
        self.pacing = pacing
        self._random = random.Random()
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
            lane.window_s(self.settings),
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
        if _s(reply[0]) == Answer.REGATEWAY:
            gateway = self.fleet.remember(message.app_id, _s(reply[1]))
            reply = self._admit(message, ticket, gateway, paid_at_ms, now_ms)
        return read_admission(reply, gateway)

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
        bulk = ticket.lane is Lane.BULK
        now = (time.time() if now_ms is None else now_ms / 1000) if bulk else 0.0
        app = message.app_id
        reply = self.scripts.admit(
            keys=[
                self.keys.account(app),
                self.keys.account_bucket(app),
                self.keys.global_bucket,
                self.claim_key(message),
                self.keys.outbox_lane(app, ticket.lane),
                self.keys.seen(app, ticket.task_id),
                self.keys.campaigns_stopped,
                self.keys.gateway_bucket(gateway),
                self.keys.gateways_down,
                # an interactive send reads no bulk count: a key of its slot stands in
                self.keys.bulk_day(app, self.pacing.day(now) if bulk else "-"),
                self.keys.campaigns_jitter,
            ],
            args=[
                ticket.task_id,
                *c[:5],
                "" if now_ms is None else repr(now_ms),
                repr(ticket.enqueued_at * 1000) if ticket.enqueued_at >= 0 else "",
                int(ticket.window_s * 1000),
                ticket.lane.value,
                "0" if ticket.from_outbox else "1",
                "" if paid_at_ms is None else repr(paid_at_ms),
                c[5],
                ticket.campaign,
                c[6],
                gateway,
                rate,
                burst,
                "1" if message.to_group else "0",
                # the pacing gates' policy: only a bulk send meets them
                *(self.pacing.args(now, self._random.randrange(1 << 30)) if bulk else ()),
            ],
            client=client,
        )
        if client is None:
            return list(reply)
        client.execute_command("WAIT", 1, wait)
        admitted, replicas = client.execute()
        if not replicas and _s(admitted[0]) == Answer.ADMITTED:
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

    def deliver(
        self, message: Message, gateway: str | None = None
    ) -> tuple[SendReceipt | None, GatewayAnswer]:
        """Send through the account's gateway (``gateway``: as admission checked it); what
        came of it as a gateway answer — the one place a gateway's exceptions become one."""
        try:
            return self._deliver(message, gateway), GatewayAnswer(Gateway.SENT)
        except AccountOfflineError as exc:  # before its base class, GatewayBusinessError
            return None, GatewayAnswer(Gateway.OFFLINE, exc.msg)
        except GatewayAuthError as exc:
            return None, GatewayAnswer(Gateway.AUTH, str(exc))
        except GatewayBusinessError as exc:
            return None, GatewayAnswer(Gateway.BUSINESS, str(exc))
        except GatewayUnavailableError as exc:
            return None, GatewayAnswer(Gateway.UNAVAILABLE, str(exc))
        except GatewayOutcomeUnknownError as exc:
            return None, GatewayAnswer(Gateway.UNKNOWN, str(exc))
        except BadInputError as exc:
            return None, GatewayAnswer(Gateway.BAD_INPUT, str(exc))

    def _deliver(self, message: Message, gateway: str | None) -> SendReceipt:
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

    def count_wait(self, wait_s: float) -> None:
        """A send slept for a token (``wxtasks_token_waits_total`` and its seconds)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(self.keys.send_stats, "token_waits", 1)
        pipe.hincrbyfloat(self.keys.send_stats, "token_wait_seconds", wait_s)
        pipe.execute()

    def release(self, message: Message, owner: str) -> None:
        """The message did not go out: free its claim so a retry (or a repeat) may send."""
        self.scripts.claim_release(keys=[self.claim_key(message)], args=[owner])


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)
