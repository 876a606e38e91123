"""``wxtasks outbox``: the messages waiting in Redis to go out."""

from __future__ import annotations

import time
from dataclasses import asdict

import click

from wxtasks.cli.common import echo_json, friendly
from wxtasks.cli.context import runtime
from wxtasks.cli.trail import audited
from wxtasks.send.gates import Lane
from wxtasks.send.outcome import CANCELLED_BY_OPERATOR


@click.group()
def outbox() -> None:
    """Messages waiting in the outbox (per account, lanes interactive and bulk)."""


@outbox.command("list")
@click.option("--app-id", help="only this account")
@click.option("--lane", type=click.Choice([lane.value for lane in Lane]))
@click.option("--limit", type=int, default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@friendly
def list_(app_id: str | None, lane: str | None, limit: int, as_json: bool) -> None:
    """Waiting messages, oldest first, with why each waits."""
    waiting = runtime().outbox.waiting(app_id, lane, limit)
    if as_json:
        echo_json([asdict(w) for w in waiting])
        return
    now = time.time()
    for w in waiting:
        click.echo(
            f"{w.task_id}  appId={w.app_id} {w.lane} to={w.kwargs.get('to_wxid')} "
            f"waiting {now - w.enqueued_at:.0f}s: {w.why or 'in line for its send slot'}"
        )
    if not waiting:
        click.echo("nothing waiting")


@outbox.command("cancel")
@click.argument("task_ids", nargs=-1, required=True)
@friendly
def cancel(task_ids: tuple[str, ...]) -> None:
    """Cancel waiting messages: each ends ``cancelled`` (not dead-lettered)."""
    rt = runtime()
    missing = 0
    for task_id in task_ids:
        if rt.endings.cancel_waiting(rt.outbox, task_id, CANCELLED_BY_OPERATOR) is None:
            click.echo(f"{task_id}: not waiting (already dispatched, done, or unknown)", err=True)
            missing += 1
        else:
            audited("outbox.cancel", "task", task_id)
            click.echo(f"{task_id}: cancelled")
    if missing:
        raise SystemExit(1)
