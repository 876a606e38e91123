"""``wxtasks accounts ...``: register, inspect, log in and reset accounts."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from wxtasks.accounts.machine import Event, State
from wxtasks.cli.common import check_app_ids, echo_json, friendly
from wxtasks.cli.context import runtime
from wxtasks.cli.trail import audited
from wxtasks.errors import GatewayError

if TYPE_CHECKING:
    from wxtasks.accounts.store import Account

_STATES = [s.value for s in State]
GATEWAY_DOWN = "gateway down"


def _fmt_time(ts: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts)) if ts else "-"


def _pacing(fn: Any) -> Any:
    """Options for an account's own bulk pacing (each overrides the fleet default)."""
    for name, help_ in reversed(
        (
            ("--bulk-jitter", "MIN-MAX s between its bulk sends to people (WXTASKS_BULK_JITTER_S)"),
            ("--group-jitter", "MIN-MAX s between its bulk sends to groups"),
            ("--quiet-hours", 'HH:MM-HH:MM without bulk sends ("" for none)'),
            ("--warmup-s", "no bulk sends this long after its first QR login"),
            ("--daily-bulk-cap", "bulk sends per local day (0: no cap)"),
        )
    ):
        fn = click.option(name, help=help_)(fn)
    return fn


def _pacing_of(kwargs: dict[str, Any]) -> dict[str, str]:
    return {
        k: v
        for k in ("bulk_jitter", "group_jitter", "quiet_hours", "warmup_s", "daily_bulk_cap")
        if (v := kwargs.pop(k, None)) is not None
    }


@click.group()
def accounts() -> None:
    """Register, list, inspect, log in and reset accounts."""


@accounts.command("add")
@click.argument("app_ids", nargs=-1, required=True, callback=check_app_ids)
@click.option("--rate", type=float, help="this account's sends per second")
@click.option("--burst", type=int, help="this account's burst")
@click.option("--note", help="free text shown in lists")
@click.option("--tag", "tags", multiple=True, help="a tag (repeatable)")
@click.option("--gateway", help="the registered gateway serving them  [default: default]")
@click.option("--no-login", is_flag=True, help="register only; do not start the login")
@_pacing
@friendly
def add(
    app_ids: tuple[str, ...],
    rate: float | None,
    burst: int | None,
    note: str | None,
    tags: tuple[str, ...],
    gateway: str | None,
    no_login: bool,
    **pacing: Any,
) -> None:
    """Register APP_IDS (heartbeats scheduled) and start their login."""
    from wxtasks.accounts.lifecycle import LOGIN_TASK

    store = runtime().accounts
    for app_id in app_ids:
        account, created = store.register(
            app_id,
            rate=rate,
            burst=burst,
            note=note,
            tags=tags or None,
            pacing=_pacing_of(pacing),
            gateway=gateway,
        )
        if not no_login and account.state is State.IDLE:
            runtime().enqueue(LOGIN_TASK, {"app_id": app_id})
        audited(
            "account.add",
            "account",
            app_id,
            f"{'registered' if created else 'updated'} on gateway {account.gateway}",
        )
        click.echo(f"{app_id}: {'registered' if created else 'updated'} ({account.state})")


@accounts.command("list")
@click.option("--state", type=click.Choice(_STATES), help="only accounts in this state")
@click.option("--json", "as_json", is_flag=True)
@friendly
def list_(state: str | None, as_json: bool) -> None:
    """Every registered account (CONDITION "gateway down": its gateway is not answering;
    the account keeps its state and waits)."""
    rt = runtime()
    items = rt.accounts.list(state)
    down = frozenset(map(str, rt.redis.smembers(rt.keys.gateways_down)))  # no gateway client
    if as_json:
        echo_json([view(a, down) for a in items])
        return
    click.echo(
        f"{'APP_ID':<28} {'STATE':<13} {'GATEWAY':<12} {'CONDITION':<12} {'RETRY':>5} "
        f"{'HEARTBEAT':>9}  NOTE"
    )
    for a in items:
        click.echo(
            f"{a.app_id:<28} {a.state.value:<13} {a.gateway:<12} {condition(a, down) or '-':<12} "
            f"{a.retry_count:>5} {_fmt_time(a.last_heartbeat_at):>9}  {a.note}"
        )
    click.echo(f"{len(items)} account(s)")


def condition(account: Account, down: frozenset[str]) -> str:
    """What holds the account besides its state: "gateway down", or ""."""
    return GATEWAY_DOWN if account.gateway in down else ""


def view(account: Account, down: frozenset[str]) -> dict[str, Any]:
    return {**account.as_dict(), "condition": condition(account, down)}


@accounts.command("show")
@click.argument("app_id")
@friendly
def show(app_id: str) -> None:
    """One account's record and its recent events."""
    from wxtasks.events import read_events

    rt = runtime()
    echo_json(
        {
            **view(rt.accounts.get(app_id), rt.fleet.down()),
            "events": read_events(rt.redis, rt.settings, count=10, app_id=app_id),
        }
    )


@accounts.command("update")
@click.argument("app_id")
@click.option("--rate", type=float)
@click.option("--burst", type=int)
@click.option("--note")
@click.option("--tag", "tags", multiple=True)
@click.option("--gateway", help="move it to this registered gateway")
@_pacing
@friendly
def update(
    app_id: str,
    rate: float | None,
    burst: int | None,
    note: str | None,
    tags: tuple[str, ...],
    gateway: str | None,
    **pacing: Any,
) -> None:
    """Change an account's options (rate, burst, note, tags, gateway, bulk pacing)."""
    account = runtime().accounts.update(
        app_id,
        rate=rate,
        burst=burst,
        note=note,
        tags=tags or None,
        pacing=_pacing_of(pacing),
        gateway=gateway,
    )
    given = {"rate": rate, "burst": burst, "note": note, "tags": ",".join(tags), "gateway": gateway}
    audited(
        "account.update",
        "account",
        app_id,
        " ".join(f"{k}={v!r}" for k, v in given.items() if v not in (None, "")),
    )
    echo_json(view(account, runtime().fleet.down()))


@accounts.command("remove")
@click.argument("app_ids", nargs=-1, required=True)
@friendly
def remove(app_ids: tuple[str, ...]) -> None:
    """Forget accounts: their heartbeats stop and nothing stays scheduled."""
    for app_id in app_ids:
        removed = runtime().accounts.remove(app_id)
        if removed:
            audited("account.remove", "account", app_id)
        click.echo(f"{app_id}: {'removed' if removed else 'was not registered'}")


@accounts.command("reset")
@click.argument("app_ids", nargs=-1, required=True)
@friendly
def reset(app_ids: tuple[str, ...]) -> None:
    """Back to IDLE (from ERROR or any state) and log in again."""
    for app_id in app_ids:
        decision = runtime().lifecycle.reset(app_id)
        state = decision.state.value if decision else runtime().accounts.get(app_id).state
        audited("account.reset", "account", app_id, f"now {state}")
        click.echo(f"{app_id}: {state}; login started")


@accounts.command("login")
@click.argument("app_id")
@click.option(
    "--png",
    type=click.Path(dir_okay=False, path_type=Path),
    help="also save the QR code to this PNG file",
)
@click.option("--poll-s", type=float, default=5.0, show_default=True)
@friendly
def login(app_id: str, png: Path | None, poll_s: float) -> None:
    """QR login: show the code in the terminal, wait for the scan, end ONLINE."""
    import segno

    rt = runtime()
    store, gateway = rt.accounts, rt.gateway_for(app_id)
    account = store.get(app_id)
    if account.state is State.ONLINE:
        click.echo(f"{app_id} is already ONLINE")
        return
    if account.state is not State.IDLE:
        runtime().lifecycle.reset(app_id, "operator QR login")
    if gateway.check_online(app_id):
        decision = store.transition(
            app_id, Event.LOGIN_SUCCEEDED, reason="already online", expect=[State.IDLE]
        )
        if decision:
            runtime().lifecycle.follow_up(app_id, decision)
        click.echo(f"{app_id}: ONLINE (the gateway already had its session)")
        return
    qr = gateway.get_login_qr(app_id)
    audited("account.qr_login", "account", app_id)
    store.transition(
        app_id, Event.LOGIN_STARTED, reason=f"QR {qr.uuid}", extra={"login_uuid": qr.uuid}
    )
    code = segno.make(qr.qr_data or qr.uuid, error="m")
    code.terminal(compact=True)
    if png:
        if qr.qr_img_base64:
            png.write_bytes(base64.b64decode(qr.qr_img_base64.split(",", 1)[-1]))
        else:
            code.save(str(png), kind="png", scale=6)
        click.echo(f"QR code saved to {png}")
    click.echo(f"scan with WeChat to log in {app_id} (uuid {qr.uuid})")
    deadline = time.time() + rt.settings.login_qr_ttl_s
    while time.time() < deadline:
        try:
            status = gateway.check_login(app_id, qr.uuid)
        except GatewayError as exc:
            _give_up(app_id, f"login failed: {exc}")
            return
        if status.logged_in:
            decision = store.transition(
                app_id,
                Event.LOGIN_SUCCEEDED,
                reason="QR login",
                expect=[State.LOGGING_IN],
                extra={"wxid": status.wxid, "nick_name": status.nick_name},
            )
            store.note_first_login(app_id)  # a new device: bulk sends warm up
            if decision:
                runtime().lifecycle.follow_up(app_id, decision)
            click.echo(f"{app_id}: ONLINE as {status.nick_name or status.wxid}")
            return
        if status.status == 4:
            _give_up(app_id, "login cancelled on the phone")
            return
        click.echo(
            f"  {'scanned, confirm on the phone' if status.status == 1 else 'waiting'}"
            f" ({status.expired_time_s}s left)"
        )
        time.sleep(poll_s)
    _give_up(app_id, "QR code expired")


def _give_up(app_id: str, reason: str) -> None:
    decision = runtime().accounts.transition(
        app_id, Event.LOGIN_FAILED, reason=reason, expect=[State.LOGGING_IN]
    )
    if decision:
        runtime().lifecycle.follow_up(app_id, decision)
    raise click.ClickException(f"{app_id}: {reason}; still IDLE")
