"""The CDS Hooks 2.0 endpoints: discovery, service calls and feedback (blueprint ``cds``)."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime

from flask import Blueprint, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from cds_service.audit import AuditUnavailable
from cds_service.audit.records import FeedbackRecord
from cds_service.auth import AuthenticationFailed
from cds_service.errors import ServiceError, operation_outcome
from cds_service.hook_handler import handle_hook_call, hook_call_record
from cds_service.hook_models import parse_feedback
from cds_service.http_json import read_hook_body, read_json_body
from cds_service.metrics import record_auth_rejected
from cds_service.runtime import get_runtime
from cds_service.services import ServiceDefinition, find_service, service_definitions

log = logging.getLogger(__name__)

bp = Blueprint("cds", __name__, url_prefix="/cds-services")
# merge_slashes=False on every route: Werkzeug would otherwise answer ``/cds-services//x`` with a 308 HTML
# redirect page instead of a 404 OperationOutcome (found by tests/security/test_fuzz.py).

_HOOK_INSTANCE = re.compile(r"[A-Za-z0-9._:-]{1,128}\Z")  # \Z, not $: "$" also matches before a final newline


@bp.before_request
def authenticate() -> Response | None:
    """Verify the CDS client's JWT (spec "Trusting CDS Clients"); preflight OPTIONS needs none."""
    g.client = None
    if request.method == "OPTIONS":
        return None
    # Known service ids only (bounded, not caller text): the access line and 401 metrics name the service.
    known = find_service(str((request.view_args or {}).get("service_id", "")))
    if known is not None:
        g.service_id = known.id
    runtime = get_runtime()
    audience = runtime.public_url(request.path, request.host_url)
    try:
        g.client = runtime.verifier.verify(request.headers.get("Authorization"), audience)
        # Only requests past this point are audited; the rest are counted (metrics) and never chained, so an
        # unauthenticated caller cannot grow the audit log (issue 15 item 7).
        g.authenticated = True
    except AuthenticationFailed:
        # A bare 401 that does not say why (the reason was logged by the verifier).
        record_auth_rejected(request.url_rule.endpoint if request.url_rule else "unmatched")
        response = jsonify(operation_outcome("Authentication required", status=401))
        response.status_code = 401
        return response
    return None


def _service_or_404(service_id: str) -> ServiceDefinition:
    service = find_service(service_id)
    if service is None:
        known = ", ".join(s.id for s in service_definitions())
        raise ServiceError(f"no CDS service with id '{service_id[:64]}'; known services: {known}",
                           status=404, code="not-found")
    return service


@bp.get("", merge_slashes=False)
def discovery() -> Response:
    """GET /cds-services: the services offered, with their prefetch templates (spec "Discovery")."""
    return jsonify({"services": [s.discovery_entry() for s in service_definitions()]})


@bp.post("/<service_id>", merge_slashes=False)
def call_service(service_id: str) -> tuple[Response, int]:
    """POST /cds-services/{id}: evaluate a hook call and return cards.

    Every call that passed authentication is audited, whatever its answer (issue 15 item 7): a body that
    cannot be read and an unknown service id are recorded here, the rest by the hook handler.
    """
    received_at = datetime.now(UTC)
    try:
        service = _service_or_404(service_id)
    except ServiceError as exc:
        # The requested id is caller text: kept only when it is id-shaped (a NUL, say, cannot go into PostgreSQL).
        requested = service_id if _HOOK_INSTANCE.match(service_id) else "(not an id)"
        _record_rejected(requested, "", exc.status, exc.audit_code, received_at)
        raise
    g.service_id = service.id
    try:
        body = read_hook_body(request)
    except ServiceError as exc:
        _record_rejected(service.id, service.hook, exc.status, exc.audit_code, received_at)
        raise
    except HTTPException as exc:  # 413 from werkzeug's MAX_CONTENT_LENGTH
        status = exc.code or 400
        _record_rejected(service.id, service.hook, status, f"http-{status}", received_at)
        raise
    if isinstance(body, dict) and isinstance(body.get("hookInstance"), str):
        # Logged on every line of this request: only an id-shaped value (the spec's UUID), never free text.
        hook_instance = body["hookInstance"]
        g.hook_instance = hook_instance if _HOOK_INSTANCE.match(hook_instance) else "(not an id)"
    runtime = get_runtime()
    # Card links need absolute URLs: CDS_PUBLIC_BASE_URL, or in --dev without it the request's host (issue #6).
    outcome = handle_hook_call(runtime, service, body, g.client,
                               links_base_url=runtime.public_url("", request.host_url),
                               request_started=g.get("request_started"))
    return jsonify(outcome.body), outcome.status


def _record_rejected(service_id: str, hook: str, status: int, error: str, received_at: datetime) -> None:
    """Audit an authenticated call answered with an error before the hook handler ran (never raises)."""
    audit = get_runtime().audit
    if audit is not None:
        audit.record_hook_call(hook_call_record(service_id, hook, g.client, received_at, status, error,
                                                    g.get("request_started")))


@bp.post("/<service_id>/feedback", merge_slashes=False)
def feedback(service_id: str) -> Response:
    """POST /cds-services/{id}/feedback: store clinician responses idempotently (spec "Feedback")."""
    service = _service_or_404(service_id)
    g.service_id = service.id
    received_at = datetime.now(UTC)  # issue 15 item 3: windows start at this server's receipt
    items = parse_feedback(read_json_body(request))
    runtime = get_runtime()
    client = g.client  # issue 15 item 2: feedback acts only on cards its own client was given
    if runtime.audit is None:
        log.warning("feedback_not_stored", extra={"reason": "audit-disabled", "items": len(items)})
        return Response(status=200)
    records = [
        FeedbackRecord(
            service_id=service.id, card_uuid=item.card, outcome=item.outcome,
            accepted_suggestions=list(item.accepted_suggestions), override_code=item.override_code,
            override_system=item.override_system, override_display=item.override_display,
            override_comment=item.override_comment, outcome_timestamp=item.outcome_timestamp,
            client_iss=client.iss if client else None, client_tenant=client.tenant if client else None,
            received_at=received_at,
        )
        for item in items
    ]
    try:
        runtime.audit.record_feedback(records)
    except AuditUnavailable:
        # Feedback is useless when not stored: 503 makes the EHR retry (issue #4).
        raise ServiceError("feedback could not be stored right now; please retry", status=503,
                           code="transient") from None
    # The spec defines no feedback response body; a bare 200 acknowledges it (as CQL Services does).
    return Response(status=200)
