"""Shared test configuration: the real FHIR server fixtures, the CDS Hooks contract on every response, the
application fixtures most tests use, and the PostgreSQL requirement of tests marked ``postgres``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cds_service.runtime import get_runtime
from tests.support.app import make_app
from tests.support.postgres import require_postgres

pytest_plugins = ["tests.support.fhir_fixtures", "tests.contract.plugin"]


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A ``postgres`` test needs the server: skipped locally when it is down, failed in CI (issue 17 item 8)."""
    if item.get_closest_marker("postgres") is not None:
        require_postgres()


@pytest.fixture
def app_settings() -> dict[str, Any]:
    """Settings overrides for the ``app`` fixture; a test module overrides this fixture to change them."""
    return {}


@pytest.fixture
def app(tmp_path: Path, app_settings: dict[str, Any]) -> Iterator[Flask]:
    """The real application in ``--dev`` mode on a private data directory (tests/support/app.py), closed after."""
    application = make_app(tmp_path, **app_settings)
    yield application
    get_runtime(application).close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client of ``app``."""
    return app.test_client()
