"""Dashboard access (issue 19): the admin token through a login form that sets a session cookie, or a Bearer header.

The session cookie is ``Secure; HttpOnly; SameSite=Strict`` and holds only an expiry and its HMAC under the admin
token (no server-side state, nothing to steal beyond the session). The login form is protected against CSRF by a
double-submit token: a random value in its own Strict cookie that the form must echo.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

SESSION_COOKIE = "cds_governance_session"
CSRF_COOKIE = "cds_governance_csrf"
SESSION_SECONDS = 8 * 3600  # one working day


def _sign(token: bytes, message: str) -> str:
    return hmac.new(token, message.encode("ascii"), hashlib.sha256).hexdigest()


def token_matches(given: str, expected: bytes) -> bool:
    """Constant-time comparison of a presented admin token."""
    return bool(expected) and hmac.compare_digest(given.strip().encode("utf-8"), expected)


def new_session(token: bytes, now: float | None = None) -> str:
    """A session cookie value: ``<expiry>.<hmac>``."""
    expiry = int((now if now is not None else time.time()) + SESSION_SECONDS)
    return f"{expiry}.{_sign(token, f'governance-session|{expiry}')}"


def session_valid(value: str | None, token: bytes, now: float | None = None) -> bool:
    """Whether the cookie value is a session signed with ``token`` and not expired."""
    if not value or not token:
        return False
    expiry, _, mac = value.partition(".")
    if not expiry.isdigit() or int(expiry) < (now if now is not None else time.time()):
        return False
    return hmac.compare_digest(mac, _sign(token, f"governance-session|{expiry}"))


def new_csrf() -> str:
    """A fresh random CSRF token for the login form."""
    return secrets.token_urlsafe(32)


def pseudonym_key(token: bytes) -> bytes:
    """The key of the patient pseudonyms, derived from the admin token (not reversible without it)."""
    return hmac.new(token, b"governance-pseudonym", hashlib.sha256).digest()
