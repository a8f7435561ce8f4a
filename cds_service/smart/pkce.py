"""PKCE (RFC 7636) and ``state`` values for the SMART App Launch authorization-code flow.

SMART App Launch 2.0 requires PKCE with ``S256`` for every client ("Considerations for PKCE Support"); a public
client such as this viewer has no secret, so the code verifier is what binds the token request to the browser
session that started the launch.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

# RFC 7636 section 4.1: 43-128 characters from the unreserved set.
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")  # fullmatch: "$" would also accept a final newline


def new_code_verifier() -> str:
    """A fresh high-entropy code verifier: 64 bytes of randomness, base64url (86 characters)."""
    return secrets.token_urlsafe(64)


def code_challenge_s256(verifier: str) -> str:
    """``BASE64URL(SHA256(ASCII(code_verifier)))`` without padding (RFC 7636 section 4.2).

    Raises ValueError for a verifier outside the RFC's length or alphabet.
    """
    if not _VERIFIER.fullmatch(verifier):
        raise ValueError("code verifier must be 43-128 characters of [A-Za-z0-9-._~] (RFC 7636 4.1)")
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def new_state() -> str:
    """An unguessable ``state`` value (SMART: "at least 122 bits of entropy"); 32 random bytes here."""
    return secrets.token_urlsafe(32)


def same_secret(expected: str, received: str) -> bool:
    """Constant-time comparison of two secrets (state values, session ids)."""
    return hmac.compare_digest(expected.encode("utf-8"), received.encode("utf-8"))
