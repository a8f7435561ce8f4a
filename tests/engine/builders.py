"""Small FHIR JSON builders for engine tests; ``d-N`` dates are relative to NOW (clinical-rules.md section 5)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from cds_service.engine import Assessment, EngineOptions, PatientRecord, assess

NOW = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
V3_ROUTE = "http://terminology.hl7.org/CodeSystem/v3-RouteOfAdministration"

LAB_CODES = {
    "ca": ("17861-6", "mg/dL"),
    "ca_si": ("2000-8", "mmol/L"),
    "ca_blood": ("49765-1", "mg/dL"),
    "ica": ("1994-3", "mmol/L"),
    "ca_corr": ("29265-6", "mmol/L"),
    "p": ("2777-1", "mg/dL"),
    "p_si": ("14879-1", "mmol/L"),
    "alb": ("1751-7", "g/dL"),
    "pth": ("2731-8", "pg/mL"),
    "vitd": ("62292-8", "ng/mL"),
    "vitd125": ("62290-2", "pg/mL"),
    "alp": ("6768-6", "U/L"),
    "egfr": ("33914-3", "mL/min/{1.73_m2}"),
    "k": ("2823-3", "mmol/L"),
    "urate": ("3084-1", "mg/dL"),
    "bmi": ("39156-5", "kg/m2"),
    "bicarb": ("1963-8", "mmol/L"),
}

_ids = itertools.count(1)


def when(days: float = 0, hours: float = 0) -> str:
    """ISO time ``days`` days and ``hours`` hours before NOW."""
    return (NOW - timedelta(days=days, hours=hours)).isoformat().replace("+00:00", "Z")


def patient(age: float, gender: str = "male", pid: str = "pt1") -> dict[str, Any]:
    """A Patient born ``age`` years (plus 40 days) before NOW."""
    born = NOW - timedelta(days=int(age * 365.25) + 40)
    return {"resourceType": "Patient", "id": pid, "gender": gender, "birthDate": born.date().isoformat()}


def infant(months: int, gender: str = "male") -> dict[str, Any]:
    """A Patient ``months`` months old."""
    born = NOW - timedelta(days=months * 30 + 5)
    return {"resourceType": "Patient", "id": "pt1", "gender": gender, "birthDate": born.date().isoformat()}


def obs(
    kind: str,
    value: float,
    days: float = 0,
    *,
    unit: str | None = None,
    at: str | None = None,
    specimen: str | None = None,
    status: str = "final",
    comparator: str | None = None,
    ref: tuple[float | None, float | None] | None = None,
    oid: str | None = None,
    hours: float = 0,
) -> dict[str, Any]:
    """A lab Observation of ``kind`` (key of LAB_CODES) with a valueQuantity."""
    code, default_unit = LAB_CODES[kind]
    u = unit or default_unit
    quantity: dict[str, Any] = {"value": value, "unit": u, "system": "http://unitsofmeasure.org", "code": u}
    if comparator:
        quantity["comparator"] = comparator
    res: dict[str, Any] = {
        "resourceType": "Observation",
        "id": oid or f"obs{next(_ids)}",
        "status": status,
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": "Patient/pt1"},
        "effectiveDateTime": at or when(days, hours),
        "valueQuantity": quantity,
    }
    if specimen:
        res["specimen"] = {"reference": f"Specimen/{specimen}"}
    if ref:
        rng: dict[str, Any] = {}
        if ref[0] is not None:
            rng["low"] = {"value": ref[0], "unit": u, "code": u}
        if ref[1] is not None:
            rng["high"] = {"value": ref[1], "unit": u, "code": u}
        res["referenceRange"] = [rng]
    return res


def cond(
    code: str,
    system: str = ICD10,
    *,
    clinical: str | None = "active",
    verification: str | None = "confirmed",
    recorded_days: float | None = None,
    text: str | None = None,
) -> dict[str, Any]:
    """A Condition with R4 clinical/verification status CodeableConcepts."""
    res: dict[str, Any] = {
        "resourceType": "Condition",
        "id": f"cond{next(_ids)}",
        "subject": {"reference": "Patient/pt1"},
        "code": {"coding": [{"system": system, "code": code}]},
    }
    if text:
        res["code"]["text"] = text
    if clinical:
        res["clinicalStatus"] = {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": clinical}]}
    if verification:
        res["verificationStatus"] = {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": verification}]}
    if recorded_days is not None:
        res["recordedDate"] = when(recorded_days)
    return res


def proc(code: str = "302497006", days: float = 2, status: str = "completed") -> dict[str, Any]:
    """A Procedure (default: hemodialysis)."""
    return {
        "resourceType": "Procedure", "id": f"proc{next(_ids)}", "status": status,
        "subject": {"reference": "Patient/pt1"},
        "code": {"coding": [{"system": SNOMED, "code": code}]},
        "performedDateTime": when(days),
    }


def med(text: str, code: str | None = None, status: str = "active",
        rtype: str = "MedicationRequest") -> dict[str, Any]:
    """An existing medication (MedicationRequest intent order, or MedicationStatement)."""
    concept: dict[str, Any] = {"text": text}
    if code:
        concept["coding"] = [{"system": RXNORM, "code": code}]
    res: dict[str, Any] = {"resourceType": rtype, "id": f"med{next(_ids)}", "status": status,
                           "subject": {"reference": "Patient/pt1"}, "medicationCodeableConcept": concept}
    if rtype == "MedicationRequest":
        res["intent"] = "order"
    return res


def draft(
    oid: str,
    text: str | None,
    *,
    route: tuple[str, str] | None = None,
    route_text: str | None = None,
    code: str | None = None,
    dose: str | None = None,
    sandbox: bool = False,
) -> dict[str, Any]:
    """A draft MedicationRequest. ``sandbox`` mimics the CDS Hooks sandbox: no intent, single-object category."""
    res: dict[str, Any] = {"resourceType": "MedicationRequest", "id": oid, "status": "draft",
                           "subject": {"reference": "Patient/pt1"}}
    if sandbox:
        res["category"] = {"coding": [{"code": "inpatient"}]}
    else:
        res["intent"] = "order"
    if text is not None:
        concept: dict[str, Any] = {"text": text}
        if code:
            concept["coding"] = [{"system": RXNORM, "code": code, "display": text}]
        res["medicationCodeableConcept"] = concept
    dosage: dict[str, Any] = {}
    if route:
        dosage["route"] = {"coding": [{"system": route[0], "code": route[1]}]}
    if route_text:
        dosage.setdefault("route", {})["text"] = route_text
    if dose:
        dosage["text"] = dose
    if dosage:
        res["dosageInstruction"] = [dosage]
    return res


IV = (SNOMED, "47625008")
ORAL = (SNOMED, "26643006")
SUBCUT = (SNOMED, "34206005")


def run(
    pt: dict[str, Any] | None,
    resources: list[dict[str, Any]],
    hook: str = "patient-view",
    drafts: list[dict[str, Any]] | None = None,
    selections: list[str] | None = None,
    **options: bool,
) -> Assessment:
    """Assess a record at NOW."""
    drafts = drafts or []
    if selections is None:
        selections = [f"MedicationRequest/{d['id']}" for d in drafts if isinstance(d, dict) and "id" in d]
    record = PatientRecord(patient=pt, resources=resources, draft_orders=drafts, selections=selections)
    return assess(record, hook, NOW, EngineOptions(**options))


def outcome(assessment: Assessment) -> list[tuple[str, str]]:
    """(rule_id, indicator) of every card, in the returned order."""
    return [(c.rule_id, c.indicator) for c in assessment.cards]


def card(assessment: Assessment, rule_id: str) -> dict[str, Any]:
    """The card JSON of ``rule_id`` (fails the test if absent)."""
    for c in assessment.cards:
        if c.rule_id == rule_id:
            return c.card
    raise AssertionError(f"no {rule_id} card in {outcome(assessment)}")


def action_codes(card_json: dict[str, Any]) -> set[str]:
    """LOINC codes of every ServiceRequest created by the card's suggestions."""
    codes = set()
    for s in card_json.get("suggestions", []):
        for a in s.get("actions", []):
            res = a.get("resource") or {}
            for c in (res.get("code") or {}).get("coding", []):
                codes.add(c["code"])
    return codes
