"""The what-if simulator (issue 19 item 2): what a moved numeric threshold would have produced over a period.

It reads the values every patient-view call recorded, fired or not (``calls.governance_values``, see
:mod:`cds_service.governance.values`), and recounts for a candidate threshold the calls that would cross it
(one card each), their distinct patients and the indicators, beside the cards the rule actually produced. It
moves one threshold and keeps the rest of the rule as recorded: it counts threshold crossings, not a full
re-evaluation (a card the rule would still hold back for another reason, e.g. paediatric limits, is counted).
Everything is counted in SQL, on PostgreSQL and SQLite alike: no call row leaves the database (issue 19, scale).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine, and_, case, func, literal, null, or_, select, true, union_all
from sqlalchemy.sql.base import ReadOnlyColumnCollection
from sqlalchemy.sql.elements import KeyedColumnElement

from cds_service.audit.schema import calls, cards
from cds_service.governance.period import Period
from cds_service.governance.queries import card_slice, reading
from cds_service.governance.values import FORMAT
from cds_service.rules.thresholds import (
    CAXP_KDOQI_TARGET,
    CAXP_SEED_THRESHOLD,
    HYPERCALCEMIA_MG_DL,
    PHOSPHATE_HIGH_MG_DL,
    PTH_MARKED_MULTIPLE,
)

NEW = "new"  # the indicator column of calls that would cross but produced no card of the rule

# The columns of the simulator's per-call table, one per recorded key (see _counts).
Values = ReadOnlyColumnCollection[str, KeyedColumnElement[Any]]


@dataclass(frozen=True)
class Parameter:
    """One numeric threshold the committee can move; ``crosses`` is the SQL condition on ``keys`` of a call."""

    name: str
    label: str
    rule_id: str
    current: float
    unit: str
    keys: tuple[str, ...]
    crosses: Callable[[Values, float], ColumnElement[bool]]


# The recorded values, read in SQL. FORMAT 1 fixes each key's JSON type (cds_service.governance.values: numbers
# or null, a string basis, booleans), so a typed extraction is exact: a missing key or a JSON null reads as NULL,
# and NULL never crosses (a comparison with NULL is not true).
_VALUES = calls.c.governance_values
_TEXT_KEYS = frozenset({"calcium_basis"})
_FLAG_KEYS = frozenset({"warfarin", "r07_mineral"})


def _extract(key: str) -> ColumnElement[Any]:
    value = _VALUES[key]
    typed: ColumnElement[Any] = (value.as_string() if key in _TEXT_KEYS else value.as_boolean()
                                 if key in _FLAG_KEYS else value.as_float())
    return typed.label(key)


def _above(key: str) -> Callable[[Values, float], ColumnElement[bool]]:
    def crosses(values: Values, threshold: float) -> ColumnElement[bool]:
        above: ColumnElement[bool] = values[key] > threshold
        return above
    return crosses


def _caxp_target(values: Values, threshold: float) -> ColumnElement[bool]:
    # R02 (KDOQI 2003 guideline 6.5): Ca x P >= target and not above the R01 seed threshold (R01 then fires).
    return and_(values["caxp"] >= threshold, values["caxp"] <= CAXP_SEED_THRESHOLD)


def _total_calcium(values: Values, threshold: float) -> ColumnElement[bool]:
    # Ionized calcium has its own scale (section 2.3): only total / corrected values meet a total threshold.
    basis = values["calcium_basis"]
    return and_(values["calcium"] > threshold, or_(basis.is_(None), basis != "ionized"))


def _cofactors(values: Values, threshold: float) -> ColumnElement[bool]:
    # R07: a mineral abnormality and (warfarin or >= threshold co-factors); None = R07 cannot apply.
    count = values["cofactors"]
    return and_(count.is_not(None), values["r07_mineral"].is_(true()),
                or_(values["warfarin"].is_(true()), count >= threshold))


PARAMETERS: dict[str, Parameter] = {p.name: p for p in (
    Parameter("caxp_seed", "Ca x P high (R01), strictly above", "caxp-high", CAXP_SEED_THRESHOLD, "mg2/dL2",
              ("caxp",), _above("caxp")),
    Parameter("caxp_target", "Ca x P above target (R02), at or above", "caxp-above-target", CAXP_KDOQI_TARGET,
              "mg2/dL2", ("caxp",), _caxp_target),
    Parameter("phosphate", "Phosphate high (R05), above", "hyperphosphatemia", PHOSPHATE_HIGH_MG_DL, "mg/dL",
              ("phosphate",), _above("phosphate")),
    Parameter("calcium", "Calcium high (R04), total or corrected, above", "hypercalcemia", HYPERCALCEMIA_MG_DL,
              "mg/dL", ("calcium", "calcium_basis"), _total_calcium),
    Parameter("pth_multiple", "PTH multiple of ULN (R06), above", "pth-high", PTH_MARKED_MULTIPLE, "x ULN",
              ("pth_multiple",), _above("pth_multiple")),
    Parameter("cofactors", "Calciphylaxis risk (R07) co-factors, at least", "calciphylaxis-risk", 2.0, "count",
              ("cofactors", "r07_mineral", "warfarin"), _cofactors),
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
    values_since: datetime | None   # the first call with values of the current format (this tenant, any period)
    calls_with_values: int          # in the period
    actual: Outcome                 # the rule's cards in those calls, as produced
    at_current: Outcome             # the simulator at today's threshold (shows how closely it models the rule)
    at_candidate: Outcome


def _counts(parameter: Parameter, period: Period, candidate: float, in_slice: ColumnElement[bool]) -> Any:
    """One statement, one pass over the period's calls with values: a row per part (``part``, ``indicator``).

    ``total``: calls with known values (``n``), crossings and their distinct patients at the current and the
    candidate threshold; ``crossing``: crossings per indicator of the rule's card in the call (NEW without one);
    ``actual total`` / ``actual``: the rule's cards in those calls (``n``, and in ``current_patients`` their distinct
    patients), overall and per indicator. UNION ALL stands in for GROUPING SETS, which SQLite lacks.
    ``in_slice`` keeps the cards of the period's id range (:func:`cds_service.governance.queries.card_slice`).
    """
    # Each key is read once per call: PostgreSQL's json type re-parses the text at every ->>, so the extraction
    # is a MATERIALIZED CTE (else inlined into every reference; SQLite >= 3.35 takes the same hint).
    recorded = (select(calls.c.id, calls.c.patient_id, _VALUES["format"].as_integer().label("format"),
                       *[_extract(key) for key in parameter.keys])
                .where(period.calls_where(), _VALUES.is_not(None)).cte("recorded").prefix_with("MATERIALIZED"))
    known = recorded.c.format == FORMAT
    per_call = select(recorded.c.id, recorded.c.patient_id, case((known, 1), else_=0).label("known"),
                      *[case((and_(known, parameter.crosses(recorded.c, threshold)), 1), else_=0).label(name)
                        for name, threshold in (("current", parameter.current), ("candidate", candidate))]
                      ).cte("per_call")
    c = per_call.c

    def patients(flag: Any) -> Any:
        return func.count(func.distinct(case((flag == 1, c.patient_id))))

    # The indicator of the rule's card in a crossing call (the first written, if ever more than one), else NEW.
    indicator = func.coalesce(select(cards.c.indicator)
                              .where(cards.c.call_id == c.id, cards.c.rule_id == parameter.rule_id)
                              .order_by(cards.c.id).limit(1).scalar_subquery(), NEW)
    # The rule's cards in those calls, read by both "actual" parts (a CTE named twice is computed once).
    fired = (select(cards.c.indicator, c.known, c.patient_id).select_from(cards.join(per_call, cards.c.call_id == c.id))
             .where(cards.c.rule_id == parameter.rule_id, in_slice).cte("fired"))
    zero = literal(0)
    return union_all(
        select(literal("total").label("part"), null().label("indicator"), func.sum(c.known).label("n"),
               func.sum(c.current).label("current"), func.sum(c.candidate).label("candidate"),
               patients(c.current).label("current_patients"), patients(c.candidate).label("candidate_patients")),
        select(literal("crossing"), indicator, zero, func.sum(c.current), func.sum(c.candidate), zero, zero)
        .where(or_(c.current == 1, c.candidate == 1)).group_by(indicator),
        select(literal("actual total"), null(), func.count(), zero, zero,
               func.count(func.distinct(case((fired.c.known == 1, fired.c.patient_id)))), zero),
        select(literal("actual"), fired.c.indicator, func.count(), zero, zero, zero, zero)
        .group_by(fired.c.indicator))


def simulate(engine: Engine, period: Period, parameter: Parameter, candidate: float) -> WhatIf:
    """Recount ``parameter``'s rule over ``period`` at ``candidate`` from the recorded values (all in SQL)."""
    # Since the first call whose values the simulator reads (the current FORMAT; earlier formats are not counted).
    since_where: ColumnElement[bool] = and_(_VALUES.is_not(None), _VALUES["format"].as_integer() == FORMAT)
    if period.tenant_key is not None:
        since_where = and_(since_where, calls.c.tenant_key == period.tenant_key)
    with reading(engine) as connection:
        since = connection.execute(select(func.min(calls.c.received_at)).where(since_where)).scalar_one()
        in_slice = card_slice(connection, period)[1]
        rows = connection.execute(_counts(parameter, period, candidate, in_slice)).all()
    parts: dict[str, list[Any]] = {}
    for row in rows:
        parts.setdefault(str(row.part), []).append(row)
    total, actual = parts["total"][0], parts["actual total"][0]

    def outcome(name: str) -> Outcome:
        return Outcome(cards=int(total._mapping[name] or 0), patients=int(total._mapping[f"{name}_patients"]),
                       indicators={str(row.indicator): int(row._mapping[name])
                                   for row in parts.get("crossing", []) if row._mapping[name]})

    return WhatIf(parameter, candidate, since, int(total.n or 0),
                  Outcome(int(actual.n), int(actual.current_patients),
                          {str(row.indicator): int(row.n) for row in parts.get("actual", [])}),
                  outcome("current"), outcome("candidate"))
