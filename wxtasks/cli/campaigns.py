"""``wxtasks campaigns``: create, watch, pause, resume and cancel a 群发."""

from __future__ import annotations

import csv
import datetime as dt
import sys
from pathlib import Path
from typing import Any

import click

from wxtasks.cli.common import echo_json, friendly
from wxtasks.cli.context import runtime
from wxtasks.cli.trail import audited
from wxtasks.errors import BadInputError

_COUNTS = ("sent", "duplicate", "failed", "unknown", "cancelled", "waiting")


@click.group()
def campaigns() -> None:
    """Campaigns (群发): content for many targets, paced in the accounts' bulk lanes."""


def _start(value: str | None) -> float | None:
    if not value:
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise BadInputError(f"--start must be an ISO date-time, got {value!r}") from None
    if when.tzinfo is None:
        from zoneinfo import ZoneInfo

        when = when.replace(tzinfo=ZoneInfo(runtime().settings.timezone))
    return when.timestamp()


def _print(summary: dict[str, Any]) -> None:
    counts = "  ".join(f"{k} {summary[k]}" for k in _COUNTS)
    click.echo(f"{summary['id']}: {summary['state']}  total {summary['total']}  {counts}")
    for app_id, row in summary.get("accounts", {}).items():
        why = f"  ({row['waiting_reason']})" if row.get("waiting_reason") else ""
        line = "  ".join(f"{k} {row[k]}" for k in _COUNTS if row.get(k))
        click.echo(f"  {app_id}: total {row['total']}  {line}{why}")


@campaigns.command("create")
@click.option("--id", "campaign_id", required=True, help="the campaign's id (idempotent)")
@click.option(
    "--targets",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="a file with one app_id,to_wxid per line",
)
@click.option("--app-id", help="one account ... ")
@click.option("--to", "to", help="... to these wxids, comma-separated")
@click.option("--content", required=True, help="the text to send")
@click.option(
    "--start",
    help="start at this ISO date-time (default now; local zone "
    "WXTASKS_TIMEZONE when none is given)",
)
@click.option("--jitter", help="MIN-MAX seconds between this campaign's sends per account")
@click.option(
    "--allow-unregistered",
    is_flag=True,
    help="create it even when targets name appIds that are not registered (they fail)",
)
@click.option("--json", "as_json", is_flag=True)
@friendly
def create(
    campaign_id: str,
    targets: Path | None,
    app_id: str | None,
    to: str | None,
    content: str,
    start: str | None,
    jitter: str | None,
    allow_unregistered: bool,
    as_json: bool,
) -> None:
    """Create a campaign. The whole target list is checked first (each bad line named,
    unregistered appIds refused): any problem creates nothing, exit 1."""
    from wxtasks.campaigns.store import Content
    from wxtasks.campaigns.targets import check_targets, pairs_of, read_targets_file

    if bool(targets) == bool(app_id and to):
        raise click.UsageError("give either --targets FILE or --app-id A --to W1,W2,...")
    if targets:
        pairs, problems = read_targets_file(targets)
    else:
        pairs, problems = pairs_of([[app_id, w.strip()] for w in str(to).split(",") if w.strip()])
    rt = runtime()
    parsed = Content.parse("text", {"content": content})
    starts = _start(start)
    check_targets(rt.redis, rt.keys, pairs, problems, allow_unregistered=allow_unregistered)
    summary = rt.campaigns.create(
        campaign_id, parsed, pairs, start_at=starts, jitter=jitter, source="cli"
    )
    audited("campaign.create", "campaign", campaign_id, f"{summary['total']} target(s)")
    echo_json(summary) if as_json else _print(summary)


@campaigns.command("list")
@click.option("--json", "as_json", is_flag=True)
@friendly
def list_(as_json: bool) -> None:
    """Every campaign, oldest first."""
    rows = runtime().campaigns.list()
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        _print(row)
    if not rows:
        click.echo("no campaigns")


def _control(name: str, doc: str) -> click.Command:
    @click.command(name, help=doc)
    @click.argument("campaign_id")
    @click.option("--json", "as_json", is_flag=True)
    @friendly
    def command(campaign_id: str, as_json: bool) -> None:
        summary = getattr(runtime().campaigns, name)(campaign_id)
        if name != "show":
            audited(f"campaign.{name}", "campaign", campaign_id, f"now {summary['state']}")
        echo_json(summary) if as_json else _print(summary)

    return command


for _name, _doc in (
    ("show", "A campaign's state and counts, in all and per account."),
    ("pause", "Stop new dispatches within a second; in-flight sends finish."),
    ("resume", "Continue a paused campaign where it stopped."),
    ("cancel", "End what is left: those targets are counted cancelled, never sent."),
):
    campaigns.add_command(_control(_name, _doc))


@campaigns.command("report")
@click.argument("campaign_id")
@click.option("--csv", "as_csv", is_flag=True, help="CSV instead of text")
@click.option("--json", "as_json", is_flag=True, help="one JSON array")
@friendly
def report(campaign_id: str, as_csv: bool, as_json: bool) -> None:
    """Every target once: its outcome, ids and error."""
    from wxtasks.campaigns.store import csv_safe

    rows = runtime().campaigns.report(campaign_id)  # an unknown id fails here, before output
    if as_json:
        echo_json(list(rows))
        return
    fields = ["index", "task_id", "app_id", "to_wxid", "status", "msgId", "newMsgId", "error"]
    if as_csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: csv_safe(v) for k, v in row.items()})
        return
    for row in rows:
        ids = f" newMsgId={row['newMsgId']}" if row["newMsgId"] else ""
        err = f" error={row['error']}" if row["error"] else ""
        click.echo(f"{row['index']}\t{row['app_id']}\t{row['to_wxid']}\t{row['status']}{ids}{err}")
