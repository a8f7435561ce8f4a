"""The FHIR test server harness answers the queries the service depends on, like a real R4 server would."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import requests

from tests.support.fhir_fixtures import ResourceLoader
from tests.support.fhir_server import FhirServerError, FhirTestServer, Resource
from tests.support.shared_data import SYNTHEA_DIR

pytestmark = pytest.mark.integration

LOINC = "http://loinc.org"
TOKEN = "test-token-" + uuid.uuid4().hex


def _new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _observation(patient_id: str, code: str, when: str, system: str = LOINC) -> Resource:
    return {
        "resourceType": "Observation",
        "id": _new_id("obs"),
        "status": "final",
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": when,
        "valueQuantity": {
            "value": 9.1,
            "unit": "mg/dL",
            "system": "http://unitsofmeasure.org",
            "code": "mg/dL",
        },
    }


def _condition(patient_id: str, snomed: str) -> Resource:
    return {
        "resourceType": "Condition",
        "id": _new_id("cond"),
        "subject": {"reference": f"Patient/{patient_id}"},
        "clinicalStatus": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
            ]
        },
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": snomed}]},
    }


def _ids(bundle: dict[str, Any]) -> list[str]:
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "searchset"
    return [entry["resource"]["id"] for entry in bundle.get("entry", [])]


@pytest.fixture
def patient_record(fhir_patient_loader: ResourceLoader) -> dict[str, Any]:
    """A patient with calcium/phosphate history, distractor observations, conditions, and a second patient."""
    patient_id, other_id = _new_id("pat"), _new_id("pat")
    calcium_old = _observation(patient_id, "17861-6", "2024-01-10")
    phosphate = _observation(patient_id, "2777-1", "2024-02-01T08:30:00+01:00")  # mixed date precision
    calcium_mid = _observation(patient_id, "17861-6", "2024-02-01")
    calcium_new = _observation(patient_id, "17861-6", "2024-03-05T10:00:00Z")
    distractors = [
        _observation(patient_id, "2160-0", "2024-04-01"),  # creatinine: other code
        _observation(patient_id, "17861-6", "2024-04-02", system="http://snomed.info/sct"),  # wrong system
        _observation(other_id, "17861-6", "2024-04-03"),  # other patient
    ]
    conditions = [_condition(patient_id, "46177005"), _condition(patient_id, "431857002")]
    resources: list[Resource] = [
        {"resourceType": "Patient", "id": patient_id, "name": [{"family": "Harness", "given": ["Ada"]}]},
        {"resourceType": "Patient", "id": other_id},
        calcium_old,
        phosphate,
        calcium_mid,
        calcium_new,
        *distractors,
        *conditions,
        _condition(other_id, "46177005"),
    ]
    fhir_patient_loader(resources)
    return {
        "patient_id": patient_id,
        "conditions": [c["id"] for c in conditions],
        "labs_newest_first": [calcium_new["id"], phosphate["id"], calcium_mid["id"], calcium_old["id"]],
    }


@pytest.fixture(scope="module")
def token_server() -> Iterator[FhirTestServer]:
    with FhirTestServer.start(require_token=TOKEN) as server:
        yield server


def test_harness_starts_in_a_few_seconds() -> None:
    started = time.monotonic()
    with FhirTestServer.start() as server:
        elapsed = time.monotonic() - started
        metadata = requests.get(f"{server.base_url}/metadata", timeout=10).json()
    assert elapsed < 8.0, f"start took {elapsed:.1f} s"
    assert metadata["resourceType"] == "CapabilityStatement"
    assert metadata["fhirVersion"] == "4.0.1"
    assert "security" in metadata["rest"][0]  # the SMART launcher needs it (real-components.md A.2)
    assert server.base_url.startswith("http://127.0.0.1:")
    assert not server.is_running()


def test_lab_query_returns_codes_newest_first(
    fhir_server: FhirTestServer, patient_record: dict[str, Any]
) -> None:
    answer = requests.get(
        f"{fhir_server.base_url}/Observation",
        params={
            "patient": patient_record["patient_id"],
            "code": f"{LOINC}|17861-6,{LOINC}|2777-1",
            "_sort": "-date",
            "_count": "50",
        },
        timeout=30,
    )
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("application/fhir+json")
    bundle = answer.json()
    assert _ids(bundle) == patient_record["labs_newest_first"]
    assert bundle["total"] == 4
    for entry in bundle["entry"]:
        assert entry["fullUrl"] == f"{fhir_server.base_url}/Observation/{entry['resource']['id']}"


def test_condition_search_by_patient(fhir_server: FhirTestServer, patient_record: dict[str, Any]) -> None:
    answer = requests.get(
        f"{fhir_server.base_url}/Condition?patient={patient_record['patient_id']}", timeout=30
    )
    assert answer.status_code == 200
    assert sorted(_ids(answer.json())) == sorted(patient_record["conditions"])


def test_patient_read_and_missing_patient(
    fhir_server: FhirTestServer, patient_record: dict[str, Any]
) -> None:
    patient_id = patient_record["patient_id"]
    patient = requests.get(f"{fhir_server.base_url}/Patient/{patient_id}", timeout=10)
    assert patient.status_code == 200
    assert patient.json()["id"] == patient_id
    assert patient.json()["name"][0]["family"] == "Harness"
    missing = requests.get(f"{fhir_server.base_url}/Patient/{_new_id('nobody')}", timeout=10)
    assert missing.status_code == 404
    assert missing.json()["resourceType"] == "OperationOutcome"


def test_form_encoded_post_search(fhir_server: FhirTestServer, patient_record: dict[str, Any]) -> None:
    # The CDS Hooks sandbox sends prefetch queries this way first (real-components.md C.1).
    answer = requests.post(
        f"{fhir_server.base_url}/Observation/_search",
        data={
            "patient": patient_record["patient_id"],
            "code": f"{LOINC}|17861-6,{LOINC}|2777-1",
            "_sort": "-date",
        },
        timeout=30,
    )
    assert answer.status_code == 200
    assert _ids(answer.json()) == patient_record["labs_newest_first"]


def test_create_answers_201_with_location(fhir_server: FhirTestServer) -> None:
    answer = requests.post(f"{fhir_server.base_url}/Patient", json={"resourceType": "Patient"}, timeout=10)
    assert answer.status_code == 201
    created = answer.json()
    assert answer.headers["Location"].startswith(f"{fhir_server.base_url}/Patient/{created['id']}")
    fhir_server.delete("Patient", created["id"])


def test_loader_rejects_resources_without_a_valid_id(fhir_server: FhirTestServer) -> None:
    with pytest.raises(ValueError, match="needs an id"):
        fhir_server.load([{"resourceType": "Patient", "id": "has space"}])


def test_server_refusal_carries_the_operation_outcome(fhir_server: FhirTestServer) -> None:
    # A transaction that deletes a resource that does not exist is refused as a whole (404 Not found).
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": f"Patient/{_new_id('nobody')}"}}],
    }
    with pytest.raises(FhirServerError, match="HTTP 404: Not found"):
        fhir_server.post_bundle(bundle)


def test_token_is_required_and_recorded_without_its_value(token_server: FhirTestServer) -> None:
    token_server.clear_requests()
    without = requests.get(f"{token_server.base_url}/Patient", timeout=10)
    wrong = requests.get(
        f"{token_server.base_url}/Patient", headers={"Authorization": "Bearer nope"}, timeout=10
    )
    right = requests.get(
        f"{token_server.base_url}/Patient", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert without.status_code == 401
    assert without.json()["resourceType"] == "OperationOutcome"
    assert wrong.status_code == 401
    assert right.status_code == 200
    assert right.json()["type"] == "searchset"
    seen = token_server.requests()
    assert [(r["method"], r["url"], r["authorization_present"]) for r in seen] == [
        ("GET", "/fhir/Patient", False),
        ("GET", "/fhir/Patient", True),
        ("GET", "/fhir/Patient", True),
    ]
    assert TOKEN not in json.dumps(seen)
    token_server.clear_requests()
    assert token_server.requests() == []


def test_helper_sends_the_token_when_loading(token_server: FhirTestServer) -> None:
    patient_id = _new_id("pat")
    token_server.load([{"resourceType": "Patient", "id": patient_id}])
    read = requests.get(
        f"{token_server.base_url}/Patient/{patient_id}",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert read.status_code == 200


def test_latency_delays_every_fhir_response() -> None:
    with FhirTestServer.start(latency_ms=100) as server:
        started = time.monotonic()
        answer = requests.get(f"{server.base_url}/Patient", timeout=10)
        elapsed = time.monotonic() - started
    assert answer.status_code == 200
    assert elapsed >= 0.1, f"request took {elapsed * 1000:.0f} ms"


def test_synthea_transaction_bundle_loads_with_urn_uuid_references() -> None:
    files = sorted(SYNTHEA_DIR.glob("Dirk_Kuhlman_*.json"))
    if not files:
        pytest.skip(f"Synthea sample not found under {SYNTHEA_DIR} (set CALCINOSIS_SYNTHEA_DIR)")
    bundle = json.loads(files[0].read_text(encoding="utf-8"))
    assert bundle["type"] == "transaction"
    with FhirTestServer.start() as server:
        response = server.post_bundle(bundle)
        assert len(response["entry"]) == len(bundle["entry"])
        patients = requests.get(f"{server.base_url}/Patient?family=Kuhlman", timeout=30).json()
        assert patients["total"] == 1
        patient_id = patients["entry"][0]["resource"]["id"]
        # Synthea's calcium is LOINC 49765-1 (real-components.md B); its subject was urn:uuid:... in the file.
        calcium = requests.get(
            f"{server.base_url}/Observation",
            params={"subject": f"Patient/{patient_id}", "code": f"{LOINC}|49765-1", "_sort": "-date"},
            timeout=60,
        ).json()
    expected = sum(
        1
        for entry in bundle["entry"]
        if entry["resource"]["resourceType"] == "Observation"
        and any(c.get("code") == "49765-1" for c in entry["resource"]["code"].get("coding", []))
    )
    assert expected > 0
    assert calcium["total"] == expected
    # Compare instants, not strings: Synthea offsets change with daylight saving time.
    dates = [datetime.fromisoformat(entry["resource"]["effectiveDateTime"]) for entry in calcium["entry"]]
    assert dates == sorted(dates, reverse=True)


def test_failed_bundle_entry_is_an_error_even_when_the_bundle_answers_200(
    fhir_server: FhirTestServer,
) -> None:
    # Medplum answers a transaction entry without `request` with HTTP 200 and a 400 inside the entry.
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": {"resourceType": "Basic"}}],
    }
    with pytest.raises(FhirServerError, match="entry\\[0\\] 400: Missing Bundle entry request method"):
        fhir_server.post_bundle(bundle)
