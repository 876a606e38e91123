"""``wxtasks migrate``: move a Redis written by the previous release to this one's key layout."""

from __future__ import annotations

import time
from dataclasses import asdict

import click

from wxtasks.cli.common import echo_json, friendly


@click.command()
@click.option("--dry-run", is_flag=True, help="count what would move; write nothing")
@click.option("--force", is_flag=True, help="run even though wxtasks processes look alive")
@click.option("--json", "as_json", is_flag=True)
@friendly
def migrate(dry_run: bool, force: bool, as_json: bool) -> None:
    """Move the Redis to the sharded key layout (layout 2); run it with every wxtasks
    process stopped. Safe to run again (after a kill too): what moved stays moved."""
    from wxtasks.cli.context import runtime
    from wxtasks.migrate import migrate as run

    rt = runtime()
    started = time.monotonic()
    report = run(rt.redis, rt.keys, dry_run=dry_run, force=force)
    seconds = round(time.monotonic() - started, 3)
    if as_json:
        echo_json({**asdict(report), "seconds": seconds})
        return
    if report.status == "already":
        click.echo(f"already on layout 2 ({report.shards} shards): nothing to do")
        return
    for name, n in report.moved.items():
        if n:
            click.echo(f"{name}: {n}")
    if report.dry_run:
        click.echo("dry run: nothing written")
    else:
        click.echo(f"layout 2 marked ({report.shards} shards) in {seconds:.1f}s")
