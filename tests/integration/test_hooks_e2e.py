"""End to end through HTTP against the real FHIR server (Medplum's router behind tests/fhir_server).

The service runs in-process (Flask test client) and fetches from the real server over HTTP when prefetch is
missing; with a token, the token is forwarded (the server is started requiring it, so a missing or wrong
token fails the call).
"""

import uuid

import pytest

from cds_service.runtime import get_runtime
from tests.support.app import make_app
from tests.support.fhir_builders import (
    esrd_with_high_caxp,
    healthy_adult,
    hook_request,
    iv_calcium_gluconate_draft,
    prefetch_for,
)
from tests.support.fhir_server import FhirTestServer

pytestmark = pytest.mark.integration


@pytest.fixture
def app_settings():
    return {"fhir_retries": 0, "fhir_read_timeout_s": 1.0, "fhir_total_timeout_s": 3.0}


def _pid() -> str:
    return f"pt-{uuid.uuid4().hex[:12]}"


def _cards(response):
    assert response.status_code == 200, response.get_data(as_text=True)
    return {c["source"]["topic"]["code"]: c for c in response.get_json()["cards"]}


def test_patient_view_without_prefetch_is_answered_from_fetched_data(app, fhir_server, fhir_patient_loader):
    pid = _pid()
    fhir_patient_loader(esrd_with_high_caxp(pid))
    fhir_server.clear_requests()
    body = hook_request("patient-view", pid, fhir_server=fhir_server.base_url)
    cards = _cards(app.test_client().post("/cds-services/calcinosis-patient-view", json=body))
    assert cards["caxp-high"]["indicator"] == "warning"
    # The service fetched every advertised prefetch query itself.
    urls = [r["url"] for r in fhir_server.requests()]
    assert any(u.startswith("/fhir/Observation?") and f"patient={pid}" in u for u in urls)
    assert any(u.startswith(f"/fhir/Patient/{pid}") for u in urls)
    assert any(u.startswith("/fhir/Condition?") for u in urls)


def test_token_is_forwarded_to_the_fhir_server(tmp_path):
    token = f"tok-{uuid.uuid4().hex}"
    server = FhirTestServer.start(require_token=token)
    app = make_app(tmp_path, fhir_retries=0)
    try:
        pid = _pid()
        server.load(esrd_with_high_caxp(pid))
        server.clear_requests()
        client = app.test_client()
        with_token = client.post("/cds-services/calcinosis-patient-view",
                                 json=hook_request("patient-view", pid, fhir_server=server.base_url, token=token))
        assert "caxp-high" in _cards(with_token)
        seen = server.requests()
        assert seen
        assert all(r["authorization_present"] for r in seen)
        # Without the token the server refuses every query, so required data is unavailable: 412.
        without = client.post("/cds-services/calcinosis-patient-view",
                              json=hook_request("patient-view", pid, fhir_server=server.base_url))
        assert without.status_code == 412
    finally:
        get_runtime(app).close()
        server.stop()


def test_missing_fhir_server_gives_412(app):
    response = app.test_client().post("/cds-services/calcinosis-patient-view",
                                      json=hook_request("patient-view", _pid()))
    assert response.status_code == 412
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_fhir_server_down_gives_412(app):
    server = FhirTestServer.start()
    base = server.base_url
    server.stop()
    response = app.test_client().post("/cds-services/calcinosis-patient-view",
                                      json=hook_request("patient-view", _pid(), fhir_server=base))
    assert response.status_code == 412


def test_slow_fhir_server_gives_412_not_a_hang(app):
    import time

    server = FhirTestServer.start(latency_ms=2500)
    try:
        started = time.perf_counter()
        response = app.test_client().post("/cds-services/calcinosis-patient-view",
                                          json=hook_request("patient-view", _pid(), fhir_server=server.base_url))
        assert response.status_code == 412
        assert time.perf_counter() - started < 3.0 + 1.0
    finally:
        server.stop()


def test_iv_calcium_order_for_esrd_patient_is_critical_with_delete(app, fhir_server, fhir_patient_loader):
    pid = _pid()
    fhir_patient_loader(esrd_with_high_caxp(pid))
    draft = iv_calcium_gluconate_draft(pid, f"{pid}-mr")
    body = hook_request("order-select", pid, fhir_server=fhir_server.base_url, drafts=[draft])
    cards = _cards(app.test_client().post("/cds-services/calcinosis-order-select", json=body))
    card = cards["iv-calcium-order"]
    assert card["indicator"] == "critical"
    actions = [a for s in card["suggestions"] for a in s.get("actions", [])]
    assert {"type": "delete", "resourceId": [f"MedicationRequest/{draft['id']}"]}.items() <= next(
        a for a in actions if a["type"] == "delete").items()
    assert card["overrideReasons"]
    # Order hooks return order cards only (clinical-rules.md 2.9): no patient-view card here.
    assert "caxp-high" not in cards


def test_same_order_for_a_patient_without_risk_factors_gets_no_card(app, fhir_server, fhir_patient_loader):
    pid = _pid()
    fhir_patient_loader(healthy_adult(pid))
    body = hook_request("order-select", pid, fhir_server=fhir_server.base_url,
                        drafts=[iv_calcium_gluconate_draft(pid, f"{pid}-mr")])
    assert _cards(app.test_client().post("/cds-services/calcinosis-order-select", json=body)) == {}


def test_prefetch_and_fetched_data_give_the_same_cards(app, fhir_server, fhir_patient_loader):
    pid = _pid()
    resources = fhir_patient_loader(esrd_with_high_caxp(pid))
    client = app.test_client()
    fetched = _cards(client.post("/cds-services/calcinosis-patient-view",
                                 json=hook_request("patient-view", pid, fhir_server=fhir_server.base_url)))
    prefetched = _cards(client.post("/cds-services/calcinosis-patient-view",
                                    json=hook_request("patient-view", pid, prefetch=prefetch_for(resources))))
    assert {k: v["indicator"] for k, v in fetched.items()} == {k: v["indicator"] for k, v in prefetched.items()}
