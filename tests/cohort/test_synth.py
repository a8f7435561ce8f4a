"""The synthetic cohort generator: determinism, FHIR R4 shape, CKD-MBD realism, and loading into a real server."""

from __future__ import annotations

import json
from collections import Counter
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fhir.resources.R4B import get_fhir_model_class

from cds_service.cli import main
from fhir_mappings.valuesets import LAB_VALUESETS, LOINC, default_index
from synth import (
    SynthError,
    SynthPatient,
    generate_cohort,
    generate_patient,
    transaction_bundle,
    transaction_bundles,
)
from tests.support.fhir_server import FhirTestServer

AS_OF = date(2025, 6, 15)


def _run(*args: str) -> str:
    result = CliRunner().invoke(main, ["synth", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def _loinc(observation: dict[str, Any]) -> str:
    return str(observation["code"]["coding"][0]["code"])


def _dialysis_patient(years: int = 1, seed: int = 11) -> SynthPatient:
    return generate_patient(0, "dialysis", years=years, seed=seed, as_of=AS_OF)


# --- determinism ---------------------------------------------------------------------------------------------

def test_same_seed_gives_byte_identical_output_on_stdout() -> None:
    first = _run("--patients", "4", "--years", "1", "--seed", "7", "--as-of", "2025-06-15")
    second = _run("--patients", "4", "--years", "1", "--seed", "7", "--as-of", "2025-06-15")
    assert first == second
    bundles = [json.loads(line) for line in first.splitlines()]
    assert all(b["type"] == "transaction" and 0 < len(b["entry"]) <= 50 for b in bundles)


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    for name in ("a", "b"):
        _run("--patients", "3", "--years", "1", "--seed", "5", "--as-of", "2025-06-15",
             "--format", "ndjson", "--out", str(tmp_path / name))
    files_a = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files_a == sorted(p.name for p in (tmp_path / "b").iterdir())
    assert "Observation.ndjson" in files_a
    assert "Patient.ndjson" in files_a
    for name in files_a:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_different_seed_gives_different_patients() -> None:
    one = _run("--patients", "3", "--seed", "1", "--as-of", "2025-06-15", "--format", "ndjson")
    two = _run("--patients", "3", "--seed", "2", "--as-of", "2025-06-15", "--format", "ndjson")
    assert one != two


def test_default_as_of_is_today_so_recent_labs_stay_recent() -> None:
    patient = generate_patient(0, "dialysis", years=1, seed=3)
    newest = max(datetime.fromisoformat(o["effectiveDateTime"]) for o in patient.of_type("Observation"))
    assert (datetime.now(newest.tzinfo) - newest).days <= 31


# --- shape -------------------------------------------------------------------------------------------------

def test_every_resource_validates_as_fhir_r4() -> None:
    cohort = generate_cohort(12, 1, seed=21, as_of=AS_OF)
    assert {p.profile for p in cohort} == {"dialysis", "ckd", "ordinary"}
    for patient in cohort:
        for resource in patient.resources:
            get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        get_fhir_model_class("Bundle").model_validate(transaction_bundle(patient.resources))


def test_bundles_are_split_for_the_test_servers_limit_in_order() -> None:
    patient = _dialysis_patient()
    bundles = transaction_bundles(patient.resources, max_entries=50)
    assert all(len(b["entry"]) <= 50 for b in bundles)
    assert [e["resource"] for b in bundles for e in b["entry"]] == patient.resources
    assert len(transaction_bundles(patient.resources, max_entries=0)) == 1


def test_bundle_files_are_written_per_patient_part(tmp_path: Path) -> None:
    _run("--patients", "2", "--seed", "3", "--as-of", "2025-06-15", "--out", str(tmp_path))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names
    assert all(n.startswith("syn3-0000") and n.endswith(".json") for n in names)
    for path in tmp_path.iterdir():
        bundle = json.loads(path.read_text(encoding="utf-8"))
        get_fhir_model_class("Bundle").model_validate(bundle)


def test_transaction_bundle_uses_put_with_stable_ids() -> None:
    patient = _dialysis_patient()
    bundle = transaction_bundle(patient.resources)
    ids = [(e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle["entry"]]
    assert len(ids) == len(set(ids))
    for entry in bundle["entry"]:
        resource = entry["resource"]
        assert entry["request"] == {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}
    assert ids == [(r["resourceType"], r["id"]) for r in _dialysis_patient().resources]


def test_every_lab_code_is_in_a_lab_value_set_and_units_are_mixed() -> None:
    index = default_index()
    units: Counter[str] = Counter()
    for patient in generate_cohort(20, 1, seed=4, as_of=AS_OF):
        for obs in patient.of_type("Observation"):
            coding = obs["code"]["coding"][0]
            assert index.valuesets_for(coding["system"], coding["code"]) & set(LAB_VALUESETS), coding
            units[obs["valueQuantity"]["code"]] += 1
    assert units["mg/dL"] > 0
    assert units["mmol/L"] > 0
    assert units["g/L"] > 0


def test_molar_calcium_uses_the_molar_loinc() -> None:
    for patient in generate_cohort(20, 1, seed=4, as_of=AS_OF):
        for obs in patient.of_type("Observation"):
            if _loinc(obs) in ("17861-6", "2777-1"):
                assert obs["valueQuantity"]["code"] == "mg/dL"
            if _loinc(obs) in ("2000-8", "14879-1"):
                assert obs["valueQuantity"]["code"] == "mmol/L"


# --- CKD-MBD realism --------------------------------------------------------------------------------------------

def test_dialysis_patient_has_monthly_same_specimen_panels_and_expected_counts() -> None:
    patient = _dialysis_patient(years=2)
    index = default_index()
    observations = patient.of_type("Observation")
    by_specimen: dict[str, set[str]] = {}
    for obs in observations:
        if "specimen" in obs:
            by_specimen.setdefault(obs["specimen"]["reference"], set()).add(_loinc(obs))
    full_panels = sorted(
        min(o["effectiveDateTime"] for o in observations if o.get("specimen", {}).get("reference") == ref)
        for ref, codes in by_specimen.items()
        if codes & {"17861-6", "2000-8"} and codes & {"2777-1", "14879-1"} and "1751-7" in codes
    )
    # one Ca/P/albumin panel per calendar month over two years (the partial first month has none)
    months = {when[:7] for when in full_panels}
    assert len(full_panels) == len(months) == 24
    gaps = [(datetime.fromisoformat(b) - datetime.fromisoformat(a)).days
            for a, b in zip(full_panels, full_panels[1:], strict=False)]
    assert max(gaps) <= 40
    assert min(gaps) >= 20
    pth = [o for o in observations if _loinc(o) == "2731-8"]
    assert 8 <= len(pth) <= 9  # quarterly
    sessions = patient.of_type("Procedure")
    assert 300 <= len(sessions) <= 315  # three a week for two years
    assert all(index.contains("proc-dialysis", s["code"]["coding"][0]["system"], s["code"]["coding"][0]["code"])
               for s in sessions)
    conditions = patient.of_type("Condition")
    codes = [(c["code"]["coding"][0]["system"], c["code"]["coding"][0]["code"]) for c in conditions]
    assert any(index.contains("cond-esrd", s, c) for s, c in codes)
    assert any(index.contains("cond-dialysis-dependence", s, c) for s, c in codes)
    # every specimen an observation points to is in the record
    specimen_ids = {f"Specimen/{s['id']}" for s in patient.of_type("Specimen")}
    assert set(by_specimen) <= specimen_ids


def test_one_year_of_dialysis_is_about_150_observations() -> None:
    patient = _dialysis_patient(years=1)
    assert 130 <= len(patient.of_type("Observation")) <= 170
    assert all(o["status"] == "final" for o in patient.of_type("Observation"))


def test_cohort_contains_rule_relevant_medications() -> None:
    index = default_index()
    found: set[str] = set()
    for patient in generate_cohort(40, 1, seed=9, as_of=AS_OF):
        for med in patient.of_type("MedicationRequest"):
            for coding in med["medicationCodeableConcept"].get("coding", []):
                found |= index.valuesets_for(coding["system"], coding["code"])
    assert {"med-oral-calcium", "med-active-vitamin-d", "med-warfarin"} <= found


def test_profiles_follow_the_seed_share() -> None:
    profiles = Counter(p.profile for p in generate_cohort(200, 1, seed=1, as_of=AS_OF))
    assert 0.3 < profiles["dialysis"] / 200 < 0.6
    assert profiles["ordinary"] > 0
    assert profiles["ckd"] > 0


# --- bad input -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "message"), [
    (["--patients", "0"], "--patients must be between"),
    (["--patients", "2", "--years", "0"], "--years must be between"),
    (["--patients", "2", "--seed", "-1"], "--seed must be zero or positive"),
    (["--patients", "2", "--as-of", "15/06/2025"], "is not a date"),
])
def test_bad_arguments_give_a_clear_error(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["synth", *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_unknown_profile_is_refused() -> None:
    with pytest.raises(SynthError, match="unknown profile"):
        generate_patient(0, "vampire", years=1, seed=1)


# --- a real FHIR server -------------------------------------------------------------------------------------------

@pytest.mark.integration
def test_generated_bundles_load_into_the_fhir_server(fhir_server: FhirTestServer) -> None:
    patients = [generate_patient(i, profile, years=1, seed=31, as_of=AS_OF)
                for i, profile in enumerate(("dialysis", "ordinary"))]
    loaded: list[tuple[str, str]] = []
    try:
        for patient in patients:
            for bundle in transaction_bundles(patient.resources):
                fhir_server.post_bundle(bundle)
                loaded += [(e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle["entry"]]
        # loading the same bundle again is idempotent (PUT with stable ids)
        fhir_server.post_bundle(transaction_bundles(patients[1].resources)[0])
        dialysis = patients[0]
        answer = fhir_server._http.get(
            f"{fhir_server.base_url}/Observation",
            params={"patient": dialysis.id, "code": f"{LOINC}|2731-8", "_count": "100"}, timeout=30,
        )
        assert answer.status_code == 200
        expected = sum(1 for o in dialysis.of_type("Observation") if _loinc(o) == "2731-8")
        assert answer.json()["total"] == expected > 0
        read = fhir_server._http.get(f"{fhir_server.base_url}/Patient/{dialysis.id}", timeout=30)
        assert read.json()["birthDate"] == dialysis.resources[0]["birthDate"]
    finally:
        for resource_type, resource_id in reversed(loaded):
            fhir_server.delete(resource_type, resource_id)
