"""Line charts as SVG text: a pure function of the points, drawn on the server.

Why server-side SVG: the dashboard runs offline with no script at all (its CSP forbids scripts),
and an SVG string is testable as text. Every point is kept (one polyline vertex per step, so a
10,000-step chart is ~120 KB); a point with no value (None or not finite) breaks the line.
Only presentation attributes are used (no style attributes), so a strict CSP applies.

Up to DECIMATE_ABOVE points a series keeps one vertex per point. A longer series keeps, for each
run of consecutive points about one pixel column wide, its lowest and highest point (in step
order): the line looks the same, spikes included, and a 10,000-step chart formats ~1,300
vertices instead of 10,000.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from typing import Sequence

COLORS = ("#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bf3989")
MAX_MARKERS = 200  # a circle per point up to this many points (a tooltip each); a bare line beyond
DECIMATE_ABOVE = 2048  # points per series drawn one vertex each; beyond, min/max per pixel column


@dataclass(frozen=True)
class Series:
    label: str
    points: Sequence[tuple[float, float | None]]  # (x, y); y None = no value at this x


def nice_ticks(lo: float, hi: float, count: int = 5, *, integer: bool = False) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten) covering [lo, hi]; whole numbers if `integer`."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    if integer:
        step = max(step, 1)
    first = math.ceil(lo / step - 1e-9) * step
    ticks, t = [], first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    return ticks


def _label(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        return f"{v:.2g}"
    return f"{v:.4g}"


def _runs(points: Sequence[tuple[float, float | None]]) -> list[list[tuple[float, float]]]:
    """The series split at every missing value into runs of (x, y) with a finite y."""
    try:  # fast path, in C: a sum of numbers is finite only if every one of them is
        if math.isfinite(sum([p[1] for p in points])):
            return [list(points)] if points else []
    except TypeError:  # a None among them
        pass
    runs: list[list[tuple[float, float]]] = [[]]
    current = runs[0]
    for p in points:
        y = p[1]
        if y is not None and y.__class__ is not bool and y - y == 0:  # finite: inf - inf and nan - nan are nan
            current.append(p)
        elif current:
            current = []
            runs.append(current)
    return [r for r in runs if r]


def line_chart(series: Sequence[Series], *, title: str, x_label: str = "step", y_label: str = "",
               width: int = 720, height: int = 260, integer_x: bool = False) -> str:
    """An <svg> with one polyline per series (gaps where y is missing), axes, ticks and a legend.

    `integer_x`: x values are whole numbers (steps), so no tick falls between two of them."""
    left, right, top, bottom = 64, 16, 28, 40
    pw, ph = width - left - right, height - top - bottom
    runs = [_runs(s.points) for s in series]
    total = sum(len(s.points) for s in series)
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" data-points="{total}">'
            f'<title>{escape(title)}</title>'
            f'<text x="{left}" y="18" font-size="13" font-weight="bold" fill="#24292f">{escape(title)}</text>')
    finite = [r for rs in runs for r in rs]
    if not finite:
        return (head + f'<text x="{width // 2}" y="{height // 2}" text-anchor="middle" font-size="13" '
                       f'fill="#57606a">no steps recorded yet</text></svg>')
    xs = [p[0] for s in series for p in s.points]
    ys = [p[1] for r in finite for p in r]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        pad = abs(y0) * 0.1 or 1.0
        y0, y1 = y0 - pad, y1 + pad
    sx, sy = pw / (x1 - x0), ph / (y1 - y0)

    def px(x: float) -> float:
        return left + (x - x0) * sx

    def py(y: float) -> float:
        return top + ph - (y - y0) * sy

    out = [head, f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#ffffff" stroke="#d0d7de"/>']
    for t in nice_ticks(y0, y1):
        y = py(t)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#eaeef2"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" '
                   f'fill="#57606a">{_label(t)}</text>')
    for t in nice_ticks(x0, x1, 6, integer=integer_x):
        x = px(t)
        out.append(f'<line x1="{x:.1f}" y1="{top + ph}" x2="{x:.1f}" y2="{top + ph + 4}" stroke="#57606a"/>'
                   f'<text x="{x:.1f}" y="{top + ph + 16}" text-anchor="middle" font-size="11" '
                   f'fill="#57606a">{_label(t)}</text>')
    out.append(f'<text x="{left + pw / 2:.0f}" y="{height - 6}" text-anchor="middle" font-size="11" '
               f'fill="#57606a">{escape(x_label)}</text>')
    if y_label:
        out.append(f'<text x="14" y="{top + ph / 2:.0f}" text-anchor="middle" font-size="11" fill="#57606a" '
                   f'transform="rotate(-90 14 {top + ph / 2:.0f})">{escape(y_label)}</text>')
    for i, (s, series_runs) in enumerate(zip(series, runs)):
        color = COLORS[i % len(COLORS)]
        out.extend(_polylines(s.label, series_runs, len(s.points), color, (left, x0, sx), (top + ph, y0, sy)))
        if len(s.points) <= MAX_MARKERS:
            out.extend(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5" fill="{color}">'
                       f'<title>{escape(s.label)} step {_label(x)}: {_label(y)}</title></circle>'
                       for r in series_runs for x, y in r)
        ly = top + 14 + 14 * i
        out.append(f'<text x="{left + pw - 6}" y="{ly}" text-anchor="end" font-size="11" fill="{color}">'
                   f'{escape(s.label)}</text>')
    out.append("</svg>")
    return "".join(out)


def _polylines(label: str, runs: list[list[tuple[float, float]]], n_points: int, color: str,
               xmap: tuple[float, float, float], ymap: tuple[float, float, float]) -> list[str]:
    """One polyline per run; pixel = base + (value - origin) * scale (y grows downwards)."""
    (bx, x0, sx), (by, y0, sy) = xmap, ymap
    out = []
    for run in runs:
        pixels = [(bx + (x - x0) * sx, by - (y - y0) * sy) for x, y in run]
        if n_points > DECIMATE_ABOVE:
            pixels = per_column(pixels, int(sx * (run[-1][0] - run[0][0])) + 1)
        coords = " ".join([f"{a:.1f},{b:.1f}" for a, b in pixels])
        out.append(f'<polyline data-series="{escape(label)}" fill="none" stroke="{color}" stroke-width="1.5" '
                   f'points="{coords}"/>')
    return out


def per_column(run: list[tuple[float, float]], columns: int = 640) -> list[tuple[float, float]]:
    """About one pixel column's worth of consecutive vertices at a time: its lowest and highest, in order."""
    n = len(run)
    size = -(-n // max(columns, 1))
    ys = [p[1] for p in run]
    out: list[tuple[float, float]] = []
    for a in range(0, n, size):
        chunk = ys[a:a + size]
        i, j = a + chunk.index(min(chunk)), a + chunk.index(max(chunk))
        out.extend((run[i],) if i == j else (run[i], run[j]) if i < j else (run[j], run[i]))
    return out
