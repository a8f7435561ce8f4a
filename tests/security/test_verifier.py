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
    settings_for,
    write_issuers_file,
)
from tests.support.shared_data import SANDBOX_JWKS_FILE

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


def test_jku_on_an_inline_keys_issuer_is_rejected_without_fetching(
    verifier: RequestVerifier, trust: TrustSetup, jwks_server: responses.RequestsMock
) -> None:
    header = trust.inline_signer.bearer(headers={"jku": ATTACKER_JKU}, claims={"tenant": INLINE_TENANT})
    assert "not allowlisted" in assert_rejected(verifier, header)
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
# Dev mode
# ---------------------------------------------------------------------------------------------------------

SANDBOX_ISS = "https://sandbox.cds-hooks.org"
SANDBOX_JKU = "https://sandbox.cds-hooks.org/.well-known/jwks.json"


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
    with open(SANDBOX_JWKS_FILE, encoding="utf-8") as handle:
        sandbox_jwks = json.load(handle)
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
