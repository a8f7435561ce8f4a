"""gunicorn's logger without gunicorn's own access line (the app writes one JSON line per request itself).

With ``logconfig_dict`` set (our JSON logging), gunicorn treats its access log as enabled and builds the Apache
"atoms" of every response (headers, environ lookups, time formatting) before handing them to a logger that has
no handler: ~1.5% of a worker's CPU under load for nothing (py-spy, issue #7 / BENCHMARKS.md).
"""

from __future__ import annotations

from typing import Any

from gunicorn import glogging


class AppAccessLogOnly(glogging.Logger):  # type: ignore[misc]
    """gunicorn's error/start-up logging unchanged; ``access`` does nothing."""

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        """No gunicorn access line: ``cds_service`` logs each request (route, status, duration, request id)."""
        return None
