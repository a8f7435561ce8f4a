"""``calcinosis-cds serve``: run the app under gunicorn, the same server production uses."""

from __future__ import annotations

import logging
import os
from typing import Any

from gunicorn.app.base import BaseApplication

from cds_service.config import Settings

log = logging.getLogger(__name__)


class _StandaloneServer(BaseApplication):  # type: ignore[misc]
    """gunicorn with options set in code; each worker builds its own app after the fork."""

    def __init__(self, settings: Settings, options: dict[str, Any]) -> None:
        self._settings = settings
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from cds_service import create_app

        return create_app(self._settings)


def prepare(settings: Settings) -> None:
    """Work done once before workers start: check content and create the embedded audit database."""
    from cds_service.engine import check_content

    problems = check_content()
    if problems:
        raise SystemExit("clinical content check failed:\n- " + "\n- ".join(problems))
    if settings.audit_enabled and settings.effective_database_url.startswith("sqlite"):
        from cds_service.audit import AuditLog

        os.makedirs(settings.data_dir, exist_ok=True)
        AuditLog.open(settings, create_schema=True).close()


def run(settings: Settings) -> None:
    """Serve until interrupted, with the production gunicorn settings (cds_service/gunicorn_conf.py)."""
    from cds_service import create_app, gunicorn_conf
    from cds_service.logging_setup import configure_logging
    from cds_service.metrics import prepare_multiprocess_dir

    configure_logging(settings.log_level)
    # Before anything records a metric: several workers must share one Prometheus multiprocess directory.
    prepare_multiprocess_dir()
    prepare(settings)
    # Build once in the master so configuration errors stop start-up with a clear message, not in a worker.
    create_app(settings).extensions["calcinosis"].close()
    if settings.dev:
        log.warning("dev_mode", extra={"note": "http FHIR servers and the public sandbox JWT are accepted; "
                                                "never use --dev with production data"})
    # The same settings as the container's `gunicorn -c python:cds_service.gunicorn_conf` (one source of truth);
    # only the bind address comes from `serve`'s own --host/--port.
    options = {
        "bind": f"{settings.host}:{settings.port}",
        "workers": gunicorn_conf.workers,
        "threads": gunicorn_conf.threads,
        "worker_class": gunicorn_conf.worker_class,
        "timeout": gunicorn_conf.timeout,
        "graceful_timeout": gunicorn_conf.graceful_timeout,
        "keepalive": gunicorn_conf.keepalive,
        "accesslog": None,
        "logger_class": gunicorn_conf.logger_class,
        "errorlog": "-",
        "child_exit": gunicorn_conf.child_exit,
        "post_worker_init": gunicorn_conf.post_worker_init,
        "logconfig_dict": gunicorn_conf.logconfig_dict,
    }
    _StandaloneServer(settings, options).run()
