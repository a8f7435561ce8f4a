"""``calcinosis-cds serve``: granian worker processes serving the app through ``BufferedWSGI``.

The same command is the container's entry point, so development and production start the service one way.
Settings (cds_service.serving) come from the environment; see that module for why each number is what it is.

- The master checks the clinical content, creates the embedded SQLite schema and builds the app once, so bad
  configuration stops start-up with one clear message instead of a worker boot loop.
- Each worker builds its own app (the content check runs again in ``create_app``), then freezes the start-up
  objects out of the garbage collector's way (cds_service.gc_tuning, issue #7).
- A worker that dies is replaced; its Prometheus live-gauge files are retired (client_python "Multiprocess
  Mode": ``mark_process_dead``), and its counters stay in the sums.
- No server access log: the app writes one JSON line per request (cds_service/__init__.py), without PHI; the
  server's own messages go through the same JSON handler.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
from collections.abc import Callable
from typing import Any

from cds_service.config import Settings
from cds_service.serving import (
    GRACEFUL_TIMEOUT_S,
    HEADER_BUFFER_BYTES,
    MAX_CONCURRENT_REQUESTS_PER_WORKER,
    ServingOptions,
    serving_options,
)

log = logging.getLogger(__name__)

# The server's loggers carry no handler of their own: their records reach the root logger's JSON handler
# (cds_service.logging_setup), so every line the process writes is one JSON object.
SERVER_LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {},
    "handlers": {},
    "loggers": {
        "_granian": {"handlers": [], "propagate": True},
        "granian.access": {"handlers": [], "propagate": False},
    },
}


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


def worker_app(settings: Settings, threads: int, read_timeout_s: float) -> Any:
    """Build one worker's ASGI app: the Flask app (content checked again), GC tuned, behind ``BufferedWSGI``."""
    from cds_service import create_app
    from cds_service.buffered_wsgi import BufferedWSGI
    from cds_service.gc_tuning import tune_for_request_worker

    app = create_app(settings)
    tune_for_request_worker()
    return BufferedWSGI(app, threads=threads, max_body_bytes=settings.max_request_bytes,
                        body_timeout_s=read_timeout_s, on_shutdown=app.extensions["calcinosis"].close)


def _server_class() -> type[Any]:
    from granian.server import Server

    from cds_service.metrics import mark_worker_dead

    class _Server(Server):  # type: ignore[misc, valid-type]
        """granian's process manager, retiring a replaced worker's metrics files (its ``child_exit``)."""

        def _respawn_workers(self, workers: list[int], *args: Any, **kwargs: Any) -> None:
            gone = [self.wrks[idx].inner.pid for idx in workers]
            super()._respawn_workers(workers, *args, **kwargs)
            for pid in gone:
                if pid is not None:
                    mark_worker_dead(pid)
                    log.info("worker_replaced", extra={"worker_pid": pid})

    return _Server


def build_server(host: str, port: int, log_level: str, options: ServingOptions) -> Any:
    """The granian server bound to ``host:port`` with cds_service.serving's counts, time and size limits."""
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels

    level = log_level.lower()
    return _server_class()(
        target="cds_service.server:worker_app",  # shown in granian's messages; the loader below builds the app
        address=host,
        port=port,
        interface=Interfaces.ASGI,  # lifespan: the runtime is closed after in-flight requests finish
        workers=options.workers,
        http=HTTPModes.http1,  # behind an ingress that terminates TLS; no cleartext HTTP/2 to parse
        websockets=False,
        backpressure=MAX_CONCURRENT_REQUESTS_PER_WORKER,
        http1_settings=HTTP1Settings(
            header_read_timeout=options.request_read_timeout_s * 1000,
            # No keep-alive (issue #7, BENCHMARKS.md): a persistent connection pins its requests to one worker;
            # with a connection per request the kernel spreads them. ~0.1 ms per handshake in-cluster.
            keep_alive=False,
            max_buffer_size=HEADER_BUFFER_BYTES,
        ),
        log_enabled=True,
        log_level=LogLevels(level) if level in LogLevels.__members__ else LogLevels.info,
        log_dictconfig=copy.deepcopy(SERVER_LOG_CONFIG),  # granian sets the level inside the dict it is given
        log_access=False,
        respawn_failed_workers=True,
        workers_kill_timeout=GRACEFUL_TIMEOUT_S,
    )


def serve_until_stopped(host: str, port: int, log_level: str, options: ServingOptions,
                        loader: Callable[[], Any]) -> None:
    """Serve the ASGI app ``loader()`` builds in each worker until SIGTERM/SIGINT (in-flight requests finish)."""
    server = build_server(host, port, log_level, options)
    log.info("serving", extra={"workers": options.workers, "threads": options.threads,
                               "request_read_timeout_s": options.request_read_timeout_s,
                               "header_buffer_bytes": HEADER_BUFFER_BYTES})
    server.serve(target_loader=loader, wrap_loader=False)


def check_app_builds(settings: Settings) -> None:
    """Build and close the app; on a configuration, content or schema problem log it and exit 2 (no traceback)."""
    from cds_service import ConfigError, ContentError, create_app
    from cds_service.audit import AuditSchemaError

    try:
        app = create_app(settings)
    except (ConfigError, ContentError, AuditSchemaError) as exc:
        log.error("calcinosis-cds cannot start: %s", exc)
        raise SystemExit(2) from None
    app.extensions["calcinosis"].close()


def run(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT (graceful: in-flight requests finish), with cds_service.serving's settings."""
    from cds_service.logging_setup import configure_logging
    from cds_service.metrics import prepare_multiprocess_dir

    configure_logging(settings.log_level)
    options = serving_options()  # after the JSON handler: its warnings are log lines too
    # Before anything records a metric: several workers must share one Prometheus multiprocess directory.
    prepare_multiprocess_dir()
    prepare(settings)
    # Build once in the master so configuration errors stop start-up with a clear message, not in a worker.
    check_app_builds(settings)
    if settings.dev:
        log.warning("dev_mode", extra={"note": "http FHIR servers and the public sandbox JWT are accepted; "
                                                "never use --dev with production data"})
    loader = functools.partial(worker_app, settings, options.threads, float(options.request_read_timeout_s))
    serve_until_stopped(settings.host, settings.port, settings.log_level, options, loader)
