"""Operational endpoints outside authentication: liveness and readiness probes."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from cds_service.errors import operation_outcome
from cds_service.runtime import get_runtime

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """Liveness: the process answers; touches no dependency (a DB outage must not restart the pods)."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Readiness: the audit database answers and the clinical content loaded (checked at start-up)."""
    runtime = get_runtime()
    if runtime.audit is not None and not runtime.audit.ping():
        return jsonify(operation_outcome("audit database unreachable; cards are still served and audit "
                                         "records are spooled", status=503, code="transient")), 503
    return jsonify({"status": "ready"}), 200
