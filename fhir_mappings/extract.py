"""Turn raw FHIR JSON (R4, tolerant of DSTU2/sandbox shapes) into ``PatientFacts``.

Eligibility follows clinical-rules.md section 2.1. Parsing is per resource and lenient: a resource
that is malformed where the rules need it is skipped and recorded as ``{resource_type, id, reason}``;
nothing here raises. Observations are filtered by code with a dictionary lookup *before* any other
work, so a 5,000-Observation record costs little; strict fhir.resources validation is deliberately
not used on this path, because it would reject usable real-world data (sandbox/DSTU2 shapes) and
is too slow for large records.

Speed (issue #7, BENCHMARKS.md): the shapes nearly every record uses (one LOINC coding per lab, a float
valueQuantity, one plain reference range, one repeated dialysis concept) take short fast paths; everything
else falls back, before any side effect, to the general lenient code, so answers never depend on which path
ran (tests/engine/test_extract_equivalence.py and test_extract_fast_paths.py hold them to that).
"""

from __future__ import annotations

import calendar
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

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
    new_condition_fact,
    new_lab_result,
    new_procedure_fact,
)
from fhir_mappings.units import canonical_unit, convert, unit_rule
from fhir_mappings.valuesets import (
    CONDITION_VALUESETS,
    LAB_VALUESETS,
    MEDICATION_VALUESETS,
    PROCEDURE_VALUESETS,
    CodeIndex,
)

# value set id -> analyte key of units.toml
KIND_ANALYTE = {
    "lab-calcium-total": "calcium",
    "lab-calcium-blood": "calcium",
    "lab-calcium-ionized": "calcium",
    "lab-calcium-corrected": "calcium",
    "lab-phosphate": "phosphate",
    "lab-albumin": "albumin",
    "lab-pth": "pth",
    "lab-vitamin-d-25oh": "vitamin_d_25oh",
    "lab-vitamin-d-125": "vitamin_d_125",
    "lab-alp": "alp",
    "lab-creatinine": "creatinine",
    "lab-egfr": "egfr",
    "lab-potassium": "potassium",
    "lab-urate": "urate",
    "lab-bmi": "bmi",
    "lab-bicarbonate": "bicarbonate",
    "lab-magnesium": "magnesium",  # §8 C17
}

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

# Display names of the analytes for set-aside values (card detail, never logs).
KIND_LABEL = {
    "lab-calcium-total": "Calcium", "lab-calcium-blood": "Calcium (blood)", "lab-calcium-ionized": "Ionized calcium",
    "lab-calcium-corrected": "Corrected calcium", "lab-phosphate": "Phosphate", "lab-albumin": "Albumin",
    "lab-pth": "PTH", "lab-vitamin-d-25oh": "25-OH vitamin D", "lab-vitamin-d-125": "1,25-(OH)2 vitamin D",
    "lab-alp": "Alkaline phosphatase", "lab-creatinine": "Creatinine", "lab-egfr": "eGFR",
    "lab-potassium": "Potassium", "lab-urate": "Urate", "lab-bmi": "BMI", "lab-bicarbonate": "Bicarbonate",
    "lab-magnesium": "Magnesium",
}

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
_NUMBERS = (float, int)  # exact types: bool, an int subclass, is not a number here (as in _number)
_UNPARSED = object()

# Section 2.7 CALCIPHYLAXIS_DX: text match on Condition.code.text / coding.display.
CALCIPHYLAXIS_TEXT = re.compile(r"calciphylaxis|calcific uremic arteriolopathy", re.IGNORECASE)

def parse_date(value: object) -> date | None:
    """Parse a FHIR date (partial allowed) to a date."""
    dt = parse_datetime(value)
    return dt.date() if dt else None


def codings_of(concept: object) -> list[tuple[str, str, str]]:
    """(system, code, display) of a CodeableConcept; tolerant of a bare Coding or a list."""
    if isinstance(concept, list):
        return [c for item in concept for c in codings_of(item)]
    if not isinstance(concept, dict):
        return []
    raw = concept.get("coding")
    items: list[Any] = raw if isinstance(raw, list) else [raw] if isinstance(raw, dict) else []
    if "code" in concept and "system" in concept:  # a bare Coding
        items = [*items, concept]  # a new list: appending to ``raw`` would change the caller's resource
    out: list[tuple[str, str, str]] = []
    for c in items:
        if isinstance(c, dict) and isinstance(c.get("code"), str):
            display = c.get("display")
            system = c.get("system")
            out.append((
                system if isinstance(system, str) else "",
                str(c["code"]),
                display if isinstance(display, str) else "",
            ))
    return out


def concept_text(concept: object, codings: list[tuple[str, str, str]] | None = None) -> str:
    """Human text of a CodeableConcept: ``text``, else the first coding display.

    ``codings`` is ``codings_of(concept)`` when the caller has it already (saves walking the codings again).
    """
    if isinstance(concept, dict):
        text = concept.get("text")
        if isinstance(text, str) and text.strip():
            return text.strip()
    for _s, _c, display in codings if codings is not None else codings_of(concept):
        if display:
            return display
    return ""


def _status_code(value: object) -> str:
    """A status given as a string (DSTU2) or CodeableConcept (R4) -> lower-case code ('' if none)."""
    if isinstance(value, str):
        return value.strip().lower()
    if type(value) is dict:  # R4: the first coding is the one codings_of would give first
        coding = value.get("coding")
        if type(coding) is list and coding:
            first = coding[0]
            if type(first) is dict:
                code = first.get("code")
                if type(code) is str:
                    return code.strip().lower()
    for _s, code, _d in codings_of(value):
        return code.strip().lower()
    return ""


def _rid(resource: Mapping[str, Any]) -> str:
    rid = resource.get("id")
    return rid if isinstance(rid, str) else ""


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _number_text(value: float) -> str:
    """A reported number as a clinician reads it: ``30`` not ``30.0``, otherwise Python's shortest form."""
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def _interpretation(value: object) -> str:
    """The first code of ``Observation.interpretation`` (R4: a list of CodeableConcepts; DSTU2: one), or ""."""
    first = value[0] if isinstance(value, list) and value else value
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
        self._plausible: dict[tuple[str, ...], tuple[float, float]] = {}
        self.statuses = OBSERVATION_STATUSES | ({"preliminary"} if include_preliminary else set())
        self.skipped: list[Skipped] = []
        self.labs: list[LabResult] = []
        self.conditions: list[ConditionFact] = []
        self.possible: list[ConditionFact] = []
        self.procedures: list[ProcedureFact] = []
        self.medications: list[MedicationFact] = []
        self.report_members: dict[str, set[str]] = {}
        self.medication_resources: dict[str, Mapping[str, Any]] = {}
        # Per-record memos (issue #7): a panel's results share one timestamp (150 labs of the typical record carry
        # 28 distinct ones) and 100 dialysis sessions one code. Per call, not per process, so nothing one patient
        # sent is kept, and the memo is bounded by the record itself.
        self._times: dict[str, datetime | None] = {}
        self._last_procedure_concept: object = _UNPARSED  # equal to no concept
        self._last_procedure_answer: tuple[frozenset[str], str, str] = (frozenset(), "", "")
        self._lab_kinds: dict[tuple[str, str], tuple[str, ...]] = {}
        self._condition_text_sets = [vs_id for vs_id in index.text_patterns if vs_id in _COND_SET]
        self._procedure_text_sets = [vs_id for vs_id in index.text_patterns if vs_id in _PROC_SET]

    def skip(self, resource: Mapping[str, Any], reason: str) -> None:
        rtype = resource.get("resourceType")
        self.skipped.append(Skipped(rtype if isinstance(rtype, str) else "unknown", _rid(resource), reason))

    def usable(self, when: datetime | None) -> datetime | None:
        """``when`` if it lies between 1900 and NOW + 24 h, else None: an unusable date is no date (§8 C6)."""
        if when is None or when < EARLIEST_DATE or when > self.latest:
            return None
        return when

    def plausible_limits(self, kinds: tuple[str, ...]) -> tuple[float, float]:
        """The §8 C6 limits every kind of ``kinds`` allows, with float slack; (-inf, inf) when none apply."""
        limits = self._plausible.get(kinds)
        if limits is None:
            low, high = -math.inf, math.inf
            for kind in kinds:
                found = PLAUSIBLE.get(kind)
                if found is not None:
                    low = max(low, found[0] - abs(found[0]) * _PLAUSIBLE_SLACK)
                    high = min(high, found[1] + abs(found[1]) * _PLAUSIBLE_SLACK)
            limits = self._plausible[kinds] = (low, high)
        return limits

    def result_problem(self, kinds: tuple[str, ...], normalized: float, when: datetime) -> tuple[str, str] | None:
        """Why a result must be set aside (clinician words, audit words without the value), or None (§8 C6)."""
        if when > self.latest:
            return "dated in the future", "dated in the future"
        if when < EARLIEST_DATE:
            return "dated before 1900", "dated before 1900"
        analyte = KIND_ANALYTE[kinds[0]]
        if not math.isfinite(normalized):
            return "unreadable value (not a finite number)", f"value for {analyte} is not a finite number"
        low, high = self.plausible_limits(kinds)
        if not low <= normalized <= high:
            shown = next((PLAUSIBLE[k][2] for k in kinds if k in PLAUSIBLE), "")
            return f"implausible value (plausible {shown})", f"implausible value for {analyte}"
        return None

    def set_aside_result(
        self, obs: Mapping[str, Any], kinds: tuple[str, ...], value: float, comparator: str, unit: str,
        when: datetime, problem: tuple[str, str],
    ) -> None:
        """Record a result that is never used: a SetAside for the card and a value-free Skipped for the audit."""
        value_text = f"{comparator}{_number_text(value)} {unit}".strip() if math.isfinite(value) else ""
        self.set_aside.append(SetAside("Observation", _rid(obs), KIND_LABEL.get(kinds[0], kinds[0]), value_text,
                                       when, problem[0]))
        self.skip(obs, problem[1])

    def time(self, value: object) -> datetime | None:
        """``parse_datetime``, memoised per record for strings."""
        if type(value) is str:
            parsed = self._times.get(value, _UNPARSED)  # not try/except: a miss raises nothing
            if parsed is _UNPARSED:
                parsed = self._times[value] = parse_datetime(value)
            return parsed  # type: ignore[return-value]
        return parse_datetime(value)  # None for a non-string

    def period_time(self, period: object) -> datetime | None:
        """A Period's time: its end, else its start (through the memo)."""
        if isinstance(period, dict):
            return self.time(period.get("end")) or self.time(period.get("start"))
        return None

    # -- Observations ---------------------------------------------------------------------------------
    def observation(self, obs: Mapping[str, Any]) -> None:
        # Fast path (issue #7): nearly every lab codes itself with exactly one Coding of string system and code.
        # That shape is classified with one memoised lookup; every other shape (several codings, a bare Coding,
        # wrong types) goes through the general walk below. Both give the same (code, kinds).
        concept = obs.get("code")
        if type(concept) is dict and ("code" not in concept or "system" not in concept):
            coding = concept.get("coding")
            if type(coding) is list and len(coding) == 1:
                first = coding[0]
                if type(first) is dict:
                    system = first.get("system")
                    code = first.get("code")
                    if type(system) is str and type(code) is str:
                        kinds = self._lab_kinds.get((system, code))
                        if kinds is None:
                            kinds = self._lab_kinds[system, code] = self.index.members_within(system, code, _LAB_SET)
                        if kinds:
                            self._lab(obs, code, kinds)
                        return  # not an analyte any rule uses: ignored cheaply
        self._observation_codes(obs, concept)

    def _observation_codes(self, obs: Mapping[str, Any], concept: object) -> None:
        """The general classification: every coding, the kinds' union, the first classifying code."""
        kinds: set[str] = set()
        code = ""
        for system, c, _d in codings_of(concept):
            found = self.index.members(system, c) & _LAB_SET
            if found and not kinds:
                code = c
            kinds |= found
        if not kinds:
            return  # not an analyte any rule uses: ignore cheaply
        self._lab(obs, code, tuple(sorted(kinds)))

    def _lab(self, obs: Mapping[str, Any], code: str, kinds: tuple[str, ...]) -> None:
        """An Observation of the lab value sets ``kinds`` (sorted): eligibility, value, time, unit, range.

        Fast path (issue #7): the shape nearly every lab has (string status and id, a valueQuantity object with a
        numeric value and string code and unit, no comparator or dataAbsentReason, an effectiveDateTime that
        parses, an accepted unit, at most one plain reference range in the same unit) is read with plain
        subscripts, ~2x cheaper than ``dict.get``. Anything else, including every case that is skipped or
        excluded for a reason other than status, goes to ``_lab_lenient`` before any side effect, so the
        answer is the lenient one.
        """
        try:
            status = obs["status"]
            quantity = obs["valueQuantity"]
            raw = quantity["value"]
            unit_code = quantity["code"]
            unit_text = quantity["unit"]
            effective = obs["effectiveDateTime"]
            rid = obs["id"]
        except (KeyError, TypeError):  # a field is missing, or valueQuantity is not an object
            self._lab_lenient(obs, code, kinds)
            return
        if (type(quantity) is not dict or type(raw) not in _NUMBERS or type(unit_code) is not str
                or type(unit_text) is not str or type(rid) is not str
                or "dataAbsentReason" in obs or "comparator" in quantity):
            self._lab_lenient(obs, code, kinds)
            return
        if type(status) is not str or status not in self.statuses:
            return  # as the lenient path: status is its first check
        value = float(raw)  # an int too large for a float raises here, as in the lenient path: "malformed ..."
        when = self.time(effective)
        analyte = KIND_ANALYTE[kinds[0]]
        rule = unit_rule(analyte, unit_code, unit_text)
        if when is None or rule is None:
            self._lab_lenient(obs, code, kinds)
            return
        multiply, divide = rule.multiply, rule.divide
        normalized = value * multiply / divide  # = UnitRule.apply: same operations, same order
        limits = self._plausible.get(kinds) or self.plausible_limits(kinds)
        if (not (limits[0] <= normalized <= limits[1] and EARLIEST_DATE <= when <= self.latest)
                or not math.isfinite(normalized)):
            self._lab_lenient(obs, code, kinds)  # §8 C6: set aside there, with its reason
            return
        low = high = None
        banded = False
        ranges = obs.get("referenceRange")
        if ranges is not None:
            same_unit = False
            if type(ranges) is list and len(ranges) == 1:
                only = ranges[0]
                if type(only) is dict and "age" not in only and "appliesTo" not in only:
                    # The single plain range _reference_range would choose; both bounds in the result's own unit
                    # spelling convert by the result's rule (unit_rule would return that same rule).
                    try:
                        low_q = only["low"]
                        high_q = only["high"]
                        low_v = low_q["value"]
                        high_v = high_q["value"]
                        same_unit = (type(low_q) is dict and type(high_q) is dict and type(low_v) in _NUMBERS
                                     and type(high_v) in _NUMBERS and low_q["code"] == unit_code
                                     and low_q["unit"] == unit_text and high_q["code"] == unit_code
                                     and high_q["unit"] == unit_text)
                    except (KeyError, TypeError):
                        pass
            if same_unit:  # float() as _number does (an int bound too large for a float raises the same way)
                low = float(low_v) * multiply / divide
                high = float(high_v) * multiply / divide
                if not math.isfinite(low):  # as _range_bound: an overflowing bound is no bound
                    low = None
                if not math.isfinite(high):
                    high = None
            else:
                low, high, banded = self._reference_range(ranges, analyte, unit_code, unit_text)
        specimen = obs.get("specimen")
        spec_ref = specimen.get("reference") if type(specimen) is dict else None
        if type(spec_ref) is not str:
            spec_ref = ""
        interpretation = obs.get("interpretation")
        self._add_labs(kinds, analyte, value=value, normalized=normalized,
                       original_unit=unit_code or unit_text, when=when, rid=rid, code=code, comparator="",
                       uncertain=False, specimen=spec_ref, low=low, high=high, status=status, banded=banded,
                       interpretation="" if interpretation is None else _interpretation(interpretation))

    def _lab_lenient(self, obs: Mapping[str, Any], code: str, kinds: tuple[str, ...]) -> None:
        """``_lab`` for any shape: every field checked, malformed ones skipped and recorded (section 2.1)."""
        status = obs.get("status")
        if not isinstance(status, str) or status not in self.statuses:
            return  # ineligible status (entered-in-error, preliminary by default, ...): excluded
        if obs.get("dataAbsentReason") is not None:
            return
        quantity = obs.get("valueQuantity")
        if quantity is None:
            return  # no numeric value (valueString etc.): not usable, excluded (section 2.1)
        if not isinstance(quantity, dict):
            self.skip(obs, "valueQuantity is not an object")
            return
        value = _number(quantity.get("value"))
        if value is None:
            self.skip(obs, "valueQuantity.value is not a number")
            return
        when = (
            self.time(obs.get("effectiveDateTime"))
            or self.period_time(obs.get("effectivePeriod"))
            or self.time(obs.get("effectiveInstant"))
        )
        uncertain = False
        if when is None:
            when = self.time(obs.get("issued"))
            uncertain = True
        if when is None:
            self.skip(obs, "no usable effective time")
            return
        analyte = KIND_ANALYTE[kinds[0]]
        unit_code = quantity.get("code") if isinstance(quantity.get("code"), str) else None
        unit_text = quantity.get("unit") if isinstance(quantity.get("unit"), str) else None
        rule = unit_rule(analyte, unit_code, unit_text)
        if rule is None:
            self.skip(obs, f"unit {unit_code or unit_text or '(none)'!r} not accepted for {analyte}")
            return
        comparator = quantity.get("comparator") if quantity.get("comparator") in _COMPARATORS else ""
        normalized = rule.apply(value)
        original_unit = unit_code or unit_text or ""
        problem = self.result_problem(kinds, normalized, when)
        if problem is not None:  # §8 C6: a data error is named, never used
            self.set_aside_result(obs, kinds, value, str(comparator), original_unit, when, problem)
            return
        low, high, banded = self._reference_range(obs.get("referenceRange"), analyte, unit_code, unit_text)
        specimen = obs.get("specimen")
        spec_ref = specimen.get("reference") if isinstance(specimen, dict) else None
        self._add_labs(kinds, analyte, value=value, normalized=normalized,
                       original_unit=original_unit, when=when, rid=_rid(obs), code=code,
                       comparator=str(comparator), uncertain=uncertain,
                       specimen=spec_ref if isinstance(spec_ref, str) else "", low=low, high=high, status=status,
                       banded=banded, interpretation=_interpretation(obs.get("interpretation")))

    def _add_labs(
        self, kinds: tuple[str, ...], analyte: str, *, value: float, normalized: float, original_unit: str,
        when: datetime, rid: str, code: str, comparator: str, uncertain: bool, specimen: str, low: float | None,
        high: float | None, status: str, banded: bool, interpretation: str,
    ) -> None:
        """One LabResult per kind; value and unit are those of the first kind's analyte (as always)."""
        unit = canonical_unit(analyte)
        for kind in kinds:
            self.labs.append(new_lab_result(
                KIND_ANALYTE[kind], kind, normalized, unit, value, original_unit, when, "Observation", rid, code,
                comparator, uncertain, specimen, low, high, status, banded, interpretation,
            ))

    def _reference_range(
        self, ranges: object, analyte: str, unit_code: str | None, unit_text: str | None
    ) -> tuple[float | None, float | None, bool]:
        """(low, high, age-banded) of the range to use: the first whose ``age`` band covers the patient, else the
        first plain one (no usable age band, no ``appliesTo``). A band that does not cover the patient, or that
        cannot be judged (unknown age or unit), is never used (§8 C11)."""
        if not isinstance(ranges, list):
            return None, None, False
        chosen: Mapping[str, Any] | None = None
        banded = False
        for rng in ranges:
            if not isinstance(rng, dict):
                continue
            covers = self._age_band_covers(rng.get("age"))
            if covers is True:
                chosen, banded = rng, True
                break
            if covers is None and chosen is None and not rng.get("appliesTo"):
                chosen = rng
        if chosen is None:
            return None, None, False
        return (
            self._range_bound(chosen.get("low"), analyte, unit_code, unit_text),
            self._range_bound(chosen.get("high"), analyte, unit_code, unit_text),
            banded,
        )

    def _age_band_covers(self, band: object) -> bool | None:
        """None: no age band (no numeric bound); True/False: whether the band covers the patient's age.

        Bounds are Quantities in ``a``/``mo``/``wk``/``d`` (no unit: years, as labs commonly send); the high bound
        is inclusive in completed units (0–17 a covers 17 years 11 months). Unknown age or unit: False (§8 C11).
        """
        if not isinstance(band, dict):
            return None
        bounds: list[tuple[float, str | None]] = []
        for key in ("low", "high"):
            q = band.get(key)
            value = _number(q.get("value")) if isinstance(q, dict) else None
            if value is None or not math.isfinite(value):
                bounds.append((math.nan, None))
                continue
            unit = q.get("code") if isinstance(q.get("code"), str) else q.get("unit")  # type: ignore[union-attr]
            bounds.append((value, _AGE_UNITS.get(unit.strip().lower()) if isinstance(unit, str) and unit.strip()
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
    def _range_bound(q: object, analyte: str, unit_code: str | None, unit_text: str | None) -> float | None:
        if not isinstance(q, dict):
            return None
        value = _number(q.get("value"))
        if value is None:
            return None
        code = q.get("code") if isinstance(q.get("code"), str) else None
        text = q.get("unit") if isinstance(q.get("unit"), str) else None
        if code is None and text is None:  # a bare range is in the result's own unit
            code, text = unit_code, unit_text
        rule = unit_rule(analyte, code, text)
        if rule is None:
            return None
        bound = rule.apply(value)
        return bound if math.isfinite(bound) else None  # an overflowing bound is no bound

    # -- Conditions ---------------------------------------------------------------------------------------
    def condition(self, cond: Mapping[str, Any]) -> None:
        concept = cond.get("code")
        if concept is not None and not isinstance(concept, dict):
            self.skip(cond, "code is not a CodeableConcept")
            return
        codings = codings_of(concept)
        groups = self.index.codings_in((s, c) for s, c, _d in codings) & _COND_SET
        display = concept_text(concept, codings)
        text = " ".join([display] + [d for _s, _c, d in codings])
        if CALCIPHYLAXIS_TEXT.search(text):
            groups.add("cond-calciphylaxis")
        for vs_id in self._condition_text_sets:  # condition value sets with a text fallback
            if vs_id not in groups and self.index.text_matches(vs_id, text):
                groups.add(vs_id)
        if not groups:
            return
        verification = _status_code(cond.get("verificationStatus"))
        if verification in VERIFICATION_EXCLUDED:
            return
        clinical = _status_code(cond.get("clinicalStatus"))
        if clinical in CONDITION_INACTIVE or (clinical and clinical not in CONDITION_ACTIVE):
            return
        if self._abated(cond):
            return
        established = bool(clinical) and verification not in VERIFICATION_POSSIBLE
        # §8.0: the date is onset[x] when it is a dateTime, else recordedDate (DSTU2: dateRecorded); anything else,
        # or a date outside 1900 .. NOW + 24 h, is undated.
        onset = self.usable(self.time(cond.get("onsetDateTime")))
        recorded = self.usable(self.time(cond.get("recordedDate")) or self.time(cond.get("dateRecorded")))
        first = codings[0] if codings else ("", "", "")
        fact = new_condition_fact(
            frozenset(groups), first[1], first[0], display or first[2] or self.index.display_of(codings),
            established, onset or recorded, _rid(cond), recorded,
        )
        (self.conditions if established else self.possible).append(fact)

    def _abated(self, cond: Mapping[str, Any]) -> bool:
        if cond.get("abatementBoolean") is True:
            return True
        when = self.time(cond.get("abatementDateTime")) or self.period_time(cond.get("abatementPeriod"))
        if when is not None:
            return when <= self.now
        return any(cond.get(k) is not None for k in ("abatementString", "abatementAge", "abatementRange"))

    # -- Procedures ---------------------------------------------------------------------------------------
    def procedure(self, proc: Mapping[str, Any]) -> None:
        concept = proc.get("code")
        # What a concept means (value sets, first code, display) depends on its content only. A record repeats
        # one dialysis concept for every session, so the previous answer is reused while the concept is equal
        # (a C-level comparison); any other concept takes the general walk (issue #7).
        if concept == self._last_procedure_concept:
            groups, first_code, display = self._last_procedure_answer
        else:
            groups, first_code, display = self.procedure_concept(concept)
            self._last_procedure_concept = concept
            self._last_procedure_answer = (groups, first_code, display)
        if not groups:
            return
        status = proc.get("status")
        if status not in PROCEDURE_STATUSES:
            return
        # §8.0 procedure dates: start = performedDateTime, else performedPeriod.start; end = performedPeriod.end,
        # else start + 4 h (D); time = end. Session times differ, so they are parsed directly rather than through
        # the per-record memo. A date outside 1900 .. NOW + 24 h is unusable (undated), never fatal.
        latest = self.latest
        performed = proc.get("performedDateTime")
        start = parse_datetime(performed)
        if start is not None and not EARLIEST_DATE <= start <= latest:
            start = None
        end = None
        period = proc.get("performedPeriod")
        if type(period) is dict:
            if start is None:
                start = parse_datetime(period.get("start"))
                if start is not None and not EARLIEST_DATE <= start <= latest:
                    start = None
            end = parse_datetime(period.get("end"))
            if end is not None and not EARLIEST_DATE <= end <= latest:
                end = None
        if end is None and start is not None:
            end = start + DEFAULT_PROCEDURE_HOURS
        self.procedures.append(new_procedure_fact(
            groups, first_code, display, end, _rid(proc), start, end, status))

    def procedure_concept(self, concept: object) -> tuple[frozenset[str], str, str]:
        """(procedure value sets, first code, display) of a Procedure/ServiceRequest code: by code, else by the
        value set's text pattern (proc-parathyroidectomy has no verified SNOMED code, §8 C2)."""
        codings = codings_of(concept)
        groups = self.index.codings_in((s, c) for s, c, _d in codings) & _PROC_SET
        display = concept_text(concept, codings)
        if self._procedure_text_sets:
            text = " ".join([display] + [d for _s, _c, d in codings])
            groups |= {vs_id for vs_id in self._procedure_text_sets
                       if vs_id not in groups and text.strip() and self.index.text_matches(vs_id, text)}
        first_code = codings[0][1] if codings else ""
        return frozenset(groups), first_code, display or self.index.display_of(codings)

    # -- ServiceRequests ------------------------------------------------------------------------------------
    def service_request(self, req: Mapping[str, Any]) -> None:
        """An active / on-hold / draft ServiceRequest for a procedure of the value sets (§8.0 C2/C7: CRRT)."""
        status = req.get("status")
        if status not in SERVICE_REQUEST_STATUSES:
            return
        groups, first_code, display = self.procedure_concept(req.get("code"))
        if groups:
            self.service_requests.append(ServiceRequestFact(groups, first_code, display, str(status), _rid(req)))

    # -- Medications ----------------------------------------------------------------------------------------
    def medication(self, med: Mapping[str, Any]) -> None:
        rtype = str(med.get("resourceType"))
        raw_status = med.get("status")
        status = raw_status if isinstance(raw_status, str) else ""
        if status in HISTORY_EXCLUDED:
            return
        classes, name = classify_medication(med, self.index, self.medication_resources)
        if not classes:
            return
        if rtype == "MedicationStatement":
            # §8.0 C16: effective[x], else dateAsserted. A period is dated by its end (else its start): "warfarin
            # within 90 days" asks when it was last taken, and a course that ended 80 days ago is within 90.
            when = (self.time(med.get("effectiveDateTime"))
                    or self.period_time(med.get("effectivePeriod"))
                    or self.time(med.get("dateAsserted")))
            active = status == "active"
        else:
            when = self.time(med.get("authoredOn")) or self.time(med.get("dateWritten"))  # R4 / DSTU2
            intent = med.get("intent")
            # DSTU2 MedicationOrder has no intent; an R4 request must be an order or plan.
            active = status in MEDREQ_STATUSES and (intent is None or intent in MEDREQ_INTENTS)
        fact = MedicationFact(frozenset(classes), name, rtype, _rid(med), status, self.usable(when))
        self.medication_history.append(fact)  # any status but entered-in-error / draft / not-taken (§8.0 C16)
        if active:
            self.medications.append(fact)


def medication_concepts(
    med: Mapping[str, Any], medications: Mapping[str, Mapping[str, Any]]
) -> list[object]:
    """The CodeableConcepts naming the drug: medicationCodeableConcept, or the referenced Medication's
    code and ingredients (contained ``#id`` or a Medication resource in the record)."""
    concepts: list[object] = []
    if isinstance(med.get("medicationCodeableConcept"), dict):
        concepts.append(med["medicationCodeableConcept"])
    ref = med.get("medicationReference")
    target: Mapping[str, Any] | None = None
    if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
        reference = ref["reference"]
        if reference.startswith("#"):
            for contained in med.get("contained") or []:
                if isinstance(contained, dict) and contained.get("id") == reference[1:]:
                    target = contained
        else:
            target = medications.get(reference.split("/")[-1])
        if isinstance(ref.get("display"), str):
            concepts.append({"text": ref["display"]})
    if isinstance(target, dict):
        concepts.append(target.get("code"))
        for ingredient in target.get("ingredient") or []:
            if isinstance(ingredient, dict):
                concepts.append(ingredient.get("itemCodeableConcept"))
    return concepts


def classify_medication(
    med: Mapping[str, Any], index: CodeIndex, medications: Mapping[str, Mapping[str, Any]]
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
        classes = {vs for vs in _MED_SET if joined and index.text_matches(vs, joined)}
    if classes & _SPECIFIC_BINDERS:  # §8 C17: the specific binder class always comes with the general one
        classes.add(AL_MG_BINDER)
    return classes, name


def extract(
    patient: Mapping[str, Any] | None,
    resources: Iterable[object],
    now: datetime,
    index: CodeIndex,
    include_preliminary: bool = False,
) -> PatientFacts:
    """Build ``PatientFacts`` from a Patient and any mix of resources; never raises for bad input."""
    birth = gender = None
    patient_id = ""
    if isinstance(patient, dict):
        birth = parse_date(patient.get("birthDate"))
        gender = patient.get("gender") if isinstance(patient.get("gender"), str) else None
        patient_id = _rid(patient)
    facts0 = PatientFacts(now=now, patient_id=patient_id, birth_date=birth, gender=gender or "")
    ex = _Extractor(index, now, include_preliminary, facts0.age_years(), birth)
    handlers: dict[str, Callable[[Mapping[str, Any]], None]] = {
        "Observation": ex.observation,
        "Condition": ex.condition,
        "Procedure": ex.procedure,
        "MedicationRequest": ex.medication,
        "MedicationOrder": ex.medication,
        "MedicationStatement": ex.medication,
        "ServiceRequest": ex.service_request,
    }
    # First pass: shapes, Medication resources and DiagnosticReport members (the handlers need them all);
    # the handler of each resource is picked here so the second pass is only the calls.
    work: list[tuple[Callable[[Mapping[str, Any]], None], Mapping[str, Any]]] = []
    for res in list(resources):
        if not isinstance(res, dict):
            ex.skipped.append(Skipped("unknown", "", "not a JSON object"))
            continue
        rtype = res.get("resourceType")
        if not isinstance(rtype, str):
            ex.skipped.append(Skipped("unknown", _rid(res), "no resourceType"))
            continue
        handler = handlers.get(rtype)
        if handler is not None:
            work.append((handler, res))
        elif rtype == "Medication" and _rid(res):
            ex.medication_resources[_rid(res)] = res
        elif rtype == "DiagnosticReport":
            for ref in res.get("result") or []:
                if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
                    ex.report_members.setdefault(ref["reference"], set()).add(_rid(res))
        elif rtype == "Patient" and patient is None and not patient_id:
            patient_id = _rid(res)
    for handler, res in work:
        try:
            handler(res)
        except Exception as exc:  # one malformed resource must never fail the whole evaluation
            ex.skip(res, f"malformed {type(exc).__name__}")
    labs = ex.labs
    if ex.report_members:
        labs = [_with_reports(r, ex.report_members.get(r.reference)) for r in labs]
    return PatientFacts(
        now=now, patient_id=patient_id, birth_date=birth, gender=gender or "",
        labs=tuple(labs), conditions=tuple(ex.conditions), possible_conditions=tuple(ex.possible),
        procedures=tuple(ex.procedures), medications=tuple(ex.medications), skipped=tuple(ex.skipped),
        set_aside=tuple(ex.set_aside), medication_history=tuple(ex.medication_history),
        service_requests=tuple(ex.service_requests),
    )


def _with_reports(result: LabResult, reports: set[str] | None) -> LabResult:
    if not reports:
        return result
    return replace(result, reports=frozenset(reports))
