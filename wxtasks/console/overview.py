"""The Overview (the console's landing page): how things are going, over the last hour
or the last day, drawn on the server from the per-minute trend buckets
(:mod:`wxtasks.trends`).

A page reads only what it has not read before: finished minutes never change, so each
console process keeps them (:class:`wxtasks.trends.TrendCache`) and a request reads the last two
minutes afresh. The page costs the same with 10 accounts or 10,000 (nothing here reads
an account); the charts refresh themselves every 10 s (htmx).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tornado import web

from wxtasks.accounts.machine import State
from wxtasks.console.base import BaseHandler
from wxtasks.console.charts import bar_chart, line_chart, sparkline, strip
from wxtasks.send.outcome import Status
from wxtasks.trends import Block, TrendCache, minute_of

OUTCOMES = [s.value for s in Status]
STATES = [s.value for s in State]
LANE_NAMES = ("interactive", "bulk")


@dataclass(frozen=True)
class Window:
    name: str
    label: str
    minutes: int
    step: int  # minutes per point
    dl_step: int  # minutes per dead-letter bar

    @property
    def points(self) -> int:
        return self.minutes // self.step


WINDOWS = {
    "hour": Window("hour", "last hour", 60, 1, 5),
    "day": Window("day", "last day", 1440, 15, 60),
}


@dataclass(frozen=True)
class GatewayRow:
    name: str
    up: bool
    sends_last_min: float
    spark: str
    strip: str


@dataclass(frozen=True)
class Overview:
    window: Window
    charts: list[tuple[str, str, str]]  # (id, title, svg)
    gateways: list[GatewayRow]
    taken_at: float
    sampled: bool  # at least one gauge sample in the window
    deadletters_total: float
    sends_total: float


def _points(blocks: Sequence[Block], field: str, how: str, step: int) -> list[float | None]:
    """One value per block: ``rate`` (count per minute), ``sum``, ``max`` or ``last`` (a
    gauge; None where nothing was sampled)."""
    if how == "rate":
        return [b.sums.get(field, 0.0) / step for b in blocks]
    if how == "sum":
        return [b.sums.get(field, 0.0) for b in blocks]
    if how == "max":
        return [b.maxs.get(field) for b in blocks]
    return [b.lasts.get(field) for b in blocks]


def build(
    cache: TrendCache,
    window: Window,
    *,
    gateways: Sequence[str],
    down: frozenset[str],
    now: float | None = None,
) -> Overview:
    stamp = time.time() if now is None else now
    last = minute_of(stamp)
    first = last - window.minutes + 1
    blocks = cache.blocks(first, last, window.step)
    dl_blocks = cache.blocks(first, last, window.dl_step)
    first_label = time.strftime("%H:%M", time.localtime(first * 60))
    last_label = time.strftime("%H:%M", time.localtime(last * 60))
    per = f"per minute, {window.step}-minute averages" if window.step > 1 else "per minute"

    def series(names: Sequence[str], prefix: str, how: str) -> list[tuple[str, Any]]:
        return [(n, _points(blocks, prefix + n, how, window.step)) for n in names]

    sends = series(OUTCOMES, "send:", "rate")
    charts = [
        (
            "sends",
            f"Sends by outcome ({per})",
            line_chart("sends", sends, first_label, last_label, "msgs/min"),
        ),
        (
            "backlog",
            "Outbox backlog per lane (messages waiting)",
            line_chart(
                "backlog", series(LANE_NAMES, "backlog:", "max"), first_label, last_label, "msgs"
            ),
        ),
        (
            "accounts",
            "Accounts by state",
            line_chart(
                "accounts", series(STATES, "state:", "last"), first_label, last_label, "accounts"
            ),
        ),
        (
            "lateness",
            "Heartbeat lateness p99",
            line_chart(
                "lateness",
                [("p99", _points(blocks, "hb_p99_ms", "max", window.step))],
                first_label,
                last_label,
                "ms",
            ),
        ),
    ]
    dead = [v or 0.0 for v in _points(dl_blocks, "deadletters", "sum", window.dl_step)]
    dl_per = "per hour" if window.dl_step == 60 else f"per {window.dl_step} minutes"
    charts.append(
        (
            "deadletters",
            f"Dead letters ({dl_per}; {sum(dead):g} in the {window.label})",
            bar_chart("deadletters", dead, first_label, last_label, "msgs"),
        )
    )
    seen = {k[3:] for b in blocks for k in b.lasts if k.startswith(("gw:", "up:"))}
    latest = cache.minutes(last - 1, last - 1).get(last - 1, {})
    rows = []
    for name in [*gateways, *sorted(seen - set(gateways))]:
        rows.append(
            GatewayRow(
                name=name,
                up=name not in down,
                sends_last_min=latest.get(f"gw:{name}", 0.0),
                spark=sparkline(_points(blocks, f"gw:{name}", "rate", window.step)),
                strip=strip(_points(blocks, f"up:{name}", "last", window.step)),
            )
        )
    return Overview(
        window=window,
        charts=charts,
        gateways=rows,
        taken_at=stamp,
        sampled=any("sampled" in b.lasts for b in blocks),
        deadletters_total=sum(dead),
        sends_total=sum(sum(v for v in values if v) for _, values in sends) * window.step,
    )


class OverviewHandler(BaseHandler):
    async def get(self) -> None:
        name = self.get_argument("window", "hour")
        window = WINDOWS.get(name)
        if window is None:
            raise web.HTTPError(400, "window must be hour or day")
        console = self.console
        rt = console.rt

        def make() -> Overview:
            return build(
                console.trends,
                window,
                gateways=rt.gateways.names(),
                down=rt.fleet.down(),
            )

        view = await console.run(make)
        template = "overview_charts.html" if self.get_argument("part", "") else "overview.html"
        self.render(template, view=view, windows=WINDOWS.values())


ROUTES: list[tuple[str, type[BaseHandler]]] = [(r"/overview", OverviewHandler)]
