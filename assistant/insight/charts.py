"""Charts as inline SVG, drawn on the server: no script, no library, nothing fetched.

Colours come from classes in static/css/insight.css (the content security policy allows no
inline styles); every bar has a <title>, so hovering or a screen reader tells its value, and
the pages show the same numbers as tables.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

# The drawing's own units; the page scales each chart to the width it has.
WIDTH, FONT = 600, 19
WIDE, WIDE_FONT = 900, 15


@dataclass(frozen=True)
class Series:
    """One kind of value of a stacked chart: its name, its CSS class, a value per column."""

    name: str
    css: str
    values: Sequence[float]


def _nice_step(value: float, steps: int) -> float:
    """A round step such that `steps` of them reach `value`; whole numbers below ten."""
    if value <= 0:
        return 1.0
    wanted = value / steps
    magnitude = 10 ** math.floor(math.log10(wanted))
    factors = (1, 2, 2.5, 3, 4, 5, 6, 8, 10) if magnitude >= 10 else (1, 2, 3, 4, 5, 6, 8, 10)
    for factor in factors:
        if wanted <= factor * magnitude:
            return max(factor * magnitude, 1.0)
    return 10.0 * magnitude


def _number(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"


def _svg(
    title: str, width: int, height: int, body: list[str], css: str, *, stretch: bool = False
) -> SafeString:
    label = escape(title)
    aspect = "none" if stretch else "xMinYMin meet"
    return mark_safe(  # every text inside went through escape()
        f'<svg class="chart {css}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{label}" preserveAspectRatio="{aspect}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{label}</title>{"".join(body)}</svg>'
    )


def column_chart(
    title: str, labels: Sequence[str], series: Sequence[Series], *, height: int = 260
) -> SafeString:
    """Stacked columns, one per label (a day), with a value axis and some labels below.

    The value axis is on the right, beside the most recent columns, which a narrow screen
    shows first; the labels below are spaced evenly from the last one (today) backwards.
    """
    width, font = WIDE, WIDE_FONT
    left, right, top, bottom = 8, 52, 12, 32
    plot_width, plot_height = width - left - right, height - top - bottom
    totals = [sum(s.values[i] for s in series) for i in range(len(labels))]
    step = _nice_step(max(totals, default=0), 4)
    axis_top = step * 4
    body: list[str] = []
    for tick in range(5):
        y = top + plot_height - plot_height * tick / 4
        body.append(
            f'<line class="chart-grid" x1="{left}" x2="{width - right}" y1="{y:.1f}" '
            f'y2="{y:.1f}"/><text class="chart-label" x="{width - right + 8}" y="{y + 5:.1f}" '
            f'text-anchor="start" font-size="{font}">{_number(step * tick)}</text>'
        )
    slot = plot_width / max(len(labels), 1)
    bar = max(slot * 0.72, 1.0)
    for index, label in enumerate(labels):
        x = left + index * slot + (slot - bar) / 2
        base = float(top + plot_height)
        for item in series:
            value = item.values[index]
            if value <= 0:
                continue
            size = plot_height * value / axis_top
            base -= size
            body.append(
                f'<rect class="chart-bar {escape(item.css)}" x="{x:.1f}" y="{base:.1f}" '
                f'width="{bar:.1f}" height="{size:.1f}"><title>{escape(label)}: '
                f"{_number(value)} {escape(item.name)}</title></rect>"
            )
    every = max(1, math.ceil(len(labels) / 7))
    for index in range(len(labels) - 1, -1, -every):
        x = left + index * slot + slot / 2
        body.append(
            f'<text class="chart-label" x="{x:.1f}" y="{height - 8}" text-anchor="middle" '
            f'font-size="{font}">{escape(labels[index])}</text>'
        )
    body.append(
        f'<line class="chart-axis" x1="{left}" x2="{width - right}" '
        f'y1="{top + plot_height}" y2="{top + plot_height}"/>'
    )
    return _svg(title, width, height, body, "chart-columns")


def bar_chart(
    title: str, rows: Sequence[tuple[str, float]], *, css: str = "chart-primary", unit: str = ""
) -> SafeString:
    """Horizontal bars, one per row, with the label above each bar and the value after it."""
    row_height, left, right = 2 * FONT + 14, 4, 120
    height = max(len(rows), 1) * row_height + 4
    top_value = max((value for _, value in rows), default=0) or 1
    body: list[str] = []
    for index, (label, value) in enumerate(rows):
        y = index * row_height + 4
        width = max((WIDTH - left - right) * value / top_value, 1.0)
        shown = f"{_number(value)}{unit}"
        body.append(
            f'<text class="chart-label" x="{left}" y="{y + FONT}" font-size="{FONT}">'
            f"{escape(label)}</text>"
            f'<rect class="chart-bar {escape(css)}" x="{left}" y="{y + FONT + 6}" '
            f'width="{width:.1f}" height="16"><title>{escape(label)}: {escape(shown)}'
            f"</title></rect>"
            f'<text class="chart-value" x="{left + width + 6:.1f}" y="{y + 2 * FONT + 6}" '
            f'font-size="{FONT}">{escape(shown)}</text>'
        )
    return _svg(title, WIDTH, height, body, "chart-bars")


def share_bar(title: str, parts: Sequence[tuple[str, float, str]]) -> SafeString:
    """One bar split into the shares of its parts, (name, value, CSS class), stretched to the
    width it is given; the page writes the shares out beside it."""
    total = sum(value for _, value, _ in parts)
    body: list[str] = []
    if total <= 0:
        body.append('<rect class="chart-empty" x="0" y="0" width="100" height="10"/>')
        return _svg(title, 100, 10, body, "chart-share", stretch=True)
    x = 0.0
    for name, value, css in parts:
        if value <= 0:
            continue
        width = 100 * value / total
        body.append(
            f'<rect class="chart-bar {escape(css)}" x="{x:.3f}" y="0" width="{width:.3f}" '
            f'height="10"><title>{escape(name)}: {_number(value)} ({width:.0f}%)</title></rect>'
        )
        x += width
    return _svg(title, 100, 10, body, "chart-share", stretch=True)
