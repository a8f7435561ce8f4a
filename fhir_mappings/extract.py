"""Turn raw FHIR JSON (R4, tolerant of DSTU2/sandbox shapes) into ``PatientFacts``.

Eligibility follows clinical-rules.md section 2.1. Parsing is per resource and lenient: a resource
that is malformed where the rules need it is skipped and recorded as ``{resource_type, id, reason}``;
nothing here raises. Observations are filtered by code with a dictionary lookup *before* any other
work, so a 5,000-Observation record costs little; strict fhir.resources validation is deliberately
not used on this path, because it would reject usable real-world data (sandbox/DSTU2 shapes) and
is too slow for large records.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fhir_mappings.facts import (
    ConditionFact,
    LabResult,
    MedicationFact,
    PatientFacts,
    ProcedureFact,
    Skipped,
)
from fhir_mappings.units import UnknownUnitError, canonical_unit, convert
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
}
_LAB_SET = frozenset(LAB_VALUESETS)
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
MEDREQ_STATUSES = frozenset({"active", "on-hold"})
MEDREQ_INTENTS = frozenset({"order", "original-order", "plan", "instance-order"})

# Section 2.7 CALCIPHYLAXIS_DX: text match on Condition.code.text / coding.display.
CALCIPHYLAXIS_TEXT = re.compile(r"calciphylaxis|calcific uremic arteriolopathy", re.IGNORECASE)

_DATETIME = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def _fast_datetime(value: str) -> datetime | None:
    """The three shapes nearly every record uses, parsed in C; None means "use the general parser".

    ``YYYY-MM-DD``, ``YYYY-MM-DDThh:mm:ssZ`` and ``YYYY-MM-DDThh:mm:ss+hh:mm``: for exactly these shapes
    ``datetime.fromisoformat`` (Python >= 3.11, strict digits) gives the same instant as the regex below at a
    fraction of the cost (a typical record has ~300 timestamps; BENCHMARKS.md, issue #7). Anything else,
    or anything it rejects, goes through the regex path unchanged.
    """
    size = len(value)
    if size < 10 or value[4] != "-" or value[7] != "-":
        return None
    if size == 10:
        shape_ok = True
    elif size == 20:
        shape_ok = value[10] == "T" and value[13] == ":" and value[16] == ":" and value[19] == "Z"
    elif size == 25:
        shape_ok = (value[10] == "T" and value[13] == ":" and value[16] == ":" and value[19] in "+-"
                    and value[22] == ":")
    else:
        return None
    if not shape_ok:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def parse_datetime(value: object) -> datetime | None:
    """Parse a FHIR date/dateTime/instant to aware UTC; partial dates -> start of period, no zone -> UTC."""
    if not isinstance(value, str):
        return None
    fast = _fast_datetime(value)
    return fast if fast is not None else _regex_datetime(value)


def _regex_datetime(value: str) -> datetime | None:
    """The general parser: every FHIR precision (year .. fractional seconds), any offset, stray whitespace."""
    m = _DATETIME.match(value.strip())
    if not m:
        return None
    year, month, day, hour, minute, second, zone = m.groups()
    try:
        dt = datetime(
            int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0), int(second or 0),
            tzinfo=UTC,
        )
    except ValueError:
        return None
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
        dt = dt - sign * offset  # the wall time was local; convert to UTC
    return dt


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
        items.append(concept)
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


def concept_text(concept: object) -> str:
    """Human text of a CodeableConcept: ``text``, else the first coding display."""
    if isinstance(concept, dict):
        text = concept.get("text")
        if isinstance(text, str) and text.strip():
            return text.strip()
    for _s, _c, display in codings_of(concept):
        if display:
            return display
    return ""


def _status_code(value: object) -> str:
    """A status given as a string (DSTU2) or CodeableConcept (R4) -> lower-case code ('' if none)."""
    if isinstance(value, str):
        return value.strip().lower()
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


def _period_time(period: object) -> datetime | None:
    if isinstance(period, dict):
        return parse_datetime(period.get("end")) or parse_datetime(period.get("start"))
    return None


class _Extractor:
    def __init__(self, index: CodeIndex, now: datetime, include_preliminary: bool, age: float | None):
        self.index = index
        self.now = now
        self.age = age
        self.statuses = OBSERVATION_STATUSES | ({"preliminary"} if include_preliminary else set())
        self.skipped: list[Skipped] = []
        self.labs: list[LabResult] = []
        self.conditions: list[ConditionFact] = []
        self.possible: list[ConditionFact] = []
        self.procedures: list[ProcedureFact] = []
        self.medications: list[MedicationFact] = []
        self.report_members: dict[str, set[str]] = {}
        self.medication_resources: dict[str, Mapping[str, Any]] = {}

    def skip(self, resource: Mapping[str, Any], reason: str) -> None:
        rtype = resource.get("resourceType")
        self.skipped.append(Skipped(rtype if isinstance(rtype, str) else "unknown", _rid(resource), reason))

    # -- Observations ---------------------------------------------------------------------------------
    def observation(self, obs: Mapping[str, Any]) -> None:
        kinds: set[str] = set()
        code = ""
        for system, c, _d in codings_of(obs.get("code")):
            found = self.index.members(system, c) & _LAB_SET
            if found and not kinds:
                code = c
            kinds |= found
        if not kinds:
            return  # not an analyte any rule uses: ignore cheaply
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
            parse_datetime(obs.get("effectiveDateTime"))
            or _period_time(obs.get("effectivePeriod"))
            or parse_datetime(obs.get("effectiveInstant"))
        )
        uncertain = False
        if when is None:
            when = parse_datetime(obs.get("issued"))
            uncertain = True
        if when is None:
            self.skip(obs, "no usable effective time")
            return
        kind = sorted(kinds)[0]
        analyte = KIND_ANALYTE[kind]
        unit_code = quantity.get("code") if isinstance(quantity.get("code"), str) else None
        unit_text = quantity.get("unit") if isinstance(quantity.get("unit"), str) else None
        try:
            normalized = convert(analyte, value, unit_code, unit_text)
        except UnknownUnitError:
            self.skip(obs, f"unit {unit_code or unit_text or '(none)'!r} not accepted for {analyte}")
            return
        comparator = quantity.get("comparator") if quantity.get("comparator") in (">", ">=", "<", "<=") else ""
        low, high = self._reference_range(obs, analyte, unit_code, unit_text)
        specimen = obs.get("specimen")
        spec_ref = specimen.get("reference") if isinstance(specimen, dict) else None
        rid = _rid(obs)
        for k in sorted(kinds):
            self.labs.append(
                LabResult(
                    analyte=KIND_ANALYTE[k], kind=k, value=normalized, unit=_canonical(analyte),
                    original_value=value, original_unit=unit_code or unit_text or "",
                    time=when, resource_type="Observation", resource_id=rid, code=code,
                    comparator=str(comparator), time_uncertain=uncertain,
                    specimen=spec_ref if isinstance(spec_ref, str) else "",
                    ref_low=low, ref_high=high, status=status,
                )
            )

    def _reference_range(
        self, obs: Mapping[str, Any], analyte: str, unit_code: str | None, unit_text: str | None
    ) -> tuple[float | None, float | None]:
        ranges = obs.get("referenceRange")
        if not isinstance(ranges, list):
            return None, None
        chosen: Mapping[str, Any] | None = None
        for rng in ranges:
            if not isinstance(rng, dict):
                continue
            age = rng.get("age")
            if isinstance(age, dict) and self.age is not None:
                lo = _number((age.get("low") or {}).get("value")) if isinstance(age.get("low"), dict) else None
                hi = _number((age.get("high") or {}).get("value")) if isinstance(age.get("high"), dict) else None
                if (lo is None or self.age >= lo) and (hi is None or self.age < hi + 1):
                    chosen = rng
                    break
            elif chosen is None and not rng.get("appliesTo"):
                chosen = rng
        if chosen is None:
            return None, None
        return (
            self._range_bound(chosen.get("low"), analyte, unit_code, unit_text),
            self._range_bound(chosen.get("high"), analyte, unit_code, unit_text),
        )

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
        try:
            return convert(analyte, value, code, text)
        except UnknownUnitError:
            return None

    # -- Conditions ---------------------------------------------------------------------------------------
    def condition(self, cond: Mapping[str, Any]) -> None:
        concept = cond.get("code")
        if concept is not None and not isinstance(concept, dict):
            self.skip(cond, "code is not a CodeableConcept")
            return
        codings = codings_of(concept)
        groups = self.index.codings_in((s, c) for s, c, _d in codings) & _COND_SET
        text = " ".join([concept_text(concept)] + [d for _s, _c, d in codings])
        if CALCIPHYLAXIS_TEXT.search(text):
            groups.add("cond-calciphylaxis")
        for vs_id in self.index.text_patterns:  # condition value sets with a text fallback
            if vs_id in _COND_SET and vs_id not in groups and self.index.text_matches(vs_id, text):
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
        onset = parse_datetime(cond.get("onsetDateTime")) or _period_time(cond.get("onsetPeriod"))
        recorded = parse_datetime(cond.get("recordedDate")) or parse_datetime(cond.get("dateRecorded"))
        first = codings[0] if codings else ("", "", "")
        fact = ConditionFact(
            groups=frozenset(groups), code=first[1], system=first[0],
            display=concept_text(concept) or first[2], established=established,
            time=onset or recorded, resource_id=_rid(cond), recorded=recorded,
        )
        (self.conditions if established else self.possible).append(fact)

    def _abated(self, cond: Mapping[str, Any]) -> bool:
        if cond.get("abatementBoolean") is True:
            return True
        when = parse_datetime(cond.get("abatementDateTime")) or _period_time(cond.get("abatementPeriod"))
        if when is not None:
            return when <= self.now
        return any(cond.get(k) is not None for k in ("abatementString", "abatementAge", "abatementRange"))

    # -- Procedures ---------------------------------------------------------------------------------------
    def procedure(self, proc: Mapping[str, Any]) -> None:
        codings = codings_of(proc.get("code"))
        groups = self.index.codings_in((s, c) for s, c, _d in codings) & _PROC_SET
        if not groups:
            return
        if proc.get("status") not in PROCEDURE_STATUSES:
            return
        when = parse_datetime(proc.get("performedDateTime")) or _period_time(proc.get("performedPeriod"))
        self.procedures.append(
            ProcedureFact(
                groups=frozenset(groups), code=codings[0][1], display=concept_text(proc.get("code")),
                time=when, resource_id=_rid(proc),
            )
        )

    # -- Medications ----------------------------------------------------------------------------------------
    def medication(self, med: Mapping[str, Any]) -> None:
        rtype = str(med.get("resourceType"))
        status = med.get("status")
        if rtype == "MedicationStatement":
            if status != "active":
                return
        else:
            if status not in MEDREQ_STATUSES:
                return
            intent = med.get("intent")
            # DSTU2 MedicationOrder has no intent; an R4 request must be an order or plan.
            if intent is not None and intent not in MEDREQ_INTENTS:
                return
        classes, name = classify_medication(med, self.index, self.medication_resources)
        if classes:
            self.medications.append(MedicationFact(frozenset(classes), name, rtype, _rid(med)))


def _canonical(analyte: str) -> str:
    return canonical_unit(analyte)


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
    if not classes:
        joined = " | ".join(names)
        classes = {vs for vs in _MED_SET if joined and index.text_matches(vs, joined)}
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
    ex = _Extractor(index, now, include_preliminary, facts0.age_years())
    items: Sequence[object] = list(resources)
    usable: list[Mapping[str, Any]] = []
    for res in items:
        if not isinstance(res, dict):
            ex.skipped.append(Skipped("unknown", "", "not a JSON object"))
            continue
        rtype = res.get("resourceType")
        if not isinstance(rtype, str):
            ex.skipped.append(Skipped("unknown", _rid(res), "no resourceType"))
            continue
        if rtype == "Medication" and _rid(res):
            ex.medication_resources[_rid(res)] = res
        elif rtype == "DiagnosticReport":
            for ref in res.get("result") or []:
                if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
                    ex.report_members.setdefault(ref["reference"], set()).add(_rid(res))
        elif rtype == "Patient" and patient is None and not patient_id:
            patient_id = _rid(res)
        usable.append(res)
    handlers = {
        "Observation": ex.observation,
        "Condition": ex.condition,
        "Procedure": ex.procedure,
        "MedicationRequest": ex.medication,
        "MedicationOrder": ex.medication,
        "MedicationStatement": ex.medication,
    }
    for res in usable:
        handler = handlers.get(str(res.get("resourceType")))
        if handler is None:
            continue
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
    )


def _with_reports(result: LabResult, reports: set[str] | None) -> LabResult:
    if not reports:
        return result
    return replace(result, reports=frozenset(reports))
