"""What the console's pages show, as plain data: the accounts table and its filters.

Reading 10,000 full account records costs about 0.35 s, so the table does not: an index of
(appId, state, tags) — two hash fields per account, pipelined — picks and counts the
accounts, and only the page shown is read in full. The index is shared by every request
and refreshed in the background once it is ``max_age_s`` old (requests never wait for
it); the rows of a page are always read fresh, so a state shown is never older than the
request, while which accounts match a filter may lag by about a second.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wxtasks.accounts.machine import State
from wxtasks.accounts.store import Account, AccountStore

#: the gateway of an account that names none (the environment-configured one)
DEFAULT_GATEWAY = "default"

PAGE_SIZE = 50


@dataclass(frozen=True)
class IndexSnapshot:
    entries: list[tuple[str, State, tuple[str, ...]]]
    taken_at: float

    def counts(self) -> dict[str, int]:
        counts = {s.value: 0 for s in State}
        for _app_id, state, _tags in self.entries:
            counts[state.value] += 1
        return counts

    def tags(self) -> list[str]:
        return sorted({t for _a, _s, tags in self.entries for t in tags})

    def select(self, state: str | None, tag: str | None, query: str | None) -> list[str]:
        wanted = State(state) if state else None
        q = (query or "").strip().lower()
        return [
            app_id
            for app_id, s, tags in self.entries
            if (wanted is None or s is wanted)
            and (not tag or tag in tags)
            and (not q or q in app_id.lower())
        ]


class AccountIndex:
    def __init__(
        self,
        store: AccountStore,
        *,
        max_age_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.max_age_s = max_age_s
        self.clock = clock
        self._snapshot: IndexSnapshot | None = None
        self._lock = threading.Lock()

    def snapshot(self, *, fresh: bool = False) -> IndexSnapshot:
        """The index, at most ``max_age_s`` old; when it is older, the old one is served
        while one background thread reads the next (no request waits for the refresh,
        except the first, or one that asks for ``fresh``)."""
        current = self._snapshot
        if current is None or fresh:
            return self._refresh()
        if self.clock() - current.taken_at >= self.max_age_s and self._lock.acquire(False):
            threading.Thread(target=self._refresh_locked, daemon=True).start()
        return current

    def _refresh(self) -> IndexSnapshot:
        with self._lock:
            return self._read()

    def _refresh_locked(self) -> None:
        try:
            self._read()
        finally:
            self._lock.release()

    def _read(self) -> IndexSnapshot:
        started = self.clock()
        entries = list(self.store.brief_many(self.store.app_ids()))
        self._snapshot = IndexSnapshot(entries, started)
        return self._snapshot


#: appIds -> appId -> lane -> messages waiting (``Outbox.backlog``)
Backlog = Callable[[list[str]], dict[str, dict[str, int]]]


@dataclass(frozen=True)
class AccountRow:
    account: Account
    now: float
    backlog: dict[str, int]

    @property
    def app_id(self) -> str:
        return self.account.app_id

    @property
    def state(self) -> str:
        return self.account.state.value

    @property
    def gateway(self) -> str:
        return self.account.gateway or DEFAULT_GATEWAY

    @property
    def heartbeat_age(self) -> str:
        return age(self.account.last_heartbeat_at, self.now)

    @property
    def needs_human(self) -> bool:
        return self.account.state in (State.IDLE, State.ERROR)


@dataclass(frozen=True)
class AccountsPage:
    rows: list[AccountRow]
    total: int
    page: int
    pages: int
    counts: dict[str, int]
    tags: list[str]
    state: str
    tag: str
    query: str

    def link(self, **changes: Any) -> str:
        """The URL of this listing with some parameters changed (page reset to 1)."""
        from urllib.parse import urlencode

        params = {"state": self.state, "tag": self.tag, "q": self.query, "page": 1}
        params.update(changes)
        return "?" + urlencode({k: v for k, v in params.items() if v not in ("", None, 1)})


def accounts_page(
    index: AccountIndex,
    *,
    state: str = "",
    tag: str = "",
    query: str = "",
    page: int = 1,
    page_size: int = PAGE_SIZE,
    backlog: Backlog | None = None,
    now: float | None = None,
    fresh: bool = False,
) -> AccountsPage:
    snap = index.snapshot(fresh=fresh)
    selected = snap.select(state or None, tag or None, query or None)
    pages = max(1, math.ceil(len(selected) / page_size))
    page = min(max(1, page), pages)
    chunk = selected[(page - 1) * page_size : page * page_size]
    stamp = time.time() if now is None else now
    waiting = backlog(chunk) if backlog is not None else {}
    rows = [AccountRow(a, stamp, waiting.get(a.app_id, {})) for a in index.store.get_many(chunk)]
    return AccountsPage(
        rows=rows,
        total=len(selected),
        page=page,
        pages=pages,
        counts=snap.counts(),
        tags=snap.tags(),
        state=state,
        tag=tag,
        query=query,
    )


def age(ts: float | None, now: float) -> str:
    """``"12s"``, ``"3m"``, ``"2h"``, ``"4d"`` ago; ``"-"`` when never."""
    if not ts:
        return "-"
    seconds = max(0.0, now - ts)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"
