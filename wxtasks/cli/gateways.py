"""``wxtasks gateways ...``: the gateways accounts are spread over.

A gateway's token is never given on the command line, never stored and never printed:
``--token-env VAR`` names the environment variable (or the file in WXTASKS_SECRETS_DIR)
that holds it, and the processes that call the gateway read it from there. Its callback
secret is printed once, when it is made (``add``, ``update --new-callback-secret``), and
stored only hashed; ``wxtasks callbacks --register URL`` makes a new one and tells the
gateway itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from wxtasks.cli.common import echo_json, friendly
from wxtasks.cli.context import runtime
from wxtasks.cli.trail import audited
from wxtasks.config import PROFILES

if TYPE_CHECKING:
    from wxtasks.gateway.registry import Gateway


@click.group()
def gateways() -> None:
    """Register, list, inspect, change and remove gateways (``default`` is the
    environment's: WECHATAPI_BASE_URL, VIDEOS_API_TOKEN, WECHATAPI_PROFILE)."""


def _view(g: Gateway, accounts: int | None = None) -> dict[str, Any]:
    rt = runtime()
    view = {**g.as_dict(), **rt.fleet.health(g.name)}
    view["token"] = token_state(g)
    if accounts is not None:
        view["accounts"] = accounts
    return view


def _token_set(g: Gateway) -> bool:
    settings = runtime().settings
    return bool(settings.gateway_token if g.is_default else settings.secret(g.token_env))


def _told_once(g: Gateway, as_json: bool, view: dict[str, Any]) -> None:
    """Print the gateway's new callback path, the one time it is known."""
    path = f"/callback/{g.callback_secret}"
    if as_json:
        echo_json({**view, "callback_path": path})
        return
    click.echo(
        f"{g.name}: callback path {path} (shown this once, stored hashed; "
        "`wxtasks callbacks --register URL` makes a new one and tells the gateway)"
    )


def token_state(g: Gateway) -> str:
    """What this host holds for the gateway's token: ``set``; ``none`` for the default
    gateway when VIDEOS_API_TOKEN is empty (calls go without one: the dev simulator takes
    them, a real gateway refuses them); ``MISSING`` for a registered gateway whose
    variable is not set here. ``wxtasks check`` reports the same."""
    if _token_set(g):
        return "set"
    return "none" if g.is_default else "MISSING"


def _counts() -> dict[str, int]:
    counts: dict[str, int] = {}
    rt = runtime()
    for a in rt.accounts.get_many(rt.accounts.app_ids()):
        counts[a.gateway] = counts.get(a.gateway, 0) + 1
    return counts


@gateways.command("add")
@click.argument("name")
@click.option("--base-url", required=True, help="the gateway's base URL")
@click.option("--profile", type=click.Choice(PROFILES), required=True, help="its route table")
@click.option(
    "--token-env",
    required=True,
    metavar="VAR",
    help="the environment variable (or WXTASKS_SECRETS_DIR file) holding its token",
)
@click.option("--rate", type=float, help="its send limit per second  [default: the settings']")
@click.option("--burst", type=int, help="its burst  [default: the settings']")
@click.option("--note", default="", help="free text shown in lists")
@click.option("--json", "as_json", is_flag=True)
@friendly
def add(
    name: str,
    base_url: str,
    profile: str,
    token_env: str,
    rate: float | None,
    burst: int | None,
    note: str,
    as_json: bool,
) -> None:
    """Register gateway NAME."""
    g = runtime().gateways.add(
        name,
        base_url=base_url,
        profile=profile,
        token_env=token_env,
        rate=rate,
        burst=burst,
        note=note,
    )
    audited("gateway.add", "gateway", name, f"{g.base_url} profile {g.profile} token {token_env}")
    if as_json:
        _told_once(g, True, _view(g, 0))
        return
    click.echo(f"{name}: registered ({g.base_url}, profile {g.profile}, token from {token_env})")
    _told_once(g, False, {})
    if not _token_set(g):
        click.echo(f"warning: {token_env} is not set here; workers must have it", err=True)


@gateways.command("list")
@click.option("--json", "as_json", is_flag=True)
@friendly
def list_(as_json: bool) -> None:
    """Every gateway, with its accounts and health."""
    counts = _counts()
    views = [_view(g, counts.get(g.name, 0)) for g in runtime().gateways.list()]
    if as_json:
        echo_json(views)
        return
    click.echo(
        f"{'NAME':<16} {'PROFILE':<10} {'ACCTS':>5} {'RATE':>6} {'BURST':>5} "
        f"{'HEALTH':<6} {'TOKEN':<7} BASE URL"
    )
    for v in views:
        click.echo(
            f"{v['name']:<16} {v['profile']:<10} {v['accounts']:>5} {v['rate']:>6g} "
            f"{v['burst']:>5} {'DOWN' if v['down'] else 'up':<6} {v['token']:<7} "
            f"{v['base_url']}"
        )
    click.echo(f"{len(views)} gateway(s)")


@gateways.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="(the output is JSON either way)")
@friendly
def show(name: str, as_json: bool) -> None:
    """One gateway: its record (never its token), health and accounts."""
    rt = runtime()
    g = rt.gateways.get(name)
    accounts = [a.app_id for a in rt.accounts.on_gateway(name)]
    echo_json({**_view(g, len(accounts)), "app_ids": accounts})


@gateways.command("update")
@click.argument("name")
@click.option("--base-url")
@click.option("--profile", type=click.Choice(PROFILES))
@click.option("--token-env", metavar="VAR")
@click.option("--rate", type=float)
@click.option("--burst", type=int)
@click.option("--note")
@click.option(
    "--new-callback-secret", is_flag=True, help="make a new callback path secret (re-register)"
)
@click.option("--json", "as_json", is_flag=True)
@friendly
def update(
    name: str,
    base_url: str | None,
    profile: str | None,
    token_env: str | None,
    rate: float | None,
    burst: int | None,
    note: str | None,
    new_callback_secret: bool,
    as_json: bool,
) -> None:
    """Change a gateway (processes pick it up within seconds)."""
    g = runtime().gateways.update(
        name,
        base_url=base_url,
        profile=profile,
        token_env=token_env,
        rate=rate,
        burst=burst,
        note=note,
        new_callback_secret=new_callback_secret,
    )
    given = {"base_url": base_url, "profile": profile, "token_env": token_env, "rate": rate}
    given |= {"burst": burst, "note": note}
    detail = " ".join(f"{k}={v!r}" for k, v in given.items() if v is not None)
    if new_callback_secret:
        detail += " new callback secret"
    audited("gateway.update", "gateway", name, detail.strip())
    if as_json and not g.callback_secret:
        echo_json(_view(g))
        return
    if g.callback_secret:
        _told_once(g, as_json, _view(g))
        if as_json:
            return
    click.echo(f"{name}: updated ({g.base_url}, profile {g.profile}, token from {g.token_env})")


@gateways.command("remove")
@click.argument("names", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True)
@friendly
def remove(names: tuple[str, ...], as_json: bool) -> None:
    """Forget gateways that serve no account any more."""
    rt = runtime()
    out = {}
    for name in names:
        using = [a.app_id for a in rt.accounts.on_gateway(name)]
        out[name] = rt.gateways.remove(name, using)
        if out[name]:
            audited("gateway.remove", "gateway", name)
    if as_json:
        echo_json({name: "removed" if ok else "was not registered" for name, ok in out.items()})
        return
    for name, ok in out.items():
        click.echo(f"{name}: {'removed' if ok else 'was not registered'}")
