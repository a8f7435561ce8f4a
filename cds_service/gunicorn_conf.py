"""gunicorn settings for production: ``gunicorn -c python:cds_service.gunicorn_conf 'cds_service:create_app()'``.

- Workers from ``WEB_CONCURRENCY`` (default 2), each a ``gthread`` worker with ``GUNICORN_THREADS`` threads
  (default 2): a hook call is CPU-bound (JSON parse + rules, ~7 ms for a typical prefetch) and only sometimes
  waits on the EHR's FHIR server (the fallback fetches themselves run in the app's own thread pool), so a
  second thread per worker overlaps that wait while more threads only queue on the GIL.
- Graceful shutdown: on SIGTERM workers finish in-flight hook calls for up to ``graceful_timeout`` seconds
  (Kubernetes' terminationGracePeriodSeconds must be longer; see deploy/deployment.yaml).
- No gunicorn access log: the app writes one JSON line per request (cds_service/__init__.py), without PHI.
- Prometheus multiprocess mode: the metrics directory is prepared before workers start and a dead worker's
  files are retired (client_python "Multiprocess Mode", gunicorn ``child_exit`` hook).
- The app is built once in the master before any worker starts, so bad configuration, broken clinical content
  or an unmigrated shared database stop start-up with one clear message instead of a worker boot loop.
"""

from __future__ import annotations

import os
from typing import Any

from cds_service.metrics import mark_worker_dead, prepare_multiprocess_dir


def _positive_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not a whole number") from None
    if value < 1:
        raise SystemExit(f"{name}={raw!r} must be at least 1")
    return value


# Same variables and defaults as `calcinosis-cds serve` (cds_service.config); the image sets CDS_HOST=0.0.0.0.
bind = [f"{os.environ.get('CDS_HOST', '127.0.0.1')}:{os.environ.get('CDS_PORT', '8080')}"]
workers = _positive_int("WEB_CONCURRENCY", 2)
worker_class = "gthread"
# 2, not 4 (issue #7, BENCHMARKS.md): one worker serving a typical prefetch at 16 connections gave the same
# throughput with 1, 2 or 4 threads (~150 req/s, CPU-bound) but p99 128 / 162 / 201 ms: extra threads add GIL
# hand-offs, not capacity. Two keep one request computing while another waits on FHIR fallback fetches.
threads = _positive_int("GUNICORN_THREADS", 2)
# A hook call is bounded by CDS_FHIR_TOTAL_TIMEOUT_S (8 s) of fallback fetches; 30 s means a stuck worker.
timeout = 30
graceful_timeout = 25
# No keep-alive (issue #7, BENCHMARKS.md): a gthread worker keeps every connection it accepted, so a client
# (or the ingress) holding a few persistent connections pins them to whichever worker won the accept race
# and the other worker idles -- measured: 16 persistent connections, one worker at ~80% of the CPU time,
# 140 req/s; with a connection per request the kernel hands each request to the worker whose main thread
# is free, both workers share the work, 210 req/s (p99 unchanged). The price is one TCP handshake per call
# between the ingress (which terminates TLS, deploy/ingress.yaml) and the pod, ~0.1 ms in-cluster.
keepalive = 0
accesslog = None
# ... and no access-line work at all (gunicorn would still format one for the handler-less logger below).
logger_class = "cds_service.gunicorn_logging.AppAccessLogOnly"
errorlog = "-"
loglevel = os.environ.get("CDS_LOG_LEVEL", "info").lower()
# gunicorn's own messages (start, worker boot/exit, timeouts) as JSON lines too, so every stdout line parses.
# The root logger gets no handler here: cds_service.logging_setup adds the JSON one (no duplicate lines).
logconfig_dict: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {
        "()": "pythonjsonlogger.json.JsonFormatter",
        "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
        "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
    }},
    "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}},
    "root": {"level": "INFO", "handlers": []},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["stdout"], "propagate": False, "qualname": "gunicorn.error"},
        "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": False, "qualname": "gunicorn.access"},
    },
}
# gunicorn >= 27 opens a control socket under $HOME; the image's user has no home and nothing uses it.
control_socket_disable = True
# The worker heartbeat file: in memory, so a slow or read-only container filesystem cannot stall workers.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108 - a fixed, system directory


def on_starting(server: Any) -> None:
    """Master start: prepare the metrics directory, then build the app once to validate everything."""
    prepare_multiprocess_dir()
    check_app_builds(server.log)


def post_worker_init(worker: Any) -> None:
    """A worker has built its app: freeze the start-up objects out of the garbage collector's way (issue #7)."""
    from cds_service.gc_tuning import tune_for_request_worker

    tune_for_request_worker()


def child_exit(server: Any, worker: Any) -> None:
    """A worker exited: retire its Prometheus live-gauge files."""
    mark_worker_dead(worker.pid)


def check_app_builds(log: Any) -> None:
    """Build and close the app; on a configuration, content or schema problem log it and exit 2."""
    from cds_service import ConfigError, ContentError, create_app
    from cds_service.audit import AuditSchemaError

    try:
        app = create_app()
    except (ConfigError, ContentError, AuditSchemaError) as exc:
        log.error("calcinosis-cds cannot start: %s", exc)
        raise SystemExit(2) from None
    app.extensions["calcinosis"].close()
