"""Build the real application for tests: dev mode, a private SQLite audit log under a temporary directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask

from cds_service import create_app
from cds_service.config import load_settings


def make_app(data_dir: Path, **overrides: Any) -> Flask:
    """The app with ``--dev`` defaults (no JWT needed, http FHIR servers allowed) unless overridden."""
    settings = load_settings({}, **{"dev": True, "data_dir": str(data_dir), **overrides})
    app = create_app(settings)
    app.testing = True
    return app
