"""Every failure of the launch or the viewer is a clear HTML page with a 4xx/502 status, never a 500."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from flask.testing import FlaskClient

from tests.smart.conftest import follow_launch
from tests.support.app import make_app
from tests.support.fhir_server import FhirTestServer
from tests.support.smart_auth_server import SmartAuthServer

pytestmark = pytest.mark.integration


def _page(response: object) -> str:
    html: str = response.get_data(as_text=True)  # type: ignore[attr-defined]
    assert response.headers["Content-Type"].startswith("text/html")  # type: ignore[attr-defined]
    assert 'data-testid="error-page"' in html
    assert "Traceback" not in html
    assert "File \"" not in html
    return html


def test_state_mismatch(client: FlaskClient, auth_server: SmartAuthServer, trend_pid: str) -> None:
    started = client.get(f"/smart/launch?iss={auth_server.fhir_base}&launch={auth_server.new_launch(trend_pid)}")
    assert started.status_code == 302
    answer = client.get("/smart/callback?code=abc&state=not-the-state-we-sent-at-all")
    assert answer.status_code == 400
    assert "state mismatch" in _page(answer)
    assert auth_server.token_requests == 0  # nothing was exchanged


def test_callback_without_a_launch_in_this_browser(client: FlaskClient) -> None:
    answer = client.get("/smart/callback?code=abc&state=whatever")
    assert answer.status_code == 400
    assert "no launch in progress" in _page(answer)


def test_state_is_single_use(client: FlaskClient, auth_server: SmartAuthServer, trend_pid: str) -> None:
    started = client.get(f"/smart/launch?iss={auth_server.fhir_base}&launch={auth_server.new_launch(trend_pid)}")
    redirect_to = requests.get(started.headers["Location"], allow_redirects=False, timeout=10).headers["Location"]
    query = redirect_to.split("?", 1)[1]
    assert client.get(f"/smart/callback?{query}").status_code == 303
    replay = client.get(f"/smart/callback?{query}")
    assert replay.status_code == 400
    _page(replay)


def test_denied_consent(client: FlaskClient, auth_server: SmartAuthServer, trend_pid: str) -> None:
    auth_server.behaviour.deny = True
    _authorize, callback = follow_launch(
        client, f"/smart/launch?iss={auth_server.fhir_base}&launch={auth_server.new_launch(trend_pid)}")
    assert callback.status_code == 403
    assert "declined" in _page(callback)
    assert client.get("/smart/app").status_code == 401  # no session was created


def test_other_authorization_error_is_named_safely(client: FlaskClient, auth_server: SmartAuthServer,
                                                    trend_pid: str) -> None:
    started = client.get(f"/smart/launch?iss={auth_server.fhir_base}&launch={auth_server.new_launch(trend_pid)}")
    state = dict(p.split("=", 1) for p in started.headers["Location"].split("?", 1)[1].split("&"))["state"]
    answer = client.get(f"/smart/callback?error=<script>alert(1)</script>&state={state}")
    assert answer.status_code == 400
    html = _page(answer)
    assert "<script>" not in html
    assert "(other)" in html


def test_expired_token_rejected_by_fhir(client: FlaskClient, auth_server: SmartAuthServer, trend_pid: str) -> None:
    auth_server.behaviour.issue_token = "a-token-the-fhir-server-no-longer-accepts"
    _authorize, callback = follow_launch(
        client, f"/smart/launch?iss={auth_server.fhir_base}&launch={auth_server.new_launch(trend_pid)}")
    assert callback.status_code == 303
    page = client.get("/smart/app")
    assert page.status_code == 401
    html = _page(page)
    assert "expired" in html
    assert "a-token-the-fhir-server-no-longer-accepts" not in html


@pytest.mark.parametrize("status", [500, 503, 404])
def test_fhir_server_error(client: FlaskClient, auth_server: SmartAuthServer, trend_pid: str, status: int) -> None:
    _authorize, callback = follow_launch(
        client, f"/smart/launch?iss={auth_server.fhir_base}&launch={auth_server.new_launch(trend_pid)}")
    auth_server.behaviour.fhir_status = status
    page = client.get("/smart/app")
    assert page.status_code == 502
    assert f"HTTP {status}" in _page(page)


def test_unknown_iss_is_refused_before_any_request(tmp_path: Path, auth_server: SmartAuthServer) -> None:
    app = make_app(tmp_path, allowed_fhir_servers=("http://127.0.0.1:9/fhir",))
    answer = app.test_client().get(f"/smart/launch?iss={auth_server.fhir_base}&launch=x")
    assert answer.status_code == 403
    assert "CDS_ALLOWED_FHIR_SERVERS" in _page(answer)
    assert auth_server.authorize_requests == []


def test_http_iss_refused_outside_dev(tmp_path: Path, auth_server: SmartAuthServer) -> None:
    issuers = tmp_path / "issuers.json"
    issuers.write_text('[{"iss": "https://ehr.example.org", "jku": ["https://ehr.example.org/jwks.json"]}]')
    app = make_app(tmp_path, dev=False, public_base_url="https://cds.example.org",
                   allowed_fhir_servers=("https://ehr.example.org/fhir",), trusted_issuers_file=str(issuers))
    app.testing = True
    answer = app.test_client().get(f"/smart/launch?iss={auth_server.fhir_base}&launch=x")
    assert answer.status_code == 403
    assert "https" in _page(answer)


@pytest.mark.parametrize("query", ["", "?iss=not-a-url", "?iss=ftp://x/fhir", "?iss=http://h/fhir%23frag"])
def test_missing_or_malformed_iss(client: FlaskClient, query: str) -> None:
    answer = client.get(f"/smart/launch{query}")
    assert answer.status_code == 400
    _page(answer)


def test_iss_without_smart_configuration(client: FlaskClient, protected_fhir: FhirTestServer) -> None:
    # The bare FHIR server publishes neither document (and its metadata needs a token): discovery fails.
    answer = client.get(f"/smart/launch?iss={protected_fhir.base_url}&launch=x")
    assert answer.status_code == 502
    assert "SMART configuration" in _page(answer)


def test_viewer_without_launch(client: FlaskClient) -> None:
    answer = client.get("/smart/app")
    assert answer.status_code == 401
    assert "launch" in _page(answer).lower()


def test_rule_page_and_unknown_rule(client: FlaskClient) -> None:
    page = client.get("/rules/caxp-high")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "Calcium x phosphate product above 70" in html
    assert "KDOQI" in html
    assert "{" not in html
    missing = client.get("/rules/no-such-rule")
    assert missing.status_code == 404
    _page(missing)
