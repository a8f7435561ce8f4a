"""Operational endpoints outside authentication: liveness and readiness probes."""

from __future__ import annotations

import os

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
    """Readiness: content loaded (checked at start-up) and every call can be recorded durably.

    The audit database is checked on each probe. When it is down the pod stays ready as long as its local
    spool is writable: decision support must not stop during a database outage, and the spooled records are
    replayed when the database is back (issue #4). The body says which store is in use.
    """
    runtime = get_runtime()
    if runtime.audit is None:
        return jsonify({"status": "ready", "audit": "off"}), 200
    if runtime.audit.ping():
        return jsonify({"status": "ready", "audit": "database"}), 200
    spool = runtime.settings.spool_dir
    if spool.is_dir() and os.access(spool, os.W_OK):
        return jsonify({"status": "ready", "audit": "spool",
                        "note": "audit database unreachable; records are spooled and replayed later"}), 200
    return jsonify(operation_outcome("audit database unreachable and the local spool is not writable: calls "
                                     "could not be recorded", status=503, code="transient")), 503
