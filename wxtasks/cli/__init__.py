"""The ``wxtasks`` command: operators' tool and the local stack.

Every command reads Settings from the environment (and ``./.env``); list commands take
``--json``; errors are one clear line and exit code 1 (2 for usage errors).
"""

from __future__ import annotations

import click

from wxtasks import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="wxtasks")
def main() -> None:
    """wxtasks: keep many WeChat accounts alive and sending through Celery workers."""


from wxtasks.cli import accounts as _accounts  # noqa: E402  - attach the subcommands
from wxtasks.cli import campaigns as _campaigns  # noqa: E402
from wxtasks.cli import dev as _dev  # noqa: E402
from wxtasks.cli import gateways as _gateways  # noqa: E402
from wxtasks.cli import inbound as _inbound  # noqa: E402
from wxtasks.cli import migrate as _migrate  # noqa: E402
from wxtasks.cli import ops as _ops  # noqa: E402
from wxtasks.cli import outbox as _outbox  # noqa: E402
from wxtasks.cli import sends as _sends  # noqa: E402
from wxtasks.cli.console import console as _console  # noqa: E402
from wxtasks.cli.dispatcher import dispatcher as _dispatcher  # noqa: E402

main.add_command(_console)
main.add_command(_dispatcher)

main.add_command(_accounts.accounts)
main.add_command(_campaigns.campaigns)
main.add_command(_gateways.gateways)
main.add_command(_outbox.outbox)
main.add_command(_inbound.callbacks)
main.add_command(_inbound.inbound)
for _command in (
    _sends.send,
    _sends.broadcast,
    _sends.deadletters,
    _ops.status,
    _ops.events,
    _ops.check,
    _ops.metrics,
    _migrate.migrate,
    _dev.simulator,
    _dev.dev,
):
    main.add_command(_command)

if __name__ == "__main__":  # pragma: no cover
    main()
