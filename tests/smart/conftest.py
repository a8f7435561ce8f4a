"""Fixtures for the SMART viewer tests: a token-protected FHIR server, the test authorization server, the app."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import make_server

from tests.support.app import make_app
from tests.support.fhir_builders import condition, lab, patient
from tests.support.fhir_server import FhirTestServer, Resource
from tests.support.smart_auth_server import SmartAuthServer

TEST_CLIENT_CALLBACK = "http://localhost/smart/callback"


@pytest.fixture(scope="module")
def fhir_token() -> str:
    """The one bearer token the protected FHIR server accepts."""
    return secrets.token_urlsafe(24)


@pytest.fixture(scope="module")
def protected_fhir(fhir_token: str) -> Iterator[FhirTestServer]:
    """A real FHIR test server that answers 401 to any request without ``fhir_token``."""
    server = FhirTestServer.start(require_token=fhir_token)
    try:
        yield server
    finally:
        server.stop()


# A trend designed for counting: (days ago, calcium mg/dL or None, phosphate mg/dL or None, unit of calcium).
# Same-specimen draws pair; the lone calcium and the lone phosphate (10 days apart) do not.
DRAWS: list[tuple[float, float | None, float | None, str]] = [
    (200, 9.4, 5.1, "mg/dL"),
    (120, 2.45, 6.0, "mmol/L"),   # reported in mmol/L: the viewer must convert (x 4.008 -> 9.82 mg/dL)
    (60, 10.0, None, "mg/dL"),
    (50, None, 6.4, "mg/dL"),
    (2, 10.5, 7.2, "mg/dL"),      # Ca x P 75.6: above 70
]


def trend_patient(pid: str) -> list[Resource]:
    """An ESRD patient with the DRAWS trend (latest pair yesterday-ish, Ca x P above 70)."""
    resources: list[Resource] = [
        patient(pid, gender="female", age_years=61),
        condition(pid, f"{pid}-esrd", "N18.6", display="End stage renal disease"),
    ]
    for index, (days, ca, p, ca_unit) in enumerate(DRAWS):
        specimen = f"{pid}-s{index}"
        if ca is not None:
            resources.append(lab(pid, f"{pid}-ca{index}", "17861-6", ca, ca_unit, days_ago=days, specimen=specimen))
        if p is not None:
            resources.append(lab(pid, f"{pid}-p{index}", "2777-1", p, "mg/dL", days_ago=days, specimen=specimen))
    resources.append(lab(pid, f"{pid}-alb", "1751-7", 3.9, "g/dL", days_ago=2, specimen=f"{pid}-s{len(DRAWS) - 1}"))
    return resources


def expected_counts() -> dict[str, int]:
    """Points per series the chart must show for DRAWS, derived from the data (pairs = same-draw Ca and P)."""
    return {
        "calcium": sum(1 for _d, ca, _p, _u in DRAWS if ca is not None),
        "phosphate": sum(1 for _d, _ca, p, _u in DRAWS if p is not None),
        "caxp": sum(1 for _d, ca, p, _u in DRAWS if ca is not None and p is not None),
    }


@pytest.fixture(scope="module")
def trend_pid(protected_fhir: FhirTestServer) -> Iterator[str]:
    """Load the trend patient into the protected FHIR server once per module."""
    pid = f"smart-{secrets.token_hex(4)}"
    resources = trend_patient(pid)
    protected_fhir.load(resources)
    yield pid
    for resource in reversed(resources):
        protected_fhir.delete(resource["resourceType"], resource["id"])


@pytest.fixture
def auth_server(protected_fhir: FhirTestServer, fhir_token: str) -> Iterator[SmartAuthServer]:
    """A fresh authorization server (auto-approve) in front of the protected FHIR server."""
    server = SmartAuthServer(upstream_fhir=protected_fhir.base_url, access_token=fhir_token,
                             redirect_uris=[TEST_CLIENT_CALLBACK]).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def smart_app(tmp_path: Path) -> Flask:
    """The real application in --dev mode with its own data directory."""
    return make_app(tmp_path)


@pytest.fixture
def client(smart_app: Flask) -> FlaskClient:
    """A test client that keeps cookies between requests (the session cookie)."""
    return smart_app.test_client()


def follow_launch(client: FlaskClient, launch_url: str) -> tuple[Any, Any]:
    """Run ``/smart/launch`` -> authorization server -> ``/smart/callback``; return (authorize answer, callback
    response). The authorize step is a real HTTP request to the test authorization server."""
    started = client.get(launch_url)
    assert started.status_code == 302, started.get_data(as_text=True)
    answer = requests.get(started.headers["Location"], allow_redirects=False, timeout=10)
    if answer.status_code != 302:
        return answer, None
    target = urlsplit(answer.headers["Location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == TEST_CLIENT_CALLBACK
    return answer, client.get(f"{target.path}?{target.query}")


class LiveServer:
    """The app served over real HTTP on 127.0.0.1 (for the browser)."""

    def __init__(self, app: Flask) -> None:
        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="live-app", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Shut the server down."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def live_server_factory() -> Iterator[Callable[[Flask], LiveServer]]:
    """Start apps over HTTP; every started server is stopped after the test."""
    started: list[LiveServer] = []

    def start(app: Flask) -> LiveServer:
        server = LiveServer(app)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
