"""Charts drawn on the server as inline SVG (no JavaScript, no build step).

Every label goes through :func:`markupsafe.escape`; the result is :class:`Markup` that a
template inserts as is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
WIDTH, HEIGHT = 560, 240
LEFT, RIGHT, TOP, BOTTOM = 56, 110, 24, 36


@dataclass(frozen=True)
class Series:
    """One line: a value per x label, with an optional band (e.g. a 95% CI)."""

    name: str
    values: Sequence[float | None]
    low: Sequence[float | None] | None = None
    high: Sequence[float | None] | None = None


def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def line_chart(
    title: str, labels: Sequence[str], series: Sequence[Series], *, zero_line: bool = False
) -> Markup:
    """Lines over categorical x labels (days), each with its shaded band."""
    points = [v for s in series for part in (s.values, s.low or (), s.high or ()) for v in part]
    ys = _finite(points) + ([0.0] if zero_line else [])
    if not labels or not ys:
        return Markup('<p class="empty">{}: no data yet</p>').format(title)
    lo, hi = min(ys), max(ys)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5 * (abs(lo) or 1), hi + 0.5 * (abs(hi) or 1)
    pad = 0.05 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    n = len(labels)

    def x(i: int) -> float:
        return LEFT + (plot_w * (i + 0.5) / n)

    def y(v: float) -> float:
        return TOP + plot_h * (1 - (v - lo) / (hi - lo))

    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<text x="{LEFT}" y="14" class="chart-title">{escape(title)}</text>',
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" class="frame"/>',
    ]
    for frac in (0.0, 0.5, 1.0):
        v = lo + frac * (hi - lo)
        parts.append(
            f'<text x="{LEFT - 4}" y="{y(v) + 4:.1f}" class="axis" text-anchor="end">'
            f"{escape(_fmt(v))}</text>"
        )
    if zero_line and lo < 0 < hi:
        parts.append(
            f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y(0):.1f}" y2="{y(0):.1f}" class="zero"/>'
        )
    step = max(1, n // 6)
    for i in range(0, n, step):
        parts.append(
            f'<text x="{x(i):.1f}" y="{HEIGHT - BOTTOM + 16}" class="axis" '
            f'text-anchor="middle">{escape(labels[i])}</text>'
        )
    for k, s in enumerate(series):
        colour = PALETTE[k % len(PALETTE)]
        if s.low is not None and s.high is not None:
            band = [
                (i, lo_v, hi_v)
                for i, (lo_v, hi_v) in enumerate(zip(s.low, s.high, strict=True))
                if lo_v is not None and hi_v is not None and math.isfinite(lo_v + hi_v)
            ]
            if band:
                upper = " ".join(f"{x(i):.1f},{y(h):.1f}" for i, _, h in band)
                lower = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v, _ in reversed(band))
                parts.append(
                    f'<polygon points="{upper} {lower}" fill="{colour}" fill-opacity="0.15"/>'
                )
        pts = [
            (i, float(v))
            for i, v in enumerate(s.values)
            if v is not None and math.isfinite(float(v))
        ]
        if pts:
            path = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in pts)
            parts.append(
                f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>'
            )
            for i, v in pts:
                parts.append(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3" fill="{colour}"/>')
        ly = TOP + 14 * k + 8
        parts.append(
            f'<rect x="{WIDTH - RIGHT + 8}" y="{ly - 8}" width="10" height="10" '
            f'fill="{colour}"/><text x="{WIDTH - RIGHT + 22}" y="{ly + 1}" class="legend">'
            f"{escape(s.name)}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def bar_chart(title: str, labels: Sequence[str], values: Sequence[float]) -> Markup:
    """Horizontal bars (a funnel, counts per item)."""
    if not labels:
        return Markup('<p class="empty">{}: no data yet</p>').format(title)
    row = 20
    height = TOP + row * len(labels) + 8
    label_w = 150
    plot_w = WIDTH - label_w - 70
    top = max(max(values), 1e-12)
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" '
        f'height="{height}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<text x="4" y="14" class="chart-title">{escape(title)}</text>',
    ]
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        yy = TOP + i * row
        w = plot_w * max(value, 0.0) / top
        parts.append(
            f'<text x="{label_w - 6}" y="{yy + 13}" class="axis" text-anchor="end">'
            f"{escape(label)}</text>"
            f'<rect x="{label_w}" y="{yy + 2}" width="{w:.1f}" height="{row - 6}" '
            f'fill="{PALETTE[0]}"/>'
            f'<text x="{label_w + w + 4:.1f}" y="{yy + 13}" class="axis">'
            f"{escape(_fmt(value))}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))
