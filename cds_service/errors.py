"""Errors that become HTTP responses, each with a FHIR OperationOutcome body.

CDS Hooks 2.0 allows any 4xx/5xx besides the defined 412; the 3.0 ballot adds "a CDS Service SHOULD return
an OperationOutcome with any non-2xx status". We do that for every error so an EHR integrator always gets a
message a person can act on.
"""

from __future__ import annotations

from typing import Any

# FHIR R4 IssueType codes used here (http://hl7.org/fhir/R4/valueset-issue-type.html).
_ISSUE_CODE_BY_STATUS = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    412: "incomplete",
    413: "too-long",
    415: "not-supported",
    429: "throttled",
    500: "exception",
    503: "transient",
}


def operation_outcome(message: str, *, status: int, code: str | None = None,
                      expression: list[str] | None = None) -> dict[str, Any]:
    """Build an OperationOutcome with one error issue; ``expression`` points at the offending field."""
    issue: dict[str, Any] = {
        "severity": "error",
        "code": code or _ISSUE_CODE_BY_STATUS.get(status, "processing"),
        "diagnostics": message,
    }
    if expression:
        issue["expression"] = expression
    return {"resourceType": "OperationOutcome", "issue": [issue]}


class ServiceError(Exception):
    """An error with an HTTP status and an actionable message for the caller."""

    status = 400

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 expression: list[str] | None = None, audit_code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.code = code
        self.expression = expression
        # Short machine-readable reason kept in the audit record (never clinical values).
        self.audit_code = audit_code or f"http-{self.status}"

    def to_outcome(self) -> dict[str, Any]:
        """The OperationOutcome body for this error."""
        return operation_outcome(self.message, status=self.status, code=self.code, expression=self.expression)


class InvalidRequest(ServiceError):
    """The request body or envelope breaks CDS Hooks 2.0 (400)."""

    status = 400


class PrefetchUnavailable(ServiceError):
    """Required data could be neither read from prefetch nor fetched (CDS Hooks 2.0: SHALL respond 412)."""

    status = 412

    def __init__(self, message: str) -> None:
        super().__init__(message, status=412, code="incomplete", audit_code="prefetch-unavailable")
