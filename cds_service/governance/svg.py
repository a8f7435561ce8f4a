"""Server-side SVG charts for the dashboard (no script, no external library: hospital networks are closed)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

WIDTH, HEIGHT, PAD = 360, 160, 28
SERIES_CLASSES = ("s-shown", "s-accepted", "s-overridden")


def line_chart(title: str, labels: Sequence[str], series: Sequence[tuple[str, Sequence[int]]]) -> str:
    """A small line chart of integer series over ``labels`` (weeks), scaled to its own maximum."""
    top = max([1, *[v for _, values in series for v in values]])
    steps = max(1, len(labels) - 1)
    inner_w, inner_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">',
             f'<title>{escape(title)}</title>',
             f'<line class="axis" x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}"/>',
             f'<text class="tick" x="{PAD - 4}" y="{PAD + 4}" text-anchor="end">{top}</text>',
             f'<text class="tick" x="{PAD - 4}" y="{HEIGHT - PAD}" text-anchor="end">0</text>']
    for index, label in enumerate(labels):
        x = PAD + inner_w * index / steps
        parts.append(f'<text class="tick" x="{x:.1f}" y="{HEIGHT - PAD + 14}" text-anchor="middle">'
                     f'{escape(label)}</text>')
    for (name, values), css in zip(series, SERIES_CLASSES, strict=False):
        points = " ".join(f"{PAD + inner_w * i / steps:.1f},{HEIGHT - PAD - inner_h * v / top:.1f}"
                          for i, v in enumerate(values))
        parts.append(f'<polyline class="{css}" points="{points}"><title>{escape(name)}</title></polyline>')
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(title: str, bars: Sequence[tuple[str, int]]) -> str:
    """Horizontal bars (label, count), longest first as given."""
    row_h = 22
    height = max(1, len(bars)) * row_h + 10
    top = max([1, *[count for _, count in bars]])
    label_w = 190
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{escape(title)}">',
             f'<title>{escape(title)}</title>']
    for index, (label, count) in enumerate(bars):
        y = 5 + index * row_h
        length = (WIDTH - label_w - 40) * count / top
        parts.append(f'<text class="tick" x="{label_w - 6}" y="{y + 14}" text-anchor="end">'
                     f'{escape(label[:32])}</text>'
                     f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{length:.1f}" height="{row_h - 8}"/>'
                     f'<text class="tick" x="{label_w + length + 4:.1f}" y="{y + 14}">{count}</text>')
    parts.append("</svg>")
    return "".join(parts)
