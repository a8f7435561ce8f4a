"""The per-process objects a request needs, built once by the app factory (no per-request set-up)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import requests
from flask import Flask, current_app

from cds_service.config import Settings
from cds_service.engine import EngineOptions

if TYPE_CHECKING:
    from cds_service.audit import AuditLog
    from cds_service.auth import RequestVerifier

EXTENSION_KEY = "calcinosis"


@dataclass
class Runtime:
    """Settings plus long-lived collaborators: audit log, JWT verifier, FHIR session, fetch thread pool."""

    settings: Settings
    audit: AuditLog | None
    verifier: RequestVerifier
    fhir_session: requests.Session
    executor: ThreadPoolExecutor
    engine_options: EngineOptions

    def public_url(self, path: str, request_host_url: str) -> str:
        """The exact URL of an endpoint as clients call it (JWT ``aud``).

        Built from CDS_PUBLIC_BASE_URL, never from the Host header; only --dev without a configured base URL
        falls back to the request's own host (local trials).
        """
        base = self.settings.public_base_url or request_host_url
        return base.rstrip("/") + path

    def close(self) -> None:
        """Release pools and connections (app teardown / worker exit)."""
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.fhir_session.close()
        if self.audit is not None:
            self.audit.close()


def get_runtime(app: Flask | None = None) -> Runtime:
    """The runtime of ``app`` (default: the current app)."""
    target = app if app is not None else current_app
    runtime: Runtime = target.extensions[EXTENSION_KEY]
    return runtime
