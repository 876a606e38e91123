"""Pacing fidelity (issue 11): the gaps between one account's bulk sends against the
configured spacing, and no bulk send inside quiet hours.

A real dispatcher (``wxtasks.outbox.Dispatcher``, the code the active beat runs) on a
throwaway Redis, driven in-process with an injected clock that advances one tick
(``Dispatcher.TICK_S``, 50 ms) at a time; a dispatched message counts as sent at the
tick that dispatched it (so a gap can read up to one tick longer than drawn). Account
buckets at their default (1/s burst 2); the global bucket raised to 1,000/s so that it
never binds for 20 accounts at once.

1. Spacing, four groups of 5 accounts, 40 bulk messages each (one campaign per group):
   private recipients at the default ``WXTASKS_BULK_JITTER_S`` (1-3 s); groups
   (``...@chatroom``) at ``WXTASKS_GROUP_JITTER_S`` (2-5 s); an account override
   ``bulk_jitter=2-4``; a campaign ``jitter=0.5-1.5`` (below the 1/s bucket: the bucket
   then spaces some sends, which stays inside the range). Per account: min, median, max
   gap; goal every gap within [MIN, MAX + one tick].
2. Quiet hours (default ``00:00-07:00``, Asia/Shanghai): 5 accounts with a campaign of
   150 targets each (longer than the window), from 23:58 to 00:03 and from 06:55 to 07:05
   local time (1 s ticks), plus a reply per account a minute in; goal 0 bulk sends inside
   quiet hours (the last before 00:00, the first at 07:00), the replies go out at once.

    python bench/pacing_fidelity.py [--quick]     # --quick: 10 messages per account
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import statistics
import time
from collections import defaultdict
from typing import Any
from zoneinfo import ZoneInfo

from harness import table

from wxtasks.accounts.machine import Event
from wxtasks.campaigns.store import Campaigns, Content
from wxtasks.config import Settings
from wxtasks.dev.redis_server import RedisServer
from wxtasks.runtime import Runtime
from wxtasks.send.dispatcher import Dispatched, Dispatcher
from wxtasks.send.outbox import Waiting
from wxtasks.send.outcome import Ending, SendResult, Status

TZ = ZoneInfo("Asia/Shanghai")


class Clock:
    def __init__(self, at: float) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


class Run:
    """A dispatcher with an injected clock; what it publishes is recorded and finished
    (as a worker would), so no lease runs out in simulated time."""

    def __init__(self, rt: Runtime, clock: Clock) -> None:
        self.rt, self.clock = rt, clock
        self.sent: list[dict[str, Any]] = []
        self.dispatcher = rt.dispatcher(self.publish, clock=clock)
        self.campaigns = Campaigns(
            rt.redis,
            rt.settings,
            rt.keys,
            rt.scripts,
            rt.outbox,
            rt.endings,
            rt.store_result,
            clock=clock,
        )
        rt.__dict__["campaigns"] = self.campaigns

    def publish(self, batch: list[Dispatched]) -> None:
        for d in batch:
            w = d.waiting
            self.sent.append(
                {"at": self.clock(), "app": w.app_id, "lane": w.lane, "to": w.kwargs["to_wxid"]}
            )
            result = SendResult(Status.SENT, w.app_id, w.kwargs["to_wxid"], w.task_id)
            self.rt.endings.end(Ending(result, from_outbox=True), store_result=False)

    def run(self, until: float, step: float) -> None:
        while self.clock.at < until:
            self.dispatcher.tick()
            self.clock.at += step


def local(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, TZ)


def at_local(day: dt.date, hh: int, mm: int) -> float:
    return dt.datetime(day.year, day.month, day.day, hh, mm, tzinfo=TZ).timestamp()


def spacing(rt: Runtime, per_account: int) -> list[list[Any]]:
    day = (dt.datetime.now(TZ) + dt.timedelta(days=2)).date()
    clock = Clock(at_local(day, 12, 0))  # midday, two days ahead (after Redis' own time)
    run = Run(rt, clock)
    groups = [
        ("private, default 1-3", (1.0, 3.0), {}, None, ""),
        ("groups, default 2-5", (2.0, 5.0), {}, None, "@chatroom"),
        ("account override 2-4", (2.0, 4.0), {"bulk_jitter": "2-4"}, None, ""),
        ("campaign jitter 0.5-1.5", (0.5, 1.5), {}, "0.5-1.5", ""),
    ]
    expected: dict[str, tuple[str, tuple[float, float]]] = {}
    for g, (label, span, pacing, jitter, suffix) in enumerate(groups):
        apps = [f"g{g}-acct{i}" for i in range(5)]
        for a in apps:
            rt.accounts.register(a, pacing=pacing or None)
            rt.accounts.transition(a, Event.LOGIN_SUCCEEDED)
            expected[a] = (label, span)
        targets = [(a, f"wxid_{a}_{n:03d}{suffix}") for a in apps for n in range(per_account)]
        run.campaigns.create(
            f"spacing-{g}", Content.parse("text", {"content": "上新"}), targets, jitter=jitter
        )
    run.run(clock.at + per_account * 5.0 + 30, Dispatcher.TICK_S)
    by_app: dict[str, list[float]] = defaultdict(list)
    for s in run.sent:
        by_app[s["app"]].append(s["at"])
    rows = []
    for a, (label, (lo, hi)) in expected.items():
        times = sorted(by_app[a])
        gaps = [y - x for x, y in itertools.pairwise(times)]
        inside = all(lo - 1e-6 <= g <= hi + Dispatcher.TICK_S + 1e-6 for g in gaps)
        rows.append(
            [
                label,
                a,
                len(times),
                f"{min(gaps):.2f}",
                f"{statistics.median(gaps):.2f}",
                f"{max(gaps):.2f}",
                f"{lo:g}-{hi:g}",
                "yes" if inside and len(times) == per_account else "NO",
            ]
        )
    return rows


def quiet_hours(rt: Runtime, per_account: int) -> list[list[Any]]:
    day = (dt.datetime.now(TZ) + dt.timedelta(days=3)).date()
    rows = []
    for name, start, end in (
        ("midnight: 23:58 -> 00:03", at_local(day, 23, 58), at_local(day, 23, 58) + 300),
        ("morning: 06:55 -> 07:05", at_local(day, 6, 55), at_local(day, 6, 55) + 600),
    ):
        rt.redis.flushall()
        clock = Clock(start)
        run = Run(rt, clock)
        apps = [f"q-acct{i}" for i in range(5)]
        for a in apps:
            rt.accounts.register(a)
            rt.accounts.transition(a, Event.LOGIN_SUCCEEDED)
        targets = [(a, f"wxid_{a}_{n:03d}") for a in apps for n in range(per_account)]
        run.campaigns.create("quiet", Content.parse("text", {"content": "夜间"}), targets)
        reply_at = start + 60
        run.run(reply_at, 1.0)
        for a in apps:  # a customer writes at night: the reply is not held
            rt.outbox.park(
                Waiting(
                    task_id=f"reply-{a}",
                    task="wxtasks.send_text",
                    kwargs={"app_id": a, "to_wxid": "customer", "content": "您好"},
                    app_id=a,
                    lane="interactive",
                    enqueued_at=clock.at,
                ),
                0.0,
            )
        run.run(end, 1.0)
        bulk = [s for s in run.sent if s["lane"] == "bulk"]
        inside = [s for s in bulk if local(s["at"]).time() < dt.time(7, 0)]
        replies = [s for s in run.sent if s["lane"] == "interactive"]
        reply_lat = max((s["at"] - reply_at for s in replies), default=float("nan"))
        first = local(bulk[0]["at"]).strftime("%H:%M:%S") if bulk else "-"
        last = local(bulk[-1]["at"]).strftime("%H:%M:%S") if bulk else "-"
        rows.append(
            [
                name,
                len(bulk),
                len(inside),
                first,
                last,
                f"{len(replies)}/5 in {reply_lat:.1f} s",
                "PASS" if not inside else "FAIL",
            ]
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    per_account = 10 if args.quick else 40
    with RedisServer() as server:
        settings = Settings.from_env(
            {}, redis_url=server.url, broker_url=server.url[:-1] + "1", rate_per_second=1000
        )
        rt = Runtime(settings)
        assert (settings.bulk_jitter_s, settings.group_jitter_s) == ("1-3", "2-5")
        assert settings.quiet_hours == "00:00-07:00" and settings.timezone == "Asia/Shanghai"
        t0 = time.perf_counter()
        rows = spacing(rt, per_account)
        took = time.perf_counter() - t0
        print(
            f"\n== pacing fidelity: gaps between one account's bulk sends, {per_account} per "
            f"account, in-process dispatcher, 50 ms ticks of an injected clock "
            f"({took:.0f} s real) =="
        )
        print(table(rows, ["policy", "account", "sent", "min s", "median s", "max s", "set", "ok"]))
        bad = sum(1 for r in rows if r[-1] != "yes")
        print(
            f"every gap within [MIN, MAX + 50 ms tick]: "
            f"{'PASS' if not bad else f'FAIL ({bad} accounts)'}"
        )
        qrows = quiet_hours(rt, 80 if args.quick else 150)
        print("\n== quiet hours 00:00-07:00 Asia/Shanghai, 5 accounts with a running campaign ==")
        print(
            table(
                qrows,
                [
                    "window",
                    "bulk sent",
                    "inside quiet hours",
                    "first bulk",
                    "last bulk",
                    "replies",
                    "goal 0",
                ],
            )
        )
        rt.redis.close()


if __name__ == "__main__":
    main()
