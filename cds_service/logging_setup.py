"""JSON structured logging with a request id; no PHI, no tokens (issue #8 "Observability").

Log records carry only operational fields: request id, hookInstance, service id, status, duration and short
reason codes. Request bodies, prefetch data, patient ids, lab values and any Authorization header are never
logged.
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

_CONFIGURED_MARK = "_calcinosis_json_handler"


class _RequestContextFilter(logging.Filter):
    """Adds the current request id / hookInstance / service id to every record emitted during a request."""

    def filter(self, record: logging.LogRecord) -> bool:
        from flask import g, has_request_context

        if has_request_context():
            for name in ("request_id", "hook_instance", "service_id"):
                if not hasattr(record, name) and name in g:
                    setattr(record, name, g.get(name))
        return True


def configure_logging(level: str) -> None:
    """Route the root logger to stdout as JSON lines (idempotent; safe to call per app)."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    if any(getattr(h, _CONFIGURED_MARK, False) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
    ))
    handler.addFilter(_RequestContextFilter())
    setattr(handler, _CONFIGURED_MARK, True)
    root.addHandler(handler)
    # werkzeug's own access log would print request lines outside our format; ours is emitted instead.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    # Even at CDS_LOG_LEVEL=DEBUG: urllib3 logs every FHIR URL (patient ids in the query) and SQLAlchemy every
    # statement with its parameters (patient ids, lab values) once their loggers inherit INFO/DEBUG.
    for chatty in ("urllib3", "sqlalchemy"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
