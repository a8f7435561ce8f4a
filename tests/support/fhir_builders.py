"""Small builders of FHIR R4 resources and CDS Hooks requests for HTTP and integration tests.

Dates are relative to the real current time (the HTTP layer evaluates at "now"), e.g. ``days_ago=1``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from cds_service.services import service_definitions

LOINC = "http://loinc.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"

Resource = dict[str, Any]


def when(days_ago: float) -> str:
    """ISO timestamp ``days_ago`` days before now (UTC)."""
    return (datetime.now(UTC) - timedelta(days=days_ago)).replace(microsecond=0).isoformat()


def patient(pid: str, *, gender: str = "male", age_years: int = 58) -> Resource:
    """A Patient with a birth date giving ``age_years``."""
    birth = (datetime.now(UTC) - timedelta(days=365.25 * age_years + 30)).date().isoformat()
    return {"resourceType": "Patient", "id": pid, "gender": gender, "birthDate": birth,
            "name": [{"family": "Test", "given": [pid]}]}


def lab(pid: str, oid: str, loinc: str, value: float, unit: str, *, days_ago: float,
        specimen: str | None = None, status: str = "final") -> Resource:
    """A lab Observation with a UCUM valueQuantity."""
    obs: Resource = {
        "resourceType": "Observation", "id": oid, "status": status,
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "laboratory"}]}],
        "code": {"coding": [{"system": LOINC, "code": loinc}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": when(days_ago),
        "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
    }
    if specimen:
        obs["specimen"] = {"reference": f"Specimen/{specimen}"}
    return obs


def condition(pid: str, cid: str, icd10: str, *, display: str = "") -> Resource:
    """An active, confirmed Condition coded in ICD-10-CM."""
    return {
        "resourceType": "Condition", "id": cid,
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                       "code": "active"}]},
        "verificationStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
        "code": {"coding": [{"system": ICD10, "code": icd10, **({"display": display} if display else {})}]},
        "subject": {"reference": f"Patient/{pid}"},
    }


def iv_calcium_gluconate_draft(pid: str, mid: str) -> Resource:
    """A draft MedicationRequest for calcium gluconate 1 g IV."""
    return {
        "resourceType": "MedicationRequest", "id": mid, "status": "draft", "intent": "order",
        "medicationCodeableConcept": {"text": "Calcium Gluconate 100 MG/ML Injectable Solution"},
        "subject": {"reference": f"Patient/{pid}"},
        "dosageInstruction": [{"text": "1 g IV over 10 minutes", "route": {"coding": [
            {"system": SNOMED, "code": "47625008", "display": "Intravenous route"}]}}],
    }


def esrd_with_high_caxp(pid: str) -> list[Resource]:
    """ESRD patient with Ca 10.5 mg/dL and P 7.2 mg/dL drawn yesterday (Ca x P 75.6)."""
    return [
        patient(pid),
        condition(pid, f"{pid}-esrd", "N18.6", display="End stage renal disease"),
        lab(pid, f"{pid}-ca", "17861-6", 10.5, "mg/dL", days_ago=1, specimen=f"{pid}-s1"),
        lab(pid, f"{pid}-p", "2777-1", 7.2, "mg/dL", days_ago=1, specimen=f"{pid}-s1"),
        lab(pid, f"{pid}-alb", "1751-7", 3.9, "g/dL", days_ago=1, specimen=f"{pid}-s1"),
    ]


def healthy_adult(pid: str) -> list[Resource]:
    """No conditions; normal calcium and phosphate; normal eGFR."""
    return [
        patient(pid, gender="female", age_years=45),
        lab(pid, f"{pid}-ca", "17861-6", 9.2, "mg/dL", days_ago=0.2, specimen=f"{pid}-s1"),
        lab(pid, f"{pid}-p", "2777-1", 3.4, "mg/dL", days_ago=0.2, specimen=f"{pid}-s1"),
        lab(pid, f"{pid}-alb", "1751-7", 4.1, "g/dL", days_ago=0.2, specimen=f"{pid}-s1"),
        lab(pid, f"{pid}-egfr", "33914-3", 95, "mL/min/{1.73_m2}", days_ago=0.2),
    ]


def searchset(resources: list[Resource]) -> Resource:
    """A searchset Bundle of ``resources``."""
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
            "entry": [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": r} for r in resources]}


def prefetch_for(resources: list[Resource]) -> dict[str, Any]:
    """The prefetch object our discovery asks for, built from a patient's resources."""
    by_type: dict[str, list[Resource]] = {}
    for r in resources:
        by_type.setdefault(r["resourceType"], []).append(r)
    patients = by_type.get("Patient", [])
    prefetch = {
        "patient": patients[0] if patients else None,
        "observations": searchset(by_type.get("Observation", [])),
        "conditions": searchset(by_type.get("Condition", [])),
        "procedures": searchset(by_type.get("Procedure", [])),
        "serviceRequests": searchset(by_type.get("ServiceRequest", [])),
        "medications": searchset([r for r in by_type.get("MedicationRequest", []) if r.get("status") != "draft"]),
        "medicationStatements": searchset(by_type.get("MedicationStatement", [])),
    }
    # Discovery may advertise more keys of these types (a code list split to keep URLs short, the warfarin
    # history): the keys above already hold every resource of the type, so the others are empty.
    for spec in service_definitions()[0].prefetch:
        prefetch.setdefault(spec.key, searchset([]))
    return prefetch


def hook_request(hook: str, pid: str, *, prefetch: dict[str, Any] | None = None, fhir_server: str | None = None,
                 token: str | None = None, drafts: list[Resource] | None = None) -> dict[str, Any]:
    """A CDS Hooks request; order hooks get ``drafts`` as draftOrders (sandbox-style Bundle, no type)."""
    body: dict[str, Any] = {
        "hook": hook, "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/pr-1", "patientId": pid},
    }
    if fhir_server:
        body["fhirServer"] = fhir_server
    if token:
        body["fhirAuthorization"] = {"access_token": token, "token_type": "Bearer", "expires_in": 300,
                                     "scope": "patient/Observation.rs patient/Condition.rs patient/Patient.r",
                                     "subject": "calcinosis-cds", "patient": pid}
    if prefetch is not None:
        body["prefetch"] = prefetch
    if hook in ("order-select", "order-sign"):
        drafts = drafts or []
        body["context"]["draftOrders"] = {"resourceType": "Bundle", "entry": [{"resource": d} for d in drafts]}
        if hook == "order-select":
            body["context"]["selections"] = [f"MedicationRequest/{d['id']}" for d in drafts]
    return body
