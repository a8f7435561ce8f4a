"""Edge validation of hook requests and feedback (CDS Hooks 2.0 'Calling a CDS Service', 'Feedback')."""

import copy

import pytest

from cds_service.errors import InvalidRequest
from cds_service.hook_models import parse_feedback, parse_hook_request
from tests.support.bodies import DELETE as _DELETE
from tests.support.bodies import mutated as _mutated

PATIENT_VIEW = {
    "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
    "fhirServer": "https://ehr.example.org/fhir",
    "hook": "patient-view",
    "fhirAuthorization": {"access_token": "secret-token", "token_type": "Bearer", "expires_in": 300,
                          "scope": "user/Patient.read user/Observation.read", "subject": "cds-service4"},
    "context": {"userId": "Practitioner/example", "patientId": "1288992", "encounterId": "89284"},
    "prefetch": {"patient": {"resourceType": "Patient", "id": "1288992", "gender": "male"}},
}

ORDER_SELECT = {
    "hookInstance": "3ab0e6d9-1f4c-4c4c-9f1d-0a5e9f1e7c11",
    "hook": "order-select",
    "context": {
        "userId": "PractitionerRole/123",
        "patientId": "smart-1288992",
        "selections": ["MedicationRequest/request-123"],
        # Sandbox-shaped: Bundle without type, draft without intent, single-object category.
        "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": {
            "resourceType": "MedicationRequest", "id": "request-123", "status": "draft",
            "category": {"coding": [{"code": "outpatient"}]}, "subject": {"reference": "Patient/smart-1288992"}}}]},
    },
}


def test_spec_shaped_patient_view_request_parses():
    request = parse_hook_request(copy.deepcopy(PATIENT_VIEW), "patient-view")
    assert request.patient_id == "1288992"
    assert request.encounter_id == "89284"
    assert request.fhir_authorization is not None
    assert "secret-token" not in repr(request)  # the token never appears in a repr (and so in a log line)


def test_unknown_fields_and_extensions_are_ignored():
    body = copy.deepcopy(PATIENT_VIEW)
    body["extension"] = {"org.example.flag": True}
    body["context"]["extension"] = {"org.example.more": 1}
    body["somethingNew"] = [1, 2]
    assert parse_hook_request(body, "patient-view").hook_instance == body["hookInstance"]


def test_sandbox_shaped_order_select_parses_leniently():
    request = parse_hook_request(copy.deepcopy(ORDER_SELECT), "order-select")
    assert request.selections == ("MedicationRequest/request-123",)
    assert request.draft_orders is not None


def test_order_sign_needs_no_selections():
    body = copy.deepcopy(ORDER_SELECT)
    body["hook"] = "order-sign"
    del body["context"]["selections"]
    assert parse_hook_request(body, "order-sign").selections == ()






@pytest.mark.parametrize(("path", "value", "fragment"), [
    (("hook",), "order-sign", "answers the 'patient-view' hook"),
    (("hook",), _DELETE, "hook is required"),
    (("hookInstance",), _DELETE, "hookInstance is required"),
    (("hookInstance",), 42, "hookInstance must be a non-empty string"),
    (("context",), _DELETE, "context must be a JSON object"),
    (("context", "patientId"), _DELETE, "context.patientId is required"),
    (("context", "patientId"), "a/b c", "FHIR resource id"),
    (("context", "userId"), "Device/1", "context.userId must be a reference"),
    (("context", "userId"), _DELETE, "context.userId is required"),
    (("fhirServer",), _DELETE, "cds-r-1"),
    (("fhirServer",), "ftp://x", "absolute http"),
    (("fhirAuthorization", "token_type"), "MAC", "Bearer"),
    (("fhirAuthorization", "expires_in"), "300", "expires_in"),
    (("fhirAuthorization", "access_token"), _DELETE, "access_token is required"),
    (("prefetch",), [1, 2], "prefetch must be a JSON object"),
    (("prefetch", "patient"), "Patient/1", "prefetch.patient must be"),
])
def test_invalid_patient_view_requests_say_what_is_wrong(path, value, fragment):
    with pytest.raises(InvalidRequest, match=fragment) as info:
        parse_hook_request(_mutated(PATIENT_VIEW, path, value), "patient-view")
    assert info.value.status == 400


@pytest.mark.parametrize(("path", "value", "fragment"), [
    (("context", "selections"), _DELETE, "selections is required"),
    (("context", "selections"), ["not a reference"], "Type/id"),
    (("context", "draftOrders"), _DELETE, "draftOrders is required"),
    (("context", "draftOrders"), {"resourceType": "MedicationRequest"}, "must be a FHIR Bundle"),
    (("context", "draftOrders", "entry"), {"resource": {}}, "entry must be an array"),
    (("context", "userId"), "Patient/1", "Practitioner"),
])
def test_invalid_order_select_requests(path, value, fragment):
    with pytest.raises(InvalidRequest, match=fragment):
        parse_hook_request(_mutated(ORDER_SELECT, path, value), "order-select")


def test_body_that_is_not_an_object():
    with pytest.raises(InvalidRequest, match="must be a JSON object"):
        parse_hook_request([PATIENT_VIEW], "patient-view")


FEEDBACK_OK = {"feedback": [
    {"card": "9368d37b-283f-44a0-93ea-547cebab93ed", "outcome": "accepted",
     "acceptedSuggestions": [{"id": "e56e1945-20b3-4393-8503-a1a20fd73152"}],
     "outcomeTimestamp": "2025-06-15T12:00:00Z"},
    {"card": "9368d37b-283f-44a0-93ea-547cebab93ee", "outcome": "overridden",
     "overrideReason": {"reason": {"code": "reason-code-provided-by-service",
                                   "system": "http://example.org/cds-services/fhir/CodeSystem/override-reasons"},
                        "userComment": "Will revisit with nephrology"},
     "outcomeTimestamp": "2025-06-15T12:01:00+02:00"},
]}


def test_feedback_parses_both_outcomes():
    items = parse_feedback(copy.deepcopy(FEEDBACK_OK))
    assert [i.outcome for i in items] == ["accepted", "overridden"]
    assert items[0].accepted_suggestions == ("e56e1945-20b3-4393-8503-a1a20fd73152",)
    assert items[1].override_code == "reason-code-provided-by-service"
    assert items[1].outcome_timestamp.isoformat() == "2025-06-15T10:01:00+00:00"


@pytest.mark.parametrize(("mutate", "fragment"), [
    (lambda b: b["feedback"][0].pop("acceptedSuggestions"), "acceptedSuggestions is required"),
    (lambda b: b["feedback"][0].update(outcome="ignored"), "'accepted' or 'overridden'"),
    (lambda b: b["feedback"][0].pop("card"), "card is required"),
    (lambda b: b["feedback"][0].update(outcomeTimestamp="yesterday"), "not a valid date-time"),
    (lambda b: b["feedback"][0].update(outcomeTimestamp="2025-06-15T12:00:00"), "time zone"),
    (lambda b: b["feedback"][1].update(overrideReason={}), "reason, a userComment"),
    (lambda b: b.update(feedback=[]), "non-empty array"),
])
def test_invalid_feedback(mutate, fragment):
    body = copy.deepcopy(FEEDBACK_OK)
    mutate(body)
    with pytest.raises(InvalidRequest, match=fragment):
        parse_feedback(body)
