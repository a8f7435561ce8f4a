"""Card validity, escaping, content checks, skipped resources, robustness and speed."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cards.render import Templates, check_templates, escape_text, parse_templates, templates
from cds_service.engine import check_content
from cds_service.rules import RULES, declared_fields
from fhir_mappings.valuesets import build_index

from .builders import IV, LOINC, cond, draft, obs, outcome, patient, proc, run
from .patients import EXPECTED


def _walk_empty(value: Any, path: str = "card") -> list[str]:
    bad = []
    if value is None or value == "" or value == [] or value == {}:
        bad.append(path)
    elif isinstance(value, dict):
        for k, v in value.items():
            bad += _walk_empty(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            bad += _walk_empty(v, f"{path}[{i}]")
    return bad


def _all_cards() -> list[dict[str, Any]]:
    cards = []
    for _id, build, _exp in EXPECTED:
        case = build()
        result = run(case["patient"], case["resources"], case.get("hook", "patient-view"), case.get("drafts"))
        cards += [c.card for c in result.cards]
    return cards


def test_cards_are_cds_hooks_2_valid() -> None:
    cards = _all_cards()
    assert len(cards) >= 15
    for card in cards:
        assert _walk_empty(card) == []
        uuid.UUID(card["uuid"], version=4)
        assert len(card["summary"]) < 140
        assert card["indicator"] in ("info", "warning", "critical")
        assert card["source"]["label"] == "Calcinosis Cutis Risk Service (rules v0.2)"
        assert card["source"]["topic"]["system"] == "https://calcinosis-cds.org/fhir/CodeSystem/cds-rule"
        assert "This is decision support, not a diagnosis." in card["detail"]
        if "suggestions" in card:
            assert card["selectionBehavior"] in ("any", "at-most-one")
            for s in card["suggestions"]:
                uuid.UUID(s["uuid"], version=4)
                for a in s["actions"]:
                    assert a["description"]
                    if a["type"] == "delete":
                        assert a["resourceId"]
                        assert "resource" not in a
                    else:
                        assert a["resource"]["resourceType"] in ("ServiceRequest", "MedicationRequest")
        for reason in card.get("overrideReasons", []):
            assert reason["display"]
            assert reason["code"]
            assert reason["system"]


def test_cards_pass_the_project_contract_checker() -> None:
    from tests.contract.checker import check_hook_response

    check_hook_response({"cards": _all_cards()})


def test_wrongly_shaped_record_fields_do_not_raise() -> None:
    from cds_service.engine import EngineOptions, PatientRecord, assess

    from .builders import NOW

    record = PatientRecord(patient="nope", resources={"not": "a list"}, draft_orders=None,  # type: ignore[arg-type]
                           selections="MedicationRequest/x")  # type: ignore[arg-type]
    result = assess(record, "order-select", NOW, EngineOptions())
    assert result.cards == []
    assert result.skipped == []
    assert assess(record, "unknown-hook", NOW, EngineOptions()).rules_evaluated == []


def test_lab_orders_are_loinc_coded_draft_service_requests() -> None:
    for card in _all_cards():
        for s in card.get("suggestions", []):
            for a in s["actions"]:
                res = a.get("resource", {})
                if res.get("resourceType") == "ServiceRequest" and "coding" in res["code"]:
                    assert res["status"] == "draft"
                    assert res["code"]["coding"][0]["system"] == LOINC
                    assert res["subject"] == {"reference": "Patient/pt1"}


HOSTILE = '<img src=x onerror=alert(1)> **bold** [click](javascript:alert(1)) `code` | calcium gluconate'


def test_hostile_drug_names_are_escaped() -> None:
    resources = [cond("N18.6"), proc("302497006", 1), obs("ca", 9.75, 1, specimen="s"), obs("p", 8.0, 1, specimen="s")]
    result = run(patient(60), resources, "order-select", [draft("rx", HOSTILE, route=IV)])
    assert outcome(result) == [("iv-calcium-order", "critical")]
    detail = result.cards[0].card["detail"]
    assert "<img" not in detail
    assert "&lt;img" in detail
    assert "[click](" not in detail
    assert "\\[click\\]" in detail
    assert "**bold**" not in detail
    assert "`code`" not in detail


@pytest.mark.parametrize(("raw", "expected"), [
    ("<script>", "&lt;script&gt;"),
    ("a_b*c", "a\\_b\\*c"),
    ("line1\n# heading", "line1 # heading"),
    ("[x](y)", "\\[x\\](y)"),
    ('"quoted" & \'single\'', "&quot;quoted&quot; &amp; &#x27;single&#x27;"),
])
def test_escape_text(raw: str, expected: str) -> None:
    assert escape_text(raw) == expected


def test_content_check_is_clean() -> None:
    assert check_content() == []


def _tpl(**rules: dict[str, Any]) -> Templates:
    base = templates()
    return Templates(meta=base.meta, widths={"x": 5, "long": 130}, labs={}, consults={}, override_reasons=[],
                     suggestions={}, phrases={}, rules=rules)


def test_content_check_reports_missing_template() -> None:
    problems = check_templates({"rule-a": {"x"}}, _tpl())
    assert problems == ["rule rule-a: no card template in cards/templates.toml"]


def test_content_check_reports_undeclared_placeholder() -> None:
    tpl = _tpl(**{"rule-a": {"title": "T", "summary": "S {x} {y}", "detail": "D {z}"}})
    problems = check_templates({"rule-a": {"x"}}, tpl)
    assert "rule rule-a summary: placeholder {y} has no evidence field" in problems
    assert "rule rule-a summary: placeholder {y} has no maximum width in [widths]" in problems
    assert "rule rule-a detail: placeholder {z} has no evidence field" in problems


def test_content_check_reports_summary_that_can_exceed_140() -> None:
    tpl = _tpl(**{"rule-a": {"title": "T", "summary": "Value {long} is high, please review", "detail": "D",
                             "variants": {"alt": "{long} {long}"}}})
    problems = check_templates({"rule-a": {"long"}}, tpl)
    assert any("rule-a summary: can reach" in p for p in problems)
    assert any("rule-a summary.alt: can reach" in p for p in problems)


def test_content_check_reports_orphan_template_and_missing_text() -> None:
    tpl = _tpl(**{"rule-a": {"title": "", "summary": "S", "detail": "D"}, "rule-b": {"title": "T"}})
    problems = check_templates({"rule-a": set()}, tpl)
    assert "rule rule-a: template has no title" in problems
    assert "templates: [rules.rule-b] matches no registered rule" in problems


def test_every_rule_has_a_template_and_topic_table_is_complete() -> None:
    """Registry and templates name the same rules (derived from the registry: no hand-kept list of rule ids)."""
    assert set(declared_fields()) == set(templates().rules) == set(RULES)
    spec_ids = [d.spec_id for d in RULES.values()]
    assert len(spec_ids) == len(set(spec_ids)), "two rules implement the same spec rule"
    assert all(templates().rules[r]["title"].strip() for r in RULES)


def test_missing_valueset_file_is_reported_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "lab-phosphate.json").write_text(json.dumps({
        "resourceType": "ValueSet", "id": "lab-phosphate",
        "compose": {"include": [{"system": LOINC, "concept": [{"code": "2777-1"}]}]}}))
    (tmp_path / "broken.json").write_text("{not json")
    index = build_index(tmp_path, expected=("lab-phosphate", "lab-calcium-total"))
    assert index.contains("lab-phosphate", LOINC, "2777-1")
    assert any("lab-calcium-total is missing" in p for p in index.problems)
    assert any("broken.json: unreadable" in p for p in index.problems)


def test_icd10_is_a_filter_is_a_prefix_match(tmp_path: Path) -> None:
    (tmp_path / "cond-x.json").write_text(json.dumps({
        "resourceType": "ValueSet", "id": "cond-x", "compose": {"include": [{
            "system": "http://hl7.org/fhir/sid/icd-10-cm", "filter": [{"property": "concept", "op": "is-a",
                                                                      "value": "N18.3"}]}]}}))
    index = build_index(tmp_path, expected=())
    icd = "http://hl7.org/fhir/sid/icd-10-cm"
    assert index.contains("cond-x", icd, "N18.30")
    assert index.contains("cond-x", icd, "N18.3")
    assert not index.contains("cond-x", icd, "N18.4")


def test_invalid_resources_are_skipped_and_recorded() -> None:
    bad_value = obs("ca", 10.0, 1, oid="badval")
    bad_value["valueQuantity"]["value"] = "ten"
    bad_unit = obs("p", 7.5, 1, unit="furlongs", oid="badunit")
    no_time = obs("p", 7.5, 1, oid="notime")
    del no_time["effectiveDateTime"]
    resources: list[Any] = [
        "garbage", 42, {"id": "x"}, bad_value, bad_unit, no_time,
        {"resourceType": "Condition", "id": "c1", "code": "N18.6"},
        {"resourceType": "Observation", "id": "o9", "code": {"coding": "nope"}},
    ]
    result = run(patient(50), resources)
    skipped = {(s["resource_type"], s["id"]): s["reason"] for s in result.skipped}
    assert skipped[("Observation", "badval")] == "valueQuantity.value is not a number"
    assert skipped[("Observation", "badunit")] == "unit 'furlongs' not accepted for phosphate"
    assert skipped[("Observation", "notime")] == "no usable effective time"
    assert skipped[("Condition", "c1")] == "code is not a CodeableConcept"
    assert ("unknown", "") in skipped
    assert ("unknown", "x") in skipped
    assert result.cards == []


def test_dstu2_shaped_condition_is_understood() -> None:
    esrd = {"resourceType": "Condition", "id": "d2", "code": {"coding": [
        {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "N18.6"}]},
        "clinicalStatus": "active", "verificationStatus": "confirmed", "dateRecorded": "2020-01-01"}
    resources = [esrd, obs("ca", 9.75, 1, specimen="s"), obs("p", 8.0, 1, specimen="s")]
    result = run(patient(60), resources, "order-select", [draft("rx", "Calcium gluconate 1 g", route=IV)])
    assert outcome(result) == [("iv-calcium-order", "critical")]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["resourceType", "id", "code", "status", "valueQuantity", "effectiveDateTime",
                         "coding", "value", "unit", "clinicalStatus", "dosageInstruction", "route",
                         "medicationCodeableConcept", "text", "specimen", "referenceRange"]),
        children, max_size=6),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(resources=st.lists(JSON, max_size=5), drafts=st.lists(JSON, max_size=3),
       hook=st.sampled_from(["patient-view", "order-select", "order-sign"]))
def test_engine_never_raises_on_arbitrary_json(resources: list[Any], drafts: list[Any], hook: str) -> None:
    result = run(patient(60), resources, hook, drafts, selections=[])
    assert all(s["resource_type"] != "engine" for s in result.skipped)


def test_five_thousand_observations_are_evaluated() -> None:
    # Correctness at benchmark scale; speed itself is measured in benchmarks/, not in unit tests.
    resources: list[dict[str, Any]] = [cond("N18.6"), proc("302497006", 1)]
    kinds = ["ca", "p", "alb", "egfr", "k"]
    for i in range(5000):
        kind = kinds[i % len(kinds)]
        resources.append(obs(kind, 5.0 + (i % 7), (i // 5) % 700, specimen=f"s{i // 5}"))
    for i in range(200):  # plus irrelevant codes that must be filtered cheaply
        resources.append({"resourceType": "Observation", "id": f"x{i}", "status": "final",
                          "code": {"coding": [{"system": LOINC, "code": "8867-4"}]}})
    result = run(patient(60), resources)
    assert result.cards
    assert not [s for s in result.skipped if s.get("resource_type") == "engine"]


def test_templates_parse_from_text() -> None:
    tpl = parse_templates('[rules.a]\ntitle = "T"\nsummary = "S"\ndetail = "D"\n')
    assert tpl.rules["a"]["title"] == "T"
