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


# -- simulator --------------------------------------------------------------------------------


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=2531, show_default=True, type=int)
@click.option(
    "--profile",
    type=click.Choice(["videosapi", "gewe", "v1"]),
    envvar="WECHATAPI_PROFILE",
    default="videosapi",
    show_default=True,
)
@click.option(
    "--token",
    envvar="VIDEOS_API_TOKEN",
    default="",
    show_default=False,
    help="token the simulator accepts (default: $VIDEOS_API_TOKEN)",
)
@click.option(
    "--offline-by-default",
    is_flag=True,
    help="accounts the simulator has not seen start offline (need a QR login)",
)
@click.option(
    "--scan-after-s",
    type=float,
    default=None,
    help="pretend the QR code is scanned this long after it is shown",
)
@click.option("--qr-ttl-s", type=float, default=120.0, show_default=True)
def simulator(
    host: str,
    port: int,
    profile: str,
    token: str,
    offline_by_default: bool,
    scan_after_s: float | None,
    qr_ttl_s: float,
) -> None:
    """Run the gateway simulator (a real HTTP gateway for dev, tests and benchmarks)."""
    from wxtasks.gateway.simulator import serve

    serve(
        host=host,
        port=port,
        profile=profile,
        token=token,
        default_online=not offline_by_default,
        scan_after_s=scan_after_s,
        qr_ttl_s=qr_ttl_s,
    )


from wxtasks.cli import accounts as _accounts  # noqa: E402  - attach the subcommands
from wxtasks.cli import inbound as _inbound  # noqa: E402
from wxtasks.cli import ops as _ops  # noqa: E402
from wxtasks.cli import sends as _sends  # noqa: E402

main.add_command(_accounts.accounts)
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
    _ops.dev,
):
    main.add_command(_command)

if __name__ == "__main__":  # pragma: no cover
    main()
