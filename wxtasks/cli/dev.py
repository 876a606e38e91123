"""``wxtasks simulator | dev``: the development tools (implemented in :mod:`wxtasks.dev`,
imported only when one of these commands runs)."""

from __future__ import annotations

import click

from wxtasks.cli.common import friendly
from wxtasks.config import PROFILES


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=2531, show_default=True, type=int)
@click.option(
    "--profile",
    type=click.Choice(PROFILES),
    default=None,
    help="route table to speak  [default: WECHATAPI_PROFILE's]",
)
@click.option(
    "--token",
    default=None,
    help="token the simulator accepts  [default: VIDEOS_API_TOKEN's]",
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
@click.option(
    "--gateways",
    type=click.IntRange(1, 1000),
    default=1,
    show_default=True,
    help="serve this many independent gateways, on ports PORT .. PORT+N-1",
)
@click.option(
    "--token-prefix",
    default=None,
    help="gateway i (1..N) accepts the token PREFIX<i>  [default: all accept --token]",
)
@friendly
def simulator(
    host: str,
    port: int,
    profile: str | None,
    token: str | None,
    offline_by_default: bool,
    scan_after_s: float | None,
    qr_ttl_s: float,
    gateways: int,
    token_prefix: str | None,
) -> None:
    """Run the gateway simulator (a real HTTP gateway for dev, tests and benchmarks)."""
    from wxtasks.config import Settings
    from wxtasks.dev.simulator import serve

    settings = Settings.from_env()
    serve(
        host=host,
        port=port,
        profile=profile or settings.gateway_profile,
        token=settings.gateway_token if token is None else token,
        default_online=not offline_by_default,
        scan_after_s=scan_after_s,
        qr_ttl_s=qr_ttl_s,
        gateways=gateways,
        token_prefix=token_prefix,
    )


@click.command()
@click.option(
    "--accounts",
    "n_accounts",
    type=int,
    default=20,
    show_default=True,
    help="demo accounts to register and bring ONLINE",
)
@click.option("--flower-port", type=int, default=5555, show_default=True)
@click.option("--metrics-port", type=int, default=9808, show_default=True)
@click.option("--callback-port", type=int, default=8088, show_default=True)
@click.option("--console-port", type=int, default=8000, show_default=True)
@click.option("--send-concurrency", type=int, default=2, show_default=True)
@click.option("--control-concurrency", type=int, default=2, show_default=True)
@click.option(
    "--simulator-port",
    type=int,
    default=2531,
    show_default=True,
    help="used when WECHATAPI_BASE_URL is not set",
)
@click.option(
    "--gateways",
    "n_gateways",
    type=click.IntRange(1, 500),
    default=1,
    show_default=True,
    help="simulate this many gateways (ports from --simulator-port on) and spread the demo "
    "accounts over them, 2 per gateway (more when --accounts needs it)",
)
@click.option(
    "--fresh",
    is_flag=True,
    help="empty the stack's own Redis databases (state, broker, results) first; "
    "otherwise dev state persists between runs",
)
def dev(
    n_accounts: int,
    flower_port: int,
    metrics_port: int,
    callback_port: int,
    console_port: int,
    send_concurrency: int,
    control_concurrency: int,
    simulator_port: int,
    n_gateways: int,
    fresh: bool,
) -> None:
    """The whole stack on this machine: Redis (embedded if none answers), the gateway
    simulator (unless WECHATAPI_BASE_URL is set), a send worker, a control worker, beat,
    Flower and the console. Ctrl-C stops everything it started."""
    from wxtasks.dev.stack import DevStack

    DevStack(
        n_accounts=n_accounts,
        flower_port=flower_port,
        metrics_port=metrics_port,
        callback_port=callback_port,
        console_port=console_port,
        send_concurrency=send_concurrency,
        control_concurrency=control_concurrency,
        simulator_port=simulator_port,
        n_gateways=n_gateways,
        fresh=fresh,
    ).run()
