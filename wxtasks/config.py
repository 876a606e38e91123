"""Settings: the one place wxtasks reads the environment.

``Settings.from_env()`` reads ``os.environ`` (after loading a ``.env`` file from the
working directory, which never overrides variables already set) and validates every
value; a bad one raises :class:`~wxtasks.errors.ConfigError` naming the variable.
Everything else takes a ``Settings`` object: no module reads the environment itself.

Public names (other teams' deploy scripts and docker-compose use them):

=================================  =======================================  ==========
variable                           meaning                                  default
=================================  =======================================  ==========
WECHATAPI_BASE_URL                 gateway base URL                         http://127.0.0.1:2531
VIDEOS_API_TOKEN                   gateway token (a secret)                 ""
WECHATAPI_PROFILE                  videosapi | gewe | v1                    videosapi
WECHATAPI_TIMEOUT_S                HTTP timeout per gateway call            10
WXTASKS_REDIS_URL                  state store                              redis://localhost:6379/0
CELERY_BROKER_URL                  broker (redis:// or amqp://)             state Redis, db 1
CELERY_RESULT_BACKEND              task results                             state Redis URL
WXTASKS_RATE_PER_SECOND            global send rate                         5
WXTASKS_BURST                      global burst                             10
WXTASKS_ACCOUNT_RATE_PER_SECOND    default per-account rate                 1
WXTASKS_ACCOUNT_BURST              default per-account burst                2
WXTASKS_DEDUP_TTL_S                how long a send claim blocks repeats     300
WXTASKS_SEND_DEADLINE_S            how long a reply may wait to go out,     600
                                   from its first enqueue
WXTASKS_BULK_DEADLINE_S            how long a bulk message may wait         86400
WXTASKS_VISIBILITY_TIMEOUT_S       Redis broker: redeliver an unacked task  20
                                   (its worker died) after this long
WXTASKS_HEARTBEAT_INTERVAL_S       heartbeat period per account             30
WXTASKS_HEARTBEAT_BATCH            accounts probed per heartbeat task       50
WXTASKS_MAX_RETRY                  reconnect attempts before ERROR          5
WXTASKS_BACKOFF_MAX_S              reconnect backoff cap                    60
WXTASKS_ERROR_RETRY_INTERVAL_S     ERROR accounts retried this often        1800
WXTASKS_LOGIN_QR_TTL_S             a QR login older than this gives up      120
WXTASKS_KEY_PREFIX                 prefix of every Redis key                wx
WXTASKS_EVENTS_MAXLEN              events stream cap (approximate)          10000
WXTASKS_ALERT_WEBHOOK_URL          alert robot URL (empty: no alerts)       ""
WXTASKS_ALERT_FORMAT               dingtalk | feishu | wecom | json         json
WXTASKS_LOG_FORMAT                 text | json                              text
WXTASKS_CALLBACK_SECRET            the secret path part of the callback URL ""
WXTASKS_MESSAGE_HANDLERS           handlers for received messages: dotted   the two shipped
                                   ``module:function`` names, comma-separated
WXTASKS_AUTOREPLY_RULES            JSON {"keyword": "reply", ...}           {}
WXTASKS_FORWARD_RULES              JSON [{"from_app_id", "to_app_id",       []
                                   "to_wxid", "keyword"?}, ...]
WXTASKS_INBOUND_MAXLEN             received messages kept (newest)          10000
WXTASKS_QUORUM_QUEUES              RabbitMQ: declare send/control as        false
                                   quorum queues (producers must too)
WXTASKS_LOG_LEVEL                  logging level name                       INFO
=================================  =======================================  ==========
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from wxtasks.errors import ConfigError

PROFILES = ("videosapi", "gewe", "v1")
ALERT_FORMATS = ("dingtalk", "feishu", "wecom", "json")
LOG_FORMATS = ("text", "json")

T = TypeVar("T")


@dataclass(frozen=True)
class Settings:
    gateway_base_url: str = "http://127.0.0.1:2531"
    gateway_token: str = field(default="", repr=False)
    gateway_profile: str = "videosapi"
    gateway_timeout_s: float = 10.0
    redis_url: str = "redis://localhost:6379/0"
    broker_url: str = ""
    result_backend_url: str = ""
    rate_per_second: float = 5.0
    burst: int = 10
    account_rate_per_second: float = 1.0
    account_burst: int = 2
    dedup_ttl_s: int = 300
    send_deadline_s: int = 600
    bulk_deadline_s: int = 86_400
    visibility_timeout_s: int = 20
    heartbeat_interval_s: float = 30.0
    heartbeat_batch: int = 50
    max_retry: int = 5
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    error_retry_interval_s: float = 1800.0
    login_qr_ttl_s: float = 120.0
    key_prefix: str = "wx"
    events_maxlen: int = 10_000
    alert_webhook_url: str = field(default="", repr=False)
    alert_format: str = "json"
    log_format: str = "text"
    log_level: str = "INFO"
    callback_secret: str = field(default="", repr=False)
    message_handlers: str = "wxtasks.handlers:keyword_reply,wxtasks.handlers:forward"
    autoreply_rules: str = "{}"
    forward_rules: str = "[]"
    inbound_maxlen: int = 10_000
    quorum_queues: bool = False

    def __post_init__(self) -> None:
        if not self.broker_url:
            object.__setattr__(self, "broker_url", _with_db(self.redis_url, 1))
        if not self.result_backend_url:
            object.__setattr__(self, "result_backend_url", self.redis_url)
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError (naming the variable) for any value wxtasks cannot run with."""
        _url(self.gateway_base_url, "WECHATAPI_BASE_URL", ("http", "https"))
        _url(self.redis_url, "WXTASKS_REDIS_URL", ("redis", "rediss", "unix"))
        _url(self.broker_url, "CELERY_BROKER_URL", ("redis", "rediss", "amqp", "pyamqp", "amqps"))
        _url(self.result_backend_url, "CELERY_RESULT_BACKEND", ("redis", "rediss"))
        _choice(self.gateway_profile, "WECHATAPI_PROFILE", PROFILES)
        _choice(self.alert_format, "WXTASKS_ALERT_FORMAT", ALERT_FORMATS)
        _choice(self.log_format, "WXTASKS_LOG_FORMAT", LOG_FORMATS)
        for name in _POSITIVE:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{_ENV_NAMES[name]} must be > 0, got {getattr(self, name)!r}")
        if self.max_retry < 0:
            raise ConfigError(f"WXTASKS_MAX_RETRY must be >= 0, got {self.max_retry!r}")
        if self.visibility_timeout_s <= self.gateway_timeout_s:
            # a worker holds a message for one gateway call at most (waiting happens in
            # the Redis outbox), so only that has to fit
            raise ConfigError(
                "WXTASKS_VISIBILITY_TIMEOUT_S must be longer than WECHATAPI_TIMEOUT_S"
            )
        if self.backoff_max_s < self.backoff_base_s:
            raise ConfigError("WXTASKS_BACKOFF_MAX_S must be >= the first backoff (1 s)")
        for name, env, kind in (
            ("autoreply_rules", "WXTASKS_AUTOREPLY_RULES", dict),
            ("forward_rules", "WXTASKS_FORWARD_RULES", list),
        ):
            try:
                parsed = json.loads(getattr(self, name))
            except ValueError as exc:
                raise ConfigError(f"{env} is not valid JSON: {exc}") from None
            if not isinstance(parsed, kind):
                raise ConfigError(f"{env} must be a JSON {'object' if kind is dict else 'array'}")
        if not self.key_prefix or any(c in self.key_prefix for c in " {}"):
            raise ConfigError(
                f"WXTASKS_KEY_PREFIX must be non-empty without spaces or braces, "
                f"got {self.key_prefix!r}"
            )

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, dotenv: bool = True, **overrides: Any
    ) -> Settings:
        """Build settings from ``environ`` (default: ``os.environ`` plus ``./.env``)."""
        if environ is None:
            if dotenv:
                from dotenv import load_dotenv

                load_dotenv(Path.cwd() / ".env", override=False)
            environ = os.environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            env = _ENV_NAMES[f.name]
            raw = environ.get(env)
            if raw is None or raw.strip() == "":
                continue
            values[f.name] = _parse(raw.strip(), _TYPES[f.name], env)
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    def environ(self) -> dict[str, str]:
        """These settings as environment variables (for child processes)."""
        return {_ENV_NAMES[f.name]: str(getattr(self, f.name)) for f in fields(self)}


_ENV_NAMES: dict[str, str] = {
    "gateway_base_url": "WECHATAPI_BASE_URL",
    "gateway_token": "VIDEOS_API_TOKEN",
    "gateway_profile": "WECHATAPI_PROFILE",
    "gateway_timeout_s": "WECHATAPI_TIMEOUT_S",
    "redis_url": "WXTASKS_REDIS_URL",
    "broker_url": "CELERY_BROKER_URL",
    "result_backend_url": "CELERY_RESULT_BACKEND",
    "rate_per_second": "WXTASKS_RATE_PER_SECOND",
    "burst": "WXTASKS_BURST",
    "account_rate_per_second": "WXTASKS_ACCOUNT_RATE_PER_SECOND",
    "account_burst": "WXTASKS_ACCOUNT_BURST",
    "dedup_ttl_s": "WXTASKS_DEDUP_TTL_S",
    "send_deadline_s": "WXTASKS_SEND_DEADLINE_S",
    "bulk_deadline_s": "WXTASKS_BULK_DEADLINE_S",
    "visibility_timeout_s": "WXTASKS_VISIBILITY_TIMEOUT_S",
    "heartbeat_interval_s": "WXTASKS_HEARTBEAT_INTERVAL_S",
    "heartbeat_batch": "WXTASKS_HEARTBEAT_BATCH",
    "max_retry": "WXTASKS_MAX_RETRY",
    "backoff_base_s": "WXTASKS_BACKOFF_BASE_S",
    "backoff_max_s": "WXTASKS_BACKOFF_MAX_S",
    "error_retry_interval_s": "WXTASKS_ERROR_RETRY_INTERVAL_S",
    "login_qr_ttl_s": "WXTASKS_LOGIN_QR_TTL_S",
    "key_prefix": "WXTASKS_KEY_PREFIX",
    "events_maxlen": "WXTASKS_EVENTS_MAXLEN",
    "alert_webhook_url": "WXTASKS_ALERT_WEBHOOK_URL",
    "alert_format": "WXTASKS_ALERT_FORMAT",
    "log_format": "WXTASKS_LOG_FORMAT",
    "log_level": "WXTASKS_LOG_LEVEL",
    "callback_secret": "WXTASKS_CALLBACK_SECRET",
    "message_handlers": "WXTASKS_MESSAGE_HANDLERS",
    "autoreply_rules": "WXTASKS_AUTOREPLY_RULES",
    "forward_rules": "WXTASKS_FORWARD_RULES",
    "inbound_maxlen": "WXTASKS_INBOUND_MAXLEN",
    "quorum_queues": "WXTASKS_QUORUM_QUEUES",
}

ENV_NAMES = frozenset(_ENV_NAMES.values())


def _bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


_bool.__name__ = "bool (true/false)"

_PARSERS: dict[str, Callable[[str], Any]] = {"str": str, "float": float, "int": int, "bool": _bool}
_TYPES: dict[str, Callable[[str], Any]] = {f.name: _PARSERS[str(f.type)] for f in fields(Settings)}

_POSITIVE = (
    "gateway_timeout_s",
    "rate_per_second",
    "burst",
    "account_rate_per_second",
    "account_burst",
    "dedup_ttl_s",
    "send_deadline_s",
    "bulk_deadline_s",
    "visibility_timeout_s",
    "heartbeat_interval_s",
    "heartbeat_batch",
    "backoff_base_s",
    "backoff_max_s",
    "error_retry_interval_s",
    "login_qr_ttl_s",
    "events_maxlen",
    "inbound_maxlen",
)


def _parse(raw: str, kind: Callable[[str], T], env: str) -> T:
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{env}: cannot read {raw!r} as {kind.__name__}") from None


def _url(value: str, env: str, schemes: tuple[str, ...]) -> None:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ConfigError(f"{env}: not a URL: {exc}") from None
    if parts.scheme not in schemes or not (parts.netloc or parts.path):
        raise ConfigError(f"{env}: expected a {'/'.join(schemes)} URL, got {_redact(value)!r}")


def _choice(value: str, env: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{env} must be one of {', '.join(choices)}; got {value!r}")


def _with_db(redis_url: str, db: int) -> str:
    parts = urlsplit(redis_url)
    if parts.scheme not in ("redis", "rediss"):
        return redis_url
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


def _redact(url: str) -> str:
    """A URL with any password replaced, fit for an error message."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


redact_url = _redact
