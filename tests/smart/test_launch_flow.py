"""The SMART launch end to end through the Flask test client, against the real FHIR and authorization servers."""

from __future__ import annotations

import logging
import re
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from flask.testing import FlaskClient

from cds_service.smart.views import COOKIE
from tests.smart.conftest import expected_counts, follow_launch
from tests.support.fhir_server import FhirTestServer
from tests.support.smart_auth_server import SmartAuthServer, s256

pytestmark = pytest.mark.integration


def _series_counts(html: str) -> dict[str, int]:
    return {s: len(re.findall(rf'<circle data-series="{s}"', html)) for s in ("calcium", "phosphate", "caxp")}


def test_ehr_launch_shows_the_patient_with_the_issued_token(
        client: FlaskClient, auth_server: SmartAuthServer, trend_pid: str, protected_fhir: FhirTestServer,
        fhir_token: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    launch = auth_server.new_launch(trend_pid, app_context='{"rule":"caxp-high"}')
    protected_fhir.clear_requests()
    authorize, callback = follow_launch(client, f"/smart/launch?iss={auth_server.fhir_base}&launch={launch}")
    assert auth_server.errors == []
    sent = auth_server.authorize_requests[-1]
    assert sent["scope"].split() == ["launch", "patient/Observation.rs", "patient/Condition.rs",
                                     "patient/Procedure.rs", "patient/MedicationRequest.rs",
                                     "patient/MedicationStatement.rs", "patient/ServiceRequest.rs",
                                     "patient/Patient.r", "openid", "fhirUser"]
    assert sent["code_challenge_method"] == "S256"
    assert sent["launch"] == launch
    assert callback.status_code == 303
    assert callback.headers["Location"].endswith("/smart/app")
    page = client.get("/smart/app")
    html = page.get_data(as_text=True)
    assert page.status_code == 200, html
    assert f"{trend_pid}" in html
    assert "female" in html
    assert "61 y" in html
    assert _series_counts(html) == expected_counts()
    assert 'data-threshold="70"' in html
    assert 'data-threshold="55"' in html
    assert 'data-rule-id="caxp-high"' in html
    assert "(the card you opened)" in html
    # The mmol/L calcium is converted and says so in its tooltip.
    assert re.search(r"Calcium 9\.82 mg/dL .*reported 2\.45 mmol/L, converted from 2\.45 mmol/L", html)
    # Every FHIR request carried the token (the server would have answered 401 otherwise) ...
    seen = protected_fhir.requests()
    assert seen
    assert all(r["authorization_present"] for r in seen)
    # ... and the token is in no page, redirect or log line.
    assert fhir_token not in html
    assert fhir_token not in (authorize.headers.get("Location", "") + callback.headers.get("Location", ""))
    assert fhir_token not in caplog.text
    # The page carries its own CSP: its stylesheet is allowed, scripts are not.
    csp = page.headers["Content-Security-Policy"]
    assert "style-src 'self'" in csp
    assert "script-src" not in csp
    assert "default-src 'none'" in csp


def test_session_cookie_is_httponly_lax_and_rotated(client: FlaskClient, auth_server: SmartAuthServer,
                                                    trend_pid: str) -> None:
    started = client.get(f"/smart/launch?iss={auth_server.fhir_base}&launch={auth_server.new_launch(trend_pid)}")
    cookie = started.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Path=/smart" in cookie
    assert "Secure" not in cookie
    first_id = cookie.split(";")[0].split("=", 1)[1]
    answer = __import__("requests").get(started.headers["Location"], allow_redirects=False, timeout=10)
    target = urlsplit(answer.headers["Location"])
    done = client.get(f"{target.path}?{target.query}")
    second_id = done.headers["Set-Cookie"].split(";")[0].split("=", 1)[1]
    assert second_id != first_id  # a new id after sign-in (session fixation)


def test_secure_cookie_when_the_public_url_is_https(tmp_path: object, auth_server: SmartAuthServer,
                                                    trend_pid: str) -> None:
    from tests.support.app import make_app

    app = make_app(tmp_path, public_base_url="https://cds.example.org")  # type: ignore[arg-type]
    started = app.test_client().get(
        f"/smart/launch?iss={auth_server.fhir_base}&launch={auth_server.new_launch(trend_pid)}")
    assert "Secure" in started.headers["Set-Cookie"]
    query = parse_qs(urlsplit(started.headers["Location"]).query)
    assert query["redirect_uri"] == ["https://cds.example.org/smart/callback"]


def test_pkce_challenge_sent_matches_the_verifier_used(client: FlaskClient, auth_server: SmartAuthServer,
                                                       trend_pid: str) -> None:
    _authorize, callback = follow_launch(
        client, f"/smart/launch?iss={auth_server.fhir_base}&launch={auth_server.new_launch(trend_pid)}")
    # The authorization server checked S256(code_verifier) == code_challenge on /token and issued the token.
    assert auth_server.token_requests == 1
    assert auth_server.errors == []
    assert callback.status_code == 303
    challenge = auth_server.authorize_requests[-1]["code_challenge"]
    assert challenge != s256("x" * 43)  # a real, per-launch challenge


def test_standalone_launch_asks_for_launch_patient(client: FlaskClient, auth_server: SmartAuthServer,
                                                   trend_pid: str) -> None:
    auth_server.standalone_patient = trend_pid
    _authorize, callback = follow_launch(client, f"/smart/launch?iss={auth_server.fhir_base}")
    assert "launch/patient" in auth_server.authorize_requests[-1]["scope"].split()
    assert "launch" not in auth_server.authorize_requests[-1]
    assert callback.status_code == 303
    assert client.get("/smart/app").status_code == 200


def test_standalone_launch_uses_the_configured_default_iss(tmp_path: object, auth_server: SmartAuthServer,
                                                           trend_pid: str) -> None:
    from tests.support.app import make_app

    auth_server.standalone_patient = trend_pid
    app = make_app(tmp_path, smart_default_iss=auth_server.fhir_base)  # type: ignore[arg-type]
    started = app.test_client().get("/smart/launch")
    assert started.status_code == 302
    assert parse_qs(urlsplit(started.headers["Location"]).query)["aud"] == [auth_server.fhir_base]


def test_capability_statement_fallback_and_v1_scopes(client: FlaskClient, auth_server: SmartAuthServer,
                                                     trend_pid: str) -> None:
    auth_server.behaviour.well_known = False
    auth_server.behaviour.grant_v1_scopes = True
    _authorize, callback = follow_launch(
        client, f"/smart/launch?iss={auth_server.fhir_base}&launch={auth_server.new_launch(trend_pid)}")
    scopes = auth_server.authorize_requests[-1]["scope"].split()
    assert "patient/Observation.read" in scopes
    assert "patient/Patient.read" in scopes
    assert callback.status_code == 303
    page = client.get("/smart/app")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "did not grant read access" not in html  # .read grants are accepted
    assert _series_counts(html) == expected_counts()


def test_session_expiry_by_expires_in(client: FlaskClient, auth_server: SmartAuthServer, trend_pid: str) -> None:
    auth_server.behaviour.expires_in = 1
    _authorize, callback = follow_launch(
        client, f"/smart/launch?iss={auth_server.fhir_base}&launch={auth_server.new_launch(trend_pid)}")
    assert callback.status_code == 303
    time.sleep(1.2)
    page = client.get("/smart/app")
    assert page.status_code == 401
    assert "session has expired" in page.get_data(as_text=True)
