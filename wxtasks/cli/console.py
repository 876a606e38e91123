"""``wxtasks console``: serve the operator's console; ``hash-password`` for the users file."""

from __future__ import annotations

import click


@click.group(invoke_without_command=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option(
    "--flower-url", default="", help="link Flower from the navigation (e.g. http://host:5555)"
)
@click.option(
    "--server-timing",
    is_flag=True,
    hidden=True,
    help="add a Server-Timing header to every answer (benchmarks only: it tells timings)",
)
@click.pass_context
def console(ctx: click.Context, host: str, port: int, flower_url: str, server_timing: bool) -> None:
    """Serve the operator's console: accounts, QR login, dead letters, test sends.

    Users come from WXTASKS_CONSOLE_USERS (name:password:role,...) or
    WXTASKS_CONSOLE_USERS_FILE (name:scrypt$...:role lines from `wxtasks console
    hash-password`); a role is viewer (the default), operator or admin.
    """
    if ctx.invoked_subcommand is not None:
        return
    from wxtasks.cli.common import friendly
    from wxtasks.config import Settings
    from wxtasks.console.app import serve
    from wxtasks.logs import configure_logging

    @friendly
    def run() -> None:
        settings = Settings.from_env()
        configure_logging(settings)
        serve(settings, host, port, flower_url=flower_url, server_timing=server_timing)

    run()


@console.command("hash-password")
@click.option("--user", "name", required=True, help="the user name")
@click.option(
    "--role",
    type=click.Choice(["viewer", "operator", "admin"]),
    default="viewer",
    show_default=True,
    help="what the user may do",
)
@click.password_option(help="the password (asked when not given)")
def hash_password_cmd(name: str, role: str, password: str) -> None:
    """Print a line for WXTASKS_CONSOLE_USERS_FILE: name:scrypt$...:role"""
    from wxtasks.console.auth import hash_password

    if ":" in name or "," in name or not name.strip():
        raise click.BadParameter("no ':' or ',' in a user name", param_hint="--user")
    click.echo(f"{name.strip()}:{hash_password(password)}:{role}")
