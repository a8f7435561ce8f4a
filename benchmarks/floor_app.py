"""The floor: an empty CDS Hooks handler on the same Flask + gunicorn settings as the service (issue #7).

It reads the POSTed body (the same bytes the service gets) and answers ``{"cards": []}``: what this framework can
do at all on this machine. ``benchmarks/run.py`` serves it twice next to the real service: under gunicorn with the
previous production settings (``gunicorn floor_app:app``), and under the serving model the service now uses
(``python benchmarks/floor_app.py PORT``: granian + cds_service.buffered_wsgi, the settings of
cds_service.serving), so both floors are printed side by side.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

from flask import Flask, Response, jsonify, request

app = Flask(__name__)


@app.post("/cds-services/<service_id>")
def empty_hook(service_id: str) -> Response:
    """Answer any hook call with no cards, after reading the whole body."""
    request.get_data()
    return jsonify({"cards": []})


@app.get("/cds-services")
def discovery() -> Response:
    """Readiness probe for the benchmark driver."""
    return jsonify({"services": []})


def buffered_floor(threads: int, read_timeout_s: float) -> Any:
    """The floor as the service's workers run their app: behind BufferedWSGI (body limit: the service default)."""
    from cds_service.buffered_wsgi import BufferedWSGI
    from cds_service.config import Settings

    return BufferedWSGI(app, threads=threads, max_body_bytes=Settings().max_request_bytes,
                        body_timeout_s=read_timeout_s)


if __name__ == "__main__":
    from cds_service.server import serve_until_stopped
    from cds_service.serving import serving_options

    options = serving_options()
    loader = functools.partial(buffered_floor, options.threads, float(options.request_read_timeout_s))
    serve_until_stopped("127.0.0.1", int(sys.argv[1]), "warning", options, loader)
