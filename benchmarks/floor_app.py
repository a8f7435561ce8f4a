"""The floor: an empty CDS Hooks handler on the same Flask + gunicorn settings as the service (issue #7).

It reads the POSTed body (the same bytes the service gets) and answers ``{"cards": []}``: what this framework can
do at all on this machine. ``benchmarks/run.py`` serves it with gunicorn next to the real service.
"""

from __future__ import annotations

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
