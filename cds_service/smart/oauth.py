"""The two OAuth 2.0 steps of SMART App Launch 2.0 for a public client: the authorize redirect and the token call.

SMART App Launch 2.0 "App Launch: Launch and Authorization", steps "Obtain authorization code" and "Obtain
access token": ``response_type=code``, ``aud`` = the FHIR base URL, PKCE S256, and the token request with
``grant_type=authorization_code`` + ``code_verifier`` (no client secret: public client).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests

from cds_service.config import Settings
from cds_service.hook_models import is_fhir_id
from cds_service.json_fetch import JsonFetchFailed, fetch_json
from cds_service.smart.errors import TokenExchangeFailed

log = logging.getLogger(__name__)

_MAX_BYTES = 256 * 1024
# Matched with re.fullmatch (issue 16 item 9): with re.match, "$" also accepts a final newline.
_RULE_ID = re.compile(r"[a-z0-9-]{1,64}")
DEFAULT_EXPIRES_S = 300  # a token response without expires_in: assume a short life, then relaunch


@dataclass(frozen=True)
class TokenGrant:
    """What the token endpoint granted; ``access_token`` stays in the server-side session only."""

    access_token: str
    patient: str
    scope: str
    expires_in: int
    app_context_rule: str | None = None


def authorize_url(authorization_endpoint: str, params: dict[str, str]) -> str:
    """``authorization_endpoint`` with the authorize parameters added to any query it already has."""
    separator = "&" if urlsplit(authorization_endpoint).query else "?"
    return f"{authorization_endpoint}{separator}{urlencode(params)}"


def exchange_code(token_endpoint: str, *, code: str, redirect_uri: str, client_id: str, code_verifier: str,
                  settings: Settings, session: requests.Session) -> TokenGrant:
    """POST the authorization code with its PKCE verifier and return the grant.

    Raises TokenExchangeFailed (with a message safe to show) for network errors, error answers and grants
    without a usable bearer token or patient context.
    """
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
            "client_id": client_id, "code_verifier": code_verifier}
    try:
        reply = fetch_json(token_endpoint, form=form, max_bytes=_MAX_BYTES, headers={"Accept": "application/json"},
                           session=session, timeout=(settings.fhir_connect_timeout_s, settings.fhir_read_timeout_s))
    except JsonFetchFailed as exc:
        log.warning("smart_token_unreachable", extra={"error_type": exc.kind})
        if exc.kind == "too-large":
            raise TokenExchangeFailed("The EHR's token endpoint sent an oversized answer. Launch again.") from None
        raise TokenExchangeFailed("The EHR's token endpoint could not be reached. Try launching again.") from None
    body, status = reply.object(), reply.status
    if status != 200:
        error = body.get("error") if body else None
        log.info("smart_token_refused", extra={"status": status, "oauth_error": _safe_code(error)})
        if error == "invalid_grant":
            raise TokenExchangeFailed(
                "The EHR did not accept the sign-in code (it may have expired or been used already). "
                "Launch the app again from the EHR.", status=400)
        raise TokenExchangeFailed(f"The EHR's token endpoint answered HTTP {status}. Try launching again.")
    if body is None:
        raise TokenExchangeFailed("The EHR's token endpoint returned something that is not JSON.")
    return _grant_from(body)


def _grant_from(body: dict[str, Any]) -> TokenGrant:
    token = body.get("access_token")
    token_type = body.get("token_type")
    if not isinstance(token, str) or not token or not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise TokenExchangeFailed("The EHR did not issue a bearer access token.")
    patient = body.get("patient")
    if not isinstance(patient, str) or not is_fhir_id(patient):
        raise TokenExchangeFailed(
            "The EHR did not say which patient to show (no patient launch context). Open a patient's chart and "
            "launch the app from there, or choose a patient when asked.", status=400)
    expires_in = body.get("expires_in")
    lifetime = int(expires_in) if isinstance(expires_in, int | float) and expires_in > 0 else DEFAULT_EXPIRES_S
    scope = body.get("scope") if isinstance(body.get("scope"), str) else ""
    return TokenGrant(token, patient, str(scope), lifetime, _app_context_rule(body.get("appContext")))


def _app_context_rule(value: Any) -> str | None:
    """The rule id from a CDS Hooks card's appContext (``{"rule": "caxp-high"}`` as a string), if any.

    CDS Hooks 2.0 "Link": the EHR passes appContext to the app through the SMART launch (token response).
    """
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if isinstance(value, dict):
        rule = value.get("rule")
        if isinstance(rule, str) and _RULE_ID.fullmatch(rule):
            return rule
    return None


def _safe_code(value: Any) -> str:
    """An OAuth error code fit for logs and pages: RFC 6749 codes are [a-z_]; anything else is dropped."""
    return value if isinstance(value, str) and re.fullmatch(r"[a-z_]{1,64}", value) else "other"


def safe_error_code(value: Any) -> str:
    """Public wrapper of the OAuth error-code sanitiser used by the callback page."""
    return _safe_code(value)
