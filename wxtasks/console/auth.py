"""Who may use the console, with which role, and how a request proves it.

Users come from ``WXTASKS_CONSOLE_USERS`` (``name:password[:role][,...]``; a password that
starts with ``scrypt$`` is taken as a hash) and from ``WXTASKS_CONSOLE_USERS_FILE`` (one
``name:scrypt$...[:role]`` line per user, ``#`` comments), whose hashes ``wxtasks console
hash-password`` prints. The file is read again when it changes, so a user removed from it
is out at their next request. A role is ``viewer`` (sees everything, changes nothing),
``operator`` (QR logins, test sends, pause / resume campaigns, requeue dead letters) or
``admin`` (everything: purge, cancel, reset, remove, account options); with none given a
user is a ``viewer``. A password that itself ends in ``:viewer``, ``:operator`` or
``:admin`` needs the role written after it. Hashes are stdlib scrypt::

    scrypt$<n>$<r>$<p>$<salt, urlsafe base64>$<digest, urlsafe base64>

A plain password is hashed when it is read, and an unknown user name is checked against a
dummy hash, so every wrong guess costs the same (~50 ms) whoever it names.

A browser logs in through the form and then carries a signed cookie holding a session id;
the session itself lives in Redis (:mod:`wxtasks.console.sessions`). A script sends HTTP
Basic on every request. Every state-changing request must carry the CSRF token of its
session (form field ``_csrf`` or header ``X-CSRF-Token``): an HMAC of the session id (for
Basic, of the user name), so it needs no storage and dies with the session or secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from wxtasks.config import Settings
from wxtasks.errors import ConfigError

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
_PREFIX = "scrypt$"

logger = logging.getLogger(__name__)

#: the console's roles, least to most privileged: each can do what the ones before it can
ROLES = ("viewer", "operator", "admin")
VIEWER, OPERATOR, ADMIN = ROLES

F = TypeVar("F", bound=Callable[..., Any])


def role_allows(role: str | None, needed: str) -> bool:
    """True when a user of ``role`` may do what needs ``needed``."""
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


def requires(role: str) -> Callable[[F], F]:
    """Declare the role a console handler method needs (``@requires(OPERATOR)`` above its
    ``post``). ``BaseHandler.prepare`` enforces it; a state-changing method that declares
    nothing needs ``admin``."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")

    def mark(fn: F) -> F:
        fn.required_role = role  # type: ignore[attr-defined]
        return fn

    return mark


def required_role(method: Callable[..., Any] | None) -> str:
    return str(getattr(method, "required_role", ADMIN))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """A ``scrypt$...`` string for ``password`` (fresh random salt unless given)."""
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32
    )
    return f"{_PREFIX}{SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    """True when ``password`` matches the ``scrypt$...`` hash ``encoded``."""
    try:
        n, r, p, salt, digest = encoded[len(_PREFIX) :].split("$")
        expected = _unb64(digest)
        actual = hashlib.scrypt(
            password.encode(),
            salt=_unb64(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
            maxmem=256 * 1024 * 1024,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


@dataclass(frozen=True)
class User:
    """One console user. ``fingerprint`` changes when the user's entry (name or password)
    does: a session made under an older entry ends."""

    name: str
    role: str
    hashed: str = field(repr=False)
    fingerprint: str = field(repr=False)


def _split_entry(entry: str) -> tuple[str, str, str]:
    """``name:secret[:role]`` as (name, secret, role); the role defaults to viewer."""
    name, _, rest = entry.partition(":")
    secret, sep, role = rest.rpartition(":")
    if not sep or role not in ROLES:
        secret, role = rest, VIEWER
    return name.strip(), secret.strip() if secret.startswith(_PREFIX) else secret, role


class Users:
    """The console's users, by name. Checking a password costs one scrypt (~50 ms) unless
    this (name, password) pair was verified before (remembered as a keyed digest, so HTTP
    Basic stays cheap); an unknown name costs the same scrypt against a dummy hash."""

    FILE_CHECK_S = 1.0

    def __init__(
        self,
        env_entries: dict[str, User],
        file_path: str = "",
        *,
        key: bytes | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._key = key or os.urandom(32)
        self._env = env_entries
        self._path = Path(file_path) if file_path else None
        self._clock = clock
        self._file: dict[str, User] = {}
        self._mtime: float | None = None
        self._checked = -1e9
        self._pepper = os.urandom(16)
        self._verified: set[bytes] = set()
        self._lock = threading.Lock()
        self._dummy = hash_password(os.urandom(16).hex())
        if self._path is not None:
            self._file = self._read_file()
        if not self.entries:
            raise ConfigError(
                "the console needs users: set WXTASKS_CONSOLE_USERS=name:password:role "
                "or WXTASKS_CONSOLE_USERS_FILE"
            )

    @classmethod
    def from_settings(cls, settings: Settings, *, key: bytes | None = None) -> Users:
        """``key`` makes the fingerprints every console process computes alike (the
        console's secret); without it they are this process's own."""
        key = key or os.urandom(32)
        entries: dict[str, User] = {}
        for item in settings.console_users.split(","):
            item = item.strip()
            if not item:
                continue
            name, secret, role = _split_entry(item)
            if not name or not secret:
                raise ConfigError(
                    "WXTASKS_CONSOLE_USERS: expected name:password[:role][,...], "
                    f"got an entry for {name!r} without a password"
                )
            entries[name] = _user(name, secret, role, key)
        return cls(entries, settings.console_users_file, key=key)

    @property
    def entries(self) -> dict[str, User]:
        self._reload()
        return {**self._env, **self._file}

    def get(self, name: str) -> User | None:
        """The user called ``name`` now (the users file is read again when it changed)."""
        return self.entries.get(name)

    def role(self, name: str) -> str | None:
        user = self.get(name)
        return user.role if user else None

    def check(self, name: str, password: str) -> User | None:
        """The user, when ``password`` is theirs; None otherwise (same cost either way)."""
        user = self.get(name)
        if user is None or not password:
            verify_password(password, self._dummy)  # the same cost as a wrong password
            return None
        marker = hmac.new(self._pepper, f"{user.fingerprint}\0{password}".encode(), "sha256")
        digest = marker.digest()
        with self._lock:
            if digest in self._verified:
                return user
        if not verify_password(password, user.hashed):
            return None
        with self._lock:
            self._verified.add(digest)
        return user

    # -- the users file -----------------------------------------------------------------

    def _reload(self) -> None:
        if self._path is None or self._clock() - self._checked < self.FILE_CHECK_S:
            return
        with self._lock:
            if self._clock() - self._checked < self.FILE_CHECK_S:
                return
            self._checked = self._clock()
            try:
                mtime = self._path.stat().st_mtime
            except OSError:
                mtime = None
            if mtime == self._mtime:
                return
        try:
            users = self._read_file() if mtime is not None else {}
        except ConfigError as exc:  # half-written: keep who was there, say why
            logger.error("console users file not re-read: %s", exc)
            return
        if mtime is None:
            logger.warning("console users file %s is gone: its users are out", self._path)
            self._mtime = None
        self._file = users

    def _read_file(self) -> dict[str, User]:
        assert self._path is not None
        try:
            self._mtime = self._path.stat().st_mtime
            lines = self._path.read_text().splitlines()
        except OSError as exc:
            raise ConfigError(
                f"WXTASKS_CONSOLE_USERS_FILE: cannot read {self._path}: {exc.strerror}"
            ) from None
        users: dict[str, User] = {}
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, secret, role = _split_entry(line)
            if not name or not secret.startswith(_PREFIX):
                raise ConfigError(
                    f"WXTASKS_CONSOLE_USERS_FILE line {number}: expected name:scrypt$...[:role] "
                    "(see `wxtasks console hash-password`)"
                )
            users[name] = _user(name, secret, role, self._key)
        return users


def _user(name: str, secret: str, role: str, key: bytes) -> User:
    fingerprint = hmac.new(key, f"user\0{name}\0{secret}".encode(), "sha256").hexdigest()[:32]
    hashed = secret if secret.startswith(_PREFIX) else hash_password(secret)
    return User(name, role, hashed, fingerprint)


def csrf_token(secret: bytes, session_id: str) -> str:
    return hmac.new(secret, f"csrf:{session_id}".encode(), "sha256").hexdigest()


def csrf_ok(secret: bytes, session_id: str, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(csrf_token(secret, session_id), token or "")


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """(name, password) from an ``Authorization: Basic ...`` header, or None."""
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    name, sep, password = decoded.partition(":")
    return (name, password) if sep else None
