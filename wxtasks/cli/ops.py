"""``wxtasks status | events | check | metrics``: what operators look at."""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any

import click

from wxtasks.accounts.machine import State
from wxtasks.cli.common import echo_json, friendly
from wxtasks.cli.context import runtime
from wxtasks.config import Settings, redact_url

if TYPE_CHECKING:
    from wxtasks.accounts.store import Account


def queue_depths() -> dict[str, int | None]:
    """Messages waiting in each wxtasks queue (None when the broker cannot tell). A bare
    kombu connection to the broker (what Celery's would be), without importing Celery."""
    from amqp.exceptions import ChannelError, NotFound
    from kombu.connection import Connection

    from wxtasks.worker.celeryconf import CONTROL_QUEUE, DEFAULT_QUEUE, SEND_QUEUE, celery_url

    settings = runtime().settings
    url, master = celery_url(settings.broker_url, settings)
    options = {"master_name": master} if master else {}
    depths: dict[str, int | None] = {}
    conn: Any = Connection(url, transport_options=options, connect_timeout=5)  # type: ignore[no-untyped-call]
    with conn:
        conn.ensure_connection(max_retries=1)
        for queue in (SEND_QUEUE, CONTROL_QUEUE, DEFAULT_QUEUE):
            try:
                # a fresh channel each time: AMQP closes a channel on NOT_FOUND
                with conn.channel() as channel:
                    depths[queue] = int(
                        channel.queue_declare(queue=queue, passive=True).message_count
                    )
            except (NotFound, ChannelError):  # the Redis transport keeps no empty queues
                depths[queue] = 0
    return depths


def status_snapshot() -> dict[str, Any]:
    from wxtasks.events import read_events
    from wxtasks.send.buckets import levels
    from wxtasks.send.leases import dispatchers_view

    rt = runtime()
    s = rt.settings
    seconds, micros = rt.redis.time()
    now_ms = seconds * 1000 + micros / 1000
    lateness = [float(x) for x in rt.redis.lrange(rt.keys.heartbeat_lateness, 0, 999)]
    lateness.sort()
    try:
        depths: dict[str, int | None] = queue_depths()
    except Exception as exc:
        depths = {"error": None}
        click.echo(f"warning: broker unreachable: {exc}", err=True)
    accounts = list(rt.accounts.get_many(rt.accounts.app_ids()))
    counts = {state.value: 0 for state in State}
    down = rt.fleet.down()
    per_gateway: dict[str, int] = {}
    for account in accounts:
        counts[account.state.value] += 1
        per_gateway[account.gateway] = per_gateway.get(account.gateway, 0) + 1
    (global_level,) = levels(
        rt.scripts, [(rt.keys.global_bucket, s.rate_per_second, s.burst)], now_ms
    )
    gateways = []
    for name in rt.gateways.names():
        health = rt.fleet.health(name)
        gateways.append(
            {
                "name": name,
                "accounts": per_gateway.get(name, 0),
                "down": name in down,
                "down_since": health["down_since"],
                "failures": health["failures"],
                "last_error": health["last_error"],
            }
        )
    return {
        "accounts": counts,
        "gateway_down_accounts": sum(n for g, n in per_gateway.items() if g in down),
        "gateways": gateways,
        "queues": depths,
        "outbox": rt.outbox.stats(),
        "dispatch": dispatchers_view(rt.redis, rt.keys),
        "global_bucket": {
            "tokens": round(global_level.tokens, 2),
            "rate_per_second": s.rate_per_second,
            "burst": s.burst,
        },
        "busiest_account_buckets": busiest_buckets(accounts, now_ms),
        "sends": {k: _number(v) for k, v in rt.redis.hgetall(rt.keys.send_stats).items()},
        "heartbeat_lateness_s": {
            "samples": len(lateness),
            "p50": lateness[len(lateness) // 2] if lateness else None,
            "p99": lateness[int(len(lateness) * 0.99)] if lateness else None,
        },
        "deadletters": rt.deadletters.count(),
        "recent_events": read_events(rt.redis, s, count=10),
    }


def busiest_buckets(accounts: list[Account], now_ms: float, top: int = 5) -> list[dict[str, Any]]:
    """Accounts whose own bucket is holding messages back (a 群发 in progress, say):
    when their next message may go, and how many tokens they have now."""
    from wxtasks.send.buckets import levels

    rt = runtime()
    s = rt.settings
    specs = [
        (
            rt.keys.account_bucket(a.app_id),
            a.rate or s.account_rate_per_second,
            a.burst or s.account_burst,
        )
        for a in accounts
    ]
    busy: list[dict[str, Any]] = []
    for account, level in zip(accounts, levels(rt.scripts, specs, now_ms), strict=True):
        if level.next_token_s > 0:
            busy.append(
                {
                    "app_id": account.app_id,
                    "next_slot_in_s": round(level.next_token_s, 2),
                    "tokens": round(level.tokens, 2),
                }
            )
    return sorted(busy, key=lambda b: float(b["next_slot_in_s"]), reverse=True)[:top]


def _number(text: bytes | str) -> int | float:
    value = float(text)
    return int(value) if value.is_integer() else round(value, 3)


@click.command()
@click.option("--json", "as_json", is_flag=True)
@friendly
def status(as_json: bool) -> None:
    """Accounts by state, queue depths, bucket level, sends, recent events, dead letters."""
    snap = status_snapshot()
    if as_json:
        echo_json(snap)
        return
    accounts = snap["accounts"]
    click.echo(
        "accounts   "
        + "  ".join(f"{k} {v}" for k, v in accounts.items())
        + f"  (total {sum(accounts.values())})"
    )
    gws = snap["gateways"]
    down = [g for g in gws if g["down"]]
    click.echo(
        f"gateways   {len(gws)} ({len(down)} down; "
        f"{snap['gateway_down_accounts']} accounts wait on them)"
    )
    for g in down:
        since = time.strftime("%H:%M:%S", time.localtime(g["down_since"] or 0))
        click.echo(
            f"  DOWN     {g['name']} since {since}, {g['accounts']} accounts: {g['last_error']}"
        )
    click.echo(
        "queues     "
        + "  ".join(f"{k} {v if v is not None else '?'}" for k, v in snap["queues"].items())
    )
    b = snap["global_bucket"]
    click.echo(f"bucket     {b['tokens']}/{b['burst']} tokens at {b['rate_per_second']}/s")
    for lane in ("interactive", "bulk"):
        o = snap["outbox"][lane]
        click.echo(
            f"outbox     {lane:<11} waiting {o['backlog']} ({o['accounts']} accounts), "
            f"oldest {o['oldest_age_s']}s, dispatch lag {o['dispatch_lag_s']}s, "
            f"dispatched {o['dispatched']}"
        )
    d = snap["dispatch"]
    click.echo(
        f"dispatch   {len(d['dispatchers'])} dispatchers, {d['shards']} shards"
        + (f" ({d['unheld_shards']} held by none)" if d["unheld_shards"] else "")
    )
    for one in d["dispatchers"]:
        click.echo(
            f"  {one['id']}  shards {one['shards']}  lease age {one['lease_age_s']}s  "
            f"{one['rate_per_s']}/s  lag {one['lag_s']}s  dispatched {one['dispatched']}"
            + (f"  fenced {one['fenced']}" if one["fenced"] else "")
        )
    for busy in snap["busiest_account_buckets"]:
        click.echo(f"  busy     appId={busy['app_id']} next slot in {busy['next_slot_in_s']}s")
    click.echo(
        "sends      " + ("  ".join(f"{k} {v}" for k, v in snap["sends"].items()) or "none yet")
    )
    hb = snap["heartbeat_lateness_s"]
    if hb["samples"]:
        click.echo(
            f"heartbeat  lateness p50 {hb['p50']:.3f}s p99 {hb['p99']:.3f}s "
            f"({hb['samples']} samples)"
        )
    click.echo(f"deadletters {snap['deadletters']}")
    click.echo("recent events:")
    for e in snap["recent_events"]:
        click.echo("  " + _event_line(e))


def _event_line(e: dict[str, str]) -> str:
    at = time.strftime("%H:%M:%S", time.localtime(float(e.get("at") or 0)))
    if e.get("kind") == "alert":
        who = next(
            (f"{k}={e[k]}" for k in ("campaign", "gateway") if e.get(k)),
            f"appId={e.get('app_id')}",
        )
        return f"{at} ALERT {e.get('alert')} {who} {e.get('reason', '')}"
    if e.get("kind") == "audit":
        detail = f": {e['detail']}" if e.get("detail") else ""
        return (
            f"{at} AUDIT {e.get('action')} {e.get('object')} by {e.get('user')} "
            f"({e.get('via')} from {e.get('from')}){detail}"
        )
    return (
        f"{at} appId={e.get('app_id')} {e.get('prev')} -> {e.get('curr')} "
        f"[{e.get('event')}] {e.get('reason', '')}"
    )


@click.command()
@click.option("--follow", "-f", is_flag=True, help="keep printing new events")
@click.option("--count", "-n", type=int, default=20, show_default=True)
@click.option("--app-id", help="only this account")
@click.option("--user", default="", help="only the audit trail: what this user did")
@click.option(
    "--object", "obj", default="", help="only the audit trail: about this object (appId, id...)"
)
@click.option("--audit", is_flag=True, help="only the audit trail (who changed what)")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@friendly
def events(
    follow: bool, count: int, app_id: str | None, user: str, obj: str, audit: bool, as_json: bool
) -> None:
    """State changes, alerts and the audit trail (a capped Redis stream)."""
    from wxtasks.audit import matches, read_audit
    from wxtasks.events import follow_events, read_events

    rt = runtime()
    audit_only = audit or bool(user or obj)

    def show(e: dict[str, str]) -> None:
        if app_id and e.get("app_id") != app_id:
            return
        if audit_only and not matches(e, user, obj):
            return
        click.echo(json.dumps(e, ensure_ascii=False) if as_json else _event_line(e))

    # follow on from the newest entry there is now, so nothing slips between the two
    newest = rt.redis.xrevrange(rt.keys.events, count=1)
    since = str(newest[0][0]) if newest else "0-0"
    if count > 0 and audit_only:
        for e in reversed(read_audit(rt.redis, rt.settings, user=user, obj=obj, count=count)):
            show(e)
    elif count > 0:
        for e in read_events(rt.redis, rt.settings, count=count, app_id=app_id):
            show(e)
    if follow:
        try:
            for e in follow_events(rt.redis, rt.settings, since=since):
                show(e)
        except KeyboardInterrupt:
            pass


@click.command()
@click.option("--timeout-s", type=float, default=3.0, show_default=True)
def check(timeout_s: float) -> None:
    """Redis, broker, gateway token, live workers and dispatchers: one line each; exit 0
    when all pass."""
    results = run_checks(timeout_s)
    for name, ok, detail in results:
        click.echo(f"{'ok  ' if ok else 'FAIL'} {name:<8} {detail}")
    sys.exit(0 if all(ok for _, ok, _ in results) else 1)


def run_checks(timeout_s: float = 3.0) -> list[tuple[str, bool, str]]:
    from wxtasks.errors import (
        GatewayAuthError,
        GatewayError,
        GatewayOutcomeUnknownError,
        GatewayUnavailableError,
        WxTasksError,
    )
    from wxtasks.runtime import redis_answers

    results: list[tuple[str, bool, str]] = []
    try:
        rt = runtime()
    except WxTasksError as exc:
        return [("config", False, str(exc))]
    settings = rt.settings
    results.append(("config", True, f"profile {settings.gateway_profile}"))
    ok = redis_answers(settings.redis_url, timeout_s)
    results.append(("redis", ok, redact_url(settings.redis_url)))
    try:
        with rt.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout_s)
        results.append(("broker", True, redact_url(settings.broker_url)))
    except Exception as exc:
        results.append(("broker", False, f"{redact_url(settings.broker_url)}: {exc}"))
        return results
    try:
        specs = rt.gateways.list()
    except Exception as exc:  # Redis away: still check the environment's gateway
        specs = [rt.gateways.get("default")]
        results.append(("gateways", False, f"cannot read the registry: {exc}"))
    if len(specs) > 1:
        # the environment's gateway matters when an account uses it (or it is set up)
        on = {a.gateway for a in rt.accounts.get_many(rt.accounts.app_ids())}
        if "default" not in on and "WECHATAPI_BASE_URL" not in Settings.configured():
            specs = specs[1:]
    for spec in specs:
        label = "gateway" if spec.is_default else f"gw:{spec.name}"
        var = "VIDEOS_API_TOKEN" if spec.is_default else spec.token_env
        empty = spec.is_default and not settings.gateway_token  # `gateways list`: token none
        try:
            rt.fleet.client(spec.name).check_online("wxtasks-check")
            results.append(
                (
                    label,
                    True,
                    f"{spec.base_url} answers without a token (VIDEOS_API_TOKEN is empty)"
                    if empty
                    else f"{spec.base_url} accepted the token",
                )
            )
        except GatewayAuthError as exc:
            unset = empty or "not set" in str(exc)
            why = f"token variable {var} is not set" if unset else f"refused the token ({var})"
            results.append((label, False, f"{spec.base_url} {why}"))
        except GatewayError as exc:
            unreachable = isinstance(exc, GatewayUnavailableError | GatewayOutcomeUnknownError)
            results.append((label, not unreachable, f"{spec.base_url}: {exc}"))
    try:
        queues = rt.celery.control.inspect(timeout=timeout_s).active_queues() or {}
    except Exception as exc:
        queues = {}
        results.append(("workers", False, f"cannot ask workers: {exc}"))
        return results
    consumed = {q["name"] for qs in queues.values() for q in qs}
    missing = {"send", "control"} - consumed
    results.append(
        (
            "workers",
            bool(queues) and not missing,
            f"{len(queues)} worker(s): {', '.join(sorted(queues)) or 'none'}"
            + (f"; nobody consumes {', '.join(sorted(missing))}" if missing else ""),
        )
    )
    results.append(dispatch_check())
    return results


def dispatch_check() -> tuple[str, bool, str]:
    """Live dispatchers, and every shard held by one (else waiting messages stay put)."""
    from wxtasks.send.leases import dispatchers_view

    rt = runtime()
    try:
        view = dispatchers_view(rt.redis, rt.keys)
    except Exception as exc:
        return ("dispatch", False, f"cannot read the dispatchers: {exc}")
    live, unheld = len(view["dispatchers"]), view["unheld_shards"]
    detail = f"{live} dispatcher(s) hold {view['shards'] - unheld} of {view['shards']} shards"
    if not live:
        detail += "; start `wxtasks dispatcher` (waiting messages are not sent meanwhile)"
    return ("dispatch", live > 0 and unheld == 0, detail)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=9808, show_default=True)
@friendly
def metrics(host: str, port: int) -> None:
    """Serve Prometheus metrics (accounts by state, sends by outcome, token waits,
    heartbeat lateness, dead letters) read from Redis at each scrape."""
    from wxtasks.metrics import serve

    serve(runtime(), port, host)
