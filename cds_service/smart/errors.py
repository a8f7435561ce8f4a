"""Errors of the SMART launch and viewer, each mapped to a clear HTML page (never a 500 or a stack trace)."""

from __future__ import annotations


class SmartError(Exception):
    """A launch or viewer problem a person can act on.

    ``status`` is the HTTP status of the page, ``title`` its heading and ``message`` (safe to show and to log:
    never a token, code or clinical value) what happened and what to do.
    """

    status = 400
    title = "The app could not start"

    def __init__(self, message: str, *, status: int | None = None, title: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if title is not None:
            self.title = title


class UnknownIssuer(SmartError):
    """The ``iss`` is missing, malformed, not https outside --dev, or not in CDS_ALLOWED_FHIR_SERVERS."""

    status = 403
    title = "This FHIR server is not allowed"


class DiscoveryFailed(SmartError):
    """Neither ``.well-known/smart-configuration`` nor the CapabilityStatement named the OAuth endpoints."""

    status = 502
    title = "The EHR's authorization server could not be found"


class StateMismatch(SmartError):
    """The callback's ``state`` does not match a launch started in this browser session."""

    status = 400
    title = "Launch could not be verified"


class AuthorizationDenied(SmartError):
    """The user or the EHR declined access (``error=access_denied``) or authorization failed otherwise."""

    status = 403
    title = "Access was not granted"


class TokenExchangeFailed(SmartError):
    """The token endpoint refused the code or answered something unusable."""

    status = 502
    title = "Sign-in with the EHR failed"


class NotLaunched(SmartError):
    """The viewer was opened without a completed SMART launch in this browser session."""

    status = 401
    title = "Please launch the app from your EHR"


class SessionExpired(SmartError):
    """The access token has expired or the FHIR server rejected it (HTTP 401)."""

    status = 401
    title = "Your session has expired"


class FhirUnavailable(SmartError):
    """The FHIR server failed (5xx, timeout, malformed data) while the viewer read the patient's record."""

    status = 502
    title = "The patient's record could not be read"
