"""Pytest plugin: every response our service gives during the test run is checked against the contract.

Both transports are covered: Flask's test client (``FlaskClient.open``) and real HTTP through ``requests``
(integration tests against gunicorn). A violation fails the test that produced the response; the terminal
summary reports how many responses were checked.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from flask.testing import FlaskClient

from tests.contract.checker import check_exchange

_checked = {"count": 0}


@pytest.fixture(autouse=True, scope="session")
def _contract_on_every_response() -> Iterator[None]:
    original_open = FlaskClient.open
    original_send = requests.Session.send

    def checked_open(self: FlaskClient, *args: Any, **kwargs: Any) -> Any:
        response = original_open(self, *args, **kwargs)
        request = response.request
        if check_exchange(request.method, request.path, response.status_code, response.get_data(as_text=True)):
            _checked["count"] += 1
        return response

    def checked_send(self: requests.Session, request: requests.PreparedRequest, **kwargs: Any) -> Any:
        response = original_send(self, request, **kwargs)
        path = urlsplit(request.url or "").path
        if path.startswith("/cds-services") and not kwargs.get("stream"):
            if check_exchange(request.method or "", path, response.status_code, response.text):
                _checked["count"] += 1
        return response

    FlaskClient.open = checked_open  # type: ignore[method-assign]
    requests.Session.send = checked_send  # type: ignore[method-assign]
    yield
    FlaskClient.open = original_open  # type: ignore[method-assign]
    requests.Session.send = original_send  # type: ignore[method-assign]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Report the number of responses the contract suite checked."""
    terminalreporter.write_line(f"CDS Hooks 2.0 contract: {_checked['count']} responses checked against "
                                "the schemas and FHIRPath invariants")
