"""Issue 18 item 1: the hook envelope's shape is declared once (msgspec Structs in ``cds_service.hook_models``).

msgspec checks the declared shape (required fields, types, lengths) and its first error is answered in the
service's own words: each case below names the exact message and ``expression`` of the OperationOutcome, read
through both edge readers (the typed msgspec reading and the plain msgspec one), which must agree. What a type
cannot say (URL policy, id and reference patterns, cds-r-1, whitespace-only text) stays code, and a body with
several faults is answered about the same fault as before the declaration (the hook first, then hookInstance and
fhirServer, cds-r-1 before the token's own fields).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from cds_service.errors import InvalidRequest
from cds_service.hook_models import FhirAuthorization, parse_hook_request
from cds_service.http_json import read_hook_body, read_json_body
from tests.support.bodies import DELETE as _DELETE
from tests.support.bodies import ORDER_SELECT
from tests.support.bodies import mutated as _mutated

TOKEN = {"access_token": "secret-token", "token_type": "bearer", "expires_in": 300,
         "scope": "user/Patient.read", "subject": "cds-service4"}
PATIENT_VIEW: dict[str, Any] = {
    "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea", "fhirServer": "https://ehr.example.org/fhir",
    "hook": "patient-view", "fhirAuthorization": TOKEN,
    "context": {"userId": "Practitioner/example", "patientId": "1288992", "encounterId": "89284"},
    "prefetch": {"patient": {"resourceType": "Patient", "id": "1288992"}},
}
_SELECTIONS = ("context.selections is required for order-select: a non-empty array of Type/id references into "
               "draftOrders")
_DRAFTS = "context.draftOrders is required: a FHIR Bundle of the draft orders"
_EXPIRES = "fhirAuthorization.expires_in is required and must be an integer (seconds)"




def _answers(body: Any, hook: str) -> list[tuple[str, list[str]]]:
    """(message, expression) from the dict and from both edge readers of the same bytes."""
    data = json.dumps(body).encode()
    answers = []
    for parsed in (body, *(reader(Request(EnvironBuilder(method="POST", data=data,
                                                         content_type="application/json").get_environ()))
                           for reader in (read_hook_body, read_json_body))):
        with pytest.raises(InvalidRequest) as raised:
            parse_hook_request(parsed, hook)
        answers.append((str(raised.value), raised.value.expression))
    return answers


@pytest.mark.parametrize(("path", "value", "message", "expression"), [
    # missing or null: "is required"
    (("hook",), _DELETE, "hook is required", "hook"),
    (("hookInstance",), None, "hookInstance is required", "hookInstance"),
    (("fhirAuthorization", "access_token"), _DELETE, "fhirAuthorization.access_token is required",
     "fhirAuthorization.access_token"),
    (("fhirAuthorization", "subject"), None, "fhirAuthorization.subject is required", "fhirAuthorization.subject"),
    (("context", "patientId"), _DELETE, "context.patientId is required", "context.patientId"),
    (("context", "userId"), None, "context.userId is required", "context.userId"),
    # wrong type, empty or whitespace only: "must be a non-empty string"
    (("hookInstance",), 42, "hookInstance must be a non-empty string", "hookInstance"),
    (("hook",), True, "hook must be a non-empty string", "hook"),
    (("hook",), " \t", "hook must be a non-empty string", "hook"),
    (("fhirAuthorization", "scope"), "", "fhirAuthorization.scope must be a non-empty string",
     "fhirAuthorization.scope"),
    (("fhirAuthorization", "patient"), "  ", "fhirAuthorization.patient must be a non-empty string",
     "fhirAuthorization.patient"),
    (("context", "patientId"), ["p1"], "context.patientId must be a non-empty string", "context.patientId"),
    (("context", "encounterId"), "", "context.encounterId must be a non-empty string", "context.encounterId"),
    (("context", "userId"), "\n", "context.userId must be a non-empty string", "context.userId"),
    # length constraints
    (("hookInstance",), "x" * 257, "hookInstance is longer than 256 characters", "hookInstance"),
    (("fhirAuthorization", "access_token"), "t" * 16385,
     "fhirAuthorization.access_token is longer than 16384 characters", "fhirAuthorization.access_token"),
    (("fhirAuthorization", "scope"), "s" * 4097, "fhirAuthorization.scope is longer than 4096 characters",
     "fhirAuthorization.scope"),
    (("fhirServer",), "https://e.org/" + "f" * 2048, "fhirServer must be a URL string", "fhirServer"),
    # one message for every way a field can be wrong
    (("fhirServer",), 7, "fhirServer must be a URL string", "fhirServer"),
    (("fhirAuthorization", "expires_in"), True, _EXPIRES, "fhirAuthorization.expires_in"),  # a bool is no integer
    (("fhirAuthorization", "expires_in"), 300.0, _EXPIRES, "fhirAuthorization.expires_in"),
    (("fhirAuthorization", "expires_in"), "300", _EXPIRES, "fhirAuthorization.expires_in"),
    (("fhirAuthorization", "expires_in"), _DELETE, _EXPIRES, "fhirAuthorization.expires_in"),
    (("fhirAuthorization",), ["x"], "fhirAuthorization must be a JSON object", "fhirAuthorization"),
    (("context",), _DELETE, "context must be a JSON object", "context"),
    (("context",), "p1", "context must be a JSON object", "context"),
    (("prefetch",), [1], "prefetch must be a JSON object", "prefetch"),
    # what stays code, on the typed values
    (("hook",), "order-sign", "this service answers the 'patient-view' hook, but the request is for 'order-sign'",
     "hook"),
    (("fhirServer",), _DELETE, "fhirServer is required when fhirAuthorization is sent (CDS Hooks cds-r-1)",
     "fhirServer"),
    (("fhirServer",), "https://u:p@e.org/fhir", "fhirServer must be an absolute http(s) base URL without "
     "credentials", "fhirServer"),
    (("fhirAuthorization", "token_type"), "MAC", "fhirAuthorization.token_type must be 'Bearer'",
     "fhirAuthorization.token_type"),
    (("context", "patientId"), "p 1", "context.patientId must be a FHIR resource id ([A-Za-z0-9-.], up to 64)",
     "context.patientId"),
    (("context", "encounterId"), "..", "context.encounterId must be a FHIR resource id", "context.encounterId"),
    (("prefetch", "patient"), 3, "prefetch.patient must be a FHIR resource, Bundle or null", "prefetch.patient"),
])
def test_patient_view_faults_are_answered_word_for_word(path: tuple[str, ...], value: Any, message: str,
                                                        expression: str) -> None:
    answers = _answers(_mutated(PATIENT_VIEW, path, value), "patient-view")
    assert answers == [(message, [expression])] * 3


@pytest.mark.parametrize(("hook", "path", "value", "message", "expression"), [
    ("order-select", ("context", "selections"), _DELETE, _SELECTIONS, "context.selections"),
    ("order-select", ("context", "selections"), [], _SELECTIONS, "context.selections"),
    ("order-select", ("context", "selections"), "MedicationRequest/m1", _SELECTIONS, "context.selections"),
    ("order-select", ("context", "selections"), ["MedicationRequest/m1", 2],
     "context.selections[1] must be a Type/id reference", "context.selections[1]"),
    ("order-select", ("context", "selections"), ["MedicationRequest/.."],
     "context.selections[0] must be a Type/id reference", "context.selections[0]"),
    ("order-select", ("context", "draftOrders"), None, _DRAFTS, "context.draftOrders"),
    ("order-sign", ("context", "draftOrders"), [], _DRAFTS, "context.draftOrders"),
    ("order-sign", ("context", "draftOrders"), {"resourceType": "MedicationRequest"},
     "context.draftOrders must be a FHIR Bundle (resourceType 'Bundle')", "context.draftOrders.resourceType"),
    ("order-sign", ("context", "userId"), "Patient/p1", "context.userId must be a reference of the form Type/id "
     "with Type one of Practitioner, PractitionerRole; got 'Patient/p1'", "context.userId"),
])
def test_order_hook_faults_are_answered_word_for_word(hook: str, path: tuple[str, ...], value: Any, message: str,
                                                      expression: str) -> None:
    answers = _answers(_mutated({**ORDER_SELECT, "hook": hook}, path, value), hook)
    assert answers == [(message, [expression])] * 3


def test_a_body_that_is_not_an_object() -> None:
    assert _answers([PATIENT_VIEW], "patient-view") == [("request body must be a JSON object",
                                                         ["request body"])] * 3


@pytest.mark.parametrize(("changes", "message"), [
    # The wrong hook is named before anything else, whatever else is wrong.
    ({"hook": "order-select", "hookInstance": None, "context": {}},
     "this service answers the 'patient-view' hook, but the request is for 'order-select'"),
    # hookInstance before the token and the context, although msgspec meets those first in this body.
    ({"hookInstance": _DELETE, "fhirAuthorization": {"access_token": 1}, "context": 3}, "hookInstance is required"),
    # cds-r-1 before the token's own fields.
    ({"fhirServer": _DELETE, "fhirAuthorization": "not an object"},
     "fhirServer is required when fhirAuthorization is sent (CDS Hooks cds-r-1)"),
    ({"fhirServer": "ftp://e.org", "fhirAuthorization": {}, "context": None},
     "fhirServer must be an absolute http(s) base URL without credentials"),
])
def test_a_body_with_several_faults_is_answered_about_the_same_one(changes: dict[str, Any], message: str) -> None:
    body = copy.deepcopy(PATIENT_VIEW)
    for key, value in changes.items():
        if value is _DELETE:
            del body[key]
        else:
            body[key] = value
    assert [answer[0] for answer in _answers(body, "patient-view")] == [message] * 3


def test_the_typed_token_is_normalised_and_never_shown() -> None:
    request = parse_hook_request(copy.deepcopy(PATIENT_VIEW), "patient-view")
    assert isinstance(request.fhir_authorization, FhirAuthorization)
    assert request.fhir_authorization.token_type == "Bearer"  # noqa: S105 - the OAuth type name
    assert request.fhir_authorization.access_token == "secret-token"  # noqa: S105 - test data
    assert "secret-token" not in repr(request.fhir_authorization)
    assert request.fhir_server == "https://ehr.example.org/fhir"


def test_null_optional_fields_are_absent() -> None:
    body = {**copy.deepcopy(PATIENT_VIEW), "fhirServer": None, "fhirAuthorization": None, "prefetch": None}
    body["context"]["encounterId"] = None
    request = parse_hook_request(body, "patient-view")
    assert (request.fhir_server, request.fhir_authorization, request.prefetch, request.encounter_id) == (
        None, None, None, None)
    assert request.context is body["context"]  # unknown context fields stay readable for prefetch templates
