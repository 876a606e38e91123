"""``wxtasks send | broadcast | deadletters``."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from wxtasks.cli.common import check_app_ids, echo_json, friendly
from wxtasks.cli.context import runtime
from wxtasks.cli.trail import audited
from wxtasks.errors import UnknownAccountError

if TYPE_CHECKING:
    from wxtasks.client import WxTasksClient


def _client() -> WxTasksClient:
    from wxtasks.client import WxTasksClient

    return WxTasksClient(app=runtime().celery)


#: ``wxtasks send``'s exit code for each outcome (README: "Exit codes")
EXIT_CODES = {"sent": 0, "duplicate": 0, "failed": 1, "cancelled": 1, "unknown": 3}
#: no result came within ``--timeout``
EXIT_TIMEOUT = 4


def _wait(result: Any, timeout_s: float) -> dict[str, Any]:
    from celery.exceptions import TimeoutError as CeleryTimeout

    try:
        value: dict[str, Any] = result.get(timeout=timeout_s)
    except CeleryTimeout:
        click.echo(
            f"error: no result within {timeout_s:g}s (task {result.id} is still queued or "
            "waiting; are workers running? `wxtasks check`)",
            err=True,
        )
        sys.exit(EXIT_TIMEOUT)
    echo_json(value)
    return value


@click.command()
@click.argument("app_id", callback=check_app_ids)
@click.argument("to_wxid")
@click.argument("content")
@click.option("--ats", help="comma-separated wxids to @ in a group")
@click.option("--dedup-key", help="messages with the same key are sent once")
@click.option(
    "--wait/--no-wait", default=True, show_default=True, help="wait for the outcome and print it"
)
@click.option(
    "--timeout",
    "--timeout-s",
    "timeout_s",
    type=float,
    default=60.0,
    show_default=True,
    help="wait this long for the result (then exit 4)",
)
@friendly
def send(
    app_id: str,
    to_wxid: str,
    content: str,
    ats: str | None,
    dedup_key: str | None,
    wait: bool,
    timeout_s: float,
) -> None:
    """Enqueue one text message (wxtasks.send_text) and print its result.

    Exit code: 0 sent or duplicate, 1 failed or cancelled (or APP_ID is not registered:
    nothing is enqueued), 3 unknown (it may have gone out), 4 no result within
    --timeout, 2 a usage error."""
    rt = runtime()
    if not rt.redis.sismember(rt.keys.accounts, app_id):
        raise UnknownAccountError(app_id)
    result = _client().send_text(app_id, to_wxid, content, ats=ats, dedup_key=dedup_key)
    audited("account.send", "account", app_id, f"to {to_wxid}, task {result.id}")
    if wait:
        outcome = _wait(result, timeout_s)
        sys.exit(EXIT_CODES.get(str(outcome.get("status")), 1))
    click.echo(result.id)


@click.command()
@click.argument("to_wxid")
@click.argument("content")
@click.option(
    "--from",
    "app_ids",
    multiple=True,
    required=True,
    callback=check_app_ids,
    help="an appId to send from (repeatable)",
)
@click.option("--wait/--no-wait", default=True, show_default=True)
@click.option("--timeout-s", type=float, default=300.0, show_default=True)
@friendly
def broadcast(
    to_wxid: str, content: str, app_ids: tuple[str, ...], wait: bool, timeout_s: float
) -> None:
    """One message from many accounts, with a per-account report (wxtasks.broadcast)."""
    result = _client().broadcast(list(app_ids), to_wxid, content)
    audited("campaign.broadcast", "campaign", str(result.id), f"to {to_wxid} from {len(app_ids)}")
    if wait:
        _wait(result, timeout_s)
    else:
        click.echo(result.id)


@click.group()
def deadletters() -> None:
    """Messages that ended failed or unknown: list, requeue, purge."""


@deadletters.command("list")
@click.option("--status", type=click.Choice(["failed", "unknown"]))
@click.option("--limit", type=int)
@click.option("--json", "as_json", is_flag=True)
@friendly
def dl_list(status: str | None, limit: int | None, as_json: bool) -> None:
    entries = runtime().deadletters.list(limit=limit, status=status)
    if as_json:
        echo_json(entries)
        return
    for e in entries:
        click.echo(
            f"{e['task_id']}  {e['status']:<7} {e.get('app_id')} -> {e.get('to_wxid')}: "
            f"{e['error']}"
        )
    click.echo(f"{len(entries)} dead letter(s)")


@deadletters.command("requeue")
@click.argument("task_ids", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="requeue every dead letter")
@friendly
def dl_requeue(task_ids: tuple[str, ...], everything: bool) -> None:
    """Send dead letters again (under new task ids); `unknown` ones lose their claim."""
    if not task_ids and not everything:
        raise click.UsageError("name TASK_IDS or pass --all")
    client = _client()

    def publish(entry: dict[str, Any]) -> str:
        kwargs = {k: v for k, v in entry["kwargs"].items() if not k.startswith("_")}
        return str(client.task(entry["task"], kwargs).id)

    moved = runtime().deadletters.requeue(None if everything else list(task_ids), publish)
    for old, new in moved:
        audited("deadletter.requeue", "task", old, f"now task {new}")
        click.echo(f"{old} -> {new}")
    click.echo(f"{len(moved)} requeued")


@deadletters.command("purge")
@click.option("--yes", is_flag=True, help="do not ask")
@friendly
def dl_purge(yes: bool) -> None:
    """Forget every dead letter."""
    dl = runtime().deadletters
    if not yes:
        click.confirm(f"forget {dl.count()} dead letter(s)?", abort=True)
    purged = dl.purge()
    audited("deadletter.purge", "deadletters", detail=f"all: {purged} purged")
    click.echo(f"{purged} purged")
