"""Calcinosis cutis risk CDS Hooks 2.0 service: the Flask application factory.

``calcinosis-cds serve`` (cds_service.server) builds it in each worker process; configuration comes from ``CDS_*``
environment variables (cds_service.config).
"""

from __future__ import annotations

import logging
import re
import time
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flask import Flask, Response, g, jsonify, request
from flask_cors import CORS
from werkzeug.exceptions import HTTPException

from cds_service.config import ConfigError, Settings, load_settings
from cds_service.errors import ServiceError, operation_outcome

__all__ = ["ConfigError", "ContentError", "create_app"]

log = logging.getLogger("cds_service.http")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")  # \Z, not $: "$" also matches before a final newline


class ContentError(RuntimeError):
    """The clinical content (value sets, rules, card templates) failed its start-up check."""


def create_app(settings: Settings | None = None, **overrides: Any) -> Flask:
    """Build the application from ``settings`` (default: the environment) plus keyword overrides.

    Raises ConfigError for bad configuration and ContentError for broken clinical content: both stop start-up
    with a message that names the problem.
    """
    from dataclasses import replace

    from cds_service.logging_setup import configure_logging
    from cds_service.metrics import check_multiprocess_dir

    if settings is None:
        settings = load_settings(**overrides)
    elif overrides:
        settings = replace(settings, **overrides)
    configure_logging(settings.log_level)
    check_multiprocess_dir()
    if not settings.dev and not settings.public_base_url:
        raise ConfigError("CDS_PUBLIC_BASE_URL is required outside --dev: it is the URL EHRs call and the "
                          "audience every client JWT must name (CDS Hooks 2.0 'Trusting CDS Clients')")

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.extensions["calcinosis"] = _build_runtime(settings)

    _register_cors(app, settings)
    _register_request_hooks(app, settings)
    _register_error_handlers(app)

    from cds_service import api, ops, smart
    from cds_service.audit.admin_api import create_admin_blueprint

    app.register_blueprint(api.bp)
    app.register_blueprint(ops.bp)
    app.register_blueprint(smart.bp)  # SMART on FHIR risk viewer (issue #6)
    # Audit query/export API (issue #4): PHI, so it answers 404 unless CDS_ADMIN_TOKEN is configured.
    app.register_blueprint(create_admin_blueprint(settings, lambda: app.extensions["calcinosis"].audit))
    # Alert governance dashboard (issue 19): also 404 unless CDS_ADMIN_TOKEN is configured.
    from cds_service.governance.views import create_governance_blueprint

    app.register_blueprint(create_governance_blueprint(settings, lambda: app.extensions["calcinosis"].audit))
    return app


def _build_runtime(settings: Settings) -> Any:
    from cds_service.audit import AuditLog
    from cds_service.auth import RequestVerifier
    from cds_service.engine import EngineOptions, check_content
    from cds_service.fhir_client import build_session
    from cds_service.runtime import Runtime

    problems = check_content()
    if problems:
        raise ContentError("clinical content check failed:\n- " + "\n- ".join(problems))
    audit = None
    if settings.audit_enabled:
        # The embedded SQLite default creates its own schema; a shared PostgreSQL is migrated explicitly with
        # `calcinosis-cds db upgrade` so replicas never race on migrations (issue #8).
        audit = AuditLog.open(settings, create_schema=settings.effective_database_url.startswith("sqlite"))
    return Runtime(
        settings=settings,
        audit=audit,
        verifier=RequestVerifier.from_settings(settings, audit),
        fhir_session=build_session(settings),
        executor=ThreadPoolExecutor(max_workers=16, thread_name_prefix="fhir-fetch"),
        engine_options=EngineOptions(
            include_preliminary=settings.include_preliminary,
            ctd_info_card=settings.ctd_info_card,
            tumoral_calcinosis_rule=settings.tumoral_calcinosis_rule,
        ),
    )


def _register_cors(app: Flask, settings: Settings) -> None:
    # CORS on discovery, service and feedback endpoints, including error responses; the preflight OPTIONS is
    # answered without authentication (spec "Cross-Origin Resource Sharing"; sandbox calls are preflighted).
    CORS(
        app,
        resources={r"/cds-services*": {"origins": list(settings.cors_origins)}},
        methods=["GET", "POST", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type"],
        max_age=600,
        supports_credentials=False,
    )


_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",  # responses carry PHI
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
}


def _register_request_hooks(app: Flask, settings: Settings) -> None:
    from cds_service.buffered_wsgi import EDGE_STARTED
    from cds_service.metrics import observe_request, record_unauthenticated

    hsts = settings.public_base_url.startswith("https://")

    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()
        # The audit's request_ms starts at the edge: the server front's arrival time when it gives one.
        g.request_started = request.environ.get(EDGE_STARTED, g.started)
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex

    @app.after_request
    def _finish(response: Response) -> Response:
        for name, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if "frame-ancestors 'none'" not in response.headers["Content-Security-Policy"]:
            # A page that opted into framing by named EHR origins (SMART viewer, CDS_SMART_FRAME_ANCESTORS):
            # X-Frame-Options cannot allow-list origins, and CSP frame-ancestors governs framing.
            del response.headers["X-Frame-Options"]
        if hsts:
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        response.headers["X-Request-ID"] = g.get("request_id", "")
        duration_s = time.perf_counter() - g.get("started", time.perf_counter())
        # Only the matched route template and a bounded endpoint name: an unmatched path is caller-chosen
        # text that could carry identifiers. request_id/hook_instance/service_id come from the log filter.
        endpoint = request.url_rule.endpoint if request.url_rule is not None else "unmatched"
        log.info("request", extra={
            "method": request.method, "route": request.url_rule.rule if request.url_rule else None,
            "endpoint": endpoint, "status": response.status_code, "duration_ms": round(duration_s * 1000.0, 2),
        })
        observe_request(endpoint, g.get("service_id", ""), response.status_code, duration_s)
        if request.path.startswith("/cds-services") and request.method != "OPTIONS" and not g.get("authenticated"):
            # Refused before the client was authenticated (401, or 404/405/413/415 ahead of it): counted here,
            # never audited, so such requests cannot grow the audit log (issue 15 item 7).
            record_unauthenticated(endpoint, response.status_code)
        return response


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ServiceError)
    def _service_error(exc: ServiceError) -> tuple[Response, int]:
        return jsonify(exc.to_outcome()), exc.status

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> tuple[Response, int]:
        status = exc.code or 500
        messages = {
            404: "no such endpoint; CDS services are under /cds-services",
            405: f"method {request.method} is not allowed here",
            413: "request body too large (limit CDS_MAX_REQUEST_BYTES)",
        }
        message = messages.get(status, exc.description or exc.name)
        return jsonify(operation_outcome(message, status=status)), status

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        # Never a stack trace or internal path in a response; the log has the frames. The exception's message is
        # left out: raised while handling clinical data it could quote a value (no clinical values in logs).
        log.error("unhandled_error", extra={
            "error_type": type(exc).__name__,
            "frames": "".join(traceback.format_tb(exc.__traceback__))[-4000:],
        })
        return jsonify(operation_outcome("internal error; the request id identifies it in the service log",
                                         status=500, code="exception")), 500
