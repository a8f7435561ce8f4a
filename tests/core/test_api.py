"""HTTP behaviour of the CDS Hooks endpoints through the real app (Flask test client).

Every response here also passes through the contract suite (tests/contract/plugin.py).
"""

import json

import pytest

from cds_service.runtime import get_runtime
from tests.support.app import make_app
from tests.support.fhir_builders import esrd_with_high_caxp, healthy_adult, hook_request, prefetch_for

SERVICE_IDS = {"calcinosis-patient-view": "patient-view", "calcinosis-order-select": "order-select",
               "calcinosis-order-sign": "order-sign"}
ORIGIN = "https://sandbox.cds-hooks.org"


def _nested(depth):
    value = 1
    for _ in range(depth):
        value = [value]
    return {"a": value}


def test_discovery_lists_the_three_services(client):
    response = client.get("/cds-services")
    assert response.status_code == 200
    services = response.get_json()["services"]
    assert {s["id"]: s["hook"] for s in services} == SERVICE_IDS
    for service in services:
        assert service["title"]
        assert service["description"]
        assert service["usageRequirements"]
        templates = service["prefetch"]
        assert templates["patient"] == "Patient/{{context.patientId}}"
        obs = templates["observations"]
        assert "_sort=-date" in obs
        assert "_count=250" in obs
        assert "http://loinc.org|17861-6" in obs
        assert "http://loinc.org|2777-1" in obs


@pytest.mark.parametrize("path", ["/cds-services", "/cds-services/calcinosis-patient-view",
                                  "/cds-services/calcinosis-order-select/feedback"])
def test_preflight_is_answered_without_authentication(tmp_path, path):
    # Production mode (JWT required): the preflight must still pass without a token.
    issuers = tmp_path / "issuers.json"
    issuers.write_text(json.dumps([{"iss": "https://ehr.example.org", "jku": ["https://ehr.example.org/jwks"]}]))
    app = make_app(tmp_path, dev=False, public_base_url="https://cds.example.org",
                   trusted_issuers_file=str(issuers))
    response = app.test_client().options(path, headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] in ("*", ORIGIN)
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed
    assert "content-type" in allowed
    # ...and the real call without a token is a bare 401 that still carries CORS headers.
    denied = app.test_client().get("/cds-services", headers={"Origin": ORIGIN})
    assert denied.status_code == 401
    assert denied.headers["Access-Control-Allow-Origin"] in ("*", ORIGIN)
    get_runtime(app).close()


def test_cors_headers_on_errors(client):
    response = client.post("/cds-services/calcinosis-patient-view", data="{not json",
                           content_type="application/json", headers={"Origin": ORIGIN})
    assert response.status_code == 400
    assert response.headers["Access-Control-Allow-Origin"] in ("*", ORIGIN)


def test_nothing_fires_gives_empty_cards(client):
    body = hook_request("patient-view", "healthy-1", prefetch=prefetch_for(healthy_adult("healthy-1")))
    response = client.post("/cds-services/calcinosis-patient-view", json=body)
    assert response.status_code == 200
    assert response.get_json() == {"cards": []}


def test_high_caxp_in_esrd_gives_a_warning_card(client):
    body = hook_request("patient-view", "esrd-1", prefetch=prefetch_for(esrd_with_high_caxp("esrd-1")))
    response = client.post("/cds-services/calcinosis-patient-view", json=body)
    assert response.status_code == 200
    cards = response.get_json()["cards"]
    rule_ids = {c["source"]["topic"]["code"]: c["indicator"] for c in cards}
    assert rule_ids.get("caxp-high") == "warning"


def test_missing_prefetch_and_no_fhir_server_gives_412(client):
    body = hook_request("patient-view", "p-412")
    response = client.post("/cds-services/calcinosis-patient-view", json=body)
    assert response.status_code == 412
    outcome = response.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "fhirServer" in outcome["issue"][0]["diagnostics"]


@pytest.mark.parametrize(("kwargs", "status", "fragment"), [
    ({"data": "{not json", "content_type": "application/json"}, 400, "not valid JSON"),
    ({"data": "", "content_type": "application/json"}, 400, "empty"),
    ({"data": "<xml/>", "content_type": "application/xml"}, 415, "Content-Type"),
    ({"data": "[" * 5000 + "]" * 5000, "content_type": "application/json"}, 400, "nesting"),
    ({"data": json.dumps(_nested(80)), "content_type": "application/json"}, 400, "nesting"),
    ({"data": b"\xff\xfe\x00garbage", "content_type": "application/json"}, 400, "UTF-8"),
    ({"json": {"hook": "patient-view"}}, 400, "hookInstance"),
    ({"json": {"hook": "order-select", "hookInstance": "x", "context": {}}}, 400, "answers the 'patient-view'"),
    ({"json": {"hook": "patient-view", "hookInstance": "x", "context": {"userId": "Practitioner/1"}}}, 400,
     "context.patientId"),
    ({"json": [1, 2, 3]}, 400, "JSON object"),
    ({"data": "NaN", "content_type": "application/json"}, 400, "not valid JSON"),
])
def test_bad_requests_get_a_clear_4xx(client, kwargs, status, fragment):
    response = client.post("/cds-services/calcinosis-patient-view", **kwargs)
    assert response.status_code == status
    assert fragment in response.get_json()["issue"][0]["diagnostics"]


def test_huge_body_gives_413(tmp_path):
    app = make_app(tmp_path, max_request_bytes=4096)
    response = app.test_client().post("/cds-services/calcinosis-patient-view",
                                      data=json.dumps({"x": "a" * 10000}), content_type="application/json")
    assert response.status_code == 413
    assert response.get_json()["resourceType"] == "OperationOutcome"
    get_runtime(app).close()


def test_unknown_service_and_wrong_method(client):
    assert client.post("/cds-services/nope", json={}).status_code == 404
    assert client.get("/cds-services/calcinosis-patient-view").status_code == 405
    assert client.get("/nowhere").status_code == 404


def test_unexpected_failure_is_a_generic_500_without_internals(client, monkeypatch):
    import cds_service.hook_handler as handler

    def explode(*args, **kwargs):
        raise RuntimeError("/secret/internal/path.py exploded")
    monkeypatch.setattr(handler, "assess", explode)
    body = hook_request("patient-view", "esrd-2", prefetch=prefetch_for(esrd_with_high_caxp("esrd-2")))
    response = client.post("/cds-services/calcinosis-patient-view", json=body, headers={"Origin": ORIGIN})
    assert response.status_code == 500
    assert response.headers["Access-Control-Allow-Origin"] in ("*", ORIGIN)  # the browser can read the error
    text = response.get_data(as_text=True)
    assert "secret" not in text
    assert "Traceback" not in text
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_security_headers(client):
    response = client.get("/cds-services")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Request-ID"]


def test_health_and_readiness(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200


FEEDBACK = {"feedback": [{"card": "9368d37b-283f-44a0-93ea-547cebab93ed", "outcome": "overridden",
                          "overrideReason": {"reason": {"code": "will-recheck",
                                                        "system": "https://calcinosis-cds.org/fhir/CodeSystem/override"}},
                          "outcomeTimestamp": "2025-06-15T12:00:00Z"}]}


def test_feedback_is_accepted_and_validated(client):
    ok = client.post("/cds-services/calcinosis-patient-view/feedback", json=FEEDBACK)
    assert ok.status_code == 200
    bad = client.post("/cds-services/calcinosis-patient-view/feedback", json={"feedback": [{"card": "x"}]})
    assert bad.status_code == 400
    assert "outcome" in bad.get_json()["issue"][0]["diagnostics"]


def test_readiness_stays_green_on_the_spool_when_the_database_is_down(app, client, monkeypatch):
    # Decision support must not stop during a database outage (issue #4): the pod keeps serving and spools.
    runtime = get_runtime(app)
    monkeypatch.setattr(runtime.audit, "ping", lambda: False)
    runtime.settings.spool_dir.mkdir(parents=True, exist_ok=True)
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["audit"] == "spool"
    runtime.settings.spool_dir.chmod(0o500)
    try:
        import os
        if os.geteuid() == 0:  # root ignores directory permissions; make the spool path a file instead
            runtime.settings.spool_dir.chmod(0o700)
            runtime.settings.spool_dir.rename(runtime.settings.spool_dir.with_name("spool-moved"))
            runtime.settings.spool_dir.write_text("not a directory")
        not_ready = client.get("/readyz")
        assert not_ready.status_code == 503
        assert not_ready.get_json()["resourceType"] == "OperationOutcome"
    finally:
        if runtime.settings.spool_dir.is_dir():
            runtime.settings.spool_dir.chmod(0o700)


def test_audit_api_is_mounted_and_off_without_an_admin_token(client, tmp_path):
    # Audit data is PHI: without CDS_ADMIN_TOKEN the API does not exist (404), with it a token is required.
    assert client.get("/admin/audit/stats").status_code == 404
    app = make_app(tmp_path / "with-token", admin_token="a-long-admin-token-for-tests")
    with_token = app.test_client()
    assert with_token.get("/admin/audit/stats").status_code == 401
    ok = with_token.get("/admin/audit/stats", headers={"Authorization": "Bearer a-long-admin-token-for-tests"})
    assert ok.status_code == 200
    get_runtime(app).close()


def test_unexpected_error_log_has_frames_but_not_the_message(client, monkeypatch, caplog):
    import cds_service.hook_handler as handler

    def explode(*args, **kwargs):
        value = 10 + 0.5  # built at runtime so the source line shown in the frames does not contain it
        raise ValueError(f"could not convert '{value} mg/dL'")
    monkeypatch.setattr(handler, "assess", explode)
    body = hook_request("patient-view", "esrd-3", prefetch=prefetch_for(esrd_with_high_caxp("esrd-3")))
    with caplog.at_level("ERROR", logger="cds_service.http"):
        assert client.post("/cds-services/calcinosis-patient-view", json=body).status_code == 500
    record = next(r for r in caplog.records if r.getMessage() == "unhandled_error")
    assert record.error_type == "ValueError"
    assert "hook_handler.py" in record.frames
    logged = caplog.text + record.frames
    assert "10.5" not in logged
