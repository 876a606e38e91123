"""Settings: the one place wxtasks reads the environment.

``Settings.from_env()`` reads ``os.environ`` (after loading a ``.env`` file from the
working directory, which never overrides variables already set) and validates every
value; a bad one raises :class:`~wxtasks.errors.ConfigError` naming the variable.
Everything else takes a ``Settings`` object: no other module reads the environment.

Each setting is declared once, as a field of ``Settings``: its environment name, type,
default, check and meaning. :data:`SETTINGS` is that table; the list below and the
README's "Configuration" table are generated from it (a test keeps them equal).

Public names (other teams' deploy scripts and docker-compose use them):

``WECHATAPI_BASE_URL`` (default ``http://127.0.0.1:2531``)
    gateway base URL
``VIDEOS_API_TOKEN`` (default empty)
    gateway token (a secret: never logged, never a task argument)
``WECHATAPI_PROFILE`` (default ``videosapi``)
    the gateway's route table: videosapi, gewe, v1
``WECHATAPI_TIMEOUT_S`` (default ``10``)
    HTTP timeout per gateway call
``WXTASKS_REDIS_URL`` (default ``redis://localhost:6379/0``)
    state store (and task results): redis://..., or Redis Sentinel as
    redis+sentinel://[:password@]host1:26379,host2:26379/<master name>/<db>
``CELERY_BROKER_URL`` (default state Redis, db 1)
    broker: redis://..., amqp://..., or Redis Sentinel in kombu's form
    sentinel://[:password@]host1:26379/1;sentinel://host2:26379/1 (the master is
    WXTASKS_REDIS_URL's)
``CELERY_RESULT_BACKEND`` (default WXTASKS_REDIS_URL)
    task results: redis://..., or sentinel://... as the broker
``WXTASKS_RATE_PER_SECOND`` (default ``5``)
    global send rate (token bucket)
``WXTASKS_BURST`` (default ``10``)
    global burst
``WXTASKS_GATEWAY_RATE_PER_SECOND`` (default WXTASKS_RATE_PER_SECOND)
    each gateway's own send limit (its API's): the default gateway's, and a registered
    one's unless it sets --rate
``WXTASKS_GATEWAY_BURST`` (default WXTASKS_BURST)
    each gateway's burst, unless the gateway sets --burst
``WXTASKS_ACCOUNT_RATE_PER_SECOND`` (default ``1``)
    default per-account send rate (override per account)
``WXTASKS_ACCOUNT_BURST`` (default ``2``)
    default per-account burst
``WXTASKS_DEDUP_TTL_S`` (default ``300``)
    how long a send blocks its repeats
``WXTASKS_SEND_DEADLINE_S`` (default ``600``)
    how long an interactive message may wait to go out, counted from its first enqueue
``WXTASKS_BULK_DEADLINE_S`` (default ``86400``)
    how long a bulk message (群发, campaigns) may wait to go out, from its first enqueue
``WXTASKS_VISIBILITY_TIMEOUT_S`` (default ``20``)
    Redis broker: hand a dead worker's messages to another worker after this long
    (nothing waits in the broker, so it only has to outlast one gateway call)
``WXTASKS_HEARTBEAT_INTERVAL_S`` (default ``30``)
    heartbeat period per account
``WXTASKS_HEARTBEAT_BATCH`` (default ``50``)
    accounts probed per heartbeat task
``WXTASKS_MAX_RETRY`` (default ``5``)
    reconnect attempts before ERROR
``WXTASKS_BACKOFF_BASE_S`` (default ``1``)
    first reconnect backoff (doubles each attempt)
``WXTASKS_BACKOFF_MAX_S`` (default ``60``)
    reconnect backoff cap
``WXTASKS_ERROR_RETRY_INTERVAL_S`` (default ``1800``)
    ERROR accounts are retried (IDLE + login) this often
``WXTASKS_LOGIN_QR_TTL_S`` (default ``120``)
    a QR login older than this gives up
``WXTASKS_KEY_PREFIX`` (default ``wx``)
    prefix of every Redis key
``WXTASKS_SHARDS`` (default ``64``)
    account shards (fixed for a deployment: an account's keys name its shard); the
    dispatchers split them among themselves
``WXTASKS_EVENTS_MAXLEN`` (default ``10000``)
    events stream cap (approximate)
``WXTASKS_ALERT_WEBHOOK_URL`` (default empty)
    alert robot URL (empty: no alerts)
``WXTASKS_ALERT_FORMAT`` (default ``json``)
    alert body: dingtalk, feishu, wecom, json
``WXTASKS_LOG_FORMAT`` (default ``text``)
    log lines: text, or json (JSON lines with app_id)
``WXTASKS_LOG_LEVEL`` (default ``INFO``)
    logging level name
``WXTASKS_BEAT_LOCK_TTL_S`` (default ``10``)
    the active beat's lock period: a standby beat takes over within this long
``WXTASKS_CALLBACK_SECRET`` (default empty)
    the secret path part of the callback URL: at least 32 characters (the receiver
    refuses to start with less)
``WXTASKS_CALLBACK_ALLOW_FROM`` (default empty)
    the callback receiver answers only these sources (CIDRs, comma-separated: the
    gateways' network), 403 to others (empty: any source)
``WXTASKS_CALLBACK_MAX_BODY_BYTES`` (default ``1048576``)
    the callback receiver answers 413 to a larger body (and reads no further)
``WXTASKS_MESSAGE_HANDLERS`` (default the two shipped)
    handlers for received messages: module:function names, comma-separated
``WXTASKS_AUTOREPLY_RULES`` (default ``{}``)
    keyword_reply's rules, JSON {"keyword": "reply", ...}
``WXTASKS_FORWARD_RULES`` (default ``[]``)
    forward's rules, JSON [{"from_app_id", "to_app_id", "to_wxid", "keyword"?}, ...]
``WXTASKS_INBOUND_MAXLEN`` (default ``10000``)
    received messages kept (newest)
``WXTASKS_INBOUND_MAX_BYTES`` (default ``65536``)
    a stored received message is at most this long (JSON bytes); a longer one's content
    is cut and it is flagged truncated
``WXTASKS_QUORUM_QUEUES`` (default ``false``)
    RabbitMQ: declare send and control as quorum queues (producers must too)
``WXTASKS_BULK_JITTER_S`` (default ``1-3``)
    bulk sends: a random gap of MIN-MAX seconds after each private recipient (0-0: none;
    per account and per campaign too)
``WXTASKS_GROUP_JITTER_S`` (default ``2-5``)
    bulk sends: a random gap of MIN-MAX seconds after each group (…@chatroom)
``WXTASKS_DAILY_BULK_CAP`` (default ``0``)
    bulk sends per account and local day (0: no cap)
``WXTASKS_QUIET_HOURS`` (default ``00:00-07:00``)
    no bulk sends inside this local-time window, HH:MM-HH:MM (empty: none)
``WXTASKS_TIMEZONE`` (default ``Asia/Shanghai``)
    the time zone of quiet hours and of the daily cap's day
``WXTASKS_WARMUP_S`` (default ``14400``)
    no bulk sends this long after an account's first login on a new device (0: none)
``WXTASKS_COOLOFF_S`` (default ``3600``)
    the circuit breaker pauses an account's bulk lane this long
``WXTASKS_RISK_PATTERNS`` (default ``操作过于频繁``)
    gateway answers that trip the circuit breaker (substrings, |-separated)
``WXTASKS_BREAKER_ERRORS`` (default ``5``)
    ... as do this many gateway errors in a row on bulk sends
``WXTASKS_CAMPAIGN_STALL_S`` (default ``1800``)
    alert when a running campaign has sent nothing for this long
``WXTASKS_CONSOLE_USERS`` (default empty)
    console users, name:password[,...] (a password may be a scrypt$... hash)
``WXTASKS_CONSOLE_USERS_FILE`` (default empty)
    console users file: name:scrypt$... lines (`wxtasks console hash-password`)
``WXTASKS_CONSOLE_SECRET`` (default empty)
    signs console sessions and CSRF tokens (empty: random per process)
``WXTASKS_CONSOLE_URL`` (default empty)
    the console's public URL: needLogin alerts link to its QR login page; an https URL
    makes its cookies Secure
``WXTASKS_CONSOLE_IDLE_S`` (default ``3600``)
    a console session unused this long ends (any session ends 12 h after its login)
``WXTASKS_TRUSTED_PROXIES`` (default empty)
    reverse proxies (CIDRs, comma-separated) whose X-Forwarded-For / X-Real-IP /
    X-Forwarded-Proto the console and the callback receiver believe (empty: nobody's)
``WXTASKS_SECRETS_DIR`` (default empty)
    a directory of secret files: a gateway's token is read from the file named after its
    --token-env variable when that variable is not set (Docker/Kubernetes secrets)
``WXTASKS_GATEWAY_DOWN_FAILURES`` (default ``5``)
    a gateway is marked down after this many unavailable answers in a row (refused, 503)
    ...
``WXTASKS_GATEWAY_DOWN_AFTER_S`` (default ``10``)
    ... spread over at least this many seconds
``WXTASKS_GATEWAY_PROBE_INTERVAL_S`` (default ``10``)
    a gateway marked down gets one probe this often (its accounts none); at most the
    heartbeat interval
``WXTASKS_REPLICA_WAIT_MS`` (default ``100``)
    with Sentinel: a send's dedup claim waits up to this long for a replica to hold it
    before the gateway call, in the same round trip (WAIT 1); 0: do not wait
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from wxtasks.errors import ConfigError
from wxtasks.keys import DEFAULT_SHARDS

PROFILES = ("videosapi", "gewe", "v1")
#: Redis Sentinel in WXTASKS_REDIS_URL / CELERY_BROKER_URL / CELERY_RESULT_BACKEND
SENTINEL_SCHEME = "redis+sentinel"
#: ... and kombu's / Celery's form of it in CELERY_BROKER_URL / CELERY_RESULT_BACKEND
KOMBU_SENTINEL_SCHEME = "sentinel"
#: what a gateway's --token-env may name
SECRET_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")
ALERT_FORMATS = ("dingtalk", "feishu", "wecom", "json")
LOG_FORMATS = ("text", "json")

T = TypeVar("T")

#: a check takes a parsed value and returns what is wrong with it (after the variable's
#: name: "must be > 0, got -1"), or None when the value is fine
Check = Callable[[Any], str | None]


def _positive(value: float) -> str | None:
    return None if value > 0 else f"must be > 0, got {value!r}"


def _not_negative(value: float) -> str | None:
    return None if value >= 0 else f"must be >= 0, got {value!r}"


def _choice(*choices: str) -> Check:
    def check(value: str) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}; got {value!r}"

    return check


def _url(*schemes: str) -> Check:
    def check(value: str) -> str | None:
        try:
            parts = urlsplit(value)
            if parts.scheme == SENTINEL_SCHEME:  # several host:port, checked by its parser
                parse_sentinel_url(value)
            elif parts.scheme == KOMBU_SENTINEL_SCHEME:  # sentinel://h1:p/db;sentinel://...
                for one in value.split(";"):
                    urlsplit(one).port  # noqa: B018 - raises ValueError on a bad port
            else:
                parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            return f"is not a URL: {exc}"
        if parts.scheme not in schemes or not (parts.netloc or parts.path):
            return f"expected a {'/'.join(schemes)} URL, got {_redact(value)!r}"
        return None

    return check


def _json(kind: type) -> Check:
    def check(value: str) -> str | None:
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            return f"is not valid JSON: {exc}"
        if not isinstance(parsed, kind):
            return f"must be a JSON {'object' if kind is dict else 'array'}"
        return None

    return check


def _span(value: str) -> str | None:
    low, _, high = value.partition("-")
    try:
        if 0 <= float(low) <= float(high):
            return None
    except ValueError:
        pass
    return f"must be MIN-MAX seconds with 0 <= MIN <= MAX, got {value!r}"


def _quiet_hours(value: str) -> str | None:
    if not value.strip():
        return None
    start, _, end = value.partition("-")
    try:
        dt.time.fromisoformat(start.strip())
        dt.time.fromisoformat(end.strip())
    except ValueError:
        return f"must be HH:MM-HH:MM or empty, got {value!r}"
    return None


def _timezone(value: str) -> str | None:
    try:
        ZoneInfo(value)
    except (ValueError, ZoneInfoNotFoundError):
        return f"is not a known time zone, got {value!r}"
    return None


def _networks(value: str) -> str | None:
    from wxtasks.netaddr import parse_networks

    try:
        parse_networks(value)
    except ValueError as exc:
        return f"must be CIDR networks, comma-separated: {exc}"
    return None


def _optional_url(value: str) -> str | None:
    return None if not value else _url("http", "https")(value)


def _key_prefix(value: str) -> str | None:
    if value and not any(c in value for c in " {}"):
        return None
    return f"must be non-empty without spaces or braces, got {value!r}"


def _setting(
    env: str,
    default: T,
    doc: str,
    *,
    check: Check | None = None,
    shown: str | None = None,
    secret: bool = False,
    empty_ok: bool = False,
) -> T:
    """A Settings field and its row in the table: environment name, default, check, meaning.
    ``shown`` documents a default computed from other settings; a secret stays out of
    ``repr``; with ``empty_ok`` a variable set to the empty string means "" (say, "off")
    instead of the default."""
    spec = {
        "env": env,
        "doc": doc,
        "check": check,
        "shown": shown,
        "secret": secret,
        "empty_ok": empty_ok,
    }
    return field(default=default, repr=not secret, metadata={"setting": spec})


@dataclass(frozen=True)
class Settings:
    """Every setting of wxtasks; each field is one row of the table (see :data:`SETTINGS`)."""

    gateway_base_url: str = _setting(
        "WECHATAPI_BASE_URL",
        "http://127.0.0.1:2531",
        "gateway base URL",
        check=_url("http", "https"),
    )
    gateway_token: str = _setting(
        "VIDEOS_API_TOKEN",
        "",
        "gateway token (a secret: never logged, never a task argument)",
        secret=True,
    )
    gateway_profile: str = _setting(
        "WECHATAPI_PROFILE",
        "videosapi",
        "the gateway's route table: " + ", ".join(PROFILES),
        check=_choice(*PROFILES),
    )
    gateway_timeout_s: float = _setting(
        "WECHATAPI_TIMEOUT_S", 10.0, "HTTP timeout per gateway call", check=_positive
    )
    redis_url: str = _setting(
        "WXTASKS_REDIS_URL",
        "redis://localhost:6379/0",
        "state store (and task results): redis://..., or Redis Sentinel as "
        "redis+sentinel://[:password@]host1:26379,host2:26379/<master name>/<db>",
        check=_url("redis", "rediss", "unix", SENTINEL_SCHEME),
    )
    broker_url: str = _setting(
        "CELERY_BROKER_URL",
        "",
        "broker: redis://..., amqp://..., or Redis Sentinel in kombu's form "
        "sentinel://[:password@]host1:26379/1;sentinel://host2:26379/1 (the master is "
        "WXTASKS_REDIS_URL's)",
        check=_url("redis", "rediss", KOMBU_SENTINEL_SCHEME, "amqp", "pyamqp", "amqps"),
        shown="state Redis, db 1",
    )
    result_backend_url: str = _setting(
        "CELERY_RESULT_BACKEND",
        "",
        "task results: redis://..., or sentinel://... as the broker",
        check=_url("redis", "rediss", KOMBU_SENTINEL_SCHEME),
        shown="WXTASKS_REDIS_URL",
    )
    rate_per_second: float = _setting(
        "WXTASKS_RATE_PER_SECOND", 5.0, "global send rate (token bucket)", check=_positive
    )
    burst: int = _setting("WXTASKS_BURST", 10, "global burst", check=_positive)
    gateway_rate_per_second: float = _setting(
        "WXTASKS_GATEWAY_RATE_PER_SECOND",
        0.0,
        "each gateway's own send limit (its API's): the default gateway's, and a registered "
        "one's unless it sets --rate",
        check=_not_negative,
        shown="WXTASKS_RATE_PER_SECOND",
    )
    gateway_burst: int = _setting(
        "WXTASKS_GATEWAY_BURST",
        0,
        "each gateway's burst, unless the gateway sets --burst",
        check=_not_negative,
        shown="WXTASKS_BURST",
    )
    account_rate_per_second: float = _setting(
        "WXTASKS_ACCOUNT_RATE_PER_SECOND",
        1.0,
        "default per-account send rate (override per account)",
        check=_positive,
    )
    account_burst: int = _setting(
        "WXTASKS_ACCOUNT_BURST", 2, "default per-account burst", check=_positive
    )
    dedup_ttl_s: int = _setting(
        "WXTASKS_DEDUP_TTL_S", 300, "how long a send blocks its repeats", check=_positive
    )
    send_deadline_s: int = _setting(
        "WXTASKS_SEND_DEADLINE_S",
        600,
        "how long an interactive message may wait to go out, counted from its first enqueue",
        check=_positive,
    )
    bulk_deadline_s: int = _setting(
        "WXTASKS_BULK_DEADLINE_S",
        86_400,
        "how long a bulk message (群发, campaigns) may wait to go out, from its first enqueue",
        check=_positive,
    )
    visibility_timeout_s: int = _setting(
        "WXTASKS_VISIBILITY_TIMEOUT_S",
        20,
        "Redis broker: hand a dead worker's messages to another worker after this long "
        "(nothing waits in the broker, so it only has to outlast one gateway call)",
        check=_positive,
    )
    heartbeat_interval_s: float = _setting(
        "WXTASKS_HEARTBEAT_INTERVAL_S", 30.0, "heartbeat period per account", check=_positive
    )
    heartbeat_batch: int = _setting(
        "WXTASKS_HEARTBEAT_BATCH", 50, "accounts probed per heartbeat task", check=_positive
    )
    max_retry: int = _setting(
        "WXTASKS_MAX_RETRY", 5, "reconnect attempts before ERROR", check=_not_negative
    )
    backoff_base_s: float = _setting(
        "WXTASKS_BACKOFF_BASE_S",
        1.0,
        "first reconnect backoff (doubles each attempt)",
        check=_positive,
    )
    backoff_max_s: float = _setting(
        "WXTASKS_BACKOFF_MAX_S", 60.0, "reconnect backoff cap", check=_positive
    )
    error_retry_interval_s: float = _setting(
        "WXTASKS_ERROR_RETRY_INTERVAL_S",
        1800.0,
        "ERROR accounts are retried (IDLE + login) this often",
        check=_positive,
    )
    login_qr_ttl_s: float = _setting(
        "WXTASKS_LOGIN_QR_TTL_S", 120.0, "a QR login older than this gives up", check=_positive
    )
    key_prefix: str = _setting(
        "WXTASKS_KEY_PREFIX", "wx", "prefix of every Redis key", check=_key_prefix
    )
    shards: int = _setting(
        "WXTASKS_SHARDS",
        DEFAULT_SHARDS,
        "account shards (fixed for a deployment: an account's keys name its shard); the "
        "dispatchers split them among themselves",
        check=_positive,
    )
    events_maxlen: int = _setting(
        "WXTASKS_EVENTS_MAXLEN", 10_000, "events stream cap (approximate)", check=_positive
    )
    alert_webhook_url: str = _setting(
        "WXTASKS_ALERT_WEBHOOK_URL", "", "alert robot URL (empty: no alerts)", secret=True
    )
    alert_format: str = _setting(
        "WXTASKS_ALERT_FORMAT",
        "json",
        "alert body: " + ", ".join(ALERT_FORMATS),
        check=_choice(*ALERT_FORMATS),
    )
    log_format: str = _setting(
        "WXTASKS_LOG_FORMAT",
        "text",
        "log lines: text, or json (JSON lines with app_id)",
        check=_choice(*LOG_FORMATS),
    )
    log_level: str = _setting("WXTASKS_LOG_LEVEL", "INFO", "logging level name")
    beat_lock_ttl_s: float = _setting(
        "WXTASKS_BEAT_LOCK_TTL_S",
        10.0,
        "the active beat's lock period: a standby beat takes over within this long",
        check=_positive,
    )
    callback_secret: str = _setting(
        "WXTASKS_CALLBACK_SECRET",
        "",
        "the secret path part of the callback URL: at least 32 characters (the receiver "
        "refuses to start with less)",
        secret=True,
    )
    callback_allow_from: str = _setting(
        "WXTASKS_CALLBACK_ALLOW_FROM",
        "",
        "the callback receiver answers only these sources (CIDRs, comma-separated: the "
        "gateways' network), 403 to others (empty: any source)",
        check=_networks,
    )
    callback_max_body_bytes: int = _setting(
        "WXTASKS_CALLBACK_MAX_BODY_BYTES",
        1_048_576,
        "the callback receiver answers 413 to a larger body (and reads no further)",
        check=_positive,
    )
    message_handlers: str = _setting(
        "WXTASKS_MESSAGE_HANDLERS",
        "wxtasks.handlers:keyword_reply,wxtasks.handlers:forward",
        "handlers for received messages: module:function names, comma-separated",
        shown="the two shipped",
    )
    autoreply_rules: str = _setting(
        "WXTASKS_AUTOREPLY_RULES",
        "{}",
        'keyword_reply\'s rules, JSON {"keyword": "reply", ...}',
        check=_json(dict),
    )
    forward_rules: str = _setting(
        "WXTASKS_FORWARD_RULES",
        "[]",
        'forward\'s rules, JSON [{"from_app_id", "to_app_id", "to_wxid", "keyword"?}, ...]',
        check=_json(list),
    )
    inbound_maxlen: int = _setting(
        "WXTASKS_INBOUND_MAXLEN", 10_000, "received messages kept (newest)", check=_positive
    )
    inbound_max_bytes: int = _setting(
        "WXTASKS_INBOUND_MAX_BYTES",
        65_536,
        "a stored received message is at most this long (JSON bytes); a longer one's content "
        "is cut and it is flagged truncated",
        check=_positive,
    )
    quorum_queues: bool = _setting(
        "WXTASKS_QUORUM_QUEUES",
        False,
        "RabbitMQ: declare send and control as quorum queues (producers must too)",
    )
    bulk_jitter_s: str = _setting(
        "WXTASKS_BULK_JITTER_S",
        "1-3",
        "bulk sends: a random gap of MIN-MAX seconds after each private recipient "
        "(0-0: none; per account and per campaign too)",
        check=_span,
    )
    group_jitter_s: str = _setting(
        "WXTASKS_GROUP_JITTER_S",
        "2-5",
        "bulk sends: a random gap of MIN-MAX seconds after each group (…@chatroom)",
        check=_span,
    )
    daily_bulk_cap: int = _setting(
        "WXTASKS_DAILY_BULK_CAP",
        0,
        "bulk sends per account and local day (0: no cap)",
        check=_not_negative,
    )
    quiet_hours: str = _setting(
        "WXTASKS_QUIET_HOURS",
        "00:00-07:00",
        "no bulk sends inside this local-time window, HH:MM-HH:MM (empty: none)",
        check=_quiet_hours,
        empty_ok=True,
    )
    timezone: str = _setting(
        "WXTASKS_TIMEZONE",
        "Asia/Shanghai",
        "the time zone of quiet hours and of the daily cap's day",
        check=_timezone,
    )
    warmup_s: float = _setting(
        "WXTASKS_WARMUP_S",
        14_400.0,
        "no bulk sends this long after an account's first login on a new device (0: none)",
        check=_not_negative,
    )
    cooloff_s: float = _setting(
        "WXTASKS_COOLOFF_S",
        3_600.0,
        "the circuit breaker pauses an account's bulk lane this long",
        check=_positive,
    )
    risk_patterns: str = _setting(
        "WXTASKS_RISK_PATTERNS",
        "操作过于频繁",
        "gateway answers that trip the circuit breaker (substrings, |-separated)",
    )
    breaker_errors: int = _setting(
        "WXTASKS_BREAKER_ERRORS",
        5,
        "... as do this many gateway errors in a row on bulk sends",
        check=_positive,
    )
    campaign_stall_s: float = _setting(
        "WXTASKS_CAMPAIGN_STALL_S",
        1_800.0,
        "alert when a running campaign has sent nothing for this long",
        check=_positive,
    )
    console_users: str = _setting(
        "WXTASKS_CONSOLE_USERS",
        "",
        "console users, name:password[,...] (a password may be a scrypt$... hash)",
        secret=True,
    )
    console_users_file: str = _setting(
        "WXTASKS_CONSOLE_USERS_FILE",
        "",
        "console users file: name:scrypt$... lines (`wxtasks console hash-password`)",
    )
    console_secret: str = _setting(
        "WXTASKS_CONSOLE_SECRET",
        "",
        "signs console sessions and CSRF tokens (empty: random per process)",
        secret=True,
    )
    console_url: str = _setting(
        "WXTASKS_CONSOLE_URL",
        "",
        "the console's public URL: needLogin alerts link to its QR login page; an https URL "
        "makes its cookies Secure",
        check=_optional_url,
    )
    console_idle_s: float = _setting(
        "WXTASKS_CONSOLE_IDLE_S",
        3_600.0,
        "a console session unused this long ends (any session ends 12 h after its login)",
        check=_positive,
    )
    trusted_proxies: str = _setting(
        "WXTASKS_TRUSTED_PROXIES",
        "",
        "reverse proxies (CIDRs, comma-separated) whose X-Forwarded-For / X-Real-IP / "
        "X-Forwarded-Proto the console and the callback receiver believe (empty: nobody's)",
        check=_networks,
    )

    secrets_dir: str = _setting(
        "WXTASKS_SECRETS_DIR",
        "",
        "a directory of secret files: a gateway's token is read from the file named after "
        "its --token-env variable when that variable is not set (Docker/Kubernetes secrets)",
    )
    gateway_down_failures: int = _setting(
        "WXTASKS_GATEWAY_DOWN_FAILURES",
        5,
        "a gateway is marked down after this many unavailable answers in a row (refused, 503) ...",
        check=_positive,
    )
    gateway_down_after_s: float = _setting(
        "WXTASKS_GATEWAY_DOWN_AFTER_S",
        10.0,
        "... spread over at least this many seconds",
        check=_not_negative,
    )
    gateway_probe_interval_s: float = _setting(
        "WXTASKS_GATEWAY_PROBE_INTERVAL_S",
        10.0,
        "a gateway marked down gets one probe this often (its accounts none); at most "
        "the heartbeat interval",
        check=_positive,
    )

    replica_wait_ms: int = _setting(
        "WXTASKS_REPLICA_WAIT_MS",
        100,
        "with Sentinel: a send's dedup claim waits up to this long for a replica to hold it "
        "before the gateway call, in the same round trip (WAIT 1); 0: do not wait",
        check=_not_negative,
    )

    def __post_init__(self) -> None:
        sentinel = (
            parse_sentinel_url(self.redis_url)
            if urlsplit(self.redis_url).scheme == SENTINEL_SCHEME
            else None
        )
        if not self.broker_url:
            default = sentinel.with_db(1).kombu_url() if sentinel else _with_db(self.redis_url, 1)
            object.__setattr__(self, "broker_url", default)
        if not self.result_backend_url:
            default = sentinel.kombu_url() if sentinel else self.redis_url
            object.__setattr__(self, "result_backend_url", default)
        if not self.gateway_rate_per_second:
            object.__setattr__(self, "gateway_rate_per_second", self.rate_per_second)
        if not self.gateway_burst:
            object.__setattr__(self, "gateway_burst", self.burst)
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError (naming the variable) for any value wxtasks cannot run with."""
        for s in SETTINGS:
            problem = s.check(getattr(self, s.name)) if s.check else None
            if problem:
                raise ConfigError(f"{s.env} {problem}")
        if self.visibility_timeout_s <= self.gateway_timeout_s:
            # a worker holds a message for one gateway call at most (waiting happens in
            # the Redis outbox), so only that has to fit
            raise ConfigError(
                "WXTASKS_VISIBILITY_TIMEOUT_S must be longer than WECHATAPI_TIMEOUT_S"
            )
        if self.backoff_max_s < self.backoff_base_s:
            raise ConfigError("WXTASKS_BACKOFF_MAX_S must be >= WXTASKS_BACKOFF_BASE_S")
        for env, url in (
            ("CELERY_BROKER_URL", self.broker_url),
            ("CELERY_RESULT_BACKEND", self.result_backend_url),
        ):
            if urlsplit(url).scheme == KOMBU_SENTINEL_SCHEME and not self.sentinel_master:
                raise ConfigError(
                    f"{env} is a sentinel:// URL: WXTASKS_REDIS_URL must then be a "
                    "redis+sentinel:// URL naming the master (one Sentinel group for all)"
                )

    @property
    def sentinel_master(self) -> str:
        """The Sentinel master's name (WXTASKS_REDIS_URL's), or "" without Sentinel."""
        if urlsplit(self.redis_url).scheme != SENTINEL_SCHEME:
            return ""
        return parse_sentinel_url(self.redis_url).master

    def secret(self, variable: str) -> str:
        """The secret named ``variable`` (a gateway's ``--token-env``): the environment
        variable of that name, else the file of that name in WXTASKS_SECRETS_DIR, else "".
        Read when needed and never stored: the value stays out of Redis and of repr."""
        if not SECRET_NAME.fullmatch(variable):
            raise ConfigError(
                f"a token variable is an environment variable name (A-Z, 0-9, _), got {variable!r}"
            )
        value = os.environ.get(variable, "")
        if value.strip():
            return value.strip()
        if self.secrets_dir:
            path = Path(self.secrets_dir) / variable
            try:
                return path.read_text(encoding="utf-8").strip()
            except FileNotFoundError:
                return ""
            except OSError as exc:
                raise ConfigError(
                    f"WXTASKS_SECRETS_DIR: cannot read {variable}: {exc.strerror}"
                ) from None
        return ""

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, dotenv: bool = True, **overrides: Any
    ) -> Settings:
        """Build settings from ``environ`` (default: ``os.environ`` plus ``./.env``)."""
        environ = _environ(dotenv) if environ is None else environ
        values: dict[str, Any] = {}
        for s in SETTINGS:
            raw = environ.get(s.env)
            if raw is None or (raw.strip() == "" and not s.empty_ok):
                continue
            values[s.name] = s.parse(raw.strip())
        values.update(overrides)
        return cls(**values)

    @classmethod
    def configured(cls, environ: Mapping[str, str] | None = None) -> frozenset[str]:
        """The variables set (non-empty) in ``environ`` (default: ``os.environ`` plus
        ``./.env``): what was chosen rather than left at its default."""
        environ = _environ(True) if environ is None else environ
        return frozenset(s.env for s in SETTINGS if (environ.get(s.env) or "").strip())

    def replace(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    def environ(self) -> dict[str, str]:
        """These settings as environment variables (for child processes)."""
        return {s.env: str(getattr(self, s.name)) for s in SETTINGS}


def inherited_environ(*overrides: Mapping[str, str]) -> dict[str, str]:
    """What a child process starts with: this process's environment (PATH, ...) with
    ``overrides`` (``Settings.environ()``, say) on top."""
    merged = dict(os.environ)
    for override in overrides:
        merged.update(override)
    return merged


def _environ(dotenv: bool) -> Mapping[str, str]:
    if dotenv:
        from dotenv import load_dotenv

        load_dotenv(Path.cwd() / ".env", override=False)
    return os.environ


def _bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


_PARSERS: dict[str, tuple[Callable[[str], Any], str]] = {
    "str": (str, "str"),
    "float": (float, "float"),
    "int": (int, "int"),
    "bool": (_bool, "bool (true/false)"),
}


@dataclass(frozen=True)
class Setting:
    """One row of the settings table."""

    name: str
    env: str
    kind: str
    default: Any
    doc: str
    check: Check | None = None
    shown: str | None = None
    secret: bool = False
    empty_ok: bool = False

    def parse(self, raw: str) -> Any:
        """``raw`` (from the environment) as this setting's type; ConfigError names it."""
        parser, what = _PARSERS[self.kind]
        try:
            return parser(raw)
        except ValueError:
            raise ConfigError(f"{self.env}: cannot read {raw!r} as {what}") from None

    @property
    def shown_default(self) -> str:
        """The default as the documentation shows it."""
        if self.shown is not None:
            return self.shown
        if isinstance(self.default, bool):
            return str(self.default).lower()
        if isinstance(self.default, float):
            return f"{self.default:g}"
        return str(self.default)


#: the settings table: the one source of every variable's name, type, default, check and
#: meaning; the docstring above and the README's "Configuration" table are its renderings
#: (a test keeps them equal: ``docstring_table()``, ``markdown_table()``)
SETTINGS: tuple[Setting, ...] = tuple(
    Setting(name=f.name, kind=str(f.type), default=f.default, **f.metadata["setting"])
    for f in fields(Settings)
)
ENV_NAMES = frozenset(s.env for s in SETTINGS)


def docstring_table() -> str:
    """The settings table as this module's docstring shows it."""
    lines = []
    for s in SETTINGS:
        default = f"``{s.shown_default}``" if s.shown is None else s.shown_default
        lines.append(f"``{s.env}`` (default {default if s.shown_default else 'empty'})")
        lines += textwrap.wrap(s.doc, 88, initial_indent="    ", subsequent_indent="    ")
    return "\n".join(lines)


def markdown_table() -> str:
    """The settings table as the README's "Configuration" section shows it."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for s in SETTINGS:
        shown = s.shown_default
        default = f"`{shown}`" if shown and s.shown is None else shown
        rows.append(f"| `{s.env}` | {default} | {s.doc} |")
    return "\n".join(rows)


def _with_db(redis_url: str, db: int) -> str:
    parts = urlsplit(redis_url)
    if parts.scheme == SENTINEL_SCHEME:
        master = parts.path.strip("/").split("/")[0]
        return urlunsplit(
            (parts.scheme, parts.netloc, f"/{master}/{db}", parts.query, parts.fragment)
        )
    if parts.scheme not in ("redis", "rediss"):
        return redis_url
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


@dataclass(frozen=True)
class SentinelUrl:
    """``redis+sentinel://[:password@]host1:26379,host2:26379/<master name>/<db>``: the
    sentinels to ask, the monitored master's name, the database, and the password of the
    Redis servers (the sentinels themselves are asked without one)."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int
    password: str | None

    def with_db(self, db: int) -> SentinelUrl:
        return SentinelUrl(self.sentinels, self.master, db, self.password)

    def kombu_url(self) -> str:
        """Celery/kombu's form: ``sentinel://[:pw@]h1:26379/db;sentinel://h2:26379/db``;
        the master's name goes in the transport options (``master_name``)."""
        auth = f":{self.password}@" if self.password else ""
        return ";".join(f"sentinel://{auth}{h}:{p}/{self.db}" for h, p in self.sentinels)


def parse_sentinel_url(url: str) -> SentinelUrl:
    """Read a ``redis+sentinel://`` URL; ValueError says what is missing."""
    parts = urlsplit(url)
    hosts = parts.netloc.rsplit("@", 1)[-1]
    password = parts.password
    sentinels = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host:
            host, port = port, "26379"
        try:
            sentinels.append((host, int(port)))
        except ValueError:
            raise ValueError(f"has a bad sentinel address {item!r}") from None
    path = [p for p in parts.path.split("/") if p]
    if not sentinels or not path:
        raise ValueError(
            "must be redis+sentinel://[:password@]host1:26379,host2:26379/<master name>/<db>"
        )
    try:
        db = int(path[1]) if len(path) > 1 else 0
    except ValueError:
        raise ValueError(f"has a bad database number {path[1]!r}") from None
    return SentinelUrl(tuple(sentinels), path[0], db, password)


def _redact(url: str) -> str:
    """A URL with any password replaced, fit for an error message."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


redact_url = _redact
