"""FHIR R4B validation of template-built resources and the AuditEvent export (issue #14)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from pydantic import ValidationError

import cards.render
import cds_service.fhir_validation as fhir_validation
from cds_service.audit.export import audit_event, write_fhir
from cds_service.fhir_validation import audit_event_json, check_template_resources, problems_of, template_resources


def _service_request(**changes: Any) -> dict[str, Any]:
    resource = {"resourceType": "ServiceRequest", "status": "draft", "intent": "order",
                "code": {"text": "Nephrology consult"}, "subject": {"reference": "Patient/p1"}}
    resource.update(changes)
    return {k: v for k, v in resource.items() if v is not None}


def test_shipped_templates_build_only_valid_resources() -> None:
    assert check_template_resources() == []


def test_every_suggestion_resource_the_templates_can_build_is_covered() -> None:
    tpl = cards.render.templates()
    built = template_resources()
    kinds = [resource["resourceType"] for _, resource in built]
    # One ServiceRequest per lab and per consult, and the calcium gluconate MedicationRequest.
    assert kinds.count("ServiceRequest") == len(tpl.labs) + len(tpl.consults)
    assert kinds.count("MedicationRequest") == 1
    lab_codes = {coding["code"] for _, r in built for coding in r.get("code", {}).get("coding", [])}
    assert lab_codes == set(tpl.labs)


@pytest.mark.parametrize(("resource", "expected"), [
    (_service_request(subject=None), "subject: Field required"),
    (_service_request(status="pending"), "status: 'pending' is not in its required value set"),
    (_service_request(intent="suggestion"), "intent: 'suggestion' is not in its required value set"),
    (_service_request(priority_score=3), "priority_score: Extra inputs are not permitted"),
    (_service_request(code={"text": ""}), "code.text"),
    ({"resourceType": "ServiceRequests"}, "not an R4B resource"),
])
def test_invalid_resources_are_reported_with_the_element(resource: dict[str, Any], expected: str) -> None:
    assert any(expected in problem for problem in problems_of(resource)), problems_of(resource)


def test_a_template_that_builds_an_invalid_resource_fails_the_content_check(
        monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = cards.render.templates()
    broken = dataclasses.replace(shipped, consults={**shipped.consults, "nephrology": ""})
    monkeypatch.setattr(cards.render, "templates", lambda: broken)
    problems = check_template_resources()
    assert any("consult nephrology" in p and "ServiceRequest" in p and "code.text" in p for p in problems), problems


def test_the_content_check_includes_the_fhir_check(monkeypatch: pytest.MonkeyPatch) -> None:
    from cds_service.engine import check_content

    monkeypatch.setattr(fhir_validation, "check_template_resources",
                        lambda: ["cards/templates.toml: consult x builds an invalid ServiceRequest"])
    assert "cards/templates.toml: consult x builds an invalid ServiceRequest" in check_content()


def _row(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "client_iss": "https://ehr.example.org", "user_id": "Practitioner/pr-1", "service_id": "calcinosis-pv",
        "patient_id": "pt-1", "rule_id": "caxp-high", "rule_version": "3", "indicator": "warning",
        "disposition": "shown", "hook_instance": "h-1", "feedback": [], "summary": "Ca x P 75",
        "card_uuid": "0b9f2c1e-1111-4222-8333-444455556666", "hook": "patient-view",
        "issued_at": "2025-06-15T12:00:00Z", "http_status": 200, "audit_id": 7,
    }
    row.update(changes)
    return row


def test_audit_events_are_built_with_the_r4b_model() -> None:
    event = json.loads(audit_event_json(audit_event(_row())))
    assert event["resourceType"] == "AuditEvent"
    assert event["recorded"].startswith("2025-06-15T12:00:00")
    assert event["entity"][0]["what"] == {"reference": "Patient/pt-1"}


def test_an_invalid_audit_event_is_refused_not_exported() -> None:
    with pytest.raises(ValidationError, match="recorded"):
        audit_event_json(audit_event(_row(issued_at="last tuesday")))


def test_the_fhir_export_is_a_bundle_of_model_built_audit_events() -> None:
    import io

    from fhir.resources.R4B.bundle import Bundle

    out = io.StringIO()
    assert write_fhir([_row(), _row(card_uuid="1b9f2c1e-1111-4222-8333-444455556666", audit_id=8)], out) == 2
    bundle = Bundle.model_validate(json.loads(out.getvalue()))
    assert [entry.fullUrl for entry in bundle.entry or []] == [
        "urn:uuid:0b9f2c1e-1111-4222-8333-444455556666", "urn:uuid:1b9f2c1e-1111-4222-8333-444455556666"]
