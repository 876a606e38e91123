"""``wxtasks dispatcher``: run a dispatcher process (any number of them share the shards)."""

from __future__ import annotations

import click


@click.command()
def dispatcher() -> None:
    """Run a dispatcher: move due messages from the outbox onto the send queue.

    Run two or more: they split the shards (WXTASKS_SHARDS) among themselves by leases,
    and when one stops or dies the others take its shards within about 5 s.
    """
    from wxtasks.cli.common import friendly
    from wxtasks.config import Settings
    from wxtasks.logs import configure_logging
    from wxtasks.worker.dispatcher import run

    @friendly
    def start() -> None:
        settings = Settings.from_env()
        configure_logging(settings)
        run(settings)

    start()
