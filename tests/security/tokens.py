"""Test helpers for client authentication: throwaway keys, a token signer, issuer files, settings.

Keys are generated at run time with `cryptography`; nothing secret is stored in the repository.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import responses
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cds_service.config import Settings, load_settings
from tests.support.shared_data import SANDBOX_JWKS_FILE

PUBLIC_BASE_URL = "https://cds.example.org"
DISCOVERY_URL = f"{PUBLIC_BASE_URL}/cds-services"
SERVICE_URL = f"{DISCOVERY_URL}/calcinosis-risk"
FEEDBACK_URL = f"{SERVICE_URL}/feedback"

JKU_ISSUER = "https://ehr.example.org"
JKU_URL = "https://ehr.example.org/.well-known/jwks.json"
INLINE_ISSUER = "https://other-ehr.example.org/fhir-auth"
INLINE_TENANT = "hospital-a"
ATTACKER_JKU = "https://attacker.example.net/jwks.json"
# A jku the inline-keys issuer's tokens may carry: served (with an attacker's key under the pinned kid) so a fetch
# would both be counted and let a forgery through; pinned keys mean it is never fetched (issue 16 item 5).
PINNED_ISSUER_JKU = "https://other-ehr.example.org/.well-known/jwks.json"
# The public CDS Hooks sandbox (cds-hooks-2.0.md section 2.1 "JWT"): fixed iss, and a jku on every token.
SANDBOX_ISS = "https://sandbox.cds-hooks.org"
SANDBOX_JKU = "https://sandbox.cds-hooks.org/.well-known/jwks.json"


@dataclass
class SigningKey:
    """A throwaway key pair with the JWK a client would publish for it."""

    kid: str
    alg: str
    private_key: Any
    public_jwk: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        algorithm = jwt.get_algorithm_by_name(self.alg)
        jwk = json.loads(algorithm.to_jwk(self.private_key.public_key()))
        self.public_jwk = {**jwk, "kid": self.kid, "alg": self.alg, "use": "sig"}


def make_key(alg: str, kid: str | None = None) -> SigningKey:
    """Generate a fresh key for ``alg`` (ES256/ES384/ES512 or RS*/PS*)."""
    curves = {"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1(), "ES512": ec.SECP521R1()}
    if alg in curves:
        private: Any = ec.generate_private_key(curves[alg])
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return SigningKey(kid=kid or str(uuid.uuid4()), alg=alg, private_key=private)


def sandbox_published_jwks() -> dict[str, Any]:
    """The sandbox's published public JWK Set, read from the shared data beside the repository."""
    data: dict[str, Any] = json.loads(SANDBOX_JWKS_FILE.read_text(encoding="utf-8"))
    return data


def jwks(*keys: SigningKey) -> dict[str, Any]:
    """The JWK Set (public keys only) for ``keys``."""
    return {"keys": [key.public_jwk for key in keys]}


@dataclass
class Signer:
    """Mints client JWTs the way a CDS client does (CDS Hooks 2.0 section 1.7)."""

    iss: str
    key: SigningKey
    jku: str | None = None

    def token(
        self,
        aud: str | list[str] = SERVICE_URL,
        *,
        claims: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
        drop: tuple[str, ...] = (),
        key: SigningKey | None = None,
    ) -> str:
        """A signed JWT for ``aud``; ``claims``/``headers`` override, ``drop`` removes fields."""
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": self.iss, "aud": aud, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4()),
        }
        payload.update(claims or {})
        signing = key or self.key
        header: dict[str, Any] = {"typ": "JWT", "kid": signing.kid}
        if self.jku:
            header["jku"] = self.jku
        header.update(headers or {})
        for name in drop:
            payload.pop(name, None)
            header.pop(name, None)
        return jwt.encode(payload, signing.private_key, algorithm=signing.alg, headers=header)

    def bearer(self, aud: str | list[str] = SERVICE_URL, **kwargs: Any) -> str:
        """``Bearer <token>`` for an Authorization header."""
        return f"Bearer {self.token(aud, **kwargs)}"


@dataclass
class TrustSetup:
    """The keys, signers and trusted-issuers file the tests share."""

    es384: SigningKey
    rs384: SigningKey
    inline_key: SigningKey
    issuers_file: Path
    es_signer: Signer
    rs_signer: Signer
    inline_signer: Signer


def write_issuers_file(path: Path, entries: list[dict[str, Any]]) -> Path:
    """Write a trusted-issuers file and return its path."""
    path.write_text(json.dumps(entries), encoding="utf-8")
    return path


class InMemoryReplayGuard:
    """A shared jti store standing in for AuditLog.remember_jti (one instance = one database)."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], Any] = {}

    def remember_jti(self, iss: str, jti: str, expires_at: Any) -> bool:
        """Record (iss, jti); False if already present."""
        if (iss, jti) in self.seen:
            return False
        self.seen[(iss, jti)] = expires_at
        return True


def settings_for(issuers_file: Path | None, *, dev: bool = False, **overrides: Any) -> Settings:
    """Settings independent of the caller's CDS_* environment."""
    values: dict[str, Any] = {
        "dev": dev,
        "public_base_url": PUBLIC_BASE_URL,
        "trusted_issuers_file": str(issuers_file) if issuers_file else "",
        # Production mode requires the audit chain key (a throwaway test value, not a secret).
        "audit_chain_key": "test-audit-chain-key-" + "0" * 43,
    }
    values.update(overrides)
    return load_settings(environ={}, **values)


def b64url(data: bytes) -> str:
    """Unpadded base64url, as JWS uses."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made_token(header: dict[str, Any], payload: dict[str, Any], sign: Any = None) -> str:
    """A JWT built without PyJWT's guard rails (for alg none / HMAC attacks)."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    signature = sign(signing_input.encode()) if sign else b""
    return f"{signing_input}.{b64url(signature)}"


def jwks_fetches(rsps: responses.RequestsMock, url: str = JKU_URL) -> int:
    """How many times ``url`` was fetched through the mock."""
    return sum(1 for call in rsps.calls if call.request.url == url)
