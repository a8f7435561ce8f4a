"""Unit tests: PKCE, state, scopes, discovery and its fallback, token responses, trend building."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import requests
import responses

from cds_service.config import load_settings
from cds_service.smart.discovery import OAUTH_URIS, discover
from cds_service.smart.errors import DiscoveryFailed, TokenExchangeFailed
from cds_service.smart.oauth import exchange_code
from cds_service.smart.pkce import code_challenge_s256, new_code_verifier, new_state, same_secret
from cds_service.smart.scopes import grants_read, missing_read_grants, requested_scopes
from cds_service.smart.trend import build_chart, trend_points
from fhir_mappings.extract import extract
from fhir_mappings.valuesets import default_index
from tests.support.fhir_builders import lab, patient

ISS = "https://ehr.example.org/fhir"
DEV = load_settings({}, dev=True)
PROD = load_settings({}, allowed_fhir_servers=(ISS,))


def test_pkce_rfc7636_appendix_b_vector() -> None:
    assert code_challenge_s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == \
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


@pytest.mark.parametrize("bad", ["short", "x" * 129, "has space" + "x" * 40, "ä" * 43])
def test_pkce_rejects_invalid_verifiers(bad: str) -> None:
    with pytest.raises(ValueError, match="RFC 7636"):
        code_challenge_s256(bad)


def test_fresh_verifiers_and_states_are_unique_and_long() -> None:
    verifiers = {new_code_verifier() for _ in range(50)}
    states = {new_state() for _ in range(50)}
    assert len(verifiers) == 50
    assert len(states) == 50
    assert all(43 <= len(v) <= 128 for v in verifiers)
    assert all(len(s) >= 22 for s in states)  # >= 122 bits
    assert same_secret("abc", "abc")
    assert not same_secret("abc", "abd")


def test_requested_scopes_v2_v1_and_standalone() -> None:
    assert requested_scopes(ehr_launch=True, v1=False) == (
        "launch patient/Observation.rs patient/Condition.rs patient/Procedure.rs patient/MedicationRequest.rs "
        "patient/MedicationStatement.rs patient/ServiceRequest.rs patient/Patient.r openid fhirUser")
    assert requested_scopes(ehr_launch=False, v1=True).split()[:2] == ["launch/patient", "patient/Observation.read"]


@pytest.mark.parametrize(("granted", "readable"), [
    ("patient/Observation.rs", True), ("patient/Observation.r", True), ("patient/Observation.read", True),
    ("patient/*.read", True), ("patient/*.rs", True), ("user/Observation.cruds", True),
    ("patient/Observation.rs?category=laboratory", True), ("patient/Observation.c", False),
    ("patient/Observation.write", False), ("patient/Condition.rs", False), ("launch openid", False),
])
def test_grants_read(granted: str, readable: bool) -> None:
    assert grants_read(granted, "Observation") is readable


def test_missing_read_grants_lists_what_was_not_shared() -> None:
    assert missing_read_grants("patient/Observation.rs patient/Patient.r patient/Procedure.rs") == [
        "Condition", "MedicationRequest", "MedicationStatement", "ServiceRequest"]


@responses.activate
def test_discovery_prefers_well_known() -> None:
    responses.get(f"{ISS}/.well-known/smart-configuration", json={
        "authorization_endpoint": "https://ehr.example.org/auth", "token_endpoint": "https://ehr.example.org/token",
        "capabilities": ["permission-v2"]})
    found = discover(ISS, PROD, requests.Session())
    assert (found.authorization_endpoint, found.token_endpoint, found.source) == (
        "https://ehr.example.org/auth", "https://ehr.example.org/token", "smart-configuration")
    assert not found.v1_only


@responses.activate
def test_discovery_falls_back_to_capability_statement_oauth_uris() -> None:
    responses.get(f"{ISS}/.well-known/smart-configuration", status=404)
    responses.get(f"{ISS}/metadata", json={"resourceType": "CapabilityStatement", "rest": [{"security": {
        "extension": [{"url": OAUTH_URIS, "extension": [
            {"url": "authorize", "valueUri": "https://ehr.example.org/a"},
            {"url": "token", "valueUri": "https://ehr.example.org/t"}]}]}}]})
    found = discover(ISS, PROD, requests.Session())
    assert found.source == "capability-statement"
    assert found.token_endpoint == "https://ehr.example.org/t"
    assert found.v1_only


@responses.activate
def test_discovery_refuses_http_endpoints_outside_dev() -> None:
    responses.get(f"{ISS}/.well-known/smart-configuration", json={
        "authorization_endpoint": "http://ehr.example.org/auth", "token_endpoint": "http://ehr.example.org/token"})
    responses.get(f"{ISS}/metadata", status=401)
    with pytest.raises(DiscoveryFailed):
        discover(ISS, PROD, requests.Session())
    assert discover(ISS, DEV, requests.Session()).token_endpoint == "http://ehr.example.org/token"


@responses.activate
def test_discovery_does_not_follow_redirects() -> None:
    responses.get(f"{ISS}/.well-known/smart-configuration", status=302, headers={"Location": "https://evil.test/x"})
    responses.get(f"{ISS}/metadata", status=302, headers={"Location": "https://evil.test/y"})
    with pytest.raises(DiscoveryFailed):
        discover(ISS, PROD, requests.Session())
    assert all("evil.test" not in call.request.url for call in responses.calls)


def _exchange(body: object, status: int = 200) -> object:
    with responses.RequestsMock() as mock:
        mock.post("https://ehr.example.org/token", json=body, status=status)
        return exchange_code("https://ehr.example.org/token", code="c", redirect_uri="https://app/cb", client_id="x",
                             code_verifier="v" * 43, settings=PROD, session=requests.Session())


def test_token_response_with_app_context() -> None:
    grant = _exchange({"access_token": "t", "token_type": "bearer", "patient": "p1", "expires_in": 60,
                       "scope": "patient/Observation.rs", "appContext": '{"rule":"caxp-high"}'})
    assert grant.patient == "p1"  # type: ignore[attr-defined]
    assert grant.app_context_rule == "caxp-high"  # type: ignore[attr-defined]


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"error": "invalid_grant"}, 400, "did not accept"),
    ({"error": "server_error"}, 500, "HTTP 500"),
    ({"access_token": "t", "token_type": "mac", "patient": "p"}, 200, "bearer"),
    ({"access_token": "t", "token_type": "Bearer"}, 200, "which patient"),
    ({"access_token": "t", "token_type": "Bearer", "patient": "../x"}, 200, "which patient"),
])
def test_token_response_problems(body: object, status: int, message: str) -> None:
    with pytest.raises(TokenExchangeFailed, match=message):
        _exchange(body, status)


def test_trend_pairs_convert_and_lay_out() -> None:
    now = datetime(2025, 6, 15, 12, tzinfo=UTC)
    days = lambda n: (now - timedelta(days=n)).isoformat()  # noqa: E731
    resources = [
        lab("p", "ca1", "17861-6", 2.5, "mmol/L", days_ago=0, specimen="s1"),
        lab("p", "p1", "2777-1", 6.0, "mg/dL", days_ago=0, specimen="s1"),
        lab("p", "ca2", "17861-6", 9.0, "mg/dL", days_ago=0, specimen="s2"),
        lab("p", "p2", "2777-1", 99.0, "furlongs", days_ago=0),   # unknown unit: excluded, never guessed
    ]
    for resource, offset in zip(resources, (10, 10, 40, 5), strict=True):
        resource["effectiveDateTime"] = days(offset)
    facts = extract(patient("p"), resources, now, default_index())
    points = trend_points(facts)
    assert [p.series for p in points].count("calcium") == 2
    assert [p.series for p in points].count("phosphate") == 1
    caxp = [p for p in points if p.series == "caxp"]
    assert len(caxp) == 1
    assert caxp[0].value == pytest.approx(2.5 * 4.008 * 6.0)
    assert "Observation/ca1" in caxp[0].label
    assert "Observation/p1" in caxp[0].label
    chart = build_chart(points)
    top = chart.panels[0]
    y70 = next(y for value, y, _ in top.thresholds if value == 70.0)
    y55 = next(y for value, y, _ in top.thresholds if value == 55.0)
    assert top.top < y70 < y55 < top.bottom        # 70 is drawn above 55
    assert caxp[0].value > 55
    placed = top.points[0]
    assert chart.left <= placed.x <= chart.right
    assert top.top <= placed.y < y55                # 60.1 plots above the 55 line
    assert build_chart([]).empty
