"""How ``calcinosis-cds serve`` (and so the container) serves the app: the numbers, each from the environment.

The serving model (issue 16 item 8, measured in BENCHMARKS.md and docs/security.md "Slow clients"): granian
(an HTTP server written in Rust) parses every request on its own event loop, ``cds_service.buffered_wsgi``
collects the body on the worker's asyncio loop, and only a complete request is given to one of a few Python
threads. Under the previous gunicorn gthread workers, eight clients sending one header line every 4 s held
every thread and ``/healthz`` timed out at 5 s.

- ``WEB_CONCURRENCY`` worker processes (default 2, one per CPU of the pod's request).
- ``CDS_WORKER_THREADS`` Python threads per worker running the app (default 2): a hook call is CPU-bound
  (~7 ms for a typical prefetch) and only sometimes waits on the EHR's FHIR server (those fetches run in the
  app's own pool), so a second thread overlaps that wait while more only queue on the GIL (issue #7).
- ``CDS_REQUEST_READ_TIMEOUT_S`` (default 20, 1-60): the headers, and then the body, must each arrive within
  this time; a client still sending after that is disconnected (headers) or answered 408 (body).
- Header limit: the server's read buffer is ``HEADER_BUFFER_BYTES`` (64 KiB), four times the app's own token
  limit (cds_service.auth.MAX_TOKEN_CHARS, 16,384): every header block up to 64 KiB reaches the app, so every
  token the app could accept -- and the oversized ones it refuses with its own OperationOutcome and CORS
  headers -- gets the app's answer. A block that has not ended when the buffer is full after a read gets the
  server's bare 431 (somewhere below twice the buffer; ~114 KB measured on loopback; docs/security.md
  "Header limits").
- Graceful shutdown: on SIGTERM the workers stop accepting, finish in-flight requests, then close the audit
  log; a worker still busy after ``GRACEFUL_TIMEOUT_S`` is killed (Kubernetes' terminationGracePeriodSeconds is
  longer, deploy/deployment.yaml).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)

# 4 x cds_service.auth.MAX_TOKEN_CHARS (16,384): room for the largest acceptable token plus every other header.
HEADER_BUFFER_BYTES = 64 * 1024
GRACEFUL_TIMEOUT_S = 25
# Requests one worker holds at once (reading a body or running): bounds the memory of bodies being collected
# (each at most CDS_MAX_REQUEST_BYTES) while far above what 2 threads can serve within the read timeout.
MAX_CONCURRENT_REQUESTS_PER_WORKER = 128


@dataclass(frozen=True)
class ServingOptions:
    """Process and thread counts and the time limits of the server."""

    workers: int = 2
    threads: int = 2
    request_read_timeout_s: int = 20


def _whole_number(environ: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise SystemExit(f"{name}={raw!r} must be between {low} and {high}")
    return value


def serving_options(environ: Mapping[str, str] | None = None) -> ServingOptions:
    """The serving options from ``environ`` (default: the process environment); exits naming a bad value."""
    env = os.environ if environ is None else environ
    threads_variable = "CDS_WORKER_THREADS"
    if not env.get(threads_variable, "").strip() and env.get("GUNICORN_THREADS", "").strip():
        # The variable of the gunicorn-based releases: still honoured, so an existing ConfigMap keeps its value.
        log.warning("deprecated_variable", extra={"variable": "GUNICORN_THREADS", "use": threads_variable})
        threads_variable = "GUNICORN_THREADS"
    return ServingOptions(
        workers=_whole_number(env, "WEB_CONCURRENCY", 2, 1, 64),
        threads=_whole_number(env, threads_variable, 2, 1, 64),
        request_read_timeout_s=_whole_number(env, "CDS_REQUEST_READ_TIMEOUT_S", 20, 1, 60),
    )
