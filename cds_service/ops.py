"""Operational endpoints outside authentication: liveness and readiness probes, and the Prometheus scrape.

The HTTP side of metrics lives here, not in cds_service/metrics.py: metrics.py is imported by the audit store,
so a route there that reads the runtime closed an import cycle (audit -> metrics -> runtime -> audit; issue 17).
"""

from __future__ import annotations

import os

from flask import Blueprint, Response, jsonify

from cds_service.errors import operation_outcome
from cds_service.metrics import render_metrics
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


@bp.get("/metrics")
def metrics() -> Response:
    """GET /metrics: Prometheus text format, no authentication (no PHI; see deploy/README.md)."""
    runtime = get_runtime()
    depth = runtime.audit.spool_depth() if runtime.audit is not None else None
    body, content_type = render_metrics(depth)
    return Response(body, status=200, content_type=content_type)
