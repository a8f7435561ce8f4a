"""Client authentication over HTTP: bare 401s with CORS headers, open probes, cross-instance replay.

Every negative case of issue #5 is sent to discovery, a service call and feedback of a production-mode app
(no --dev); none may succeed, none may say why, and none may fetch anything (the allowlisted JWKS is fetched
once, by a positive request, before the negative cases run).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import responses
from cryptography.hazmat.primitives import serialization
from flask import Flask
from flask.testing import FlaskClient

from cds_service import create_app
from cds_service.runtime import get_runtime
from tests.security.tokens import (
    ATTACKER_JKU,
    INLINE_TENANT,
    JKU_ISSUER,
    JKU_URL,
    PINNED_ISSUER_JKU,
    PUBLIC_BASE_URL,
    Signer,
    SigningKey,
    TrustSetup,
    hand_made_token,
    jwks_fetches,
    settings_for,
)
from tests.support.fhir_builders import prefetch_for

SERVICE_ID = "calcinosis-patient-view"
ORIGIN = "https://sandbox.cds-hooks.org"
PATHS = {
    "discovery": "/cds-services",
    "service": f"/cds-services/{SERVICE_ID}",
    "feedback": f"/cds-services/{SERVICE_ID}/feedback",
}
LEEWAY = 60
MAX_LIFETIME = 3600  # CDS_JWT_MAX_LIFETIME_S default
EXP_2100 = 4102444800  # 2100-01-01T00:00:00Z


def hook_body() -> dict[str, Any]:
    """A valid patient-view call with the required prefetch present (empty searchsets)."""
    return {
        "hookInstance": str(uuid.uuid4()),
        "hook": "patient-view",
        "context": {"patientId": "p1", "userId": "Practitioner/doc1"},
        # Every advertised key: an empty searchset each, the patient alone (prefetch_for derives the keys).
        "prefetch": prefetch_for(
            [{"resourceType": "Patient", "id": "p1", "birthDate": "1960-01-01", "gender": "female"}]),
    }


def feedback_body() -> dict[str, Any]:
    """A valid overridden-card feedback entry."""
    return {"feedback": [{
        "card": str(uuid.uuid4()), "outcome": "overridden", "outcomeTimestamp": "2025-06-15T12:00:00Z",
        "overrideReason": {"userComment": "reviewed"},
    }]}


def call(client: FlaskClient, endpoint: str, authorization: str | None, *,
         path_override: str | None = None, host: str | None = None) -> Any:
    """Make the request an EHR would make to ``endpoint`` (a key of PATHS)."""
    headers = {"Origin": ORIGIN}
    if authorization is not None:
        headers["Authorization"] = authorization
    if host is not None:
        headers["Host"] = host
    path = path_override or PATHS[endpoint]
    if endpoint == "discovery":
        return client.get(path, headers=headers)
    body = hook_body() if endpoint == "service" else feedback_body()
    return client.post(path, data=json.dumps(body), content_type="application/json", headers=headers)


def url(endpoint: str) -> str:
    return PUBLIC_BASE_URL + PATHS[endpoint]


@pytest.fixture
def app_factory(tmp_path: Path, trust: TrustSetup) -> Iterator[Callable[..., Flask]]:
    """Build production-mode apps that share one audit database (as replicas behind a load balancer do)."""
    database_url = f"sqlite:///{tmp_path / 'shared-audit.sqlite3'}"
    apps: list[Flask] = []

    def build(**overrides: Any) -> Flask:
        values: dict[str, Any] = {"data_dir": str(tmp_path / f"data-{len(apps)}"),
                                  "database_url": database_url}
        values.update(overrides)
        app = create_app(settings_for(trust.issuers_file, **values))
        apps.append(app)
        return app

    yield build
    for app in apps:
        get_runtime(app).close()


@pytest.fixture
def client(app_factory: Callable[..., Flask]) -> FlaskClient:
    """A production-mode test client."""
    return app_factory().test_client()


def _negative_cases(trust: TrustSetup, attacker: SigningKey) -> dict[str, Callable[[str], str | None]]:
    """Each case maps the endpoint's audience URL to an Authorization header value that must be refused."""
    now = int(time.time())
    public_pem = trust.rs384.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def payload(aud: str) -> dict[str, Any]:
        return {"iss": JKU_ISSUER, "aud": aud, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}

    es = trust.es_signer
    untrusted = Signer("https://attacker.example.net", attacker, jku=ATTACKER_JKU)
    return {
        "no header": lambda aud: None,
        "malformed": lambda aud: "Bearer abc.def",
        "alg none": lambda aud: "Bearer " + hand_made_token(
            {"alg": "none", "typ": "JWT", "kid": trust.es384.kid}, payload(aud)),
        "HS256 with public key": lambda aud: "Bearer " + hand_made_token(
            {"alg": "HS256", "typ": "JWT", "kid": trust.rs384.kid, "jku": JKU_URL}, payload(aud),
            sign=lambda data: hmac.new(public_pem, data, hashlib.sha256).digest()),
        "wrong aud": lambda aud: es.bearer(url("service") if aud == url("discovery") else url("discovery")),
        "expired": lambda aud: es.bearer(aud, claims={"iat": now - 900, "exp": now - LEEWAY - 5}),
        "future iat": lambda aud: es.bearer(aud, claims={"iat": now + LEEWAY + 60, "exp": now + 900}),
        "missing jti": lambda aud: es.bearer(aud, drop=("jti",)),
        "missing iat": lambda aud: es.bearer(aud, drop=("iat",)),
        "iat not a number": lambda aud: es.bearer(aud, claims={"iat": str(now)}),
        "lifetime over max": lambda aud: es.bearer(aud, claims={"iat": now, "exp": now + MAX_LIFETIME + 1}),
        "exp in 2100": lambda aud: es.bearer(aud, claims={"exp": EXP_2100}),
        "unknown kid": lambda aud: es.bearer(aud, headers={"kid": "unknown-kid"}),
        "iss not trusted": lambda aud: untrusted.bearer(aud),
        "jku not allowlisted": lambda aud: Signer(JKU_ISSUER, attacker, jku=ATTACKER_JKU).bearer(aud),
        "tenant not allowed": lambda aud: trust.inline_signer.bearer(aud, claims={"tenant": "hospital-z"}),
    }


NEGATIVE_CASES = ["no header", "malformed", "alg none", "HS256 with public key", "wrong aud", "expired",
                  "future iat", "missing jti", "missing iat", "iat not a number", "lifetime over max",
                  "exp in 2100", "unknown kid", "iss not trusted", "jku not allowlisted", "tenant not allowed"]


@pytest.mark.parametrize("endpoint", list(PATHS))
def test_every_negative_case_is_a_bare_401_with_cors_and_no_outbound_request(
    client: FlaskClient, trust: TrustSetup, session_keys: dict[str, SigningKey],
    jwks_server: responses.RequestsMock, endpoint: str,
) -> None:
    # Warm the JWKS cache with a valid request, so any fetch after this point would be caused by a bad token.
    assert call(client, endpoint, trust.es_signer.bearer(url(endpoint))).status_code == 200
    fetches_before = len(jwks_server.calls)
    cases = _negative_cases(trust, session_keys["attacker"])
    assert sorted(cases) == sorted(NEGATIVE_CASES)
    bodies = set()
    for name in NEGATIVE_CASES:
        response = call(client, endpoint, cases[name](url(endpoint)))
        assert response.status_code == 401, name
        assert response.headers.get("Access-Control-Allow-Origin") in ("*", ORIGIN), name
        body = response.get_json()
        assert body["resourceType"] == "OperationOutcome", name
        bodies.add(response.get_data(as_text=True))
    assert len(bodies) == 1  # identical for every case: the response never says why
    text = bodies.pop().lower()
    for hint in ("expired", "audience", "signature", "jti", "kid", "tenant", "issuer", "alg", "jku"):
        assert hint not in text
    assert len(jwks_server.calls) == fetches_before
    assert jwks_fetches(jwks_server, ATTACKER_JKU) == 0


@pytest.mark.parametrize("endpoint", list(PATHS))
@pytest.mark.parametrize("signer_name", ["es_signer", "rs_signer"])
def test_es384_and_rs384_tokens_are_accepted(
    client: FlaskClient, trust: TrustSetup, jwks_server: responses.RequestsMock, endpoint: str,
    signer_name: str,
) -> None:
    signer: Signer = getattr(trust, signer_name)
    response = call(client, endpoint, signer.bearer(url(endpoint)))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers.get("Access-Control-Allow-Origin") in ("*", ORIGIN)


def test_inline_key_issuer_with_its_tenant_is_accepted(
    client: FlaskClient, trust: TrustSetup, jwks_server: responses.RequestsMock
) -> None:
    header = trust.inline_signer.bearer(url("service"), claims={"tenant": INLINE_TENANT})
    assert call(client, "service", header).status_code == 200


@pytest.mark.parametrize("endpoint", list(PATHS))
def test_pinned_key_issuer_is_accepted_with_a_jku_header_that_is_never_fetched(
    client: FlaskClient, trust: TrustSetup, jwks_server: responses.RequestsMock, endpoint: str
) -> None:
    # Issue 16 item 5: a client that always sends its public jku (the CDS Hooks sandbox) with its key pinned.
    header = trust.inline_signer.bearer(url(endpoint), headers={"jku": PINNED_ISSUER_JKU},
                                        claims={"tenant": INLINE_TENANT})
    response = call(client, endpoint, header)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert len(jwks_server.calls) == 0


def test_a_token_lasting_to_2100_works_not_even_once(
    client: FlaskClient, trust: TrustSetup, jwks_server: responses.RequestsMock
) -> None:
    # Issue 16 item 6: before, such a token was accepted once (then refused as a replay) at any time until 2100.
    header = trust.es_signer.bearer(url("service"), claims={"exp": EXP_2100})
    assert call(client, "service", header).status_code == 401
    assert call(client, "service", trust.es_signer.bearer(url("service"))).status_code == 200


def test_audience_comes_from_the_public_base_url_not_the_host_header(
    client: FlaskClient, trust: TrustSetup, jwks_server: responses.RequestsMock
) -> None:
    spoofed = "https://evil.example.net/cds-services"
    response = call(client, "discovery", trust.es_signer.bearer(spoofed), host="evil.example.net")
    assert response.status_code == 401
    assert call(client, "discovery", trust.es_signer.bearer(url("discovery")),
                host="internal-pod:8080").status_code == 200


def test_unknown_service_is_not_revealed_without_a_token(client: FlaskClient) -> None:
    response = call(client, "service", None, path_override="/cds-services/does-not-exist")
    assert response.status_code == 401


@pytest.mark.parametrize("endpoint", list(PATHS))
def test_cors_preflight_needs_no_token(client: FlaskClient, endpoint: str) -> None:
    response = client.options(PATHS[endpoint], headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    })
    assert response.status_code == 200
    assert response.headers.get("Access-Control-Allow-Origin") in ("*", ORIGIN)
    assert "authorization" in response.headers.get("Access-Control-Allow-Headers", "").lower()


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_need_no_token(client: FlaskClient, path: str) -> None:
    assert client.get(path).status_code == 200


def test_replayed_jti_is_rejected_across_two_instances_sharing_one_database(
    app_factory: Callable[..., Flask], trust: TrustSetup, jwks_server: responses.RequestsMock
) -> None:
    first, second = app_factory().test_client(), app_factory().test_client()
    header = trust.es_signer.bearer(url("discovery"))
    assert call(first, "discovery", header).status_code == 200
    # The second instance has never seen this token in memory: only the shared database can refuse it.
    assert call(second, "discovery", header).status_code == 401
    other = trust.es_signer.bearer(url("discovery"))
    assert call(second, "discovery", other).status_code == 200
    assert call(first, "discovery", other).status_code == 401
