"""The FHIR test server's per-type search expressions (issue 7) change no search result, byte for byte.

tests/fhir_server/search-parameters.mjs narrows R4's shared search parameter expressions to the members for each
resource type, which makes Medplum's in-memory searches ~10x faster. check-search-equivalence.mjs loads a corpus
into one MemoryRepository, answers every query through Medplum's router with the published expressions and again
after narrowing, and compares the answers as strings; it also compares the typed values of every narrowed
expression on a sample of every stored type. Two deliberately wrong narrowings show that the check can fail.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from cds_service.services import service_definitions
from synth import generate_patient, transaction_bundles
from tests.support.fhir_server import SERVER_DIR, FhirTestServer, ensure_node_modules
from tests.support.shared_data import SYNTHEA_DIR

pytestmark = pytest.mark.integration

Resource = dict[str, Any]
SEED = 7
EDGE = "edge-1"
DUPLICATE = {"system": "urn:test:ids", "value": "a-1"}  # complex values are not de-duplicated (they carry a path)
NON_EMPTY_SHARE = 0.5  # share of the queries that must return entries (the check is not vacuous)


def run_check(
    tmp_path: Path, bundles: list[Resource], queries: list[str], modes: tuple[str, ...] = ("per-type",),
    sample_per_type: int = 100,
) -> dict[str, dict[str, Any]]:
    """Run check-search-equivalence.mjs on a corpus; its JSON summary per mode."""
    node = shutil.which("node")
    assert node is not None, "node is not on PATH; install Node.js 20+ to run the FHIR test server"
    ensure_node_modules()
    corpus = tmp_path / "corpus.json"
    corpus.write_text(
        json.dumps({"bundles": bundles, "queries": queries, "sample_per_type": sample_per_type}), encoding="utf-8"
    )
    done = subprocess.run(
        [node, "--experimental-websocket", "check-search-equivalence.mjs", str(corpus), "--modes", ",".join(modes)],
        cwd=SERVER_DIR, capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    summaries: dict[str, dict[str, Any]] = json.loads(done.stdout)
    return summaries


def prefetch_queries(patient_id: str) -> list[str]:
    """Every discovery prefetch query of our services, for one patient."""
    return sorted({
        key.template.replace("{{context.patientId}}", patient_id)
        for service in service_definitions()
        for key in service.prefetch
        if "{{" not in key.template.replace("{{context.patientId}}", "")
    })


def per_patient_queries(patient_id: str) -> list[str]:
    """Searches beyond the prefetch ones: other sorts, dates, statuses, paging, includes."""
    return [
        *prefetch_queries(patient_id),
        f"Observation?patient={patient_id}&_sort=date",
        f"Observation?subject=Patient/{patient_id}&_sort=-date&_count=3&_offset=2",
        f"Observation?patient={patient_id}&date=ge2020-01-01&_sort=-date",
        f"Observation?patient={patient_id}&category=laboratory&_count=5",
        f"Observation?patient={patient_id}&code:not=http://loinc.org|17861-6&_sort=-date",
        f"Condition?patient={patient_id}&clinical-status=active",
        f"Condition?patient={patient_id}&_sort=-recorded-date",
        f"Procedure?patient={patient_id}&date=ge2020-01-01&_sort=date",
        f"MedicationRequest?patient={patient_id}&_sort=-authoredon",
        f"Encounter?patient={patient_id}&_sort=-date",
        f"DiagnosticReport?patient={patient_id}&_include=DiagnosticReport:result&_count=3",
    ]


def edge_resources() -> list[Resource]:
    """Hand-made resources for what a wrong narrowing would get wrong: duplicate primitive values (the union
    de-duplicates them, which decides their _sort key), periods and instants, a non-Patient subject, none."""
    subject = {"reference": f"Patient/{EDGE}"}
    loinc = {"system": "http://loinc.org", "code": "17861-6"}
    springfield = {"city": "Springfield", "country": "US"}
    return [
        {"resourceType": "Patient", "id": EDGE, "address": [springfield, {**springfield, "use": "old"}],
         "name": [{"family": "Edge", "given": ["Ann"]}, {"family": "Edge", "given": ["Ann"], "use": "old"}]},
        {"resourceType": "Patient", "id": "edge-2", "address": [springfield, {"city": "Zeta"}],
         "name": [{"family": "Edge", "given": ["Ann", "Zoe"]}]},
        {"resourceType": "Encounter", "id": "edge-enc", "status": "finished", "subject": subject,
         "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
         "period": {"start": "2024-03-01T08:00:00Z", "end": "2024-03-01T09:00:00Z"}},
        {"resourceType": "Observation", "id": "edge-obs-a", "status": "final", "subject": subject,
         "identifier": [DUPLICATE, DUPLICATE], "code": {"coding": [loinc, loinc]},
         "effectiveDateTime": "2024-03-01", "encounter": {"reference": "Encounter/edge-enc"}},
        {"resourceType": "Observation", "id": "edge-obs-b", "status": "final", "subject": subject,
         "identifier": [DUPLICATE, {"system": "urn:test:ids", "value": "b-1"}], "code": {"coding": [loinc]},
         "effectivePeriod": {"start": "2024-02-01T10:00:00+01:00", "end": "2024-02-02"}},
        {"resourceType": "Observation", "id": "edge-obs-c", "status": "amended", "subject": subject,
         "identifier": [{"system": "urn:test:ids", "value": "0-1"}], "code": {"text": "free text only"},
         "effectiveInstant": "2023-12-31T23:59:59.999Z"},
        {"resourceType": "Observation", "id": "edge-obs-group", "status": "final",
         "subject": {"reference": "Group/edge-group"}, "code": {"coding": [loinc]}},
        {"resourceType": "Observation", "id": "edge-obs-none", "status": "final", "code": {"coding": [loinc]}},
        {"resourceType": "Condition", "id": "edge-cond", "subject": subject, "recordedDate": "2022-05-05",
         "onsetPeriod": {"start": "2021-01-01"}, "code": {"coding": [{"system": "http://snomed.info/sct",
                                                                      "code": "46177005"}]}},
        {"resourceType": "MedicationStatement", "id": "edge-ms", "status": "active", "subject": subject,
         "medicationCodeableConcept": {"text": "calcitriol"}, "effectiveDateTime": "2024-01-01"},
        {"resourceType": "DiagnosticReport", "id": "edge-dr", "status": "final", "subject": subject,
         "code": {"text": "panel"}, "result": [{"reference": "Observation/edge-obs-a"},
                                              {"reference": "Observation/edge-obs-b"}]},
    ]


EDGE_QUERIES = [
    "Observation?_sort=identifier",
    "Observation?_sort=-identifier",
    "Observation?_sort=code",
    "Patient?_sort=address-city",
    "Patient?_sort=-address-city",
    "Patient?_sort=given",
    "Patient?address-city=springfield&given=ann",
    f"Observation?patient={EDGE}&_sort=date",
    f"Observation?patient={EDGE}&_sort=-date",
    f"Observation?patient=Patient/{EDGE}&identifier=urn:test:ids|a-1",
    "Observation?subject=Group/edge-group",
    "Observation?patient:missing=true",
    "Observation?encounter=Encounter/edge-enc",
    f"Observation?patient={EDGE}&date=ge2024-01-01&date=lt2024-03-01",
    f"Observation?patient={EDGE}&_revinclude=DiagnosticReport:result",
    f"MedicationStatement?patient={EDGE}&status=active",
    f"Encounter?patient={EDGE}&class=AMB",
]


def synthetic_corpus() -> tuple[list[Resource], list[str]]:
    """A slice of three synthetic patients (one per profile) plus the edge cases, and queries over them."""
    resources: list[Resource] = []
    queries: list[str] = list(EDGE_QUERIES)
    for index, profile in enumerate(("dialysis", "ckd", "ordinary")):
        patient = generate_patient(index, profile, years=1, seed=SEED)
        # A slice keeps the published-expression pass (the slow one: ~2 ms per resource and filter) short.
        kept = [patient.resources[0]]
        for kind, limit in (("Observation", 25), ("Condition", 20), ("Procedure", 10), ("MedicationRequest", 10)):
            kept += patient.of_type(kind)[:limit]
        resources += kept
        queries += per_patient_queries(patient.id)
    return [*transaction_bundles(resources), *transaction_bundles(edge_resources())], queries


@pytest.fixture(scope="module")
def synthetic_checks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The check on the synthetic corpus: the real narrowing and two wrong ones, in one Node process."""
    bundles, queries = synthetic_corpus()
    return run_check(tmp_path_factory.mktemp("equivalence"), bundles, queries,
                     modes=("per-type", "first-member", "no-dedup"))


def test_per_type_expressions_answer_every_query_with_the_same_bytes(
    synthetic_checks: dict[str, dict[str, Any]],
) -> None:
    summary = synthetic_checks["per-type"]
    queries = synthetic_corpus()[1]
    assert summary["query_mismatches"] == 0, summary["query_mismatch_examples"]
    assert summary["expression_mismatches"] == 0, summary["expression_mismatch_examples"]
    # Not vacuous: most queries return entries, and the narrowed expressions were evaluated on real values.
    assert summary["queries"] == len(queries)
    # Discovery also asks for data these records rarely hold (warfarin history, CRRT ServiceRequests, the
    # continuation keys of a split code list: issue 13; more of them since issue 16 item 4 measures the lists
    # percent-encoded), hence 0.5 rather than 0.7 of the queries.
    assert summary["queries_with_entries"] >= NON_EMPTY_SHARE * len(queries), summary
    assert summary["narrowed"] > 300
    # search-parameters.mjs picks the same union members as Medplum's getExpressionForResourceType, everywhere.
    assert summary["medplum_selection_mismatches"] == []
    assert summary["medplum_selections"] == summary["narrowed"]
    assert summary["expression_checks_with_values"] > 200, summary
    assert {"Observation", "Condition", "Procedure", "MedicationRequest", "Encounter"} <= set(
        summary["expression_types"]
    )
    # And the point of it: the same searches cost far less.
    assert summary["search_ms_after"] < summary["search_ms_before"] / 3, summary


@pytest.mark.parametrize("mode", ["first-member", "no-dedup"])
def test_the_check_notices_a_wrong_narrowing(synthetic_checks: dict[str, dict[str, Any]], mode: str) -> None:
    """first-member keeps another type's member (searches lose matches); no-dedup drops the union's
    de-duplication, which changes the _sort order of patients with two addresses in one city."""
    summary = synthetic_checks[mode]
    assert summary["query_mismatches"] > 0, summary
    assert summary["expression_mismatches"] > 0, summary


def synthea_with_own_ids(path: Path) -> tuple[str, list[Resource]]:
    """A Synthea transaction as PUT bundles with its own ids (urn:uuid references rewritten to Type/id),
    so the queries can name the patient; returns (patient id, bundles)."""
    bundle = json.loads(path.read_text(encoding="utf-8"))
    targets = {e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle["entry"]}
    text = re.sub(r'"(urn:uuid:[0-9a-f-]{36})"', lambda m: json.dumps(targets.get(m.group(1), m.group(1))),
                  json.dumps([e["resource"] for e in bundle["entry"]]))
    resources: list[Resource] = json.loads(text)
    patient_id = next(r["id"] for r in resources if r["resourceType"] == "Patient")
    return patient_id, transaction_bundles(resources)


@pytest.mark.slow
def test_per_type_expressions_on_synthea_records(tmp_path: Path) -> None:
    """Two whole Synthea records (~950 resources, 14 types) and searches on every type they hold."""
    files = [*sorted(SYNTHEA_DIR.glob("Dirk_Kuhlman_*.json")), *sorted(SYNTHEA_DIR.glob("Renea_Quigley_*.json"))]
    if len(files) < 2:
        pytest.skip(f"Synthea samples not found under {SYNTHEA_DIR} (set CALCINOSIS_SYNTHEA_DIR)")
    bundles: list[Resource] = []
    queries: list[str] = []
    for path in files:
        patient_id, loaded = synthea_with_own_ids(path)
        bundles += loaded
        queries += per_patient_queries(patient_id)
        for kind in ("Claim", "ExplanationOfBenefit", "Immunization", "CarePlan", "Goal", "DiagnosticReport"):
            queries.append(f"{kind}?patient={patient_id}&_sort=-date&_count=5")
        queries += [
            f"Observation?patient={patient_id}&code=http://loinc.org|49765-1&_sort=-date",
            f"Observation?patient={patient_id}&category=vital-signs&date=ge2015-01-01&_count=10",
            f"Encounter?patient={patient_id}&_revinclude=Observation:encounter&_count=2",
            f"Immunization?patient={patient_id}&status=completed",
        ]
    summary = run_check(tmp_path, bundles, queries, sample_per_type=60)["per-type"]
    assert summary["query_mismatches"] == 0, summary["query_mismatch_examples"]
    assert summary["expression_mismatches"] == 0, summary["expression_mismatch_examples"]
    assert summary["queries_with_entries"] >= NON_EMPTY_SHARE * len(queries), summary
    assert len(summary["expression_types"]) >= 10, summary


def test_server_timing_reports_processing_apart_from_latency() -> None:
    with FhirTestServer.start(latency_ms=60) as server:
        server.load([{"resourceType": "Patient", "id": "timing-1"},
                     {"resourceType": "Observation", "id": "timing-obs", "status": "final",
                      "code": {"text": "x"}, "subject": {"reference": "Patient/timing-1"}}])
        server.clear_requests()
        started = time.monotonic()
        answer = requests.get(f"{server.base_url}/Observation?patient=timing-1", timeout=10)
        elapsed_ms = (time.monotonic() - started) * 1000
        missing = requests.get(f"{server.base_url}/Observation/nope", timeout=10)
        seen = server.requests()
    assert answer.status_code == 200
    assert answer.json()["total"] == 1
    match = re.fullmatch(r"processing;dur=(\d+\.\d{3}), latency;dur=60", answer.headers["Server-Timing"])
    assert match, answer.headers["Server-Timing"]
    processing_ms = float(match.group(1))
    assert 0 < processing_ms < elapsed_ms - 60, (processing_ms, elapsed_ms)
    assert missing.status_code == 404
    assert "processing;dur=" in missing.headers["Server-Timing"]
    assert [(r["url"], r["status"]) for r in seen] == [
        ("/fhir/Observation?patient=timing-1", 200), ("/fhir/Observation/nope", 404)]
    assert seen[0]["processing_ms"] == pytest.approx(processing_ms, abs=0.001)
