"""Who may use the console, and how a request proves it.

Users come from ``WXTASKS_CONSOLE_USERS`` (``name:password[,name:password...]``; a
password that starts with ``scrypt$`` is taken as a hash) and from
``WXTASKS_CONSOLE_USERS_FILE`` (one ``name:scrypt$...`` line per user, ``#`` comments),
whose hashes ``wxtasks console hash-password`` prints. Hashes are stdlib scrypt::

    scrypt$<n>$<r>$<p>$<salt, urlsafe base64>$<digest, urlsafe base64>

A browser logs in through the form and then carries a signed session cookie
(``{"u": user, "sid": random}``, HMAC-signed by tornado with the console secret); a script
sends HTTP Basic on every request. Every state-changing request must carry the CSRF token
of its session (form field ``_csrf`` or header ``X-CSRF-Token``): an HMAC of the session id
(for Basic, of the user name), so it needs no storage and dies with the session or secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from wxtasks.config import Settings
from wxtasks.errors import ConfigError

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
_PREFIX = "scrypt$"


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


@dataclass
class Users:
    """name -> a plain password or a ``scrypt$`` hash. Checking a hash costs ~50 ms, so
    a verified (name, password) pair is remembered, as a keyed digest, for Basic auth."""

    entries: dict[str, str]
    _verified: set[bytes] = field(default_factory=set, repr=False)
    _pepper: bytes = field(default_factory=lambda: os.urandom(16), repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Users:
        entries: dict[str, str] = {}
        for item in settings.console_users.split(","):
            item = item.strip()
            if not item:
                continue
            name, sep, secret = item.partition(":")
            if not sep or not name.strip() or not secret:
                raise ConfigError(
                    "WXTASKS_CONSOLE_USERS: expected name:password[,name:password...], "
                    f"got an entry for {name.strip()!r} without a password"
                )
            entries[name.strip()] = secret
        if settings.console_users_file:
            path = Path(settings.console_users_file)
            try:
                lines = path.read_text().splitlines()
            except OSError as exc:
                raise ConfigError(
                    f"WXTASKS_CONSOLE_USERS_FILE: cannot read {path}: {exc.strerror}"
                ) from None
            for number, line in enumerate(lines, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                name, sep, secret = line.partition(":")
                if not sep or not secret.startswith(_PREFIX):
                    raise ConfigError(
                        f"WXTASKS_CONSOLE_USERS_FILE line {number}: expected name:scrypt$... "
                        "(see `wxtasks console hash-password`)"
                    )
                entries[name.strip()] = secret.strip()
        if not entries:
            raise ConfigError(
                "the console needs users: set WXTASKS_CONSOLE_USERS=name:password "
                "or WXTASKS_CONSOLE_USERS_FILE"
            )
        return cls(entries)

    def check(self, name: str, password: str) -> bool:
        secret = self.entries.get(name)
        if secret is None or not password:
            hmac.compare_digest(password.encode(), b"-" * 16)  # similar time for unknown users
            return False
        if not secret.startswith(_PREFIX):
            return hmac.compare_digest(password.encode(), secret.encode())
        marker = hmac.new(self._pepper, f"{name}\0{password}".encode(), "sha256").digest()
        with self._lock:
            if marker in self._verified:
                return True
        if not verify_password(password, secret):
            return False
        with self._lock:
            self._verified.add(marker)
        return True


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
