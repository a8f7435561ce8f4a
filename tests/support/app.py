"""Build the real application for tests: dev mode, a private SQLite audit log under a temporary directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask

from cds_service import create_app
from cds_service.config import load_settings

TEST_AUDIT_CHAIN_KEY = "7e" * 32   # never a real key: tests only


def make_app(data_dir: Path, **overrides: Any) -> Flask:
    """The app with ``--dev`` defaults (no JWT needed, http FHIR servers allowed) unless overridden."""
    defaults: dict[str, Any] = {"dev": True, "data_dir": str(data_dir)}
    if overrides.get("dev") is False:
        # Production mode requires the audit chain key (issue 15 item 6); tests use a fixed throw-away one.
        defaults["audit_chain_key"] = TEST_AUDIT_CHAIN_KEY
    settings = load_settings({}, **{**defaults, **overrides})
    app = create_app(settings)
    app.testing = True
    return app
