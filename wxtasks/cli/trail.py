"""The CLI's side of the audit trail: every command that changes state records what it
did, as the OS user running it, from this host (:mod:`wxtasks.audit`)."""

from __future__ import annotations

from wxtasks.cli.context import runtime


def audited(action: str, kind: str, object_id: str = "", detail: str = "") -> None:
    """Record that this command did ``action`` to ``kind:object_id`` (after it did)."""
    from wxtasks.audit import cli_actor, record  # with Redis: only a command that changed something

    rt = runtime()
    record(rt.redis, rt.settings, cli_actor(), action, kind, object_id, detail)
