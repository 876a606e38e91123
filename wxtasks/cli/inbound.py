"""``wxtasks callbacks`` (the receiver) and ``wxtasks inbound`` (received messages)."""

from __future__ import annotations

import click

from wxtasks.cli.common import echo_json, friendly
from wxtasks.cli.context import runtime
from wxtasks.cli.trail import audited


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8088, show_default=True)
@click.option(
    "--register",
    "register_url",
    metavar="URL",
    help="tell each gateway (setCallback) to push to URL/callback/<its secret>, then exit; "
    "a registered gateway gets a new secret (stored hashed)",
)
@friendly
def callbacks(host: str, port: int, register_url: str | None) -> None:
    """Receive gateway callbacks (AddMsg, Offline) on POST /callback/<secret>: the default
    gateway's is WXTASKS_CALLBACK_SECRET, each registered gateway has its own."""
    from wxtasks.errors import ConfigError, GatewayError
    from wxtasks.gateway.registry import make_callback_secret, token_of
    from wxtasks.inbound.receiver import callback_url, check_secret, serve

    rt = runtime()
    if rt.settings.callback_secret:
        check_secret(rt.settings.callback_secret)
    specs = [g for g in rt.gateways.list() if g.callback_secret_hash]
    if not specs:
        raise ConfigError("WXTASKS_CALLBACK_SECRET must be set (32 or more random characters)")
    if register_url:
        failed = 0
        for g in specs:
            secret = g.callback_secret if g.is_default else make_callback_secret()
            url = callback_url(register_url, rt.settings, secret)
            try:
                rt.fleet.client(g.name).set_callback(url, token_of(g, rt.settings))
            except (GatewayError, ConfigError) as exc:
                failed += 1
                click.echo(f"{g.name}: FAILED: {exc}", err=True)
                continue
            if not g.is_default:  # the gateway has it: now it is this gateway's
                rt.gateways.set_callback_secret(g.name, secret)
            audited("gateway.register_callback", "gateway", g.name, register_url)
            click.echo(f"{g.name}: will push to {register_url.rstrip('/')}/callback/<its secret>")
        if failed:
            raise click.ClickException(f"{failed} of {len(specs)} gateway(s) not registered")
        return
    serve(rt, host=host, port=port)


@click.group()
def inbound() -> None:
    """Messages the accounts received."""


@inbound.command("list")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--app-id", help="only this account")
@click.option("--json", "as_json", is_flag=True)
@friendly
def inbound_list(limit: int, app_id: str | None, as_json: bool) -> None:
    items = runtime().inbound.list(limit, app_id)
    if as_json:
        echo_json(items)
        return
    for m in items:
        who = m["sender_wxid"] or m["from_wxid"]
        flags = "".join(f for f, on in (("S", m["is_self"]), ("G", m["is_group"])) if on)
        click.echo(f"{m['app_id']:<20} {m['new_msg_id']:<20} {flags:<2} {who}: {m['content']}")
    click.echo(f"{len(items)} message(s)")
