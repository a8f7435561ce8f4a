"""Small FHIR JSON builders for engine tests; ``d-N`` dates are relative to NOW (clinical-rules.md section 5)."""

from __future__ import annotations

import itertools
import json
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
    # revision 2 (clinical-rules.md §8): PTH in pmol/L (C8), whole-blood potassium (§8.0), magnesium (C17)
    "pth_si": ("14866-8", "pmol/L"),
    "k_blood": ("6298-4", "mmol/L"),
    "mg": ("19123-9", "mg/dL"),
    "mg_si": ("2601-3", "mmol/L"),
    "ica_serum": ("1995-0", "mmol/L"),
}
CPT = "http://www.ama-assn.org/go/cpt"
OBS_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"

# Procedure codes used by the revision-2 tests (SNOMED CT, as in fhir_mappings/valuesets/proc-dialysis.json).
HEMODIALYSIS = "302497006"
RENAL_DIALYSIS = "265764009"          # "renal dialysis": counts as intermittent (§8.0)
PERITONEAL_DIALYSIS = "71192002"
CRRT = "714749008"
PD_CATHETER_REMOVAL = "10848006"      # an access procedure: never dialysis (§8 C5)
ALBUMIN_DIALYSIS = "427053002"        # extracorporeal albumin dialysis: liver support, not dialysis (§8 C5)
HEMOPERFUSION_CPT = "90997"           # not dialysis (§8 C5)
ACCESS_MEASUREMENT = "439278006"      # access measurement: not dialysis (§8 C5)
KIDNEY_TRANSPLANT = "70536003"
# Parathyroidectomy: CPT 60500 as in fhir_mappings/valuesets/proc-parathyroidectomy.json (use system=CPT).
PARATHYROIDECTOMY = "60500"

_ids = itertools.count(1)


def when(days: float = 0, hours: float = 0, minutes: float = 0) -> str:
    """ISO time ``days`` days, ``hours`` hours and ``minutes`` minutes before NOW (negative: after NOW)."""
    return (NOW - timedelta(days=days, hours=hours, minutes=minutes)).isoformat().replace("+00:00", "Z")


def patient(age: float, gender: str = "male", pid: str = "pt1") -> dict[str, Any]:
    """A Patient born ``age`` years (plus 40 days) before NOW."""
    born = NOW - timedelta(days=int(age * 365.25) + 40)
    return {"resourceType": "Patient", "id": pid, "gender": gender, "birthDate": born.date().isoformat()}


def born(years: int, days_after_birthday: int = 0, gender: str = "male") -> dict[str, Any]:
    """A Patient whose ``years``-th birthday is ``days_after_birthday`` days before NOW (negative: not yet).

    ``born(13, 0)`` turns 13 today; ``born(13, -1)`` is 12 and turns 13 tomorrow (§8 C11 age boundaries).
    """
    today = NOW.date()
    birthday = today.replace(year=today.year - years) - timedelta(days=days_after_birthday)
    return {"resourceType": "Patient", "id": "pt1", "gender": gender, "birthDate": birthday.isoformat()}


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
    ranges: list[dict[str, Any]] | None = None,
    interpretation: str | None = None,
    minutes: float = 0,
) -> dict[str, Any]:
    """A lab Observation of ``kind`` (key of LAB_CODES) with a valueQuantity.

    ``ref`` gives one reference range without an age band; ``ranges`` gives full ``referenceRange`` entries
    (see ``ref_range``); ``interpretation`` is a v3 ObservationInterpretation code such as "H" or "HH".
    """
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
        "effectiveDateTime": at or when(days, hours, minutes),
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
    if ranges is not None:
        res["referenceRange"] = ranges
    if interpretation:
        res["interpretation"] = [{"coding": [{"system": OBS_INTERPRETATION, "code": interpretation}]}]
    return res


def ref_range(
    low: float | None,
    high: float | None,
    unit: str,
    age: tuple[float | None, float | None, str] | None = None,
) -> dict[str, Any]:
    """One ``referenceRange`` entry; ``age`` = (low, high, UCUM unit "a" | "mo" | "wk" | "d") (§8 C11)."""
    rng: dict[str, Any] = {}
    if low is not None:
        rng["low"] = {"value": low, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}
    if high is not None:
        rng["high"] = {"value": high, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}
    if age is not None:
        band: dict[str, Any] = {}
        names = {"a": "years", "mo": "months", "wk": "weeks", "d": "days"}
        for key, value in (("low", age[0]), ("high", age[1])):
            if value is not None:
                band[key] = {"value": value, "unit": names.get(age[2], age[2]),
                             "system": "http://unitsofmeasure.org", "code": age[2]}
        rng["age"] = band
    return rng


def cond(
    code: str,
    system: str = ICD10,
    *,
    clinical: str | None = "active",
    verification: str | None = "confirmed",
    recorded_days: float | None = None,
    text: str | None = None,
    onset_days: float | None = None,
    display: str | None = None,
) -> dict[str, Any]:
    """A Condition with R4 clinical/verification status CodeableConcepts (``onset_days``: onsetDateTime)."""
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
    if onset_days is not None:
        res["onsetDateTime"] = when(onset_days)
    if display:
        res["code"]["coding"][0]["display"] = display
    return res


def proc(
    code: str = "302497006",
    days: float = 2,
    status: str = "completed",
    *,
    system: str = SNOMED,
    display: str | None = None,
    period: tuple[str, str | None] | None = None,
    performed_string: str | None = None,
    undated: bool = False,
) -> dict[str, Any]:
    """A Procedure (default: hemodialysis performed ``days`` before NOW).

    ``period`` = (start, end or None) ISO times gives ``performedPeriod`` instead (§8.0 procedure dates);
    ``performed_string`` gives ``performedString``; ``undated`` leaves ``performed[x]`` out.
    """
    coding: dict[str, Any] = {"system": system, "code": code}
    if display:
        coding["display"] = display
    res: dict[str, Any] = {
        "resourceType": "Procedure", "id": f"proc{next(_ids)}", "status": status,
        "subject": {"reference": "Patient/pt1"},
        "code": {"coding": [coding]},
    }
    if display:
        res["code"]["text"] = display
    if period is not None:
        res["performedPeriod"] = {"start": period[0]} | ({"end": period[1]} if period[1] else {})
    elif performed_string is not None:
        res["performedString"] = performed_string
    elif not undated:
        res["performedDateTime"] = when(days)
    return res


def service_request(code: str, status: str = "active", *, system: str = SNOMED,
                    text: str | None = None) -> dict[str, Any]:
    """A ServiceRequest (e.g. an active CRRT order, §8.0 C2/C7 data)."""
    concept: dict[str, Any] = {"coding": [{"system": system, "code": code}]}
    if text:
        concept["text"] = text
    return {"resourceType": "ServiceRequest", "id": f"sr{next(_ids)}", "status": status, "intent": "order",
            "subject": {"reference": "Patient/pt1"}, "code": concept}


def med(
    text: str,
    code: str | None = None,
    status: str = "active",
    rtype: str = "MedicationRequest",
    *,
    authored_days: float | None = None,
    effective_days: float | None = None,
    effective_period: tuple[float, float | None] | None = None,
    asserted_days: float | None = None,
) -> dict[str, Any]:
    """An existing medication (MedicationRequest intent order, or MedicationStatement), of any status.

    Dates (§8.0 C16): ``authored_days`` -> MedicationRequest.authoredOn; ``effective_days`` ->
    MedicationStatement.effectiveDateTime; ``effective_period`` = (start days, end days or None) ->
    effectivePeriod; ``asserted_days`` -> MedicationStatement.dateAsserted.
    """
    concept: dict[str, Any] = {"text": text}
    if code:
        concept["coding"] = [{"system": RXNORM, "code": code, "display": text}]
    res: dict[str, Any] = {"resourceType": rtype, "id": f"med{next(_ids)}", "status": status,
                           "subject": {"reference": "Patient/pt1"}, "medicationCodeableConcept": concept}
    if rtype == "MedicationRequest":
        res["intent"] = "order"
        if authored_days is not None:
            res["authoredOn"] = when(authored_days)
    else:
        if effective_days is not None:
            res["effectiveDateTime"] = when(effective_days)
        if effective_period is not None:
            start, end = effective_period
            res["effectivePeriod"] = {"start": when(start)} | ({"end": when(end)} if end is not None else {})
        if asserted_days is not None:
            res["dateAsserted"] = when(asserted_days)
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


# --- revision-2 drafts (clinical-rules.md §8 C2, C3, C7, C16, C17) ------------------------------------------

def iv_gluconate(oid: str = "rxca", route: tuple[str, str] | None = IV) -> dict[str, Any]:
    """Calcium gluconate 1 g IV (``route=None``: no route, inferred IV for an injectable salt)."""
    return draft(oid, "Calcium gluconate 1 g in 100 mL", route=route)


def ca_chloride(oid: str = "rxcl", route: tuple[str, str] | None = None) -> dict[str, Any]:
    """Calcium chloride 100 mg/mL injection, without a route by default (TP11/TP23)."""
    return draft(oid, "Calcium Chloride 100 MG/ML Injectable Solution", route=route)


def iv_sodium_phosphate(oid: str = "rxpo4", route: tuple[str, str] | None = IV) -> dict[str, Any]:
    """Sodium phosphates 15 mmol IV."""
    return draft(oid, "Sodium phosphates 15 mmol in 250 mL", route=route)


def warfarin_draft(oid: str = "rxwarf", route: tuple[str, str] | None = ORAL) -> dict[str, Any]:
    """Warfarin sodium 5 mg oral tablet (RxNorm 855332, ingredient 11289)."""
    return draft(oid, "Warfarin Sodium 5 MG Oral Tablet", code="855332", route=route)


def al_hydroxide_draft(oid: str = "rxal", route: tuple[str, str] | None = ORAL) -> dict[str, Any]:
    """Aluminium hydroxide 500 mg oral (RxNorm 243449)."""
    return draft(oid, "Aluminum Hydroxide 500 MG Oral Tablet", code="243449", route=route)


def mg_oxide_draft(oid: str = "rxmg", route: tuple[str, str] | None = ORAL) -> dict[str, Any]:
    """Magnesium oxide 400 mg oral (RxNorm 198741)."""
    return draft(oid, "Magnesium Oxide 400 MG Oral Tablet", code="198741", route=route)


def mg_sulfate_iv(oid: str = "rxmgso4") -> dict[str, Any]:
    """Magnesium sulfate 2 g IV: out of R21's scope (§8.0 C17)."""
    return draft(oid, "Magnesium sulfate 2 g in 50 mL", route=IV)


def pn_admixture(oid: str = "rxpn", calcium: bool = True, phosphate: bool = True) -> dict[str, Any]:
    """A parenteral-nutrition admixture with calcium gluconate and/or potassium phosphate, IV (§8 C7)."""
    parts = ["Parenteral nutrition admixture: amino acids 5%, dextrose 15%"]
    if calcium:
        parts.append("calcium gluconate 10 mEq")
    if phosphate:
        parts.append("potassium phosphate 15 mmol")
    return draft(oid, ", ".join(parts), route=IV)


def crrt_fluid(oid: str = "rxcrrt", text: str = "Prismasol BGK 4/2.5 replacement fluid 5000 mL") -> dict[str, Any]:
    """A CRRT replacement fluid / dialysate containing calcium and phosphate: never R08/R09 (§8 C7)."""
    return draft(oid, text, route=IV)


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


def suggestion_kinds(card_json: dict[str, Any]) -> list[set[str]]:
    """Action types per suggestion, in order (e.g. ``[{"delete", "create"}, {"create"}, {"delete"}]``)."""
    return [{a.get("type", "") for a in s.get("actions", [])} for s in card_json.get("suggestions", [])]


def has_delete(card_json: dict[str, Any]) -> bool:
    """True when any suggestion of the card contains a ``delete`` action."""
    return any("delete" in kinds for kinds in suggestion_kinds(card_json))


def remove_only(card_json: dict[str, Any]) -> list[int]:
    """Indexes of suggestions that only delete ("Remove"; a Replace is delete + create)."""
    return [i for i, kinds in enumerate(suggestion_kinds(card_json)) if kinds == {"delete"}]


def card_text(card_json: dict[str, Any]) -> str:
    """Every human-readable string of the card (summary, detail, labels, descriptions, links)."""
    return json.dumps(card_json, ensure_ascii=False)


def action_codes(card_json: dict[str, Any]) -> set[str]:
    """LOINC codes of every ServiceRequest created by the card's suggestions."""
    codes = set()
    for s in card_json.get("suggestions", []):
        for a in s.get("actions", []):
            res = a.get("resource") or {}
            for c in (res.get("code") or {}).get("coding", []):
                codes.add(c["code"])
    return codes
