"""The gateway registry: which gateways exist, where they are and how to reach them.

A self-hosted GeWe-style container holds about two accounts, so a fleet of a few hundred
accounts talks to a hundred gateway endpoints, each with its own base URL, profile, token
and API limit. Each is a hash in Redis (``wx:gateway:<name>``, names in ``wx:gateways``)
that every process reads. An account belongs to one gateway (its ``gateway`` field;
absent means ``default``).

``default`` is the gateway the environment configures (``WECHATAPI_BASE_URL``,
``VIDEOS_API_TOKEN``, ``WECHATAPI_PROFILE``, ``WXTASKS_GATEWAY_RATE_PER_SECOND/BURST``,
``WXTASKS_CALLBACK_SECRET``): it is never stored, so every set-up from before the registry
keeps working unchanged, and it cannot be added, updated or removed here.

The token is a secret and is never stored: a gateway names the environment variable that
holds it (``token_env``), read through :meth:`wxtasks.config.Settings.secret` (the
variable, else the file of that name in ``WXTASKS_SECRETS_DIR``) by the process that calls
the gateway. What Redis holds is the variable's *name*. The callback path secret (what
tells one gateway's webhooks from another's, and the receiver's only proof that a callback
comes from it) is generated here, told once (``gateways add``, ``update
--new-callback-secret``, or registered at the gateway by ``wxtasks callbacks --register``,
which makes a new one) and stored only as its SHA-256 (``callback_secret_hash``): the
receiver hashes the path it is given and compares. A secret is 32 random characters, so a
plain hash is enough; a record from before keeps working and is rewritten hashed when read.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import redis

from wxtasks import mirrors
from wxtasks.config import PROFILES, SECRET_NAME, Settings
from wxtasks.errors import BadInputError, ConfigError, WxTasksError
from wxtasks.keys import Keys, validate_gateway_name
from wxtasks.scripts import Scripts

DEFAULT = "default"


def make_callback_secret() -> str:
    """A callback path secret: 32 URL-safe characters (192 random bits)."""
    return secrets.token_urlsafe(24)


def secret_hash(secret: str) -> str:
    """What the registry stores of a callback secret, and what the receiver compares."""
    return hashlib.sha256(secret.encode()).hexdigest() if secret else ""


class UnknownGatewayError(WxTasksError, LookupError):
    """No gateway of that name is registered."""

    def __init__(self, name: str) -> None:
        super().__init__(f"gateway {name!r} is not registered (see: wxtasks gateways list)")
        self.name = name


@dataclass(frozen=True)
class Gateway:
    """One gateway. ``token_env`` is the NAME of the variable holding its token;
    ``callback_secret`` is the plain callback secret only where it is known: the
    environment's gateway, and a registered one right after the secret was made."""

    name: str
    base_url: str
    profile: str
    token_env: str
    rate: float
    burst: int
    callback_secret_hash: str = ""
    note: str = ""
    created_at: float = 0.0
    callback_secret: str = field(default="", repr=False)

    @property
    def is_default(self) -> bool:
        return self.name == DEFAULT

    def as_dict(self) -> dict[str, Any]:
        """What operators see: everything but the callback secret (shown as set or not)."""
        return {
            "name": self.name,
            "base_url": self.base_url,
            "profile": self.profile,
            "token_env": self.token_env,
            "rate": self.rate,
            "burst": self.burst,
            "callback_secret": "set" if self.callback_secret_hash else "",
            "note": self.note,
            "created_at": self.created_at,
        }

    @classmethod
    def default(cls, settings: Settings) -> Gateway:
        return cls(
            DEFAULT,
            settings.gateway_base_url,
            settings.gateway_profile,
            "VIDEOS_API_TOKEN",
            settings.gateway_rate_per_second,
            settings.gateway_burst,
            secret_hash(settings.callback_secret),
            "from the environment (WECHATAPI_BASE_URL, VIDEOS_API_TOKEN, WECHATAPI_PROFILE)",
            callback_secret=settings.callback_secret,
        )

    @classmethod
    def from_hash(cls, name: str, h: dict[str, str], settings: Settings) -> Gateway:
        return cls(
            name,
            h.get("base_url", ""),
            h.get("profile", "videosapi"),
            h.get("token_env", ""),
            float(h.get("rate") or settings.gateway_rate_per_second),
            int(h.get("burst") or settings.gateway_burst),
            h.get("callback_secret_hash", ""),
            h.get("note", ""),
            float(h.get("created_at") or 0),
        )


def token_of(gateway: Gateway, settings: Settings) -> str:
    """The gateway's token, read now (never stored); ConfigError when it is nowhere."""
    if gateway.is_default:
        return settings.gateway_token
    token = settings.secret(gateway.token_env)
    if not token:
        where = f" nor in {settings.secrets_dir}/" if settings.secrets_dir else ""
        raise ConfigError(
            f"gateway {gateway.name}: its token variable {gateway.token_env} is not set"
            f"{where}{gateway.token_env if where else ''}"
        )
    return token


def _check(
    base_url: str | None, profile: str | None, token_env: str | None, rate: Any, burst: Any
) -> None:
    if base_url is not None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise BadInputError(f"--base-url must be an http(s) URL, got {base_url!r}")
    if profile is not None and profile not in PROFILES:
        raise BadInputError(f"--profile must be one of {', '.join(PROFILES)}; got {profile!r}")
    if token_env is not None and not SECRET_NAME.fullmatch(token_env):
        raise BadInputError(
            f"--token-env names an environment variable (A-Z, 0-9, _), got {token_env!r}; "
            "pass the variable's name, never the token itself"
        )
    if rate is not None and not float(rate) > 0:
        raise BadInputError(f"--rate must be > 0, got {rate!r}")
    if burst is not None and int(burst) < 1:
        raise BadInputError(f"--burst must be >= 1, got {burst!r}")


class GatewayRegistry:
    """Registered gateways in Redis, plus ``default`` from the environment."""

    def __init__(self, client: redis.Redis, settings: Settings, keys: Keys) -> None:
        self.redis = client
        self.settings = settings
        self.keys = keys

    def add(
        self,
        name: str,
        *,
        base_url: str,
        profile: str,
        token_env: str,
        rate: float | None = None,
        burst: int | None = None,
        note: str = "",
    ) -> Gateway:
        validate_gateway_name(name)
        if name == DEFAULT:
            raise BadInputError(
                "the default gateway is the environment's (WECHATAPI_BASE_URL, "
                "VIDEOS_API_TOKEN, WECHATAPI_PROFILE); change it there"
            )
        _check(base_url, profile, token_env, rate, burst)
        secret = make_callback_secret()
        fields = {
            "base_url": base_url.rstrip("/"),
            "profile": profile,
            "token_env": token_env,
            "callback_secret_hash": secret_hash(secret),
            "note": note,
            "created_at": f"{time.time():.3f}",
        }
        if rate is not None:
            fields["rate"] = repr(float(rate))
        if burst is not None:
            fields["burst"] = str(int(burst))
        # the set decides who adds the name (atomic); readers skip a name without a record
        if not self.redis.sadd(self.keys.gateways, name):
            raise BadInputError(f"gateway {name!r} exists; use: wxtasks gateways update {name}")
        self.redis.hset(self.keys.gateway(name), mapping=dict(fields))  # type: ignore[arg-type]
        return replace(self.get(name), callback_secret=secret)  # told this once

    def set_callback_secret(self, name: str, secret: str) -> None:
        """Store (the hash of) ``secret`` as gateway ``name``'s callback secret, once the
        gateway has been told it (``wxtasks callbacks --register``)."""
        if name == DEFAULT:
            raise BadInputError("the default gateway's callback secret is WXTASKS_CALLBACK_SECRET")
        if not self.redis.sismember(self.keys.gateways, name):
            raise UnknownGatewayError(name)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.keys.gateway(name), "callback_secret_hash", secret_hash(secret))
        pipe.hdel(self.keys.gateway(name), "callback_secret")
        pipe.execute()

    def update(
        self,
        name: str,
        *,
        base_url: str | None = None,
        profile: str | None = None,
        token_env: str | None = None,
        rate: float | None = None,
        burst: int | None = None,
        note: str | None = None,
        new_callback_secret: bool = False,
    ) -> Gateway:
        if name == DEFAULT:
            raise BadInputError("the default gateway is configured by the environment")
        _check(base_url, profile, token_env, rate, burst)
        fields: dict[str, str] = {}
        if base_url is not None:
            fields["base_url"] = base_url.rstrip("/")
        for key, value in (("profile", profile), ("token_env", token_env), ("note", note)):
            if value is not None:
                fields[key] = value
        if rate is not None:
            fields["rate"] = repr(float(rate))
        if burst is not None:
            fields["burst"] = str(int(burst))
        secret = make_callback_secret() if new_callback_secret else ""
        if secret:
            fields["callback_secret_hash"] = secret_hash(secret)
        if not self.redis.sismember(self.keys.gateways, name):
            raise UnknownGatewayError(name)
        if fields:
            self.redis.hset(self.keys.gateway(name), mapping=dict(fields))  # type: ignore[arg-type]
            if secret:
                self.redis.hdel(self.keys.gateway(name), "callback_secret")
        return replace(self.get(name), callback_secret=secret)

    def remove(self, name: str, accounts_using: Iterable[str] = ()) -> bool:
        """Forget a gateway (its record, bucket and health). Refused while accounts use it."""
        if name == DEFAULT:
            raise BadInputError("the default gateway cannot be removed")
        using = sorted(accounts_using)
        if using:
            shown = ", ".join(using[:5]) + (" ..." if len(using) > 5 else "")
            raise BadInputError(
                f"gateway {name!r} still serves {len(using)} account(s) ({shown}); move them "
                "first: wxtasks accounts update APP_ID --gateway OTHER"
            )
        pipe = self.redis.pipeline(transaction=True)
        pipe.srem(self.keys.gateways, name)
        pipe.delete(
            self.keys.gateway(name),
            self.keys.gateway_bucket(name),
            self.keys.gateway_health(name),
            self.keys.gateway_probe(name),
        )
        pipe.srem(self.keys.gateways_down, name)
        removed = bool(pipe.execute()[0])
        mirrors.refresh(self.redis, self.keys, Scripts(self.redis))
        return removed

    def exists(self, name: str) -> bool:
        return name == DEFAULT or bool(self.redis.sismember(self.keys.gateways, name))

    def get(self, name: str) -> Gateway:
        if name == DEFAULT:
            return Gateway.default(self.settings)
        h = self.redis.hgetall(self.keys.gateway(name))
        if not h or "created_at" not in h:
            raise UnknownGatewayError(name)
        return self._read(name, {_s(k): _s(v) for k, v in h.items()})

    def _read(self, name: str, h: dict[str, str]) -> Gateway:
        """A stored record as a Gateway; one that still holds a plain callback secret
        (stored before secrets were hashed) is rewritten with its hash."""
        plain = h.pop("callback_secret", "")
        if plain:
            self.set_callback_secret(name, plain)
            h["callback_secret_hash"] = secret_hash(plain)
        return Gateway.from_hash(name, h, self.settings)

    def names(self) -> list[str]:
        """``default`` first, then the registered ones in name order."""
        return [DEFAULT, *sorted(_s(n) for n in self.redis.smembers(self.keys.gateways))]

    def list(self) -> list[Gateway]:
        names = self.names()[1:]
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(self.keys.gateway(name))
        out = [Gateway.default(self.settings)]
        for name, h in zip(names, pipe.execute() if names else [], strict=True):
            if h and "created_at" in h:
                out.append(self._read(name, {_s(k): _s(v) for k, v in h.items()}))
        return out


def _s(x: bytes | str) -> str:
    return x.decode() if isinstance(x, bytes) else x
