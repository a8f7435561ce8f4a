"""The what-if simulator (issue 19 item 2): what a moved numeric threshold would have produced over a period.

It reads the values every patient-view call recorded, fired or not (``calls.governance_values``, see
:mod:`cds_service.governance.values`), and recounts for a candidate threshold the calls that would cross it
(one card each), their distinct patients and the indicators, beside the cards the rule actually produced. It
moves one threshold and keeps the rest of the rule as recorded: it counts threshold crossings, not a full
re-evaluation (a card the rule would still hold back for another reason, e.g. paediatric limits, is counted).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine, and_, func, select

from cds_service.audit.schema import calls, cards
from cds_service.governance.period import Period
from cds_service.governance.values import FORMAT
from cds_service.rules.thresholds import (
    CAXP_KDOQI_TARGET,
    CAXP_SEED_THRESHOLD,
    HYPERCALCEMIA_MG_DL,
    PHOSPHATE_HIGH_MG_DL,
    PTH_MARKED_MULTIPLE,
)

NEW = "new"  # the indicator column of calls that would cross but produced no card of the rule


@dataclass(frozen=True)
class Parameter:
    """One numeric threshold the committee can move."""

    name: str
    label: str
    rule_id: str
    current: float
    unit: str
    crosses: Callable[[dict[str, Any], float], bool]


def _number(values: dict[str, Any], key: str) -> float | None:
    value = values.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _above(key: str) -> Callable[[dict[str, Any], float], bool]:
    def crosses(values: dict[str, Any], threshold: float) -> bool:
        value = _number(values, key)
        return value is not None and value > threshold
    return crosses


def _caxp_target(values: dict[str, Any], threshold: float) -> bool:
    # R02 (KDOQI 2003 guideline 6.5): Ca x P >= target and not above the R01 seed threshold (R01 then fires).
    value = _number(values, "caxp")
    return value is not None and threshold <= value <= CAXP_SEED_THRESHOLD


def _total_calcium(values: dict[str, Any], threshold: float) -> bool:
    # Ionized calcium has its own scale (section 2.3): only total / corrected values meet a total threshold.
    value = _number(values, "calcium")
    return value is not None and values.get("calcium_basis") != "ionized" and value > threshold


def _cofactors(values: dict[str, Any], threshold: float) -> bool:
    # R07: a mineral abnormality and (warfarin or >= threshold co-factors); None = R07 cannot apply.
    count = _number(values, "cofactors")
    return (count is not None and bool(values.get("r07_mineral"))
            and (bool(values.get("warfarin")) or count >= threshold))


PARAMETERS: dict[str, Parameter] = {p.name: p for p in (
    Parameter("caxp_seed", "Ca x P high (R01), strictly above", "caxp-high", CAXP_SEED_THRESHOLD, "mg2/dL2",
              _above("caxp")),
    Parameter("caxp_target", "Ca x P above target (R02), at or above", "caxp-above-target", CAXP_KDOQI_TARGET,
              "mg2/dL2", _caxp_target),
    Parameter("phosphate", "Phosphate high (R05), above", "hyperphosphatemia", PHOSPHATE_HIGH_MG_DL, "mg/dL",
              _above("phosphate")),
    Parameter("calcium", "Calcium high (R04), total or corrected, above", "hypercalcemia", HYPERCALCEMIA_MG_DL,
              "mg/dL", _total_calcium),
    Parameter("pth_multiple", "PTH multiple of ULN (R06), above", "pth-high", PTH_MARKED_MULTIPLE, "x ULN",
              _above("pth_multiple")),
    Parameter("cofactors", "Calciphylaxis risk (R07) co-factors, at least", "calciphylaxis-risk", 2.0, "count",
              _cofactors),
)}


@dataclass(frozen=True)
class Outcome:
    """Cards (one per call), distinct patients and cards per indicator."""

    cards: int
    patients: int
    indicators: dict[str, int]


@dataclass(frozen=True)
class WhatIf:
    """The simulator's answer for one parameter and candidate threshold."""

    parameter: Parameter
    candidate: float
    values_since: datetime | None   # the first call with recorded values (this tenant, any period)
    calls_with_values: int          # in the period
    actual: Outcome                 # the rule's cards in those calls, as produced
    at_current: Outcome             # the simulator at today's threshold (shows how closely it models the rule)
    at_candidate: Outcome


def simulate(engine: Engine, period: Period, parameter: Parameter, candidate: float) -> WhatIf:
    """Recount ``parameter``'s rule over ``period`` at ``candidate`` from the recorded values."""
    with engine.connect() as connection:
        since_where: ColumnElement[bool] = calls.c.governance_values.is_not(None)
        if period.tenant_key is not None:
            since_where = and_(since_where, calls.c.tenant_key == period.tenant_key)
        since = connection.execute(select(func.min(calls.c.received_at)).where(since_where)).scalar_one()
        rows = connection.execute(
            select(calls.c.id, calls.c.patient_id, calls.c.governance_values)
            .where(period.calls_where(), calls.c.governance_values.is_not(None))).all()
        fired = connection.execute(
            select(cards.c.call_id, cards.c.indicator)
            .select_from(cards.join(calls, cards.c.call_id == calls.c.id))
            .where(period.calls_where(), calls.c.governance_values.is_not(None),
                   cards.c.rule_id == parameter.rule_id)).all()
    recorded = [(int(row.id), row.patient_id, row.governance_values) for row in rows
                if isinstance(row.governance_values, dict) and row.governance_values.get("format") == FORMAT]
    indicator_of: dict[int, str] = {}
    for call_id, indicator in fired:
        indicator_of.setdefault(int(call_id), str(indicator))
    patient_of = {call_id: patient for call_id, patient, _ in recorded}
    actual = Outcome(
        cards=len(fired),
        patients=len({patient_of.get(int(call_id)) for call_id, _ in fired} - {None}),
        indicators=dict(Counter(str(indicator) for _, indicator in fired)),
    )

    def outcome(threshold: float) -> Outcome:
        crossing = [(call_id, patient) for call_id, patient, values in recorded
                    if parameter.crosses(values, threshold)]
        return Outcome(
            cards=len(crossing),
            patients=len({patient for _, patient in crossing if patient is not None}),
            indicators=dict(Counter(indicator_of.get(call_id, NEW) for call_id, _ in crossing)),
        )

    return WhatIf(parameter, candidate, since, len(recorded), actual, outcome(parameter.current),
                  outcome(candidate))
