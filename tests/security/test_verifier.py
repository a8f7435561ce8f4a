"""Unit tests of RequestVerifier: every negative case of issue #5, the positives, rotation and replay."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds_service.auth import AuthenticationFailed, ClientIdentity, RequestVerifier, load_trusted_issuers
from tests.security.tokens import (
    ATTACKER_JKU,
    DISCOVERY_URL,
    FEEDBACK_URL,
    INLINE_ISSUER,
    INLINE_TENANT,
    JKU_ISSUER,
    JKU_URL,
    PINNED_ISSUER_JKU,
    SANDBOX_ISS,
    SANDBOX_JKU,
    SERVICE_URL,
    InMemoryReplayGuard,
    Signer,
    SigningKey,
    TrustSetup,
    b64url,
    hand_made_token,
    jwks,
    jwks_fetches,
    make_key,
    sandbox_published_jwks,
    settings_for,
    write_issuers_file,
)

LEEWAY = 60  # Settings.jwt_leeway_s default


def standard_payload(iss: str = JKU_ISSUER, aud: str = SERVICE_URL) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": iss, "aud": aud, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}


def assert_rejected(verifier: RequestVerifier, header: str | None, audience: str = SERVICE_URL) -> str:
    with pytest.raises(AuthenticationFailed) as info:
        verifier.verify(header, audience)
    return str(info.value)


# ---------------------------------------------------------------------------------------------------------
# Positive cases
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("signer_name", ["es_signer", "rs_signer"])
def test_es384_and_rs384_tokens_from_allowlisted_jku_are_accepted(
    verifier: RequestVerifier, trust: TrustSetup, jwks_server: responses.RequestsMock, signer_name: str
) -> None:
    signer: Signer = getattr(trust, signer_name)
    token = signer.token(SERVICE_URL, claims={"jti": "jti-1"})
    identity = verifier.verify(f"Bearer {token}", SERVICE_URL)
    assert identity == ClientIdentity(iss=JKU_ISSUER, tenant=None, jti="jti-1", kid=signer.key.kid)
    assert jwks_fetches(jwks_server) == 1


def test_inline_jwks_issuer_with_allowed_tenant_is_accepted(
    verifier: RequestVerifier, trust: TrustSetup, jwks_server: responses.RequestsMock
) -> None:
    identity = verifier.verify(trust.inline_signer.bearer(claims={"tenant": INLINE_TENANT}), SERVICE_URL)
    assert identity is not None
    assert (identity.iss, identity.tenant) == (INLINE_ISSUER, INLINE_TENANT)
    assert len(jwks_server.calls) == 0  # keys on record: nothing fetched


def test_aud_list_containing_the_endpoint_is_accepted(
    verifier: RequestVerifier, trust: TrustSetup, jwks_server: responses.RequestsMock
) -> None:
    header = trust.es_signer.bearer([DISCOVERY_URL, SERVICE_URL])
    assert verifier.verify(header, SERVICE_URL) is not None


def test_token_without_jku_uses_the_issuers_configured_jku(
    verifier: RequestVerifier, trust: TrustSetup, jwks_server: responses.RequestsMock
) -> None:
    signer = Signer(JKU_ISSUER, trust.es384)  # no jku header
    assert verifier.verify(signer.bearer(), SERVICE_URL) is not None
    assert jwks_fetches(jwks_server) == 1


def test_jwks_is_cached_between_requests(
    verifier: RequestVerifier, trust: TrustSetup, jwks_server: responses.RequestsMock
) -> None:
    for _ in range(5):
        verifier.verify(trust.es_signer.bearer(), SERVICE_URL)
        verifier.verify(trust.rs_signer.bearer(), SERVICE_URL)
    assert jwks_fetches(jwks_server) == 1


def test_key_rotation_is_picked_up_by_a_rate_limited_jwks_refresh(
    trust: TrustSetup, session_keys: dict[str, SigningKey]
) -> None:
    cooldown = 0.5
    verifier = RequestVerifier(
        load_trusted_issuers(str(trust.issuers_file), dev=False),
        dev=False, leeway_s=LEEWAY, replay_guard=InMemoryReplayGuard(), jwks_refresh_cooldown_s=cooldown,
    )
    rotated = session_keys["rotated"]
    served = {"set": jwks(trust.es384)}
    with responses.RequestsMock() as rsps:
        rsps.add_callback(responses.GET, JKU_URL,
                          callback=lambda _request: (200, {}, json.dumps(served["set"])))
        assert verifier.verify(trust.es_signer.bearer(), SERVICE_URL) is not None
        served["set"] = jwks(rotated)  # the EHR rotates its key
        new_signer = Signer(JKU_ISSUER, rotated, jku=JKU_URL)
        # Within the cooldown an unknown kid does not trigger a fetch (random kids cannot hammer the EHR).
        assert_rejected(verifier, new_signer.bearer())
        assert jwks_fetches(rsps) == 1
        time.sleep(cooldown + 0.1)
        identity = verifier.verify(new_signer.bearer(), SERVICE_URL)
        assert identity is not None
        assert identity.kid == rotated.kid
        assert jwks_fetches(rsps) == 2


def test_the_cached_jwks_is_fetched_again_after_its_lifespan(trust: TrustSetup) -> None:
    verifier = RequestVerifier(
        load_trusted_issuers(str(trust.issuers_file), dev=False),
        dev=False, leeway_s=LEEWAY, replay_guard=InMemoryReplayGuard(), jwks_cache_lifespan_s=0.3,
    )
    with responses.RequestsMock() as rsps:
        rsps.get(JKU_URL, json=jwks(trust.es384))
        assert verifier.verify(trust.es_signer.bearer(), SERVICE_URL) is not None
        assert verifier.verify(trust.es_signer.bearer(), SERVICE_URL) is not None
        assert jwks_fetches(rsps) == 1
        time.sleep(0.4)
        assert verifier.verify(trust.es_signer.bearer(), SERVICE_URL) is not None
        assert jwks_fetches(rsps) == 2


def test_unusable_entries_of_a_fetched_jwks_are_skipped(
    trust: TrustSetup, session_keys: dict[str, SigningKey]
) -> None:
    verifier = RequestVerifier.from_settings(settings_for(trust.issuers_file), InMemoryReplayGuard())
    attacker = session_keys["attacker"]
    junk = [
        "not a JWK",
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        {**attacker.public_jwk, "kid": "enc-key", "use": "enc"},
        {**attacker.public_jwk, "kid": "with-private", "d": "AAAA"},
        {**attacker.public_jwk, "kid": "broken", "x": "not-a-point"},
        {k: v for k, v in attacker.public_jwk.items() if k != "kid"},
    ]
    with responses.RequestsMock() as rsps:
        rsps.get(JKU_URL, json={"keys": [*junk, trust.es384.public_jwk]})
        assert verifier.verify(trust.es_signer.bearer(), SERVICE_URL) is not None
        for kid in ("hmac", "enc-key", "with-private", "broken"):
            assert "unknown kid" in assert_rejected(verifier, trust.es_signer.bearer(headers={"kid": kid}))


@pytest.mark.parametrize("body", ["[]", '{"keys": {}}', "not json", "x" * (300 * 1024)])
def test_a_jwks_endpoint_returning_no_jwk_set_is_a_rejection(
    trust: TrustSetup, replay_guard: InMemoryReplayGuard, body: str
) -> None:
    verifier = RequestVerifier.from_settings(settings_for(trust.issuers_file), replay_guard)
    with responses.RequestsMock() as rsps:
        rsps.get(JKU_URL, body=body, content_type="application/json")
        assert "JWKS" in assert_rejected(verifier, trust.es_signer.bearer())


def test_random_kids_do_not_make_us_hammer_the_jwks_endpoint(
    verifier: RequestVerifier, trust: TrustSetup, jwks_server: responses.RequestsMock
) -> None:
    for _ in range(30):
        assert_rejected(verifier, trust.es_signer.bearer(headers={"kid": str(uuid.uuid4())}))
    assert jwks_fetches(jwks_server) == 1


@pytest.mark.parametrize("alg", ["ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS384"])
def test_every_allowlisted_algorithm_verifies_with_a_key_on_record(tmp_path: Path, alg: str) -> None:
    key = make_key(alg)
    path = write_issuers_file(tmp_path / "issuers.json",
                              [{"iss": "https://alg.example.org", "jwks": jwks(key)}])
    verifier = RequestVerifier.from_settings(settings_for(path), InMemoryReplayGuard())
    assert verifier.verify(Signer("https://alg.example.org", key).bearer(), SERVICE_URL) is not None


@pytest.mark.parametrize("alg", ["PS256", "PS512"])
def test_asymmetric_algorithms_outside_the_allowlist_are_rejected(tmp_path: Path, alg: str) -> None:
    key = make_key(alg)
    jwk = {k: v for k, v in key.public_jwk.items() if k != "alg"}  # the key itself would fit
    path = write_issuers_file(tmp_path / "issuers.json",
                              [{"iss": "https://alg.example.org", "jwks": {"keys": [jwk]}}])
    verifier = RequestVerifier.from_settings(settings_for(path), InMemoryReplayGuard())
    assert "not allowed" in assert_rejected(verifier, Signer("https://alg.example.org", key).bearer())


# ---------------------------------------------------------------------------------------------------------
# Negative cases (issue #5): each raises AuthenticationFailed
# ---------------------------------------------------------------------------------------------------------


def test_no_authorization_header_is_rejected_in_production(
    verifier: RequestVerifier, jwks_server: responses.RequestsMock
) -> None:
    assert_rejected(verifier, None)
    assert len(jwks_server.calls) == 0


@pytest.mark.parametrize(
    "header",
    [
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Bearer not-a-jwt",
        "Bearer a.b.c",
        "Bearer eyJhbGciOiJFUzM4NCJ9.e30",  # two segments
        "Bearer " + "A" * 20_000,
        "Bearer \x00\x01.\x02.\x03",
    ],
)
def test_malformed_authorization_is_rejected(
    verifier: RequestVerifier, jwks_server: responses.RequestsMock, header: str
) -> None:
    assert_rejected(verifier, header)
    assert len(jwks_server.calls) == 0


def test_alg_none_is_rejected_before_any_key_lookup(
    verifier: RequestVerifier, trust: TrustSetup, jwks_server: responses.RequestsMock
) -> None:
    token = hand_made_token({"alg": "none", "typ": "JWT", "kid": trust.es384.kid, "jku": JKU_URL},
                            standard_payload())
    assert "not allowed" in assert_rejected(verifier, f"Bearer {token}")
    assert len(jwks_server.calls) == 0


def test_hs256_signed_with_the_public_key_is_rejected(
    verifier: RequestVerifier, trust: TrustSetup, jwks_server: responses.RequestsMock
) -> None:
    # The classic algorithm-confusion attack: HMAC keyed with the (public) verification key.
    public_pem = trust.rs384.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    token = hand_made_token(
        {"alg": "HS256", "typ": "JWT", "kid": trust.rs384.kid, "jku": JKU_URL},
        standard_payload(),
        sign=lambda data: hmac.new(public_pem, data, hashlib.sha256).digest(),
    )
    assert "not allowed" in assert_rejected(verifier, f"Bearer {token}")
    assert len(jwks_server.calls) == 0


@pytest.mark.parametrize("token_aud", [DISCOVERY_URL, FEEDBACK_URL, "https://evil.example.org/cds-services"])
def test_wrong_audience_is_rejected(
    verifier: RequestVerifier, trust: TrustSetup, jwks_server: responses.RequestsMock, token_aud: str
) -> None:
    # e.g. a token minted for discovery replayed against the service endpoint.
    reason = assert_rejected(verifier, trust.es_signer.bearer(token_aud), SERVICE_URL)
    assert "Audience" in reason


def test_expired_token_is_rejected(
    verifier: RequestVerifier, trust: TrustSetup, jwks_server: responses.RequestsMock
) -> None:
    now = int(time.time())
    header = trust.es_signer.bearer(claims={"iat": now - 900, "exp": now - LEEWAY - 5})
    assert "Expired" in assert_rejected(verifier, header)


def test_expiry_within_leeway_is_tolerated(
    verifier: RequestVerifier, trust: TrustSetup, jwks_server: responses.RequestsMock
) -> None:
    now = int(time.time())
    header = trust.es_signer.bearer(claims={"iat": now - 300, "exp": now - LEEWAY + 20})
    assert verifier.verify(header, SERVICE_URL) is not None


def test_iat_in_the_future_beyond_leeway_is_rejected(
    verifier: RequestVerifier, trust: TrustSetup, jwks_server: responses.RequestsMock
) -> None:
    now = int(time.time())
    header = trust.es_signer.bearer(claims={"iat": now + LEEWAY + 60, "exp": now + 600})
    assert "ImmatureSignature" in assert_rejected(verifier, header)


@pytest.mark.parametrize("claim", ["jti", "aud", "exp", "iat"])
def test_missing_required_claim_is_rejected(
    verifier: RequestVerifier, trust: TrustSetup, jwks_server: responses.RequestsMock, claim: str
) -> None:
    assert "MissingRequiredClaim" in assert_rejected(verifier, trust.es_signer.bearer(drop=(claim,)))


def test_missing_iss_is_rejected_without_fetching(
    verifier: RequestVerifier, trust: TrustSetup, jwks_server: responses.RequestsMock
) -> None:
    assert_rejected(verifier, trust.es_signer.bearer(drop=("iss",)))
    assert len(jwks_server.calls) == 0


@pytest.mark.parametrize("jti", ["", 42, ["a"]])
def test_non_string_or_empty_jti_is_rejected(
    verifier: RequestVerifier, trust: TrustSetup, jwks_server: responses.RequestsMock, jti: Any
) -> None:
    assert_rejected(verifier, trust.es_signer.bearer(claims={"jti": jti}))


def test_replayed_jti_is_rejected(
    verifier: RequestVerifier, trust: TrustSetup, jwks_server: responses.RequestsMock
) -> None:
    header = trust.es_signer.bearer()
    assert verifier.verify(header, SERVICE_URL) is not None
    assert "replayed" in assert_rejected(verifier, header)


def test_replayed_jti_is_rejected_by_another_instance_sharing_the_store(
    trust: TrustSetup, replay_guard: InMemoryReplayGuard, jwks_server: responses.RequestsMock
) -> None:
    settings = settings_for(trust.issuers_file)
    first = RequestVerifier.from_settings(settings, replay_guard)
    second = RequestVerifier.from_settings(settings, replay_guard)
    header = trust.es_signer.bearer()
    assert first.verify(header, SERVICE_URL) is not None
    assert "replayed" in assert_rejected(second, header)


def test_replay_store_keeps_jti_until_exp_plus_leeway(
    verifier: RequestVerifier, trust: TrustSetup, replay_guard: InMemoryReplayGuard,
    jwks_server: responses.RequestsMock,
) -> None:
    exp = int(time.time()) + 120
    verifier.verify(trust.es_signer.bearer(claims={"jti": "j-exp", "exp": exp}), SERVICE_URL)
    assert replay_guard.seen[(JKU_ISSUER, "j-exp")] == datetime.fromtimestamp(exp + LEEWAY, UTC)


class _BrokenGuard:
    """A shared store whose database is down."""

    def __init__(self) -> None:
        self.calls = 0

    def remember_jti(self, iss: str, jti: str, expires_at: datetime) -> bool:
        self.calls += 1
        raise ConnectionError("database unavailable")


def test_store_outage_falls_back_to_process_memory_and_still_rejects_replays(
    trust: TrustSetup, jwks_server: responses.RequestsMock, caplog: pytest.LogCaptureFixture
) -> None:
    guard = _BrokenGuard()
    verifier = RequestVerifier.from_settings(settings_for(trust.issuers_file), guard)
    header = trust.es_signer.bearer()
    with caplog.at_level(logging.WARNING, logger="cds_service.auth"):
        assert verifier.verify(header, SERVICE_URL) is not None  # decision support does not stop
        assert "replayed" in assert_rejected(verifier, header)
    assert guard.calls == 2
    assert any("jti store unavailable" in record.getMessage() for record in caplog.records)


def test_unknown_kid_is_rejected(
    verifier: RequestVerifier, trust: TrustSetup, jwks_server: responses.RequestsMock
) -> None:
    assert_rejected(verifier, trust.es_signer.bearer(headers={"kid": "no-such-kid"}))
    assert_rejected(verifier, trust.inline_signer.bearer(headers={"kid": "no-such-kid"},
                                                          claims={"tenant": INLINE_TENANT}))


def test_missing_kid_is_rejected_without_fetching(
    verifier: RequestVerifier, trust: TrustSetup, jwks_server: responses.RequestsMock
) -> None:
    assert "kid" in assert_rejected(verifier, trust.es_signer.bearer(drop=("kid",)))
    assert len(jwks_server.calls) == 0


def test_untrusted_iss_is_rejected_without_fetching(
    verifier: RequestVerifier, session_keys: dict[str, SigningKey], jwks_server: responses.RequestsMock
) -> None:
    attacker = Signer("https://attacker.example.net", session_keys["attacker"], jku=ATTACKER_JKU)
    assert "iss not trusted" in assert_rejected(verifier, attacker.bearer())
    assert len(jwks_server.calls) == 0


def test_jku_not_allowlisted_is_rejected_without_fetching(
    verifier: RequestVerifier, session_keys: dict[str, SigningKey], jwks_server: responses.RequestsMock
) -> None:
    # A trusted iss, but the token points at a JWKS the attacker controls (and that would verify).
    attacker = Signer(JKU_ISSUER, session_keys["attacker"], jku=ATTACKER_JKU)
    assert "not allowlisted" in assert_rejected(verifier, attacker.bearer())
    assert len(jwks_server.calls) == 0




@pytest.mark.parametrize("tenant", ["hospital-b", None, 7])
def test_tenant_not_allowed_is_rejected(
    verifier: RequestVerifier, trust: TrustSetup, jwks_server: responses.RequestsMock, tenant: Any
) -> None:
    claims = {} if tenant is None else {"tenant": tenant}
    assert "tenant" in assert_rejected(verifier, trust.inline_signer.bearer(claims=claims))


def test_signature_by_another_key_with_a_trusted_kid_is_rejected(
    verifier: RequestVerifier, trust: TrustSetup, session_keys: dict[str, SigningKey],
    jwks_server: responses.RequestsMock,
) -> None:
    forged = trust.es_signer.bearer(headers={"kid": trust.es384.kid}, key=session_keys["attacker"])
    assert "Signature" in assert_rejected(verifier, forged)


def test_alg_that_does_not_fit_the_key_is_rejected(
    verifier: RequestVerifier, trust: TrustSetup, jwks_server: responses.RequestsMock
) -> None:
    # An RS384 token naming the EC key's kid, and an ES256 token naming the P-384 key.
    rs_with_ec_kid = trust.rs_signer.bearer(headers={"kid": trust.es384.kid})
    assert_rejected(verifier, rs_with_ec_kid)
    es256 = make_key("ES256", kid=trust.es384.kid)
    assert_rejected(verifier, Signer(JKU_ISSUER, es256, jku=JKU_URL).bearer())


@pytest.mark.parametrize("typ", ["at+jwt", 5])
def test_non_jwt_typ_is_rejected(
    verifier: RequestVerifier, trust: TrustSetup, jwks_server: responses.RequestsMock, typ: Any
) -> None:
    assert "typ" in assert_rejected(verifier, trust.es_signer.bearer(headers={"typ": typ}))


@pytest.mark.parametrize("status", [404, 500, 302])
def test_unavailable_or_redirecting_jwks_endpoint_is_a_rejection_not_a_crash(
    trust: TrustSetup, replay_guard: InMemoryReplayGuard, status: int
) -> None:
    verifier = RequestVerifier.from_settings(settings_for(trust.issuers_file), replay_guard)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get(JKU_URL, status=status, headers={"Location": ATTACKER_JKU})
        rsps.get(ATTACKER_JKU, json=jwks(trust.es384))
        assert "JWKS" in assert_rejected(verifier, trust.es_signer.bearer())
        assert jwks_fetches(rsps, ATTACKER_JKU) == 0  # redirect not followed


def test_jwks_connection_error_is_a_rejection(trust: TrustSetup, replay_guard: InMemoryReplayGuard) -> None:
    verifier = RequestVerifier.from_settings(settings_for(trust.issuers_file), replay_guard)
    with responses.RequestsMock() as rsps:
        rsps.get(JKU_URL, body=requests.ConnectionError("refused"))
        assert "JWKS" in assert_rejected(verifier, trust.es_signer.bearer())


def test_failure_log_names_iss_kid_jti_but_never_the_token(
    verifier: RequestVerifier, trust: TrustSetup, jwks_server: responses.RequestsMock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = trust.es_signer.token(DISCOVERY_URL, claims={"jti": "jti-for-log"})
    with caplog.at_level(logging.INFO, logger="cds_service.auth"):
        assert_rejected(verifier, f"Bearer {token}", SERVICE_URL)
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "jti-for-log" in text
    assert trust.es384.kid in text
    assert JKU_ISSUER in text
    assert token not in text
    assert token.split(".")[2] not in text  # not even the signature


# ---------------------------------------------------------------------------------------------------------
# Pinned keys (issue 16 item 5): an issuer with inline keys ignores a token's jku and never fetches it
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("jku", [PINNED_ISSUER_JKU, ATTACKER_JKU, "http://127.0.0.1:1/jwks", 42, ["x"]])
def test_pinned_keys_verify_a_token_carrying_a_jku_which_is_never_fetched(
    verifier: RequestVerifier, trust: TrustSetup, jwks_server: responses.RequestsMock, jku: Any
) -> None:
    # Clients such as the CDS Hooks sandbox always put their public jku in the header; with the key pinned out of
    # band (spec "Trusting CDS Clients": the JWK Set exchanged out of band) the header value is irrelevant.
    header = trust.inline_signer.bearer(headers={"jku": jku}, claims={"tenant": INLINE_TENANT})
    identity = verifier.verify(header, SERVICE_URL)
    assert identity is not None
    assert (identity.iss, identity.kid) == (INLINE_ISSUER, trust.inline_key.kid)
    assert len(jwks_server.calls) == 0


def test_a_jku_cannot_supply_a_key_for_a_pinned_issuer(
    verifier: RequestVerifier, trust: TrustSetup, session_keys: dict[str, SigningKey],
    jwks_server: responses.RequestsMock,
) -> None:
    # PINNED_ISSUER_JKU serves the attacker's key under the pinned kid: had it been fetched, this would verify.
    forged = trust.inline_signer.bearer(headers={"jku": PINNED_ISSUER_JKU}, claims={"tenant": INLINE_TENANT},
                                        key=SigningKey(trust.inline_key.kid, "ES384",
                                                       session_keys["attacker"].private_key))
    assert "Signature" in assert_rejected(verifier, forged)
    # The attacker's own kid, named with the attacker's jku: only the pinned keys are looked at.
    own_kid = trust.inline_signer.bearer(headers={"jku": ATTACKER_JKU}, claims={"tenant": INLINE_TENANT},
                                         key=session_keys["attacker"])
    assert "unknown kid" in assert_rejected(verifier, own_kid)
    assert len(jwks_server.calls) == 0


def _pinned_sandbox_verifier(tmp_path: Path, *, dev: bool) -> RequestVerifier:
    path = write_issuers_file(tmp_path / "issuers.json",
                              [{"iss": SANDBOX_ISS, "jwks": sandbox_published_jwks()}])
    return RequestVerifier.from_settings(settings_for(path, dev=dev), InMemoryReplayGuard())


def test_the_sandboxs_published_key_can_be_pinned(tmp_path: Path) -> None:
    # The shared copy of https://sandbox.cds-hooks.org/.well-known/jwks.json loads as an inline key set, with
    # the kid and alg the sandbox's tokens carry (cds-hooks-2.0.md section 2.1 "JWT": ES384, fixed kid).
    path = write_issuers_file(tmp_path / "issuers.json",
                              [{"iss": SANDBOX_ISS, "jwks": sandbox_published_jwks()}])
    (issuer,) = load_trusted_issuers(str(path), dev=False)
    assert issuer.keys is not None
    assert list(issuer.keys) == ["44823f3d-0b01-4a6c-a80e-b9d3e8a7226f"]
    assert issuer.jku == ()


@pytest.mark.parametrize("dev", [False, True])
def test_a_sandbox_shaped_token_is_checked_against_the_pinned_key_without_fetching_its_jku(
    tmp_path: Path, session_keys: dict[str, SigningKey], dev: bool
) -> None:
    # We cannot sign as the sandbox, but a token with its exact header (ES384, its kid, its public jku) must get
    # as far as the signature check against the pinned key: kid and alg are accepted, the jku is not fetched.
    # In --dev the pinned entry replaces the built-in sandbox entry (which would fetch the jku).
    verifier = _pinned_sandbox_verifier(tmp_path, dev=dev)
    sandbox_kid = sandbox_published_jwks()["keys"][0]["kid"]
    impostor = Signer(SANDBOX_ISS, SigningKey(sandbox_kid, "ES384", session_keys["attacker"].private_key),
                      jku=SANDBOX_JKU)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get(SANDBOX_JKU, json=jwks(SigningKey(sandbox_kid, "ES384", session_keys["attacker"].private_key)))
        assert "Signature" in assert_rejected(verifier, impostor.bearer())
        assert len(rsps.calls) == 0


def test_a_pinned_key_still_refuses_an_alg_that_does_not_fit_it(
    tmp_path: Path, session_keys: dict[str, SigningKey]
) -> None:
    # The sandbox key is ES384 (P-384): an ES256 or RS384 token naming its kid is refused before any signature.
    verifier = _pinned_sandbox_verifier(tmp_path, dev=False)
    sandbox_kid = sandbox_published_jwks()["keys"][0]["kid"]
    for alg in ("ES256", "RS384"):
        signer = Signer(SANDBOX_ISS, make_key(alg, kid=sandbox_kid), jku=SANDBOX_JKU)
        assert "does not match the key's alg 'ES384'" in assert_rejected(verifier, signer.bearer())


# ---------------------------------------------------------------------------------------------------------
# Token lifetime (issue 16 item 6): exp - iat <= CDS_JWT_MAX_LIFETIME_S, so iat is never older than that + leeway
# ---------------------------------------------------------------------------------------------------------

MAX_LIFETIME = 3600  # Settings.jwt_max_lifetime_s default


@pytest.mark.parametrize(("lifetime", "accepted"), [(300, True), (MAX_LIFETIME, True), (MAX_LIFETIME + 1, False)])
def test_token_lifetime_is_bounded(
    verifier: RequestVerifier, trust: TrustSetup, jwks_server: responses.RequestsMock, lifetime: int,
    accepted: bool,
) -> None:
    now = int(time.time())
    header = trust.es_signer.bearer(claims={"iat": now, "exp": now + lifetime})
    if accepted:
        assert verifier.verify(header, SERVICE_URL) is not None
    else:
        assert "lifetime" in assert_rejected(verifier, header)


def test_a_token_valid_until_2100_is_refused(
    verifier: RequestVerifier, trust: TrustSetup, jwks_server: responses.RequestsMock
) -> None:
    exp_2100 = int(datetime(2100, 1, 1, tzinfo=UTC).timestamp())
    assert "lifetime" in assert_rejected(verifier, trust.es_signer.bearer(claims={"exp": exp_2100}))
    assert "lifetime" in assert_rejected(verifier, trust.inline_signer.bearer(
        claims={"exp": exp_2100, "tenant": INLINE_TENANT}))


@pytest.mark.parametrize(("age", "exp_from_now", "accepted"), [
    (MAX_LIFETIME, 0, True),  # issued an hour ago, expires now
    (MAX_LIFETIME + LEEWAY - 5, -LEEWAY + 5, True),  # expired 55 s ago: inside the 60 s skew allowance, as today
    (MAX_LIFETIME + LEEWAY + 5, -LEEWAY - 5, False),  # the oldest iat ever accepted is max lifetime + leeway
    (MAX_LIFETIME + 1, 60, False),  # an iat over an hour old is refused even while exp is still ahead
])
def test_the_age_of_iat_is_bounded(
    verifier: RequestVerifier, trust: TrustSetup, jwks_server: responses.RequestsMock, age: int,
    exp_from_now: int, accepted: bool,
) -> None:
    now = int(time.time())
    header = trust.es_signer.bearer(claims={"iat": now - age, "exp": now + exp_from_now})
    if accepted:
        assert verifier.verify(header, SERVICE_URL) is not None
    else:
        assert_rejected(verifier, header)


def test_clock_skew_on_iat_is_allowed_as_before(
    verifier: RequestVerifier, trust: TrustSetup, jwks_server: responses.RequestsMock
) -> None:
    # A client clock 50 s ahead: iat in the future within the leeway, full maximum lifetime from that iat.
    now = int(time.time())
    skewed = now + LEEWAY - 10
    header = trust.es_signer.bearer(claims={"iat": skewed, "exp": skewed + MAX_LIFETIME})
    assert verifier.verify(header, SERVICE_URL) is not None


@pytest.mark.parametrize("iat", ["1700000000", True, None, 1.5e308])
def test_iat_must_be_a_numeric_date(
    verifier: RequestVerifier, trust: TrustSetup, jwks_server: responses.RequestsMock, iat: Any
) -> None:
    # RFC 7519 NumericDate is a JSON number; PyJWT alone accepts the string "1700000000" (int() of it).
    assert_rejected(verifier, trust.es_signer.bearer(claims={"iat": iat}))


@pytest.mark.parametrize("exp", [10**400, 1e300, 2**63])
def test_absurd_exp_values_are_refused_as_too_long_lived(
    verifier: RequestVerifier, trust: TrustSetup, jwks_server: responses.RequestsMock, exp: Any
) -> None:
    assert "lifetime" in assert_rejected(verifier, trust.es_signer.bearer(claims={"exp": exp}))


def test_exp_before_iat_is_refused(
    verifier: RequestVerifier, trust: TrustSetup, jwks_server: responses.RequestsMock
) -> None:
    now = int(time.time())
    assert "lifetime" in assert_rejected(verifier, trust.es_signer.bearer(claims={"iat": now + 30, "exp": now + 20}))


@pytest.mark.parametrize(("max_lifetime", "lifetime", "accepted"), [(300, 300, True), (300, 301, False)])
def test_max_lifetime_is_configurable(
    trust: TrustSetup, jwks_server: responses.RequestsMock, max_lifetime: int, lifetime: int, accepted: bool
) -> None:
    verifier = RequestVerifier.from_settings(
        settings_for(trust.issuers_file, jwt_max_lifetime_s=max_lifetime), InMemoryReplayGuard())
    now = int(time.time())
    header = trust.es_signer.bearer(claims={"iat": now, "exp": now + lifetime})
    if accepted:
        assert verifier.verify(header, SERVICE_URL) is not None
    else:
        assert "lifetime" in assert_rejected(verifier, header)


# ---------------------------------------------------------------------------------------------------------
# Dev mode
# ---------------------------------------------------------------------------------------------------------

def test_dev_mode_allows_a_missing_header() -> None:
    verifier = RequestVerifier.from_settings(settings_for(None, dev=True), None)
    assert verifier.verify(None, SERVICE_URL) is None


def test_dev_mode_still_verifies_a_present_token(session_keys: dict[str, SigningKey]) -> None:
    verifier = RequestVerifier.from_settings(settings_for(None, dev=True), None)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get(ATTACKER_JKU, json=jwks(session_keys["attacker"]))
        assert_rejected(verifier, "Bearer garbage")
        assert_rejected(verifier, Signer("https://attacker.example.net", session_keys["attacker"],
                                         jku=ATTACKER_JKU).bearer())
        assert len(rsps.calls) == 0


def test_dev_mode_trusts_the_sandbox_issuer_through_its_published_jwks(
    session_keys: dict[str, SigningKey],
) -> None:
    sandbox_jwks = sandbox_published_jwks()
    sandbox_kid = sandbox_jwks["keys"][0]["kid"]
    verifier = RequestVerifier.from_settings(settings_for(None, dev=True), None)
    with responses.RequestsMock() as rsps:
        rsps.get(SANDBOX_JKU, json=sandbox_jwks)
        # A token claiming to be the sandbox but signed with another key fails against the published key.
        impostor = Signer(SANDBOX_ISS, SigningKey(sandbox_kid, "ES384", session_keys["attacker"].private_key),
                          jku=SANDBOX_JKU)
        assert "Signature" in assert_rejected(verifier, impostor.bearer())
        assert jwks_fetches(rsps, SANDBOX_JKU) == 1


def test_dev_mode_accepts_a_token_verified_by_the_sandbox_jku(session_keys: dict[str, SigningKey]) -> None:
    # We do not hold the sandbox's private key in this project; serve a throwaway key at the sandbox jku to
    # show the dev-mode trust path end to end.
    stand_in = session_keys["attacker"]
    verifier = RequestVerifier.from_settings(settings_for(None, dev=True), None)
    with responses.RequestsMock() as rsps:
        rsps.get(SANDBOX_JKU, json=jwks(stand_in))
        identity = verifier.verify(Signer(SANDBOX_ISS, stand_in, jku=SANDBOX_JKU).bearer(), SERVICE_URL)
    assert identity is not None
    assert identity.iss == SANDBOX_ISS


def test_production_does_not_trust_the_sandbox(
    verifier: RequestVerifier, session_keys: dict[str, SigningKey]
) -> None:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get(SANDBOX_JKU, json=jwks(session_keys["attacker"]))
        signer = Signer(SANDBOX_ISS, session_keys["attacker"], jku=SANDBOX_JKU)
        assert "iss not trusted" in assert_rejected(verifier, signer.bearer())
        assert len(rsps.calls) == 0


# ---------------------------------------------------------------------------------------------------------
# Robustness: arbitrary header values only ever raise AuthenticationFailed
# ---------------------------------------------------------------------------------------------------------

_segment = st.one_of(
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=60),
    st.builds(lambda obj: b64url(json.dumps(obj).encode()),
              st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.sampled_from(["alg", "kid", "jku", "typ", "iss", "aud",
                                                              "exp", "iat", "jti", "tenant", "crit", "b64"]),
                                             inner, max_size=6),
                           max_leaves=10)),
)


@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=st.one_of(
    st.text(max_size=200),
    st.builds(lambda a, b, c: f"Bearer {a}.{b}.{c}", _segment, _segment, _segment),
))
def test_arbitrary_authorization_values_only_raise_authentication_failed(
    verifier: RequestVerifier, header: str
) -> None:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get(JKU_URL, json={"keys": []})
        with pytest.raises(AuthenticationFailed):
            verifier.verify(header, SERVICE_URL)
