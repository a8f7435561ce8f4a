"""Read the launched patient's record from the FHIR server with the SMART access token.

The queries are the patient-view service's own prefetch templates, filled with the launch's patient id, so the
viewer sees exactly the data a patient-view hook call would (same engine input, same findings). Every request
goes through ``cds_service.fhir_client`` (allowlist/https policy, timeouts, no redirects, same-origin paging, no
cookies) with its query values percent-encoded (``cds_service.fhir_query``).
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from typing import Any

from cds_service.fhir_client import FetchResult, FhirAccessError, FhirClient
from cds_service.fhir_query import build_relative_url
from cds_service.runtime import Runtime
from cds_service.services import find_service
from cds_service.smart.errors import FhirUnavailable, SessionExpired, UnknownIssuer
from cds_service.url_policy import FhirServerNotAllowed, check_server_allowed

log = logging.getLogger(__name__)

PATIENT_VIEW_SERVICE = "calcinosis-patient-view"


@dataclass
class PatientData:
    """The Patient, the other resources, and which prefetch-equivalent queries could not be read."""

    patient: dict[str, Any]
    resources: list[dict[str, Any]] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)   # prefetch keys that failed (optional ones only)
    truncated: list[str] = field(default_factory=list)     # keys whose paging stopped at the cap


def load_patient_data(runtime: Runtime, iss: str, access_token: str, patient_id: str) -> PatientData:
    """Fetch the patient and their labs, conditions and medications, concurrently, under one deadline.

    Raises SessionExpired when the server rejects the token (401), FhirUnavailable when a required query
    fails, and UnknownIssuer if ``iss`` no longer passes the FHIR-server policy.
    """
    settings = runtime.settings
    try:
        check_server_allowed(iss, settings)
    except FhirServerNotAllowed as exc:
        raise UnknownIssuer(str(exc)) from None
    service = find_service(PATIENT_VIEW_SERVICE)
    if service is None:  # pragma: no cover - the service table is static
        raise FhirUnavailable("The patient-view service definition is missing.")
    client = FhirClient(iss, access_token, settings, runtime.fhir_session)
    # The same relative URLs a hook call's fallback fetch sends: every query value percent-encoded, so a proxy
    # that collapses "//" cannot empty the viewer (issue 16 item 4).
    queries: dict[str, str] = {}
    for spec in service.prefetch:
        query = build_relative_url(spec.template,
                                   lambda name: patient_id if name == "context.patientId" else None)
        if query is not None:
            queries[spec.key] = query
    required = {spec.key for spec in service.prefetch if spec.required}
    futures: dict[str, Future[FetchResult]] = {
        key: runtime.executor.submit(client.fetch, query) for key, query in queries.items()
    }
    wait(futures.values(), timeout=settings.fhir_total_timeout_s)
    data = PatientData(patient={})
    for key, future in futures.items():
        result = _result(key, future, required)
        if result is None:
            data.unavailable.append(key)
            continue
        if result.truncated:
            data.truncated.append(key)
        if key == "patient":
            patient = next((r for r in result.resources if r.get("resourceType") == "Patient"), None)
            if patient is None:
                raise FhirUnavailable("The FHIR server did not return the launched patient.")
            data.patient = patient
        else:
            data.resources.extend(result.resources)
    return data


def _result(key: str, future: Future[FetchResult], required: set[str]) -> FetchResult | None:
    """The fetch result; None for a failed optional query; raises for 401 or a failed required query."""
    if not future.done():
        future.cancel()
        log.warning("smart_fetch_deadline", extra={"prefetch_key": key})
        if key in required:
            raise FhirUnavailable("The FHIR server did not answer in time. Try again in a moment.")
        return None
    try:
        return future.result()
    except FhirAccessError as exc:
        status = exc.status
        log.warning("smart_fetch_failed", extra={"prefetch_key": key, "status": status})
        if status == 401:
            raise SessionExpired(
                "The EHR's FHIR server no longer accepts this app's access (the token expired or was revoked). "
                "Launch the app again from the EHR.") from None
        if key in required:
            detail = f"HTTP {status}" if status else "no usable answer"
            raise FhirUnavailable(f"The FHIR server failed while reading the record ({detail}). "
                                  "Try again in a moment; if it persists, tell the EHR administrator.") from None
        return None
