"""The admin HTTP API over the audit log: ``/admin/audit/{calls,cards,export,export/calls,stats}`` (issue #4 item 4,
issue 15 item 7).

Audit data is PHI, so the API exists only when ``CDS_ADMIN_TOKEN`` is configured: without it every route
answers 404 as if absent. Requests need ``Authorization: Bearer <CDS_ADMIN_TOKEN>`` (compared in
constant time); every error body is a FHIR OperationOutcome.
"""

from __future__ import annotations

import hmac
import io
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, jsonify, request
from sqlalchemy.exc import SQLAlchemyError

from cds_service.audit.export import FORMATS, MEDIA_TYPES, write_export
from cds_service.audit.queries import AuditFilter, iter_calls, iter_cards, list_calls, parse_timestamp
from cds_service.audit.stats import stats_report
from cds_service.audit.store import AuditLog
from cds_service.config import Settings
from cds_service.errors import operation_outcome

URL_PREFIX = "/admin/audit"
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100


class _BadParameter(ValueError):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


def _error(status: int, message: str, *, expression: list[str] | None = None) -> Response:
    response = jsonify(operation_outcome(message, status=status, expression=expression))
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="calcinosis-cds-admin"'
    return response


def _filter_from_query() -> AuditFilter:
    values: dict[str, Any] = {}
    for name in ("since", "until"):
        raw = request.args.get(name)
        if raw:
            try:
                values[name] = parse_timestamp(raw)
            except ValueError as exc:
                raise _BadParameter(name, str(exc)) from None
    return AuditFilter(since=values.get("since"), until=values.get("until"),
                       patient_id=request.args.get("patient") or None,
                       rule_id=request.args.get("rule") or None)


def _int_param(name: str, default: int, minimum: int, maximum: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _BadParameter(name, f"{name}={raw!r} is not a whole number") from None
    if not minimum <= value <= maximum:
        raise _BadParameter(name, f"{name} must be between {minimum} and {maximum}")
    return value


def create_admin_blueprint(settings: Settings, get_audit: Callable[[], AuditLog | None]) -> Blueprint:
    """The admin API blueprint; ``get_audit`` returns the app's AuditLog (None when auditing is off)."""
    bp = Blueprint("audit_admin", __name__, url_prefix=URL_PREFIX)
    expected = settings.admin_token.encode("utf-8")

    @bp.before_request
    def _authorise() -> Response | None:
        if not expected:
            # No admin token configured: the API is off and must look absent (issue #4: PHI never reachable).
            return _error(404, "not found")
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode("utf-8"), expected):
            return _error(401, "a valid admin bearer token (CDS_ADMIN_TOKEN) is required")
        return None

    def _run(handler: Callable[[AuditLog], Response]) -> Response:
        audit = get_audit()
        if audit is None:
            return _error(503, "the audit log is disabled on this instance (CDS_AUDIT_ENABLED=0)")
        try:
            response = handler(audit)
        except _BadParameter as exc:
            return _error(400, str(exc), expression=[exc.name])
        except SQLAlchemyError:
            return _error(503, "the audit database is unavailable; retry later")
        response.headers["Cache-Control"] = "no-store"
        return response

    @bp.get("/calls")
    def calls() -> Response:
        """Hook calls, newest first: ?since&until&patient&rule&limit&offset."""
        def handler(audit: AuditLog) -> Response:
            rows = list_calls(audit.engine, _filter_from_query(), limit=_int_param("limit", DEFAULT_LIMIT, 1,
                              MAX_LIMIT), offset=_int_param("offset", 0, 0, 10**9))
            return jsonify({"calls": rows})
        return _run(handler)

    @bp.get("/cards")
    def cards() -> Response:
        """Cards with their call and feedback, oldest first: ?since&until&patient&rule&limit&offset."""
        def handler(audit: AuditLog) -> Response:
            limit = _int_param("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
            offset = _int_param("offset", 0, 0, 10**9)
            rows = list(iter_cards(audit.engine, _filter_from_query(), limit=limit, offset=offset))
            return jsonify({"cards": rows})
        return _run(handler)

    def _export(calls: bool) -> Response:
        def handler(audit: AuditLog) -> Response:
            fmt = request.args.get("format", "ndjson")
            if fmt not in FORMATS:
                raise _BadParameter("format", f"format must be one of {', '.join(FORMATS)}")
            rows = (iter_calls if calls else iter_cards)(audit.engine, _filter_from_query())
            buffer = io.StringIO()
            write_export(rows, fmt, buffer, calls=calls)
            return Response(buffer.getvalue(), mimetype=MEDIA_TYPES[fmt])
        return _run(handler)

    @bp.get("/export")
    def export() -> Response:
        """The CLI export over HTTP, a row per card: ?format=ndjson|csv|fhir&since&until&patient&rule."""
        return _export(calls=False)

    @bp.get("/export/calls")
    def export_calls() -> Response:
        """``audit export --calls`` over HTTP, a row per call: ?format=ndjson|csv|fhir&since&until&patient&rule."""
        return _export(calls=True)

    @bp.get("/stats")
    def stats() -> Response:
        """Alert burden per rule, suppressions per rule and reason, unmatched feedback: ?since."""
        def handler(audit: AuditLog) -> Response:
            return jsonify(stats_report(audit.engine, _filter_from_query().since))
        return _run(handler)

    return bp
