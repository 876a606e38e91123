"""Console sessions in Redis, and the login throttle every console process shares.

A session is a Redis hash (``wx:console:session:<digest>``, see :mod:`wxtasks.keys`) found
by the SHA-256 of the random id in the browser's cookie, so reading Redis gives no one a
usable cookie. It ends when it is unused for ``WXTASKS_CONSOLE_IDLE_S`` (default 1 h),
12 h after its login, at logout (deleted), and at the next request once its user is gone
from the users or has a new password (the console checks every request against the users).

Logins are throttled per user name and per client address: after
:attr:`LoginThrottle.LIMIT` failures within :attr:`LoginThrottle.WINDOW_S` (5 in 5
minutes), both the form and HTTP Basic answer 429 with ``Retry-After`` until the oldest of
those failures is out of the window. Refused attempts are not counted, so the right
password works again once ``Retry-After`` has passed, however long a guesser went on.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from wxtasks.keys import Keys
from wxtasks.scripts import Scripts

#: no session outlives this, however busy (a working day)
ABSOLUTE_S = 12 * 3600


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    user: str
    fingerprint: str
    created: float
    seen: float
    source: str


class Sessions:
    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        idle_s: float,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = client
        self.keys = keys
        self.idle_s = idle_s
        self.clock = clock

    def create(self, user: str, fingerprint: str, source: str) -> str:
        """A new session for ``user``; returns its id (for the cookie, kept nowhere else)."""
        sid = secrets.token_urlsafe(32)
        now = self.clock()
        key = self.keys.console_session(_digest(sid))
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(
            key,
            mapping={
                "user": user,
                "fp": fingerprint,
                "created": f"{now:.3f}",
                "seen": f"{now:.3f}",
                "from": source,
            },
        )
        pipe.expire(key, math.ceil(self.idle_s))
        pipe.execute()
        return sid

    def get(self, sid: str) -> Session | None:
        """The live session of ``sid`` (its idle time restarts), or None: none, idle too
        long or past the absolute limit (then it is deleted)."""
        key = self.keys.console_session(_digest(sid))
        h = self.redis.hgetall(key)
        if not h:
            return None
        now = self.clock()
        try:
            session = Session(
                str(h["user"]), str(h["fp"]), float(h["created"]), float(h["seen"]), str(h["from"])
            )
        except (KeyError, ValueError):
            session = None
        if (
            session is None
            or now - session.seen > self.idle_s
            or now - session.created > ABSOLUTE_S
        ):
            self.redis.delete(key)
            return None
        left = min(self.idle_s, ABSOLUTE_S - (now - session.created))
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(key, "seen", f"{now:.3f}")
        pipe.expire(key, max(1, math.ceil(left)))
        pipe.execute()
        return session

    def delete(self, sid: str) -> bool:
        return bool(self.redis.delete(self.keys.console_session(_digest(sid))))


class LoginThrottle:
    LIMIT = 5
    WINDOW_S = 300.0

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        scripts: Scripts,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = client
        self.keys = keys
        self.scripts = scripts
        self.clock = clock

    def _keys(self, name: str, address: str) -> list[str]:
        return [self.keys.login_fails_user(_digest(name)), self.keys.login_fails_ip(address)]

    def attempt(self, name: str, address: str) -> tuple[str, int]:
        """(the attempt's id, 0) when a password may be tried now; the attempt counts as a
        failure until :meth:`succeeded` says otherwise. ("", seconds to wait) when not."""
        attempt = secrets.token_hex(8)
        wait_ms = int(
            self.scripts.login_attempt(
                keys=self._keys(name, address),
                args=[int(self.clock() * 1000), int(self.WINDOW_S * 1000), self.LIMIT, attempt],
            )
        )
        if wait_ms > 0:
            return "", max(1, math.ceil(wait_ms / 1000))
        return attempt, 0

    def succeeded(self, name: str, address: str, attempt: str) -> None:
        """The password was right: the user name's failures are forgotten, and this
        attempt is not one of the address's."""
        user_key, ip_key = self._keys(name, address)
        pipe = self.redis.pipeline(transaction=False)
        pipe.delete(user_key)
        pipe.zrem(ip_key, attempt)
        pipe.execute()
