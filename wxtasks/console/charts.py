"""Charts drawn on the server as SVG: no chart library, no JavaScript.

``line_chart`` draws series over time (a gap where a point is missing), ``bar_chart``
counts per period, ``strip`` a row of up/down cells. Colours are SVG presentation
attributes (the console's Content-Security-Policy allows no inline styles); each series
carries ``data-series`` and its latest value, and each chart a ``<title>`` per series,
so a test or a screen reader can read what a picture shows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

#: one colour per series, in order (colour-blind safe: Okabe-Ito)
PALETTE = ("#0072B2", "#E69F00", "#D55E00", "#CC79A7", "#009E73", "#56B4E9", "#000000")
COLOURS = {
    "sent": "#009E73",
    "duplicate": "#56B4E9",
    "failed": "#D55E00",
    "unknown": "#E69F00",
    "cancelled": "#999999",
    "ONLINE": "#009E73",
    "IDLE": "#999999",
    "LOGGING_IN": "#56B4E9",
    "RECONNECTING": "#E69F00",
    "ERROR": "#D55E00",
    "interactive": "#0072B2",
    "bulk": "#CC79A7",
}

Series = tuple[str, Sequence[float | None]]

W, H = 560, 170
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 22, 22


def nice_max(value: float) -> float:
    """A round number at or above ``value`` for the top of an axis (1, 2, 5 x 10^n)."""
    if value <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * exp:
            return float(step * exp)
    return float(10 * exp)


def _fmt(v: float) -> str:
    if v >= 1000:
        return f"{v / 1000:g}k"
    return f"{v:.3g}" if v < 10 else f"{v:.0f}"


def _frame(chart: str, top: float, first: str, last: str, unit: str) -> list[str]:
    inner_h = H - TOP - BOTTOM
    out = [
        f'<svg class="chart" data-chart="{escape(chart)}" viewBox="0 0 {W} {H}" '
        f'width="{W}" height="{H}" role="img" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i in range(4):
        y = TOP + inner_h * i / 3
        out.append(
            f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e3e3"/>'
        )
        label = _fmt(top * (3 - i) / 3)
        out.append(
            f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="10" '
            f'fill="#666">{label}</text>'
        )
    out.append(
        f'<text x="{LEFT}" y="{H - 6}" font-size="10" fill="#666">{escape(first)}</text>'
        f'<text x="{W - RIGHT}" y="{H - 6}" font-size="10" fill="#666" '
        f'text-anchor="end">{escape(last)}</text>'
    )
    if unit:
        out.append(
            f'<text x="{LEFT + 4}" y="{TOP + 10}" font-size="10" fill="#666">{escape(unit)}</text>'
        )
    return out


def line_chart(chart: str, series: Sequence[Series], first: str, last: str, unit: str = "") -> str:
    """Series over time, left (``first``) to right (``last``); None is a gap."""
    points = max((len(v) for _, v in series), default=0)
    peak = max((x for _, v in series for x in v if x is not None), default=0.0)
    top = nice_max(peak)
    out = _frame(chart, top, first, last, unit)
    inner_w, inner_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    step = inner_w / max(1, points - 1)
    x_legend = float(LEFT + 40)
    for i, (name, _values) in enumerate(series):  # the legend, along the top
        colour = COLOURS.get(name, PALETTE[i % len(PALETTE)])
        out.append(
            f'<rect x="{x_legend:.0f}" y="5" width="10" height="10" fill="{colour}"/>'
            f'<text x="{x_legend + 13:.0f}" y="14" font-size="11" fill="#333">'
            f"{escape(name)}</text>"
        )
        x_legend += 20 + 7 * len(name)
    for i, (name, values) in enumerate(series):
        colour = COLOURS.get(name, PALETTE[i % len(PALETTE)])
        runs: list[list[str]] = [[]]
        for j, v in enumerate(values):
            if v is None:
                runs.append([])
                continue
            x = LEFT + j * step
            y = TOP + inner_h * (1 - v / top)
            runs[-1].append(f"{x:.1f},{y:.1f}")
        latest = next((v for v in reversed(values) if v is not None), None)
        total = sum(v for v in values if v is not None)
        out.append(
            f'<g data-series="{escape(name)}" data-latest="{_fmt(latest or 0)}" '
            f'data-total="{total:g}"><title>{escape(name)}: latest {_fmt(latest or 0)}'
            f"{escape(unit and ' ' + unit)}</title>"
        )
        for run in runs:
            if len(run) == 1:
                cx, cy = run[0].split(",")
                out.append(f'<circle cx="{cx}" cy="{cy}" r="2" fill="{colour}"/>')
            elif run:
                out.append(
                    f'<polyline points="{" ".join(run)}" fill="none" stroke="{colour}" '
                    'stroke-width="1.6"/>'
                )
        out.append("</g>")
    out.append("</svg>")
    return "".join(out)


def bar_chart(chart: str, values: Sequence[float], first: str, last: str, unit: str = "") -> str:
    """One bar per period."""
    top = nice_max(max(values, default=0.0))
    out = _frame(chart, top, first, last, unit)
    inner_w, inner_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    width = inner_w / max(1, len(values))
    out.append(f'<g data-series="{escape(chart)}" data-total="{sum(values):g}">')
    for i, v in enumerate(values):
        if v <= 0:
            continue
        h = inner_h * v / top
        out.append(
            f'<rect x="{LEFT + i * width + 1:.1f}" y="{TOP + inner_h - h:.1f}" '
            f'width="{max(1.0, width - 2):.1f}" height="{h:.1f}" fill="#D55E00">'
            f"<title>{v:g}</title></rect>"
        )
    out.append("</g></svg>")
    return "".join(out)


def sparkline(values: Sequence[float | None], width: int = 160, height: int = 24) -> str:
    """A small line without axes (a gateway's sends per minute)."""
    peak = nice_max(max((v for v in values if v is not None), default=0.0))
    step = width / max(1, len(values) - 1)
    pts = " ".join(
        f"{i * step:.1f},{height - 2 - (height - 4) * v / peak:.1f}"
        for i, v in enumerate(values)
        if v is not None
    )
    return (
        f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'xmlns="http://www.w3.org/2000/svg"><polyline points="{pts}" fill="none" '
        f'stroke="#0072B2" stroke-width="1.4"/></svg>'
    )


def strip(values: Sequence[float | None], width: int = 160, height: int = 12) -> str:
    """Up (green), down (red) or not sampled (grey) per period."""
    cell = width / max(1, len(values))
    cells = []
    for i, v in enumerate(values):
        colour = "#dddddd" if v is None else ("#009E73" if v >= 0.5 else "#D55E00")
        cells.append(
            f'<rect x="{i * cell:.1f}" y="0" width="{cell + 0.3:.1f}" height="{height}" '
            f'fill="{colour}"/>'
        )
    return (
        f'<svg class="strip" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" xmlns="http://www.w3.org/2000/svg">{"".join(cells)}</svg>'
    )
