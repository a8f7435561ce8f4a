"""Exact id patterns (issue 16 item 9): an id regex matches the WHOLE value.

With ``re.match`` and ``$``, ``"p1\\n"`` passed as a patient id: ``$`` also matches just before a final newline.
Every id check now uses full-match semantics; an id that is not exactly an id is a 400 OperationOutcome at the
edge (never a 500), and is refused in the SMART token response and appContext too. The FHIR id alphabet allows
``.`` and ``..``, which are dot segments in a URL path (``Patient/..`` is the server's base): refused as well.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import pytest
from flask import Flask

from cds_service.errors import InvalidRequest
from cds_service.hook_models import parse_hook_request
from cds_service.smart.errors import TokenExchangeFailed
from cds_service.smart.oauth import _app_context_rule, _grant_from
from cds_service.smart.pkce import code_challenge_s256
from tests.support.bodies import ORDER_SELECT

BODY: dict[str, Any] = {
    "hook": "patient-view", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
    "context": {"userId": "Practitioner/example", "patientId": "p1", "encounterId": "e1"},
    "prefetch": {"patient": {"resourceType": "Patient", "id": "p1"}},
}
TRAILING = ["\n", "\r\n", "\r", "\x00", " "]


@pytest.fixture
def app_settings() -> dict[str, Any]:
    return {"audit_enabled": False}


def _with(body: dict[str, Any], field: str, value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(body)
    changed["context"][field] = value
    return changed


@pytest.mark.parametrize("suffix", TRAILING)
@pytest.mark.parametrize("field", ["patientId", "encounterId"])
def test_an_id_with_a_trailing_newline_is_not_an_id(field: str, suffix: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        parse_hook_request(_with(BODY, field, "p1" + suffix), "patient-view")
    assert raised.value.expression == [f"context.{field}"]


@pytest.mark.parametrize("value", [".", ".."])
def test_a_dot_segment_is_not_a_patient_id(value: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_hook_request(_with(BODY, "patientId", value), "patient-view")


def test_ids_that_merely_contain_dots_stay_valid() -> None:
    for value in ("...", "a.b", "1.2.840", "x" * 64):
        assert parse_hook_request(_with(BODY, "patientId", value), "patient-view").patient_id == value


@pytest.mark.parametrize("suffix", TRAILING)
def test_references_match_whole(suffix: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_hook_request(_with(BODY, "userId", "Practitioner/example" + suffix), "patient-view")
    with pytest.raises(InvalidRequest):
        parse_hook_request(_with(ORDER_SELECT, "selections", ["MedicationRequest/m1" + suffix]), "order-select")


@pytest.mark.parametrize(("field", "value"), [("patientId", "p1\n"), ("encounterId", "e1\n"),
                                         ("userId", "Practitioner/1\n"), ("patientId", "..")])
def test_the_service_answers_400_operation_outcome(app: Flask, field: str, value: str) -> None:
    response = app.test_client().post("/cds-services/calcinosis-patient-view", json=_with(BODY, field, value))
    assert response.status_code == 400
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["expression"] == [f"context.{field}"]


def test_a_hook_instance_with_a_newline_is_not_logged_as_an_id(app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    """hookInstance is on every log line of the call: a trailing newline must not reach the log as an id."""
    body = copy.deepcopy(BODY)
    body["hookInstance"] = "h-1\n"
    with caplog.at_level(logging.INFO):
        response = app.test_client().post("/cds-services/calcinosis-patient-view", json=body)
    assert response.status_code in (200, 412)  # 412: this body's prefetch is incomplete; the log is the point
    logged = {getattr(record, "hook_instance", None) for record in caplog.records} - {None}
    assert logged, "no log line carried the hook instance: the test proves nothing"
    assert "h-1\n" not in logged
    assert logged <= {"(not an id)", "-", ""}


def test_the_request_id_pattern_is_anchored_at_the_very_end() -> None:
    """X-Request-ID cannot carry a final newline through HTTP, but the check must not depend on that."""
    from cds_service import _REQUEST_ID

    assert _REQUEST_ID.match("abc-1") is not None
    assert _REQUEST_ID.match("abc-1\n") is None


# -- SMART: token response, appContext, PKCE ------------------------------------------------------------------


@pytest.mark.parametrize("patient", ["p1\n", "p1\r\n", "..", "."])
def test_a_token_response_patient_must_be_exactly_an_id(patient: str) -> None:
    with pytest.raises(TokenExchangeFailed) as raised:
        _grant_from({"access_token": "t", "token_type": "Bearer", "patient": patient})
    assert raised.value.status == 400


def test_a_token_response_patient_that_is_an_id_is_kept() -> None:
    assert _grant_from({"access_token": "t", "token_type": "Bearer", "patient": "p1"}).patient == "p1"


def test_an_app_context_rule_must_be_exactly_a_rule_id() -> None:
    assert _app_context_rule('{"rule": "caxp-high"}') == "caxp-high"
    assert _app_context_rule('{"rule": "caxp-high\\n"}') is None


def test_a_pkce_verifier_must_be_exactly_the_rfc_alphabet() -> None:
    good = "a" * 43
    assert code_challenge_s256(good)
    with pytest.raises(ValueError, match="code verifier"):
        code_challenge_s256(good + "\n")
