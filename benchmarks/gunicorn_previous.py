"""The previous serving model, kept for comparison only: gunicorn gthread workers, as production ran until issue 16.

``benchmarks/run.py`` serves its gunicorn floor row and the "typical under gunicorn" row with these settings
(``gunicorn -c python:benchmarks.gunicorn_previous APP``), the same values the service's own gunicorn config
had: 2 workers x 2 threads, no keep-alive, no gunicorn access line, the worker GC tuning and the metrics hooks.
The service itself now runs under ``calcinosis-cds serve`` (cds_service.server, cds_service.serving): a gthread
worker reads headers and bodies on its request threads, so a few slow clients stall it (docs/security.md).
"""

from __future__ import annotations

import os
from typing import Any

from gunicorn import glogging

workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = 2
timeout = 30
graceful_timeout = 25
keepalive = 0
accesslog = None
errorlog = "-"
logger_class = "benchmarks.gunicorn_previous.AppAccessLogOnly"
control_socket_disable = True
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108 - a fixed, system directory


class AppAccessLogOnly(glogging.Logger):  # type: ignore[misc]
    """gunicorn's logger without its access line (the app writes one JSON line per request itself)."""

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        """No gunicorn access line (building its atoms cost ~1.5% of a worker's CPU, issue #7)."""
        return None


def on_starting(server: Any) -> None:
    """Master start: a fresh Prometheus multiprocess directory (only where the service runs under it)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from cds_service.metrics import prepare_multiprocess_dir

        prepare_multiprocess_dir()


def post_worker_init(worker: Any) -> None:
    """The same per-worker GC tuning the service's workers get (cds_service.gc_tuning, issue #7)."""
    from cds_service.gc_tuning import tune_for_request_worker

    tune_for_request_worker()


def child_exit(server: Any, worker: Any) -> None:
    """A worker exited: retire its Prometheus live-gauge files."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from cds_service.metrics import mark_worker_dead

        mark_worker_dead(worker.pid)
