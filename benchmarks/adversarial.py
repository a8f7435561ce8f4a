"""Adversarial hook bodies for the benchmark (issue 16 item 1): records shaped to make per-record work blow up.

- ``pairing_body``: 500 calcium x 500 phosphate results and 2,000 dialysis sessions in the same weeks (0.9 MB):
  nested Ca x P x session scans took 19 s of CPU for one request before pairing was indexed;
- ``conditions_body``: 10,000 Conditions, half of them malformed (skipped resources are counted per reason);
- ``small_resources_body``: as many small Observations as fit under the request-size limit.

Run alone to print the body sizes and the in-process evaluation time of each (engine only, no HTTP)::

    python benchmarks/adversarial.py
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from cds_service.services import service_definitions  # noqa: E402

PATIENT = "bench-adversarial"
NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
LOINC = "http://loinc.org"


def _when(minutes_ago: float) -> str:
    return (NOW - timedelta(minutes=minutes_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _lab(rid: str, code: str, value: float, unit: str, minutes_ago: float) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": rid, "status": "final",
            "code": {"coding": [{"system": LOINC, "code": code}]},
            "subject": {"reference": f"Patient/{PATIENT}"}, "effectiveDateTime": _when(minutes_ago),
            "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}}


def _searchset(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
            "entry": [{"resource": r} for r in resources]}


def _body(observations: list[dict[str, Any]], conditions: list[dict[str, Any]],
          procedures: list[dict[str, Any]], instance: str) -> dict[str, Any]:
    prefetch: dict[str, Any] = {
        "patient": {"resourceType": "Patient", "id": PATIENT, "gender": "female", "birthDate": "1960-01-01"},
        "observations": _searchset(observations), "conditions": _searchset(conditions),
        "procedures": _searchset(procedures),
    }
    for spec in service_definitions()[0].prefetch:
        prefetch.setdefault(spec.key, _searchset([]))
    return {"hook": "patient-view", "hookInstance": instance,
            "context": {"userId": "Practitioner/bench-1", "patientId": PATIENT}, "prefetch": prefetch}


def pairing_body(instance: str, calcium: int = 500, phosphate: int = 500, sessions: int = 2000) -> dict[str, Any]:
    """Many Ca x many P x many dialysis sessions, all within the same weeks (worst case for pairing)."""
    obs = [_lab(f"ca-{n}", "17861-6", 9.0 + (n % 30) / 10, "mg/dL", 7 + n * 37) for n in range(calcium)]
    obs += [_lab(f"p-{n}", "2777-1", 5.0 + (n % 25) / 10, "mg/dL", 11 + n * 37) for n in range(phosphate)]
    procedures = [{"resourceType": "Procedure", "id": f"hd-{n}", "status": "completed",
                   "code": {"coding": [{"system": "http://snomed.info/sct", "code": "302497006",
                                        "display": "Hemodialysis"}]},
                   "subject": {"reference": f"Patient/{PATIENT}"},
                   "performedPeriod": {"start": _when(20 + n * 9), "end": _when(n * 9)}} for n in range(sessions)]
    conditions = [{"resourceType": "Condition", "id": "esrd", "clinicalStatus": {"coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "N18.6"}]},
        "subject": {"reference": f"Patient/{PATIENT}"}}]
    return _body(obs, conditions, procedures, instance)


def conditions_body(instance: str, count: int = 10_000) -> dict[str, Any]:
    """10,000 Conditions: half coded CKD/diabetes variants, half malformed (code is not a CodeableConcept)."""
    conditions: list[dict[str, Any]] = []
    for n in range(count):
        if n % 2:
            conditions.append({"resourceType": "Condition", "id": f"bad-{n}", "code": "N18.6"})
        else:
            conditions.append({"resourceType": "Condition", "id": f"c-{n}", "clinicalStatus": {"coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
                "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": f"E11.{n % 10}"}]},
                "subject": {"reference": f"Patient/{PATIENT}"}})
    return _body([_lab("ca", "17861-6", 10.4, "mg/dL", 60), _lab("p", "2777-1", 7.2, "mg/dL", 60)],
                 conditions, [], instance)


def small_resources_body(instance: str, limit_bytes: int) -> dict[str, Any]:
    """As many small potassium Observations as fit in ``limit_bytes`` (with room for the envelope)."""
    # Sized as the benchmark sends it (json.dumps with its default separators), with room for the envelope.
    sample = json.dumps({"resource": _lab("k-0000000", "2823-3", 4.1, "mmol/L", 99_999)})
    count = int((limit_bytes * 0.9) // (len(sample) + 2))
    obs = [_lab(f"k-{n}", "2823-3", 3.5 + (n % 20) / 10, "mmol/L", n % 100_000) for n in range(count)]
    obs += [_lab("ca", "17861-6", 10.4, "mg/dL", 60), _lab("p", "2777-1", 7.2, "mg/dL", 60)]
    return _body(obs, [], [], instance)


def main() -> int:
    """Print each body's size and its in-process evaluation time (extract + rules + cards), three runs each."""
    from cds_service.engine import EngineOptions, PatientRecord, assess

    for name, body in (("pairing 500 Ca x 500 P x 2,000 sessions", pairing_body("x")),
                       ("10,000 Conditions", conditions_body("x")),
                       ("small resources up to 16 MB", small_resources_body("x", 16 * 1024 * 1024))):
        size = len(json.dumps(body, separators=(",", ":")))
        prefetch = body["prefetch"]
        resources = [e["resource"] for key, bundle in prefetch.items() if key != "patient"
                     for e in bundle.get("entry", [])]
        record = PatientRecord(patient=prefetch["patient"], resources=resources)
        times = []
        for _ in range(3):
            started = time.perf_counter()
            result = assess(record, "patient-view", NOW, EngineOptions())
            times.append(time.perf_counter() - started)
        print(f"{name}: {size / 1e6:.2f} MB, {len(resources)} resources, evaluation "
              f"min {min(times) * 1000:.0f} ms / max {max(times) * 1000:.0f} ms, "
              f"cards {[c.rule_id for c in result.cards]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
