"""Turn FHIR resources (R4, tolerant of DSTU2/sandbox shapes) into ``PatientFacts``: one typed path (issue 18).

Eligibility follows clinical-rules.md section 2.1. Resources arrive as typed Structs (``fhir_mappings.wire``,
decoded at the edge) or as JSON dicts, which are converted through the same typed reading first. A resource
that does not fit the typed shape is read in tolerant mode (the offending values removed, ``wire.read``) by the
same code below, and is recorded as such (``PatientFacts.tolerant_reads``); where it matters whether a field was
missing or of the wrong type, the misfits the tolerant reading returns say so. A resource that is malformed
where the rules need it is skipped and recorded as ``{resource_type, id, reason}``; nothing here raises.
Observations are filtered by code with a memoised lookup *before* any other work, so a 5,000-Observation
record costs little; strict fhir.resources validation is deliberately not used on this path, because it would
reject usable real-world data (sandbox/DSTU2 shapes) and is too slow for large records.

tests/engine/test_extract_equivalence.py holds the answers to those of the lenient dict reading before issue 18
on every golden case; test_extract_fast_paths.py holds the typed and the tolerant readings to the same answers.
"""

from __future__ import annotations

import calendar
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fhir_mappings import wire
from fhir_mappings.datetimes import parse_datetime
from fhir_mappings.facts import (
    ConditionFact,
    LabResult,
    MedicationFact,
    PatientFacts,
    ProcedureFact,
    ServiceRequestFact,
    SetAside,
    Skipped,
    TolerantRead,
    new_condition_fact,
    new_lab_result,
    new_procedure_fact,
)
from fhir_mappings.labs import KIND_ANALYTE, KIND_LABEL  # kind -> units.toml analyte / set-aside name (labs.toml)
from fhir_mappings.units import UnitRule, canonical_unit, convert, unit_rule
from fhir_mappings.valuesets import (
    CONDITION_VALUESETS,
    LAB_VALUESETS,
    MEDICATION_VALUESETS,
    PROCEDURE_VALUESETS,
    CodeIndex,
)

# §8 C6 plausibility, per value set, in the canonical unit after normalisation: (low, high, as a clinician reads
# it). Ionized calcium is stored in mg/dL like every calcium (units.toml), so its mmol/L limits are converted here.
PLAUSIBLE: dict[str, tuple[float, float, str]] = {
    "lab-calcium-total": (2.0, 25.0, "2–25 mg/dL"),
    "lab-calcium-blood": (2.0, 25.0, "2–25 mg/dL"),
    "lab-calcium-corrected": (2.0, 25.0, "2–25 mg/dL"),
    "lab-calcium-ionized": (convert("calcium", 0.3, "mmol/L"), convert("calcium", 5.0, "mmol/L"), "0.3–5 mmol/L"),
    "lab-phosphate": (0.1, 30.0, "0.1–30 mg/dL"),
    "lab-albumin": (0.5, 8.0, "0.5–8 g/dL"),
    "lab-pth": (0.0, 10_000.0, "0–10,000 pg/mL"),
    "lab-potassium": (1.0, 12.0, "1–12 mmol/L"),
    "lab-magnesium": (0.2, 20.0, "0.2–20 mg/dL"),
    "lab-vitamin-d-25oh": (0.0, 1_000.0, "0–1,000 ng/mL"),
}
# Relative slack on the plausibility limits: a limit given in another unit (ionized mmol/L) must not flip a value
# that sits exactly on it through float rounding (25.0 is kept, 25.1 is not).
_PLAUSIBLE_SLACK = 1e-9


# §8 C6: a result dated more than 24 h after NOW or before 1900 is a data error. The same limits make the date of
# a Condition, Procedure or medication unusable (undated), which also keeps date arithmetic from overflowing.
EARLIEST_DATE = datetime(1900, 1, 1, tzinfo=UTC)
FUTURE_TOLERANCE = timedelta(hours=24)
# §8.0: a procedure with a start and no performedPeriod.end lasted 4 h (D).
DEFAULT_PROCEDURE_HOURS = timedelta(hours=4)

# §8 C11: UCUM (and common text) units of a referenceRange.age band -> the patient-age unit they count in.
_AGE_UNITS = {
    "a": "years", "a_j": "years", "a_t": "years", "y": "years", "yr": "years", "yrs": "years", "year": "years",
    "years": "years", "mo": "months", "mo_j": "months", "mo_g": "months", "month": "months", "months": "months",
    "wk": "weeks", "week": "weeks", "weeks": "weeks", "d": "days", "day": "days", "days": "days",
}
_LAB_SET = frozenset(LAB_VALUESETS)
AL_MG_BINDER = "med-al-mg-binder"
_SPECIFIC_BINDERS = frozenset({"med-aluminium-binder", "med-magnesium-binder"})
_COND_SET = frozenset(CONDITION_VALUESETS)
_PROC_SET = frozenset(PROCEDURE_VALUESETS)
_MED_SET = frozenset(MEDICATION_VALUESETS)
_MED_TEXT_SETS = tuple(_MED_SET)  # the text fallback tries them in the set's own order, as it always has

# Section 2.1: eligible Observation statuses; `preliminary` only when configured.
OBSERVATION_STATUSES = frozenset({"final", "amended", "corrected"})
CONDITION_ACTIVE = frozenset({"active", "recurrence", "relapse"})
CONDITION_INACTIVE = frozenset({"inactive", "remission", "resolved"})
VERIFICATION_EXCLUDED = frozenset({"refuted", "entered-in-error"})
VERIFICATION_POSSIBLE = frozenset({"unconfirmed", "provisional", "differential"})
PROCEDURE_STATUSES = frozenset({"completed", "in-progress"})
SERVICE_REQUEST_STATUSES = frozenset({"active", "on-hold", "draft"})  # §8.0 C2/C7 "active ServiceRequest for CRRT"
# §8.0 C16: medication history is every status except these (a draft is the order being written, evaluated only
# through draftOrders; a MedicationStatement "not-taken" says the patient does not take it).
HISTORY_EXCLUDED = frozenset({"entered-in-error", "draft", "not-taken"})
MEDREQ_STATUSES = frozenset({"active", "on-hold"})
MEDREQ_INTENTS = frozenset({"order", "original-order", "plan", "instance-order"})
_COMPARATORS = (">", ">=", "<", "<=")
_UNPARSED = object()
# (low, high, age-banded) of a result's reference range, canonical unit (§8 C11); and none.
_RangeAnswer = tuple[float | None, float | None, bool]
_NO_RANGE: _RangeAnswer = (None, None, False)
# (analyte, unit rule or None, canonical unit, plausible limits) of a result's kinds and unit (see _unit_reading).
_UnitReading = tuple[str, UnitRule | None, str, tuple[float, float]]

# Section 2.7 CALCIPHYLAXIS_DX: text match on Condition.code.text / coding.display.
CALCIPHYLAXIS_TEXT = re.compile(r"calciphylaxis|calcific uremic arteriolopathy", re.IGNORECASE)

def parse_date(value: object) -> date | None:
    """Parse a FHIR date (partial allowed) to a date."""
    dt = parse_datetime(value)
    return dt.date() if dt else None


def codings_of(concept: wire.Concept | None) -> list[tuple[str, str, str]]:
    """(system, code, display) of a concept: its codings, then the fields of a bare Coding sent as the concept.

    A list of concepts is read item by item; a coding without a code is no coding. Two shapes the dict reading
    before issue 18 also took are no longer read (none is in the golden cases or seen from real clients): a bare
    Coding whose ``system`` is null or not a string, and a list of concepts nested in another list.
    """
    if concept is None:
        return []
    if isinstance(concept, list):
        return [c for item in concept if item is not None for c in codings_of(item)]
    out: list[tuple[str, str, str]] = []
    raw = concept.coding
    if raw is not None:
        for c in raw if isinstance(raw, list) else (raw,):
            if c is not None and c.code is not None:
                out.append((c.system or "", c.code, c.display or ""))
    if concept.code is not None and concept.system is not None:  # a bare Coding sent as the concept
        out.append((concept.system, concept.code, concept.display or ""))
    return out


def concept_text(concept: wire.Concept | None, codings: list[tuple[str, str, str]] | None = None) -> str:
    """Human text of a concept: ``text``, else the first coding display.

    ``codings`` is ``codings_of(concept)`` when the caller has it already (saves walking the codings again).
    """
    if type(concept) is wire.CodeableConcept:
        text = concept.text
        if text is not None and text.strip():
            return text.strip()
    for _s, _c, display in codings if codings is not None else codings_of(concept):
        if display:
            return display
    return ""


def _status_code(value: wire.Status | None) -> str:
    """A status given as a string (DSTU2) or CodeableConcept (R4) -> lower-case code ('' if none)."""
    if value is None:
        return ""
    if type(value) is str:
        return value.strip().lower()
    for _s, code, _d in codings_of(value):  # type: ignore[arg-type]
        return code.strip().lower()
    return ""


def _rid(resource: wire.Resource) -> str:
    rid = resource.id
    return rid if rid is not None else ""


def _overflow(misfits: wire.Misfits, path: str) -> None:
    """Raise as float() did before issue 18 when the number at ``path`` was too large for a float (10**400):
    the resource is then skipped as "malformed OverflowError", the reason the audit trail has always shown."""
    if misfits.get(path) == wire.OUT_OF_RANGE:
        raise OverflowError(f"number too large for a float at {path}")


def _unhashable(misfits: wire.Misfits, path: str) -> None:
    """Raise as a set lookup did before issue 18 when a status or intent was an object or array: the resource
    is skipped as "malformed TypeError" (the audit reason kept word for word, golden files)."""
    if misfits.get(path) in ("object", "array"):
        raise TypeError(f"unhashable value at {path}")


def _number_text(value: float) -> str:
    """A reported number as a clinician reads it: ``30`` not ``30.0``, otherwise Python's shortest form."""
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def _interpretation(value: list[wire.CodeableConcept | None] | wire.CodeableConcept | None) -> str:
    """The first code of ``Observation.interpretation`` (R4: a list of CodeableConcepts; DSTU2: one), or ""."""
    first = (value[0] if value else None) if type(value) is list else value
    for _s, code, _d in codings_of(first):
        return code.strip()
    return ""


def _ages(birth: date | None, today: date, years: float | None) -> dict[str, float]:
    """The patient's age at ``today`` in each age-band unit (§8 C11), fractional; {} when the birth date is unknown.

    Months are calendar months completed, plus the fraction of the current month; weeks and days count days.
    """
    if birth is None or years is None or birth > today:
        return {}
    days = (today - birth).days
    months = (today.year - birth.year) * 12 + today.month - birth.month
    if today.day < birth.day:
        months -= 1
    # days since the last monthly anniversary (a 31st falls back to the month's last day), as a fraction of 31
    month_index = birth.year * 12 + birth.month - 1 + months
    year, month = divmod(month_index, 12)
    anniversary_day = min(birth.day, _month_length(year, month + 1))
    since = (today - date(year, month + 1, anniversary_day)).days
    return {"years": years, "months": months + since / 31.0, "weeks": days / 7.0, "days": float(days)}


def _month_length(year: int, month: int) -> int:
    return calendar.monthrange(year, month)[1]


def plausible_limits(kinds: tuple[str, ...]) -> tuple[float, float]:
    """The §8 C6 limits every kind of ``kinds`` allows, with float slack; (-inf, inf) when none apply."""
    low, high = -math.inf, math.inf
    for kind in kinds:
        found = PLAUSIBLE.get(kind)
        if found is not None:
            low = max(low, found[0] - abs(found[0]) * _PLAUSIBLE_SLACK)
            high = min(high, found[1] + abs(found[1]) * _PLAUSIBLE_SLACK)
    return low, high


class _Extractor:
    def __init__(
        self, index: CodeIndex, now: datetime, include_preliminary: bool, age: float | None,
        birth: date | None = None,
    ):
        self.index = index
        self.now = now
        self.age = age
        self.ages = _ages(birth, now.date(), age)  # §8 C11: the patient's age in each age-band unit
        try:
            self.latest = now + FUTURE_TOLERANCE  # §8 C6
        except OverflowError:  # a NOW within a day of year 9999
            self.latest = datetime.max.replace(tzinfo=UTC)
        self.set_aside: list[SetAside] = []
        self.medication_history: list[MedicationFact] = []
        self.service_requests: list[ServiceRequestFact] = []
        self.statuses = OBSERVATION_STATUSES | ({"preliminary"} if include_preliminary else set())
        self.skipped: list[Skipped] = []
        self.labs: list[LabResult] = []
        self.conditions: list[ConditionFact] = []
        self.possible: list[ConditionFact] = []
        self.procedures: list[ProcedureFact] = []
        self.medications: list[MedicationFact] = []
        self.report_members: dict[str, set[str]] = {}
        self.medication_resources: dict[str, wire.Medication] = {}
        self.tolerant: list[TolerantRead] = []  # the resources read in tolerant mode (issue 18)
        # Per-record memos (issue #7): a panel's results share one timestamp (150 labs of the typical record carry
        # 28 distinct ones) and 100 dialysis sessions one code. Per call, not per process, so nothing one patient
        # sent is kept, and the memo is bounded by the record itself.
        self._times: dict[str, datetime | None] = {}
        self._last_procedure_concept: object = _UNPARSED  # equal to no concept
        self._last_procedure_answer: tuple[frozenset[str], str, str] = (frozenset(), "", "")
        self._lab_kinds: dict[tuple[str, str], tuple[str, ...]] = {}
        # (kinds, unit code, unit text) -> (analyte, unit rule or None, canonical unit, plausible limits): the 150
        # labs of the typical record have 11 such keys.
        self._unit_readings: dict[tuple[tuple[str, ...], str | None, str | None], _UnitReading] = {}
        # (analyte, code, unit code, unit text) -> the last referenceRange list read and its answer: the labs of
        # one code repeat one range (132 ranges of the typical record, 9 walks; see _reference_range).
        self._last_ranges: dict[tuple[str, str, str | None, str | None], tuple[list[Any], _RangeAnswer]] = {}
        self._condition_text_sets = tuple([vs_id for vs_id in index.text_patterns if vs_id in _COND_SET])
        self._procedure_text_sets = tuple([vs_id for vs_id in index.text_patterns if vs_id in _PROC_SET])

    def skip(self, resource: wire.Resource, reason: str) -> None:
        self.skipped.append(Skipped(wire.resource_type(resource), _rid(resource), reason))

    def usable(self, when: datetime | None) -> datetime | None:
        """``when`` if it lies between 1900 and NOW + 24 h, else None: an unusable date is no date (§8 C6)."""
        if when is None or when < EARLIEST_DATE or when > self.latest:
            return None
        return when

    def result_problem(
        self, kinds: tuple[str, ...], analyte: str, normalized: float, when: datetime, limits: tuple[float, float],
    ) -> tuple[str, str] | None:
        """Why a result must be set aside (clinician words, audit words without the value), or None (§8 C6).

        ``analyte`` is that of ``kinds[0]``; ``limits`` are ``plausible_limits(kinds)`` (memoised by the caller).
        """
        if when > self.latest:
            return "dated in the future", "dated in the future"
        if when < EARLIEST_DATE:
            return "dated before 1900", "dated before 1900"
        if not math.isfinite(normalized):
            return "unreadable value (not a finite number)", f"value for {analyte} is not a finite number"
        low, high = limits
        if not low <= normalized <= high:
            shown = next((PLAUSIBLE[k][2] for k in kinds if k in PLAUSIBLE), "")
            return f"implausible value (plausible {shown})", f"implausible value for {analyte}"
        return None

    def set_aside_result(
        self, obs: wire.Observation, kinds: tuple[str, ...], value: float, comparator: str, unit: str,
        when: datetime, problem: tuple[str, str],
    ) -> None:
        """Record a result that is never used: a SetAside for the card and a value-free Skipped for the audit."""
        value_text = f"{comparator}{_number_text(value)} {unit}".strip() if math.isfinite(value) else ""
        self.set_aside.append(SetAside("Observation", _rid(obs), KIND_LABEL.get(kinds[0], kinds[0]), value_text,
                                       when, problem[0]))
        self.skip(obs, problem[1])

    def time(self, value: str | None) -> datetime | None:
        """``parse_datetime``, memoised per record."""
        if value is None:
            return None
        parsed = self._times.get(value, _UNPARSED)  # not try/except: a miss raises nothing
        if parsed is _UNPARSED:
            parsed = self._times[value] = parse_datetime(value)
        return parsed  # type: ignore[return-value]

    def period_time(self, period: wire.Period | None) -> datetime | None:
        """A Period's time: its end, else its start (through the memo)."""
        if period is not None:
            return self.time(period.end) or self.time(period.start)
        return None

    # -- Observations ---------------------------------------------------------------------------------
    def observation(self, obs: wire.Observation, misfits: wire.Misfits) -> None:
        """Classify by code (every coding, the kinds' union, the first classifying code), then read the lab.

        A code is looked up once per record (issue #7: 150 labs share a handful of codes); an Observation of no
        kind any rule uses costs only that lookup.
        """
        kinds: tuple[str, ...] = ()
        code = ""
        for system, c, _d in codings_of(obs.code):
            found = self._lab_kinds.get((system, c))
            if found is None:
                found = self._lab_kinds[system, c] = self.index.members_within(system, c, _LAB_SET)
            if found:
                if not kinds:
                    kinds, code = found, c
                elif found != kinds:
                    kinds = tuple(sorted({*kinds, *found}))
        if kinds:
            self._lab(obs, misfits, code, kinds)

    def _lab(self, obs: wire.Observation, misfits: wire.Misfits, code: str, kinds: tuple[str, ...]) -> None:
        """An Observation of the lab value sets ``kinds`` (sorted): eligibility, value, time, unit, range.

        Malformed fields the rules need are skipped and recorded (section 2.1); ``misfits`` (tolerant mode,
        ``fhir_mappings.wire``) tells a wrong-typed field from a missing one.
        """
        status = obs.status
        if status is None or status not in self.statuses:
            return  # ineligible status (entered-in-error, preliminary by default, ...): excluded
        if obs.dataAbsentReason is not None:
            return
        quantity = obs.valueQuantity
        if quantity is None:
            if misfits and "$.valueQuantity" in misfits:
                self.skip(obs, "valueQuantity is not an object")
            return  # no numeric value (valueString etc.): not usable, excluded (section 2.1)
        value = quantity.value
        if value is None:
            if misfits:
                _overflow(misfits, "$.valueQuantity.value")
            self.skip(obs, "valueQuantity.value is not a number")
            return
        when = (
            self.time(obs.effectiveDateTime)
            or self.period_time(obs.effectivePeriod)
            or self.time(obs.effectiveInstant)
        )
        uncertain = False
        if when is None:
            when = self.time(obs.issued)
            uncertain = True
        if when is None:
            self.skip(obs, "no usable effective time")
            return
        unit_code = quantity.code
        unit_text = quantity.unit
        reading = self._unit_readings.get((kinds, unit_code, unit_text))
        if reading is None:
            reading = self._unit_reading(kinds, unit_code, unit_text)
        analyte, rule, unit, limits = reading
        if rule is None:
            self.skip(obs, f"unit {unit_code or unit_text or '(none)'!r} not accepted for {analyte}")
            return
        comparator = str(quantity.comparator) if quantity.comparator in _COMPARATORS else ""
        normalized = rule.apply(value)
        original_unit = unit_code or unit_text or ""
        problem = self.result_problem(kinds, analyte, normalized, when, limits)
        if problem is not None:  # §8 C6: a data error is named, never used
            self.set_aside_result(obs, kinds, value, comparator, original_unit, when, problem)
            return
        ranges = obs.referenceRange
        low, high, banded = (self._reference_range(ranges, analyte, code, unit_code, unit_text, misfits) if ranges
                             else _NO_RANGE)
        specimen = obs.specimen
        spec_ref = specimen.reference if specimen is not None else None
        if spec_ref is None:
            spec_ref = ""
        interpretation = obs.interpretation
        interpretation_code = "" if interpretation is None else _interpretation(interpretation)
        rid = _rid(obs)
        # One LabResult per kind; value and unit are those of the first kind's analyte (as always).
        for kind in kinds:
            self.labs.append(new_lab_result(
                KIND_ANALYTE[kind], kind, normalized, unit, value, original_unit, when, "Observation", rid, code,
                comparator, uncertain, spec_ref, low, high, status, banded, interpretation_code,
            ))

    def _unit_reading(self, kinds: tuple[str, ...], unit_code: str | None, unit_text: str | None) -> _UnitReading:
        """(analyte, unit rule or None, canonical unit, plausible limits) of a result of ``kinds`` in this unit,
        memoised per record (issue #7: a record repeats a handful of these for every result)."""
        analyte = KIND_ANALYTE[kinds[0]]
        rule = unit_rule(analyte, unit_code, unit_text)
        # canonical_unit cannot fail once a rule was found: unit_rule finds none for an analyte without a table.
        reading = (analyte, rule, "" if rule is None else canonical_unit(analyte), plausible_limits(kinds))
        self._unit_readings[kinds, unit_code, unit_text] = reading
        return reading

    def _reference_range(
        self, ranges: list[wire.ReferenceRange | None], analyte: str, code: str, unit_code: str | None,
        unit_text: str | None, misfits: wire.Misfits,
    ) -> _RangeAnswer:
        """``_choose_reference_range``, reusing the answer of the previous result of this code and unit when its
        ranges are equal (a C-level comparison of the Structs): the labs of one code repeat one range (issue #7).

        The answer depends only on the ranges, the analyte and unit and the patient's age, so equal ranges give
        equal answers, with one exception kept out of the memo: a zero bound, as -0.0 equals 0.0. A tolerant
        reading (misfits) always takes the walk, which must see the overflowed bounds.
        """
        if misfits:
            return self._choose_reference_range(ranges, analyte, unit_code, unit_text, misfits)
        key = (analyte, code, unit_code, unit_text)
        last = self._last_ranges.get(key)
        if last is not None and last[0] == ranges:
            return last[1]
        answer = self._choose_reference_range(ranges, analyte, unit_code, unit_text, misfits)
        if answer[0] != 0.0 and answer[1] != 0.0:  # None != 0.0 too
            self._last_ranges[key] = (ranges, answer)
        return answer

    def _choose_reference_range(
        self, ranges: list[wire.ReferenceRange | None], analyte: str, unit_code: str | None,
        unit_text: str | None, misfits: wire.Misfits,
    ) -> _RangeAnswer:
        """(low, high, age-banded) of the range to use: the first whose ``age`` band covers the patient, else the
        first plain one (no usable age band, no ``appliesTo``). A band that does not cover the patient, or that
        cannot be judged (unknown age or unit), is never used (§8 C11)."""
        chosen: wire.ReferenceRange | None = None
        chosen_at = 0
        banded = False
        for at, rng in enumerate(ranges):
            if rng is None:
                continue
            covers = self._age_band_covers(rng.age, misfits, at)
            if covers is True:
                chosen, chosen_at, banded = rng, at, True
                break
            if covers is None and chosen is None and not rng.appliesTo:
                chosen, chosen_at = rng, at
        if chosen is None:
            return _NO_RANGE
        if misfits:  # a bound too large for a float: malformed, as before issue 18
            _overflow(misfits, f"$.referenceRange[{chosen_at}].low.value")
            _overflow(misfits, f"$.referenceRange[{chosen_at}].high.value")
        return (
            self._range_bound(chosen.low, analyte, unit_code, unit_text),
            self._range_bound(chosen.high, analyte, unit_code, unit_text),
            banded,
        )

    def _age_band_covers(self, band: wire.Range | None, misfits: wire.Misfits, at: int) -> bool | None:
        """None: no age band (no numeric bound); True/False: whether the band covers the patient's age.

        Bounds are Quantities in ``a``/``mo``/``wk``/``d`` (no unit: years, as labs commonly send); the high bound
        is inclusive in completed units (0–17 a covers 17 years 11 months). Unknown age or unit: False (§8 C11).
        """
        if band is None:
            return None
        bounds: list[tuple[float, str | None]] = []
        for key, q in (("low", band.low), ("high", band.high)):
            value = q.value if q is not None else None
            if value is None or not math.isfinite(value):
                if misfits:
                    _overflow(misfits, f"$.referenceRange[{at}].age.{key}.value")
                bounds.append((math.nan, None))
                continue
            unit = q.code if q.code is not None else q.unit  # type: ignore[union-attr]
            bounds.append((value, _AGE_UNITS.get(unit.strip().lower()) if unit is not None and unit.strip()
                           else "years"))
        if all(math.isnan(v) for v, _u in bounds):
            return None
        for (value, unit), is_high in zip(bounds, (False, True), strict=True):
            if math.isnan(value):
                continue
            age = self.ages.get(unit) if unit else None
            if age is None:
                return False
            if (age >= value + 1) if is_high else (age < value):
                return False
        return True

    @staticmethod
    def _range_bound(
        q: wire.Quantity | None, analyte: str, unit_code: str | None, unit_text: str | None
    ) -> float | None:
        if q is None or q.value is None:
            return None
        code, text = q.code, q.unit
        if code is None and text is None:  # a bare range is in the result's own unit
            code, text = unit_code, unit_text
        rule = unit_rule(analyte, code, text)
        if rule is None:
            return None
        bound = rule.apply(q.value)
        return bound if math.isfinite(bound) else None  # an overflowing bound is no bound

    # -- Conditions ---------------------------------------------------------------------------------------
    def condition(self, cond: wire.Condition, misfits: wire.Misfits) -> None:
        concept = cond.code
        if concept is None and misfits and "$.code" in misfits:
            self.skip(cond, "code is not a CodeableConcept")
            return
        codings = codings_of(concept)
        groups = self.index.codings_in((s, c) for s, c, _d in codings) & _COND_SET
        display = concept_text(concept, codings)
        text = " ".join([display] + [d for _s, _c, d in codings])
        if CALCIPHYLAXIS_TEXT.search(text):
            groups.add("cond-calciphylaxis")
        # condition value sets with a text fallback, added in their order (one search when none matches)
        groups.update(self.index.text_sets_matching(self._condition_text_sets, text))
        if not groups:
            return
        verification = _status_code(cond.verificationStatus)
        if verification in VERIFICATION_EXCLUDED:
            return
        clinical = _status_code(cond.clinicalStatus)
        if clinical in CONDITION_INACTIVE or (clinical and clinical not in CONDITION_ACTIVE):
            return
        if self._abated(cond):
            return
        established = bool(clinical) and verification not in VERIFICATION_POSSIBLE
        # §8.0: the date is onset[x] when it is a dateTime, else recordedDate (DSTU2: dateRecorded); anything else,
        # or a date outside 1900 .. NOW + 24 h, is undated.
        onset = self.usable(self.time(cond.onsetDateTime))
        recorded = self.usable(self.time(cond.recordedDate) or self.time(cond.dateRecorded))
        first = codings[0] if codings else ("", "", "")
        fact = new_condition_fact(
            frozenset(groups), first[1], first[0], display or first[2] or self.index.display_of(codings),
            established, onset or recorded, _rid(cond), recorded,
        )
        (self.conditions if established else self.possible).append(fact)

    def _abated(self, cond: wire.Condition) -> bool:
        if cond.abatementBoolean is True:
            return True
        when = self.time(cond.abatementDateTime) or self.period_time(cond.abatementPeriod)
        if when is not None:
            return when <= self.now
        return (cond.abatementString is not None or cond.abatementAge is not None
                or cond.abatementRange is not None)

    # -- Procedures ---------------------------------------------------------------------------------------
    def procedure(self, proc: wire.Procedure, misfits: wire.Misfits) -> None:
        concept = proc.code
        # What a concept means (value sets, first code, display) depends on its content only. A record repeats
        # one dialysis concept for every session, so the previous answer is reused while the concept is equal
        # (a C-level comparison of the Structs); any other concept takes the general walk (issue #7).
        if concept == self._last_procedure_concept:
            groups, first_code, display = self._last_procedure_answer
        else:
            groups, first_code, display = self.procedure_concept(concept)
            self._last_procedure_concept = concept
            self._last_procedure_answer = (groups, first_code, display)
        if not groups:
            return
        status = proc.status
        if status not in PROCEDURE_STATUSES:
            if status is None and misfits:
                _unhashable(misfits, "$.status")
            return
        # §8.0 procedure dates: start = performedDateTime, else performedPeriod.start; end = performedPeriod.end,
        # else start + 4 h (D); time = end. Session times differ, so they are parsed directly rather than through
        # the per-record memo. A date outside 1900 .. NOW + 24 h is unusable (undated), never fatal.
        # An absent field skips the call (parse_datetime(None) is None): most sessions have no performedDateTime.
        latest = self.latest
        text = proc.performedDateTime
        start = None if text is None else parse_datetime(text)
        if start is not None and not EARLIEST_DATE <= start <= latest:
            start = None
        end = None
        period = proc.performedPeriod
        if period is not None:
            text = period.start
            if start is None and text is not None:
                start = parse_datetime(text)
                if start is not None and not EARLIEST_DATE <= start <= latest:
                    start = None
            text = period.end
            end = None if text is None else parse_datetime(text)
            if end is not None and not EARLIEST_DATE <= end <= latest:
                end = None
        if end is None and start is not None:
            end = start + DEFAULT_PROCEDURE_HOURS
        self.procedures.append(new_procedure_fact(
            groups, first_code, display, end, _rid(proc), start, end, status))

    def procedure_concept(self, concept: wire.Concept | None) -> tuple[frozenset[str], str, str]:
        """(procedure value sets, first code, display) of a Procedure/ServiceRequest code: by code, else by the
        value set's text pattern (proc-parathyroidectomy has no verified SNOMED code, §8 C2)."""
        codings = codings_of(concept)
        groups = self.index.codings_in((s, c) for s, c, _d in codings) & _PROC_SET
        display = concept_text(concept, codings)
        if self._procedure_text_sets:
            text = " ".join([display] + [d for _s, _c, d in codings])
            if text.strip():
                groups.update(self.index.text_sets_matching(self._procedure_text_sets, text))
        first_code = codings[0][1] if codings else ""
        return frozenset(groups), first_code, display or self.index.display_of(codings)

    # -- ServiceRequests ------------------------------------------------------------------------------------
    def service_request(self, req: wire.ServiceRequest, misfits: wire.Misfits) -> None:
        """An active / on-hold / draft ServiceRequest for a procedure of the value sets (§8.0 C2/C7: CRRT)."""
        status = req.status
        if status not in SERVICE_REQUEST_STATUSES:
            if status is None and misfits:
                _unhashable(misfits, "$.status")
            return
        groups, first_code, display = self.procedure_concept(req.code)
        if groups:
            self.service_requests.append(ServiceRequestFact(groups, first_code, display, status, _rid(req)))

    # -- Medications ----------------------------------------------------------------------------------------
    def medication(self, med: wire.MedicationUse, misfits: wire.Misfits) -> None:
        rtype = wire.resource_type(med)
        status = med.status if med.status is not None else ""
        if status in HISTORY_EXCLUDED:
            return
        classes, name = classify_medication(med, self.index, self.medication_resources)
        if not classes:
            return
        if rtype == "MedicationStatement":
            # §8.0 C16: effective[x], else dateAsserted. A period is dated by its end (else its start): "warfarin
            # within 90 days" asks when it was last taken, and a course that ended 80 days ago is within 90.
            when = (self.time(med.effectiveDateTime)
                    or self.period_time(med.effectivePeriod)
                    or self.time(med.dateAsserted))
            active = status == "active"
        else:
            when = self.time(med.authoredOn) or self.time(med.dateWritten)  # R4 / DSTU2
            intent = med.intent
            # DSTU2 MedicationOrder has no intent; an R4 request must be an order or plan. An intent of the
            # wrong type is an intent, and not one of these.
            active = status in MEDREQ_STATUSES
            if active and intent is None and misfits and "$.intent" in misfits:
                _unhashable(misfits, "$.intent")
                active = False
            elif active:
                active = intent is None or intent in MEDREQ_INTENTS
        fact = MedicationFact(frozenset(classes), name, rtype, _rid(med), status, self.usable(when))
        self.medication_history.append(fact)  # any status but entered-in-error / draft / not-taken (§8.0 C16)
        if active:
            self.medications.append(fact)


def medication_concepts(
    med: wire.MedicationUse, medications: Mapping[str, wire.Medication]
) -> list[wire.Concept | None]:
    """The concepts naming the drug: medicationCodeableConcept, or the referenced Medication's code and
    ingredients (contained ``#id`` or a Medication resource in the record)."""
    concepts: list[wire.Concept | None] = []
    if med.medicationCodeableConcept is not None:
        concepts.append(med.medicationCodeableConcept)
    ref = med.medicationReference
    target: wire.MedicationBody | wire.Medication | None = None
    if ref is not None and ref.reference is not None:
        reference = ref.reference
        if reference.startswith("#"):
            for contained in med.contained or ():
                if contained is not None and contained.id == reference[1:]:
                    target = contained
        else:
            target = medications.get(reference.split("/")[-1])
        if ref.display is not None:
            concepts.append(wire.CodeableConcept(text=ref.display))
    if target is not None:
        concepts.append(target.code)
        for ingredient in target.ingredient or ():
            if ingredient is not None:
                concepts.append(ingredient.itemCodeableConcept)
    return concepts


def classify_medication(
    med: wire.MedicationUse, index: CodeIndex, medications: Mapping[str, wire.Medication]
) -> tuple[set[str], str]:
    """Medication classes (med-* value set ids) by RxNorm code, else by text pattern; plus a name."""
    concepts = medication_concepts(med, medications)
    classes: set[str] = set()
    names: list[str] = []
    for concept in concepts:
        codings = codings_of(concept)
        classes |= index.codings_in((s, c) for s, c, _d in codings) & _MED_SET
        text = concept_text(concept)
        if text:
            names.append(text)
        names.extend(d for _s, _c, d in codings if d)
    name = names[0] if names else ""
    if not name:  # a coded drug without text or display: the value set's display, never the raw code
        name = index.display_of([c for concept in concepts for c in codings_of(concept)])
    if not classes:
        joined = " | ".join(names)
        classes = set(index.text_sets_matching(_MED_TEXT_SETS, joined)) if joined else set()
    if classes & _SPECIFIC_BINDERS:  # §8 C17: the specific binder class always comes with the general one
        classes.add(AL_MG_BINDER)
    return classes, name


def typed_resource(resource: object) -> tuple[wire.Resource, wire.Misfits] | Skipped | None:
    """A resource that is not a typed Struct yet, as the extraction reads it: a dict of a resource type extraction
    reads goes through ``wire.read`` (typed, else tolerant mode); None for a resource type nobody reads; a Skipped
    for what is no resource at all."""
    if not isinstance(resource, dict):
        return Skipped("unknown", "", "not a JSON object")
    rtype = resource.get("resourceType")
    rid = resource.get("id")
    if not isinstance(rtype, str):
        return Skipped("unknown", rid if isinstance(rid, str) else "", "no resourceType")
    shape = wire.RESOURCE_TYPES.get(rtype)
    if shape is None:
        return None
    try:
        return wire.read(shape, resource)
    except wire.Unreadable:
        return Skipped(rtype, rid if isinstance(rid, str) else "", "malformed (does not fit the FHIR shape)")


def _typed_patient(patient: object) -> wire.Patient | None:
    """The Patient argument of ``extract`` typed; a dict is read as a Patient whatever its resourceType says."""
    if isinstance(patient, wire.Patient):
        return patient
    if not isinstance(patient, dict):
        return None
    if patient.get("resourceType") != "Patient":
        patient = {k: v for k, v in patient.items() if k != "resourceType"}
    try:
        return wire.read(wire.Patient, patient)[0]
    except wire.Unreadable:
        return wire.Patient()


def extract(
    patient: Mapping[str, Any] | wire.Patient | None,
    resources: Iterable[object],
    now: datetime,
    index: CodeIndex,
    include_preliminary: bool = False,
) -> PatientFacts:
    """Build ``PatientFacts`` from a Patient and any mix of resources; never raises for bad input.

    Resources may be typed Structs (``fhir_mappings.wire``, decoded at the edge) or JSON dicts (tests, the SMART
    viewer), which are converted through the same typed / tolerant reading first (issue 18).
    """
    birth = gender = None
    patient_id = ""
    typed_patient = _typed_patient(patient)
    if typed_patient is not None:
        birth = parse_date(typed_patient.birthDate)
        gender = typed_patient.gender
        patient_id = _rid(typed_patient)
    facts0 = PatientFacts(now=now, patient_id=patient_id, birth_date=birth, gender=gender or "")
    ex = _Extractor(index, now, include_preliminary, facts0.age_years(), birth)
    handlers: dict[type[object], Callable[[Any, wire.Misfits], None]] = {
        wire.Observation: ex.observation,
        wire.Condition: ex.condition,
        wire.Procedure: ex.procedure,
        wire.MedicationRequest: ex.medication,
        wire.MedicationOrder: ex.medication,
        wire.MedicationStatement: ex.medication,
        wire.ServiceRequest: ex.service_request,
    }
    # First pass: types, Medication resources and DiagnosticReport members (the handlers need them all);
    # the handler of each resource is picked here so the second pass is only the calls.
    work: list[tuple[Callable[[Any, wire.Misfits], None], Any, wire.Misfits]] = []  # Any: a wire.Resource
    no_misfits = wire.NO_MISFITS
    for item in list(resources):
        if isinstance(item, wire.Resource):  # a Struct from the edge's decode: nearly every item
            res, misfits = item, no_misfits
        else:
            read = typed_resource(item)
            if read is None:
                continue
            if isinstance(read, Skipped):
                ex.skipped.append(read)
                continue
            res, misfits = read
            if misfits:
                ex.tolerant.append(TolerantRead(wire.resource_type(res), _rid(res), wire.misfit_fields(misfits)))
        handler = handlers.get(type(res))
        if handler is not None:
            work.append((handler, res, misfits))
        elif type(res) is wire.Medication:
            if res.id:
                ex.medication_resources[res.id] = res
        elif type(res) is wire.DiagnosticReport:
            for ref in res.result or ():
                if ref is not None and ref.reference is not None:
                    ex.report_members.setdefault(ref.reference, set()).add(_rid(res))
        elif type(res) is wire.Patient and patient is None and not patient_id:
            patient_id = _rid(res)
    for handler, res, misfits in work:
        try:
            handler(res, misfits)
        except Exception as exc:  # one malformed resource must never fail the whole evaluation
            ex.skip(res, f"malformed {type(exc).__name__}")
    labs = ex.labs
    if ex.report_members:
        labs = [_with_reports(r, ex.report_members.get(r.reference)) for r in labs]
    facts = PatientFacts(
        now=now, patient_id=patient_id, birth_date=birth, gender=gender or "",
        labs=tuple(labs), conditions=tuple(ex.conditions), possible_conditions=tuple(ex.possible),
        procedures=tuple(ex.procedures), medications=tuple(ex.medications), skipped=tuple(ex.skipped),
        set_aside=tuple(ex.set_aside), medication_history=tuple(ex.medication_history),
        service_requests=tuple(ex.service_requests),
    )
    facts.record_tolerant_reads(tuple(ex.tolerant))
    return facts


def _with_reports(result: LabResult, reports: set[str] | None) -> LabResult:
    if not reports:
        return result
    return replace(result, reports=frozenset(reports))
