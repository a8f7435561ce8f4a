"""The CDS Hooks spec's own examples (tests/fixtures/spec) against our contract checks and our service."""

import copy
import json
from pathlib import Path

import pytest

from tests.contract.checker import (
    ContractViolation,
    check_discovery,
    check_feedback_request,
    check_hook_response,
)
from tests.support.fhir_builders import prefetch_for

SPEC = Path(__file__).parents[1] / "fixtures" / "spec"


def _load(name):
    return json.loads((SPEC / name).read_text())


@pytest.fixture
def app_settings():
    # --dev, but with an allowlist so nothing can leave the machine (the spec examples name real hosts).
    return {"allowed_fhir_servers": ("http://127.0.0.1:9/fhir",)}


@pytest.mark.parametrize("name", ["discovery.json", "discovery-with-extension.json"])
def test_spec_discovery_examples_pass_the_discovery_contract(name):
    check_discovery(_load(name))


@pytest.mark.parametrize("name", ["response-cards.json", "response-empty.json", "response-system-actions.json"])
def test_spec_response_examples_pass_the_response_contract(name):
    check_hook_response(_load(name), project_rules=False)


def test_contract_rejects_what_the_spec_forbids():
    bad = copy.deepcopy(_load("response-cards.json"))
    bad["cards"][0]["suggestions"] = [{"label": "x", "uuid": "u1", "actions": [{"type": "create",
                                                                                  "description": "d"}]}]
    with pytest.raises(ContractViolation, match="cds-resp-6"):
        check_hook_response(bad, project_rules=False)
    bad["cards"][0]["selectionBehavior"] = "at-most-one"
    bad["cards"][0]["overrideReasons"] = [{"code": "c", "system": "s"}]
    with pytest.raises(ContractViolation, match="cds-resp-4"):
        check_hook_response(bad, project_rules=False)
    bad["cards"][0]["overrideReasons"] = [{"code": "c", "system": "s", "display": "d"}]
    bad["cards"][0]["links"][0]["appContext"] = "not allowed on absolute links"
    with pytest.raises(ContractViolation, match="cds-resp-3"):
        check_hook_response(bad, project_rules=False)
    with pytest.raises(ContractViolation, match="summary"):
        check_hook_response({"cards": [{"summary": "x" * 140, "indicator": "info", "source": {"label": "l"}}]},
                            project_rules=False)
    with pytest.raises(ContractViolation, match="null or empty"):
        check_hook_response({"cards": [{"uuid": "u", "summary": "s", "indicator": "info",
                                        "source": {"label": "l"}, "x-note": []}]})


@pytest.mark.parametrize("name", ["feedback-accepted.json", "feedback-overridden.json",
                                  "feedback-override-reason.json"])
def test_spec_feedback_examples_are_valid_and_accepted(client, name):
    body = _load(name)
    check_feedback_request(body)
    assert client.post("/cds-services/calcinosis-patient-view/feedback", json=body).status_code == 200


def test_spec_patient_view_request_is_accepted_but_its_http_server_is_not_called(client):
    body = _load("patient-view-request.json")
    # The example's fhirServer is outside our allowlist and its prefetch lacks our keys: a clear 400, and no
    # request leaves the service (if one did, the unroutable port would turn it into a 412).
    response = client.post("/cds-services/calcinosis-patient-view", json=body)
    assert response.status_code == 400
    assert "CDS_ALLOWED_FHIR_SERVERS" in response.get_json()["issue"][0]["diagnostics"]


def test_spec_request_with_extension_is_parsed_and_the_missing_patient_named(client):
    response = client.post("/cds-services/calcinosis-patient-view", json=_load("request-with-extension.json"))
    assert response.status_code == 400
    assert "context.patientId" in response.get_json()["issue"][0]["diagnostics"]


def _order_request(hook, context_file):
    context = _load(context_file)["context"]
    patient = {"resourceType": "Patient", "id": context["patientId"], "gender": "male", "birthDate": "1970-01-01"}
    # Every advertised key: an empty searchset each, the patient alone (prefetch_for derives the keys).
    return {"hook": hook, "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea", "context": context,
            "prefetch": prefetch_for([patient])}


@pytest.mark.parametrize(("hook", "service", "context_file"), [
    ("order-select", "calcinosis-order-select", "order-select-context-r4.json"),
    ("order-select", "calcinosis-order-select", "order-select-context-dstu2.json"),
    ("order-sign", "calcinosis-order-sign", "order-sign-context-r4.json"),
])
def test_spec_order_contexts_are_accepted(client, hook, service, context_file):
    # A diet order and an amoxicillin draft carry no calcification risk: 200 with no cards.
    response = client.post(f"/cds-services/{service}", json=_order_request(hook, context_file))
    assert response.status_code == 200
    assert response.get_json() == {"cards": []}
