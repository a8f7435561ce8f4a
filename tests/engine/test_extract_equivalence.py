"""Golden test: extraction and assessment give exactly the answers recorded before the issue #7 speed-ups.

For every case of ``golden_cases.py`` the ``PatientFacts`` from ``extract``, the parsed draft orders and the
``Assessment`` of each hook (card and suggestion uuids removed, everything else verbatim: floats compared exactly,
times as ISO strings, skipped-resource reasons word for word) must equal what ``golden_extract.json.gz`` holds
(gzip of a JSON object with one line per case; ~5 MB uncompressed, so it is kept compressed, written
byte-reproducibly: regenerating unchanged answers gives an identical file).

The file was written by the code before the speed-ups (commit 604a2d4, plus the one fix that ``codings_of`` no longer
appends a bare Coding to the caller's own ``coding`` list, which had changed the input). To rewrite it on purpose
(a clinical content change, a new case), run

    CALCINOSIS_REGEN_GOLDEN=1 .venv/bin/pytest -q -p no:cacheprovider tests/engine/test_extract_equivalence.py

and review what changed (``zdiff`` of the old and new file: one line per case). The regeneration run skips instead
of passing, so it cannot hide a change.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import fields, is_dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest

from cds_service.engine import Assessment, EngineOptions, PatientRecord, _as_list, assess
from fhir_mappings.extract import extract
from fhir_mappings.orders import parse_draft_orders
from fhir_mappings.valuesets import default_index

from .golden_cases import GoldenCase, cases_by_id, read_golden, write_golden

GOLDEN = Path(__file__).with_name("golden_extract.json.gz")
REGENERATE = os.environ.get("CALCINOSIS_REGEN_GOLDEN") == "1"
FORMAT = 1


def plain(value: Any) -> Any:
    """A JSON-ready, order-stable form of facts, orders and cards (dataclasses as dicts with their type)."""
    if is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {"@": type(value).__name__}
        for f in fields(value):
            out[f.name] = plain(getattr(value, f.name))
        return out
    if isinstance(value, datetime):
        return "datetime:" + value.isoformat()
    if isinstance(value, date):
        return "date:" + value.isoformat()
    if isinstance(value, (frozenset, set)):
        return sorted(plain(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    raise TypeError(f"golden: cannot serialise {type(value).__name__}")


def _without_uuids(card: dict[str, Any]) -> dict[str, Any]:
    card = json.loads(json.dumps(card))
    assert card.pop("uuid")
    for suggestion in card.get("suggestions", []):
        assert suggestion.pop("uuid")
    return card


def _assessment(result: Assessment) -> dict[str, Any]:
    return {
        "cards": [
            {"card": _without_uuids(c.card), "rule_id": c.rule_id, "rule_version": c.rule_version,
             "indicator": c.indicator, "evidence": plain(c.evidence), "suggestions": len(c.suggestion_uuids),
             "order_key": c.order_key}
            for c in result.cards
        ],
        "rules_evaluated": plain(result.rules_evaluated),
        "skipped": plain(result.skipped),
    }


def _fingerprint(case: GoldenCase) -> str:
    data = [case.patient, case.resources, case.drafts, case.selections, case.options, case.now.isoformat()]
    text = json.dumps(data, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def outcome_of(case: GoldenCase) -> dict[str, Any]:
    """What the current code answers for ``case``."""
    index = default_index()
    options = EngineOptions(**case.options)
    before = _fingerprint(case)
    resources = _as_list(case.resources)
    patient = case.patient if isinstance(case.patient, dict) else None
    facts = extract(patient, resources, case.now, index, include_preliminary=options.include_preliminary)
    selections = [s for s in _as_list(case.selections) if isinstance(s, str)]
    orders, order_skips = parse_draft_orders(_as_list(case.drafts), selections, index)
    record = PatientRecord(patient=case.patient, resources=case.resources, draft_orders=case.drafts,
                           selections=case.selections if case.selections is not None else [
                               f"MedicationRequest/{d['id']}" for d in case.drafts
                               if isinstance(d, dict) and "id" in d])
    assessments = {hook: _assessment(assess(record, hook, case.now, options)) for hook in case.hooks}
    assert _fingerprint(case) == before, "the engine changed its input"
    return {
        "input": before,
        "facts": plain(facts),
        "orders": plain(orders) if case.drafts else [],
        "order_skips": plain(order_skips) if case.drafts else [],
        "assessments": assessments,
    }


def _cases() -> dict[str, GoldenCase]:
    return cases_by_id()


@functools.cache
def _golden() -> dict[str, Any]:
    return read_golden(GOLDEN, FORMAT)


def _write_golden() -> None:
    write_golden(GOLDEN, FORMAT, outcome_of)


def test_golden_file_covers_exactly_the_cases() -> None:
    if REGENERATE:
        _write_golden()
        _golden.cache_clear()
        pytest.skip("golden file regenerated; review its diff")
    assert set(_golden()) == set(_cases()), "golden cases differ from golden_cases.py: regenerate on purpose"


def test_golden_set_is_broad() -> None:
    cases = _cases()
    synthetic = [c for c in cases.values() if c.case_id.startswith("synth-")]
    assert len(synthetic) >= 60
    si = [c for c in synthetic if any(
        isinstance(r, dict) and isinstance(r.get("valueQuantity"), dict) and r["valueQuantity"].get("code") == "mmol/L"
        and r["code"]["coding"][0]["code"] in ("2000-8", "14879-1") for r in c.resources)]
    assert len(si) >= 10  # SI calcium / phosphate reports
    malformed = _cases()["malformed-adult"]
    assert len(malformed.resources) >= 150


@pytest.mark.parametrize("case_id", list(_cases()))
def test_same_answers_as_before(case_id: str) -> None:
    if REGENERATE:
        pytest.skip("regenerating")
    golden = _golden().get(case_id)
    assert golden is not None, f"{case_id} is not in {GOLDEN.name}: regenerate on purpose"
    now = json.loads(json.dumps(outcome_of(_cases()[case_id])))  # same JSON round trip as the file
    assert now["input"] == golden["input"], (
        f"{case_id}: the input itself changed (synth/cohort.py or a builder?); the golden cannot judge it")
    assert now["facts"] == golden["facts"]
    assert now["orders"] == golden["orders"]
    assert now["order_skips"] == golden["order_skips"]
    assert now["assessments"] == golden["assessments"]


def test_golden_exercises_skips_and_every_lab_kind() -> None:
    reasons = {s["reason"] for case in _golden().values() for s in case["facts"]["skipped"]}
    assert {"valueQuantity is not an object", "valueQuantity.value is not a number", "no usable effective time",
            "code is not a CodeableConcept", "not a JSON object", "no resourceType"} <= reasons
    assert any(r.startswith("malformed ") for r in reasons)
    assert any(r.startswith("unit ") for r in reasons)
    kinds = {lab["kind"] for case in _golden().values() for lab in case["facts"]["labs"]}
    assert {"lab-calcium-total", "lab-calcium-ionized", "lab-phosphate", "lab-albumin", "lab-pth", "lab-egfr",
            "lab-calcium-blood", "lab-calcium-corrected"} <= kinds
