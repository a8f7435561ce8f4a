"""Issue 18 item 2: a resource read in tolerant mode is recorded as such, in the audit record of the call.

A resource that does not fit the typed shape is read with the misfit values left out (``fhir_mappings.wire``).
Its facts are used, and the call's audit record names it, with the fields that were left out (paths only,
never a value): a reviewer can tell a resource the EHR sent in an odd shape from one it sent well.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, select

from cds_service.audit.schema import calls
from cds_service.engine import TOLERANT_READ, EngineOptions, PatientRecord, assess
from cds_service.runtime import get_runtime
from fhir_mappings.extract import extract
from fhir_mappings.valuesets import default_index
from tests.support import fhir_builders as fb
from tests.support.app import make_app


def _now() -> datetime:
    return datetime.now(UTC)  # the builders date resources relative to the real clock


def _reasons(skipped: list[dict[str, Any]], resource_id: str) -> list[str]:
    return [str(item["reason"]) for item in skipped if item.get("id") == resource_id]


def _record(pid: str, *extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        fb.lab(pid, f"{pid}-ca", "17861-6", 10.4, "mg/dL", days_ago=1, specimen="s1"),
        fb.lab(pid, f"{pid}-p", "2777-1", 7.2, "mg/dL", days_ago=1, specimen="s1"),
        *extra,
    ]


def test_a_misfit_resource_is_used_and_named_with_the_fields_left_out() -> None:
    pid = "tol-1"
    odd = fb.lab(pid, f"{pid}-alb", "1751-7", 4.0, "g/dL", days_ago=1, specimen="s1") | {
        "meta": "not an object", "referenceRange": [{"low": {"value": "3.5"}}, 7]}
    record = PatientRecord(patient=fb.patient(pid, age_years=50), resources=_record(pid, odd))
    assessment = assess(record, "patient-view", _now(), EngineOptions())
    reasons = _reasons(assessment.tolerant_reads, f"{pid}-alb")
    assert reasons == [f"{TOLERANT_READ}: meta, referenceRange[], referenceRange[].low.value"]
    assert "3.5" not in json.dumps(assessment.tolerant_reads)  # where, never what
    assert not _reasons(assessment.skipped, f"{pid}-alb")  # it was used, not skipped
    # The albumin was read and used, its misfit values left out.
    facts = extract(record.patient, list(record.resources), _now(), default_index())
    albumin = [lab for lab in facts.labs if lab.reference == f"Observation/{pid}-alb"]
    assert [(lab.original_value, lab.ref_low, lab.ref_high) for lab in albumin] == [(4.0, None, None)]


def test_resources_that_fit_are_not_named() -> None:
    pid = "tol-2"
    record = PatientRecord(patient=fb.patient(pid, age_years=50), resources=_record(pid))
    assessment = assess(record, "patient-view", _now(), EngineOptions())
    assert assessment.tolerant_reads == []


def test_a_misfit_resource_that_was_skipped_is_named_by_its_skip_reason_only() -> None:
    pid = "tol-5"
    broken = fb.lab(pid, f"{pid}-alb", "1751-7", 4.0, "g/dL", days_ago=1) | {"valueQuantity": "4.0 g/dL"}
    record = PatientRecord(patient=fb.patient(pid, age_years=50), resources=_record(pid, broken))
    assessment = assess(record, "patient-view", _now(), EngineOptions())
    assert _reasons(assessment.skipped, f"{pid}-alb") == ["valueQuantity is not an object"]
    assert assessment.tolerant_reads == []


def test_many_misfits_of_one_field_become_one_counted_entry() -> None:
    pid = "tol-3"
    odd = [fb.lab(pid, f"{pid}-p{i}", "2777-1", 5.0, "mg/dL", days_ago=i + 2) | {"meta": 1} for i in range(30)]
    record = PatientRecord(patient=fb.patient(pid, age_years=50), resources=_record(pid, *odd))
    entries = assess(record, "patient-view", _now(), EngineOptions()).tolerant_reads
    assert entries == [{"resource_type": "Observation", "id": "", "reason": f"{TOLERANT_READ}: meta", "count": 30,
                        "first_ids": [f"{pid}-p{i}" for i in range(10)]}]


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    application = make_app(tmp_path)
    yield application
    get_runtime(application).close()


def test_the_call_audit_record_names_the_tolerant_read(app: Flask, tmp_path: Path) -> None:
    pid = "tol-4"
    odd = fb.lab(pid, f"{pid}-alb", "1751-7", 4.0, "g/dL", days_ago=1, specimen="s1") | {"meta": [1]}
    body = fb.hook_request("patient-view", pid,
                           prefetch=fb.prefetch_for([fb.patient(pid, age_years=50), *_record(pid, odd)]))
    response = app.test_client().post("/cds-services/calcinosis-patient-view", json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    engine = create_engine(f"sqlite:///{tmp_path / 'audit.sqlite3'}")
    try:
        with engine.connect() as connection:
            row = connection.execute(select(calls).where(calls.c.hook_instance == body["hookInstance"])
                                     ).mappings().one()
    finally:
        engine.dispose()
    assert _reasons(row["skipped_resources"], f"{pid}-alb") == [f"{TOLERANT_READ}: meta"]
