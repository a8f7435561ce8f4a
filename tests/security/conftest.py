"""Fixtures for the client-authentication tests: throwaway signing keys, trusted issuers, a mocked JWKS.

The EHR's JWKS is served at an allowlisted ``jku`` with `responses`, so every outbound fetch is visible (and a
test can assert that none happened).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import responses

from cds_service.auth import RequestVerifier
from tests.security.fuzzing import STATS
from tests.security.tokens import (
    ATTACKER_JKU,
    INLINE_ISSUER,
    INLINE_TENANT,
    JKU_ISSUER,
    JKU_URL,
    PINNED_ISSUER_JKU,
    InMemoryReplayGuard,
    Signer,
    SigningKey,
    TrustSetup,
    jwks,
    make_key,
    settings_for,
    write_issuers_file,
)


@pytest.fixture(scope="session")
def session_keys() -> dict[str, SigningKey]:
    """Keys generated once per session (RSA generation is the slow part)."""
    return {
        "es384": make_key("ES384"),
        "rs384": make_key("RS384"),
        "inline": make_key("ES384"),
        "attacker": make_key("ES384"),
        "rotated": make_key("ES384"),
    }


@pytest.fixture
def trust(tmp_path: Path, session_keys: dict[str, SigningKey]) -> TrustSetup:
    """A jku issuer (ES384 + RS384 keys) and an inline-jwks issuer restricted to one tenant."""
    inline_key = session_keys["inline"]
    issuers_file = write_issuers_file(
        tmp_path / "trusted-issuers.json",
        [
            {"iss": JKU_ISSUER, "jku": [JKU_URL]},
            {"iss": INLINE_ISSUER, "jwks": jwks(inline_key), "tenants": [INLINE_TENANT]},
        ],
    )
    return TrustSetup(
        es384=session_keys["es384"],
        rs384=session_keys["rs384"],
        inline_key=inline_key,
        issuers_file=issuers_file,
        es_signer=Signer(JKU_ISSUER, session_keys["es384"], jku=JKU_URL),
        rs_signer=Signer(JKU_ISSUER, session_keys["rs384"], jku=JKU_URL),
        inline_signer=Signer(INLINE_ISSUER, inline_key),
    )


@pytest.fixture
def jwks_server(trust: TrustSetup, session_keys: dict[str, SigningKey]) -> Iterator[responses.RequestsMock]:
    """Serve the EHR's JWKS at its allowlisted jku, and JWK Sets that must never be fetched.

    ``ATTACKER_JKU`` serves the attacker's key; ``PINNED_ISSUER_JKU`` serves the attacker's key under the inline
    issuer's pinned kid, so fetching it would not only be counted but would also let a forgery verify.
    """
    forged_pinned = SigningKey(trust.inline_key.kid, "ES384", session_keys["attacker"].private_key)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get(JKU_URL, json=jwks(trust.es384, trust.rs384))
        rsps.get(ATTACKER_JKU, json=jwks(session_keys["attacker"]))
        rsps.get(PINNED_ISSUER_JKU, json=jwks(forged_pinned))
        yield rsps


@pytest.fixture
def replay_guard() -> InMemoryReplayGuard:
    """A fresh shared jti store."""
    return InMemoryReplayGuard()


@pytest.fixture
def verifier(trust: TrustSetup, replay_guard: InMemoryReplayGuard) -> RequestVerifier:
    """A production-mode verifier trusting the two test issuers."""
    return RequestVerifier.from_settings(settings_for(trust.issuers_file), replay_guard)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print how many requests the fuzz suite generated (issue #5: the count is printed)."""
    if STATS.requests:
        statuses = ", ".join(f"{status}: {count}" for status, count in sorted(STATS.by_status.items()))
        terminalreporter.write_line(
            f"security fuzz: {STATS.requests} generated requests, "
            f"(statuses {statuses}); slowest {STATS.slowest_s:.2f} s, {STATS.total_s:.1f} s inside the app"
        )
