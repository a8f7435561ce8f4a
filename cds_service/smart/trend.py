"""The calcium / phosphate / Ca x P trend: data points with provenance, laid out as server-side SVG geometry.

Values come from the engine's own fact extraction (``fhir_mappings.extract``: eligible statuses, reviewed unit
table, comparators) and Ca x P pairs from its pairing rules (``fhir_mappings.pairing``: same specimen, else
<= 48 h apart and no dialysis in between; clinical-rules.md section 2.5), so the chart never shows a number
the rules would not use. Thresholds are the rule constants (70: seed "exceeds 70"; 55: KDOQI 2003 target).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cds_service.rules.states import dialysis_sessions
from cds_service.rules.thresholds import CAXP_KDOQI_TARGET, CAXP_SEED_THRESHOLD
from fhir_mappings.facts import LabResult, PatientFacts
from fhir_mappings.pairing import CaPPair, PairIndex

TOTAL_CALCIUM_KINDS = ("lab-calcium-total", "lab-calcium-blood")
PHOSPHATE_KINDS = ("lab-phosphate",)
CAXP_UNIT = "mg²/dL²"  # as the cards write it

# SVG layout in user units; the viewBox scales to the panel width (narrow EHR side panels ~360 px).
WIDTH = 360.0
LEFT, RIGHT = 40.0, 10.0
PANEL_HEIGHT = 120.0
PANEL_GAP = 34.0
TOP = 14.0


@dataclass(frozen=True)
class TrendPoint:
    """One plotted value and where it came from (shown in the point's SVG ``<title>``)."""

    series: str          # "calcium" | "phosphate" | "caxp"
    time: datetime
    value: float         # canonical unit (mg/dL; mg2/dL2 for Ca x P)
    label: str           # the tooltip text: value, unit as reported, conversion, resource id(s)
    x: float = 0.0
    y: float = 0.0


@dataclass(frozen=True)
class Tick:
    """An axis tick: position and text."""

    position: float
    text: str


@dataclass(frozen=True)
class Panel:
    """One plot area with its y axis, ticks, threshold lines and points."""

    title: str
    unit: str
    top: float
    bottom: float
    y_ticks: list[Tick]
    thresholds: list[tuple[float, float, str]]   # (value, y, label)
    points: list[TrendPoint]


@dataclass
class TrendChart:
    """Everything the template needs to draw the chart; empty when there is nothing to plot."""

    panels: list[Panel] = field(default_factory=list)
    x_ticks: list[Tick] = field(default_factory=list)
    left: float = LEFT
    right: float = WIDTH - RIGHT
    width: float = WIDTH
    height: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """No point in any series."""
        return not any(self.counts.values())


def _number(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _conversion(result: LabResult) -> str:
    if result.original_unit == result.unit and result.original_value == result.value:
        return "no conversion"
    factor = result.value / result.original_value if result.original_value else 0.0
    return f"converted from {_number(result.original_value)} {result.original_unit} (x {factor:.4g})"


def _lab_label(name: str, result: LabResult) -> str:
    return (f"{name} {result.comparator}{_number(result.value)} {result.unit} on {result.time:%Y-%m-%d %H:%M} UTC; "
            f"reported {result.comparator}{_number(result.original_value)} {result.original_unit}, "
            f"{_conversion(result)}; source {result.reference}")


def _pair_label(pair: CaPPair) -> str:
    bound = ">=" if pair.is_lower_bound else "<=" if pair.is_upper_bound else ""
    drawn = "same specimen" if pair.same_specimen else f"drawn {pair.gap_hours:.0f} h apart"
    return (f"Ca x P {bound}{_number(pair.product)} {CAXP_UNIT} on {pair.time:%Y-%m-%d %H:%M} UTC = calcium "
            f"{_number(pair.calcium.value)} mg/dL ({pair.calcium.reference}, {_conversion(pair.calcium)}) x "
            f"phosphate {_number(pair.phosphate.value)} mg/dL ({pair.phosphate.reference}, "
            f"{_conversion(pair.phosphate)}); {drawn}")


def trend_points(facts: PatientFacts) -> list[TrendPoint]:
    """All calcium, phosphate and Ca x P points of the record, oldest first (no layout yet)."""
    calcium = sorted((r for r in facts.labs if r.kind in TOTAL_CALCIUM_KINDS), key=lambda r: r.time)
    phosphate = sorted((r for r in facts.labs if r.kind in PHOSPHATE_KINDS), key=lambda r: r.time)
    # The engine's pairing rules and session definition (§8.0: intermittent sessions by their start time).
    index = PairIndex(phosphate, [s.start for s in dialysis_sessions(facts.procedures) if s.intermittent])
    points = [TrendPoint("calcium", r.time, r.value, _lab_label("Calcium", r)) for r in calcium]
    points += [TrendPoint("phosphate", r.time, r.value, _lab_label("Phosphate", r)) for r in phosphate]
    seen: set[tuple[str, str]] = set()
    for ca in calcium:
        # Each calcium result with its best comparable phosphate, by the engine's own pairing rules.
        pair = index.best_for(ca)
        if pair is None or (pair.calcium.reference, pair.phosphate.reference) in seen:
            continue
        seen.add((pair.calcium.reference, pair.phosphate.reference))
        points.append(TrendPoint("caxp", pair.time, pair.product, _pair_label(pair)))
    return sorted(points, key=lambda p: (p.time, p.series))


def _nice_step(span: float, ticks: int) -> float:
    raw = span / max(ticks, 1)
    for step in (1, 2, 2.5, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000):
        if step >= raw:
            return float(step)
    return float(round(raw))


def build_chart(points: list[TrendPoint]) -> TrendChart:
    """Lay out ``points`` in two panels sharing the time axis: Ca x P on top, calcium and phosphate below."""
    counts = {s: sum(1 for p in points if p.series == s) for s in ("calcium", "phosphate", "caxp")}
    chart = TrendChart(counts=counts)
    if not points:
        return chart
    start, end = min(p.time for p in points), max(p.time for p in points)
    if end - start < timedelta(days=2):
        start, end = start - timedelta(days=1), end + timedelta(days=1)
    pad = (end - start) * 0.05
    start, end = start - pad, end + pad
    span_s = (end - start).total_seconds()

    def x_of(moment: datetime) -> float:
        return LEFT + (chart.right - LEFT) * ((moment - start).total_seconds() / span_s)

    top = TOP
    caxp = [p for p in points if p.series == "caxp"]
    caxp_max = max([CAXP_SEED_THRESHOLD * 1.15, *(p.value * 1.1 for p in caxp)])
    chart.panels.append(_panel("Ca x P product", CAXP_UNIT, top, caxp_max, caxp, x_of,
                               [(CAXP_SEED_THRESHOLD, "70: exceeds = high risk"),
                                (CAXP_KDOQI_TARGET, "55: KDOQI target")]))
    top += PANEL_HEIGHT + PANEL_GAP
    labs = [p for p in points if p.series in ("calcium", "phosphate")]
    labs_max = max([12.0, *(p.value * 1.1 for p in labs)])
    chart.panels.append(_panel("Calcium and phosphate", "mg/dL", top, labs_max, labs, x_of, []))
    chart.height = top + PANEL_HEIGHT + 24.0
    first, step = start + pad, (end - start - 2 * pad) / 2
    chart.x_ticks = [Tick(round(x_of(first + step * i), 2), f"{first + step * i:%d %b %y}") for i in range(3)]
    return chart


def _panel(title: str, unit: str, top: float, y_max: float, points: list[TrendPoint],
           x_of: Callable[[datetime], float], thresholds: list[tuple[float, str]]) -> Panel:
    bottom = top + PANEL_HEIGHT
    step = _nice_step(y_max, 4)
    y_max = step * (int(y_max / step) + 1)

    def y_of(value: float) -> float:
        return bottom - (bottom - top) * (max(0.0, min(value, y_max)) / y_max)

    placed = [TrendPoint(p.series, p.time, p.value, p.label, round(x_of(p.time), 2), round(y_of(p.value), 2))
              for p in points]
    ticks = [Tick(round(y_of(step * i), 2), _number(step * i)) for i in range(int(y_max / step) + 1)]
    lines = [(value, round(y_of(value), 2), label) for value, label in thresholds]
    return Panel(title, unit, top, bottom, ticks, lines, placed)
