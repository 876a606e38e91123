"""A campaign's targets, checked whole before anything is written.

``wxtasks campaigns create --targets FILE`` and the ``wxtasks.campaign`` task both go
through :func:`check_targets`: every target must be an (appId, wxid) pair whose appId
follows the appId rule and whose wxid is a non-empty string, and — unless
``allow_unregistered`` — every appId must be registered. Any problem refuses the whole
campaign (:class:`TargetsRefused`, a ``BadInputError``) before a key is written, so a bad
line 3 never leaves a half-loaded campaign behind. The message names each bad line
(``file:line: reason``), up to :data:`MAX_SHOWN`, then how many more there are.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from wxtasks.errors import BadInputError
from wxtasks.keys import APP_ID_RULE, Keys, validate_app_id

#: bad lines named one by one; the rest are counted
MAX_SHOWN = 20
#: a wxid longer than this is not a wxid (and would bloat the campaign's hash)
MAX_WXID = 2048


class TargetsRefused(BadInputError):
    """The targets were refused; ``problems`` holds one line per bad target (all of them)."""

    def __init__(self, problems: Sequence[str], hint: str = "") -> None:
        self.problems = list(problems)
        shown = self.problems[:MAX_SHOWN]
        more = len(self.problems) - len(shown)
        lines = [f"campaign refused, nothing was created: {len(self.problems)} problem(s)"]
        lines += shown
        if more:
            lines.append(f"... and {more} more")
        if hint:
            lines.append(hint)
        super().__init__("\n".join(lines))


def wxid_problem(value: object) -> str:
    """Why ``value`` is not a target's wxid ("" when it is one)."""
    if not isinstance(value, str) or not value.strip():
        return f"the wxid must be a non-empty string, got {value!r}"
    if len(value) > MAX_WXID or "\t" in value or "\n" in value:
        return f"the wxid must be one line of at most {MAX_WXID} characters"
    return ""


def app_id_problem(value: object) -> str:
    try:
        validate_app_id(value)
    except BadInputError:
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        return f"appId {shown} is not valid: an appId is {APP_ID_RULE}"
    return ""


def read_targets_file(path: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """Every ``app_id,to_wxid`` line of ``path`` (blank lines and ``#`` comments skipped),
    and one ``path:line: reason`` per bad line."""
    pairs: list[tuple[str, str]] = []
    problems: list[str] = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TargetsRefused(
            [f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"]
        ) from None
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        app_id, sep, to_wxid = (part.strip() for part in line.partition(","))
        shown = line if len(line) <= 60 else line[:57] + "..."
        why = (
            f"expected app_id,to_wxid, got {shown!r}"
            if not sep or not app_id or not to_wxid
            else app_id_problem(app_id) or wxid_problem(to_wxid)
        )
        if why:
            problems.append(f"{path}:{number}: {why}")
        else:
            pairs.append((app_id, to_wxid))
    return pairs, problems


def pairs_of(targets: Any) -> tuple[list[tuple[str, str]], list[str]]:
    """The task's ``targets`` (``[[app_id, to_wxid], ...]`` or ``{app_id: [wxid, ...]}``)
    as pairs, and one ``targets[i]: reason`` per bad one."""
    pairs: list[tuple[str, str]] = []
    problems: list[str] = []
    if isinstance(targets, dict):
        items: list[tuple[str, Any]] = []
        for app_id, wxids in targets.items():
            if not isinstance(wxids, list):
                problems.append(f"targets[{app_id!r}]: expected a list of wxids")
                continue
            items += [(f"targets[{app_id!r}][{i}]", [app_id, w]) for i, w in enumerate(wxids)]
    elif isinstance(targets, list):
        items = [(f"targets[{i}]", t) for i, t in enumerate(targets)]
    else:
        return [], ["targets must be [[app_id, to_wxid], ...] or {app_id: [to_wxid, ...]}"]
    for where, target in items:
        if not isinstance(target, list | tuple) or len(target) != 2:
            problems.append(f"{where}: expected [app_id, to_wxid], got {target!r}"[:200])
            continue
        app_id, to_wxid = target
        why = app_id_problem(app_id) or wxid_problem(to_wxid)
        if why:
            problems.append(f"{where}: {why}")
        else:
            pairs.append((app_id, to_wxid))
    return pairs, problems


def unregistered(redis: Any, keys: Keys, pairs: Iterable[tuple[str, str]]) -> dict[str, int]:
    """appId -> how many of the targets name it, for the appIds that are not registered
    (one SMISMEMBER for every distinct appId)."""
    counts: dict[str, int] = {}
    for app_id, _wxid in pairs:
        counts[app_id] = counts.get(app_id, 0) + 1
    ids = list(counts)
    if not ids:
        return {}
    known = redis.smismember(keys.accounts, ids)
    return {a: counts[a] for a, ok in zip(ids, known, strict=True) if not ok}


def check_targets(
    redis: Any,
    keys: Keys,
    pairs: list[tuple[str, str]],
    problems: list[str],
    *,
    allow_unregistered: bool = False,
    allow_hint: str = "--allow-unregistered",
) -> list[tuple[str, str]]:
    """``pairs`` when there is no problem; else :class:`TargetsRefused` naming them all
    (``allow_hint``: how the caller says "create it anyway" for unregistered appIds)."""
    problems = list(problems)
    if not pairs and not problems:
        problems.append("a campaign needs at least one target")
    missing = {} if allow_unregistered else unregistered(redis, keys, pairs)
    problems += [
        f"appId {a} is not registered ({n} target{'s' if n > 1 else ''})"
        for a, n in sorted(missing.items())
    ]
    if problems:
        hint = (
            f"register them (wxtasks accounts add) or pass {allow_hint} to send anyway"
            if missing
            else ""
        )
        raise TargetsRefused(problems, hint)
    return pairs
