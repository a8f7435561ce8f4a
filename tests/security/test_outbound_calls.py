"""Outbound calls leak nothing (issue 16 items 2-4), proved against a real local HTTP server.

- Item 2: no outbound call stores or sends a cookie. The server sets cookies on every answer; hook fallback
  fetches for two users, the SMART discovery, the token POST and the viewer's reads must never send one back.
- Item 3: ``fhirServer``, ``next`` links and the SMART ``iss`` are normalised (RFC 3986 5.2.4 dot-segment removal,
  ``%2e`` decoding) before the allowlist check; a URL whose path changes under normalisation is refused before
  any request leaves, so ``https://allowed/fhir/../admin`` never reaches ``/admin`` with the bearer token.
- Item 4 (unit level; the proxy test is tests/integration/test_query_encoding_proxy.py): every query value the
  service sends is percent-encoded, so no ``:`` or ``/`` of a code system URL travels raw.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from flask import Flask

from cds_service.runtime import get_runtime
from cds_service.services import find_service
from cds_service.smart.discovery import discover
from cds_service.smart.oauth import exchange_code
from cds_service.smart.patient_data import load_patient_data
from tests.support.app import make_app
from tests.support.fhir_builders import hook_request
from tests.support.outbound_servers import CookieSettingServer


@pytest.fixture
def server() -> Iterator[CookieSettingServer]:
    with CookieSettingServer() as running:
        yield running  # type: ignore[misc]


@pytest.fixture
def app(tmp_path: Path, server: CookieSettingServer) -> Iterator[Flask]:
    app = make_app(tmp_path, fhir_retries=0, allowed_fhir_servers=(server.base_url,), smart_client_id="viewer",
                   audit_enabled=False)  # the audit log is not what these tests are about
    yield app
    get_runtime(app).close()


def _call(app: Flask, pid: str, fhir_server: str, token: str) -> Any:
    body = hook_request("patient-view", pid, fhir_server=fhir_server, token=token)
    return app.test_client().post("/cds-services/calcinosis-patient-view", json=body)


# -- item 2: no cookies -------------------------------------------------------------------------------------------


def test_hook_fallback_fetches_neither_store_nor_replay_cookies(app: Flask, server: CookieSettingServer) -> None:
    first = _call(app, "pa", server.base_url, "token-of-user-a")
    assert first.status_code == 200, first.get_data(as_text=True)
    assert server.seen, "the first call fetched nothing: the test proves nothing"
    server.clear()
    second = _call(app, "pb", server.base_url, "token-of-user-b")
    assert second.status_code == 200
    seen = server.seen
    assert seen
    replayed = [request.cookie for request in seen if request.cookie]
    assert replayed == [], f"cookies set for user a's call were sent on user b's call: {replayed[:3]}"
    assert len(get_runtime(app).fhir_session.cookies) == 0


def test_smart_discovery_token_post_and_viewer_reads_send_no_cookie(app: Flask, server: CookieSettingServer) -> None:
    runtime = get_runtime(app)
    # A hook call first, so that a shared jar would already hold the server's cookies.
    assert _call(app, "pa", server.base_url, "token-of-user-a").status_code == 200
    endpoints = discover(server.base_url, runtime.settings, runtime.fhir_session)
    grant = exchange_code(endpoints.token_endpoint, code="c0de", redirect_uri="http://localhost/smart/callback",
                          client_id="viewer", code_verifier="v" * 43, settings=runtime.settings,
                          session=runtime.fhir_session)
    load_patient_data(runtime, server.base_url, grant.access_token, grant.patient)
    methods = {(request.method, urlsplit(request.target).path.rsplit("/", 1)[-1]) for request in server.seen}
    assert ("GET", "smart-configuration") in methods
    assert ("POST", "token") in methods
    assert ("GET", "p1") in methods  # the viewer read the launched patient
    assert [request.cookie for request in server.seen if request.cookie] == []
    assert len(runtime.fhir_session.cookies) == 0


def test_a_cookie_put_in_the_session_by_hand_is_still_not_sent(app: Flask, server: CookieSettingServer) -> None:
    """Belt and braces: even a cookie placed in the jar directly never leaves."""
    session = get_runtime(app).fhir_session
    session.cookies.set("planted", "x", domain="127.0.0.1", path="/")
    discover(server.base_url, get_runtime(app).settings, session)
    assert server.seen
    assert [request.cookie for request in server.seen if request.cookie] == []


# -- item 3: URLs normalised before they are trusted -----------------------------------------------------------

_ESCAPES = ["/../admin", "/%2e%2e/admin", "/%2E%2E/admin", "/.%2e/admin", "/./../admin", "/x/../../admin",
            "//../admin", "/..;/admin", "/..%2fadmin", "/..%5cadmin", "/..\\admin"]


@pytest.mark.parametrize("escape", _ESCAPES)
def test_a_fhir_server_that_leaves_the_allowed_base_under_normalisation_is_refused(
        app: Flask, server: CookieSettingServer, escape: str) -> None:
    response = _call(app, f"p-{uuid.uuid4().hex[:8]}", server.base_url + escape, "bearer-for-fhir")
    assert response.status_code == 400, response.get_data(as_text=True)
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["expression"] == ["fhirServer"]
    assert server.seen == [], "a request left the service for a refused fhirServer"


@pytest.mark.parametrize("escape", ["/../admin", "/%2e%2e/admin", "/Observation/..%2F..%2Fadmin", "//admin/..",
                                    "/./admin/../../admin"])
def test_a_next_link_that_leaves_the_base_under_normalisation_is_not_followed(
        app: Flask, server: CookieSettingServer, escape: str) -> None:
    server.next_link = f"{server.base_url}{escape}/Observation?page=2"
    response = _call(app, "pn", server.base_url, "bearer-for-fhir")
    assert response.status_code == 200, response.get_data(as_text=True)
    targets = [request.target for request in server.seen]
    assert targets, "nothing was fetched: the test proves nothing"
    assert not any("page=2" in target for target in targets), targets
    assert all(urlsplit(target).path.startswith("/fhir/") for target in targets), targets


def test_a_next_link_inside_the_base_is_still_followed(app: Flask, server: CookieSettingServer) -> None:
    server.next_link = f"{server.base_url}/Observation?page=2"
    assert _call(app, "pn", server.base_url, "bearer-for-fhir").status_code == 200
    assert any("page=2" in request.target for request in server.seen)


@pytest.mark.parametrize("escape", ["/../admin", "/%2e%2e/admin", "/fhir2/../admin", "//../admin"])
def test_a_smart_iss_that_changes_under_normalisation_gets_a_clear_error_page(
        app: Flask, server: CookieSettingServer, escape: str) -> None:
    response = app.test_client().get("/smart/launch", query_string={"iss": server.base_url + escape,
                                                                   "launch": "l1"})
    assert response.status_code == 400
    assert response.mimetype == "text/html"
    text = response.get_data(as_text=True)
    assert "dot segment" in text or "normalis" in text, text[:600]
    assert server.seen == []


@pytest.mark.parametrize("iss", ["https://[::1", "http://127.0.0.1:1/fhir\n", "http://127.0.0.1:1/fhir\t/../admin",
                                 "http://u:p@127.0.0.1:1/fhir", "http://127.0.0.1:99999/fhir"])
def test_a_malformed_smart_iss_gets_a_400_page_not_a_500(app: Flask, iss: str) -> None:
    response = app.test_client().get("/smart/launch", query_string={"iss": iss})
    assert response.status_code == 400
    assert response.mimetype == "text/html"


def test_discovery_refuses_endpoints_that_change_under_normalisation(
        app: Flask, server: CookieSettingServer) -> None:
    """The token POST carries the code and verifier: an endpoint with dot segments is not used."""
    from cds_service.smart.discovery import _from_well_known

    settings = get_runtime(app).settings
    assert _from_well_known({"authorization_endpoint": f"{server.origin}/a/../authorize",
                             "token_endpoint": f"{server.origin}/token"}, settings) is None
    assert _from_well_known({"authorization_endpoint": f"{server.origin}/authorize",
                             "token_endpoint": f"{server.origin}/t/%2e%2e/token"}, settings) is None


# -- item 4 (unit level): every query value percent-encoded ---------------------------------------------------


def test_every_fetched_query_value_is_percent_encoded(app: Flask, server: CookieSettingServer) -> None:
    assert _call(app, "pq", server.base_url, "bearer-for-fhir").status_code == 200
    service = find_service("calcinosis-patient-view")
    assert service is not None
    searches = [request.target for request in server.seen if "?" in request.target]
    assert len(searches) == sum(1 for spec in service.prefetch if "?" in spec.template)
    for target in searches:
        raw_query = target.split("?", 1)[1]
        for pair in raw_query.split("&"):
            _key, _, value = pair.partition("=")
            assert not set(value) & set(":/|"), f"unencoded delimiter in {pair!r}"
    # And the server decodes back exactly what the templates ask for.
    asked = {tuple(sorted(parse_qsl(spec.template.replace("{{context.patientId}}", "pq").split("?", 1)[1])))
             for spec in service.prefetch if "?" in spec.template}
    sent = {tuple(sorted(parse_qsl(target.split("?", 1)[1]))) for target in searches}
    assert sent == asked


def test_the_viewer_reads_percent_encode_every_query_value(app: Flask, server: CookieSettingServer) -> None:
    load_patient_data(get_runtime(app), server.base_url, "token", "p1")
    searches = [request.target.split("?", 1)[1] for request in server.seen if "?" in request.target]
    assert searches
    for query in searches:
        for pair in query.split("&"):
            assert not set(pair.partition("=")[2]) & set(":/|"), pair
