"""Prometheus metrics, correct under several server workers (issue #8 "Observability").

Multiprocess mode: when ``PROMETHEUS_MULTIPROC_DIR`` is set, every worker writes its values to files in that
directory and a scrape of ``/metrics`` -- answered by whichever worker the socket hands it to -- sums them over
all workers, live and exited (prometheus client_python, "Multiprocess Mode"). Without the variable (tests, a
single process) a normal in-process registry is used.

Every label value comes from a small, fixed set: service ids, rule ids, indicators, dispositions, status codes,
Flask endpoint names, audit operation names. Never a patient id, hookInstance, URL or token: the metrics carry
no PHI and the number of series stays bounded.

``prometheus_client`` is imported on first use, not when this module is imported: the library picks
single- or multi-process storage at its own import, and ``calcinosis-cds serve`` sets the directory only
when it starts (after the CLI has imported this module).
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from cds_service.config import ConfigError

if TYPE_CHECKING:
    from prometheus_client import Counter, Histogram

__all__ = [
    "MULTIPROC_ENV",
    "check_multiprocess_dir",
    "mark_worker_dead",
    "multiprocess_dir",
    "observe_request",
    "prepare_multiprocess_dir",
    "record_audit_failure",
    "record_auth_rejected",
    "record_cards",
    "record_fallback_outcome",
    "record_prefetch_unavailable",
    "record_unauthenticated",
    "render_metrics",
    "timed_fallback_fetch",
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Hook calls take tens of milliseconds with prefetch and up to CDS_FHIR_TOTAL_TIMEOUT_S (8 s) with fallback.
_REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# One FHIR GET is bounded by connect (2 s) + read (5 s) timeouts, times retries and pages.
_FETCH_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)

T = TypeVar("T")


class CardLike(Protocol):
    """The fields of an audit ``CardRecord`` counted here."""

    @property
    def rule_id(self) -> str: ...
    @property
    def indicator(self) -> str: ...
    @property
    def disposition(self) -> str: ...


@dataclass(frozen=True)
class _Metrics:
    http_requests: Counter
    http_duration: Histogram
    auth_rejected: Counter
    unauthenticated: Counter
    prefetch_unavailable: Counter
    cards: Counter
    fallback_fetches: Counter
    fallback_duration: Histogram
    rule_failures: Counter
    audit_failures: Counter


_metrics_lock = threading.Lock()
_built: _Metrics | None = None


def _metrics() -> _Metrics:
    """The metric objects, created once per process on first use (thread-safe: fetch threads record too)."""
    global _built
    if _built is None:
        with _metrics_lock:
            if _built is None:
                _built = _create_metrics()
    return _built


def _create_metrics() -> _Metrics:
    from prometheus_client import Counter, Histogram

    return _Metrics(
        http_requests=Counter(
            "cds_http_requests", "HTTP requests answered, by Flask endpoint, CDS service id and status code.",
            ["endpoint", "service", "status"]),
        http_duration=Histogram(
            "cds_http_request_duration_seconds", "Time to answer a request, by Flask endpoint and service id.",
            ["endpoint", "service"], buckets=_REQUEST_BUCKETS),
        auth_rejected=Counter(
            "cds_auth_rejected", "Requests refused with 401: client JWT missing or invalid (reason in the log).",
            ["endpoint"]),
        unauthenticated=Counter(
            "cds_unauthenticated_requests",
            "Requests to /cds-services answered before a client was authenticated (401, or an error ahead of "
            "authentication), by Flask endpoint and status; never written to the audit log.",
            ["endpoint", "status"]),
        prefetch_unavailable=Counter(
            "cds_prefetch_unavailable", "Hook calls answered 412: required prefetch data could not be had.",
            ["service"]),
        cards=Counter(
            "cds_cards", "Cards produced, by rule id, indicator and disposition (shown, silent, suppressed).",
            ["rule_id", "indicator", "disposition"]),
        fallback_fetches=Counter(
            "cds_prefetch_fallback_fetches",
            "FHIR fetches made because prefetch was missing, by kind (query, next_pages) and outcome "
            "(ok, truncated, error, deadline).",
            ["kind", "outcome"]),
        fallback_duration=Histogram(
            "cds_prefetch_fallback_fetch_duration_seconds",
            "Duration of one fallback FHIR fetch (all its pages), by kind.",
            ["kind"], buckets=_FETCH_BUCKETS),
        rule_failures=Counter(
            "cds_rule_failures",
            "Rules that raised during evaluation (reported on an evaluation-incomplete card, §8 C6), by rule id.",
            ["rule_id"]),
        audit_failures=Counter(
            "cds_audit_failures",
            "Audit database operations that failed (records then go to the spool), by operation.",
            ["operation"]),
    )


# ------------------------------------------------------------------------------------------------ recording
def observe_request(endpoint: str, service_id: str, status: int, seconds: float) -> None:
    """Count one answered request and its duration (called once per request by the app factory's hook)."""
    metrics = _metrics()
    metrics.http_requests.labels(endpoint, service_id, str(status)).inc()
    metrics.http_duration.labels(endpoint, service_id).observe(seconds)


def record_auth_rejected(endpoint: str) -> None:
    """Count one 401 (client authentication failed)."""
    _metrics().auth_rejected.labels(endpoint).inc()


def record_unauthenticated(endpoint: str, status: int) -> None:
    """Count one request refused before authentication (issue 15 item 7: metrics, not the audit chain)."""
    _metrics().unauthenticated.labels(endpoint, str(status)).inc()


def record_prefetch_unavailable(service_id: str) -> None:
    """Count one 412 (required prefetch data unobtainable)."""
    _metrics().prefetch_unavailable.labels(service_id).inc()


def record_cards(cards: Iterable[CardLike]) -> None:
    """Count the cards of one hook call, including silent and suppressed ones."""
    counter = _metrics().cards
    for card in cards:
        counter.labels(card.rule_id, card.indicator, card.disposition).inc()


def timed_fallback_fetch(kind: str, fetch: Callable[[str], T], target: str) -> T:
    """Run ``fetch(target)`` (one fallback FHIR fetch) and record how long it took, even when it fails."""
    started = time.perf_counter()
    try:
        return fetch(target)
    finally:
        _metrics().fallback_duration.labels(kind).observe(time.perf_counter() - started)


def record_fallback_outcome(kind: str, outcome: str) -> None:
    """Count one fallback fetch by outcome: ok, truncated, error or deadline."""
    _metrics().fallback_fetches.labels(kind, outcome).inc()


def record_rule_failures(rule_ids: Iterable[str]) -> None:
    """Count the rules that raised in one hook call (§8 C6: isolated, audited and shown as incomplete)."""
    counter = _metrics().rule_failures
    for rule_id in rule_ids:
        counter.labels(rule_id).inc()


def record_audit_failure(operation: str) -> None:
    """Count one failed audit database operation (hook call, feedback, jti cache, spool replay, ...)."""
    _metrics().audit_failures.labels(operation).inc()


# ------------------------------------------------------------------------------------------------ multiprocess
def multiprocess_dir() -> str | None:
    """The multiprocess directory when multiprocess mode is on, else None."""
    return os.environ.get(MULTIPROC_ENV) or None


def check_multiprocess_dir() -> None:
    """Raise ConfigError when PROMETHEUS_MULTIPROC_DIR is set but is not a writable directory.

    Checked at start-up: otherwise the first metric update of a request would fail with a file error.
    """
    path = multiprocess_dir()
    if path is None:
        return
    if not os.path.isdir(path) or not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{MULTIPROC_ENV}={path!r} must be an existing, writable directory (Prometheus "
                          "multiprocess metrics; an emptyDir volume in Kubernetes)")


def prepare_multiprocess_dir() -> str:
    """Make the multiprocess directory ready before workers start; returns its path.

    Uses PROMETHEUS_MULTIPROC_DIR (created if missing), or a fresh temporary directory that it exports.
    Files left by a previous run are removed: their counts belong to processes that no longer exist and
    would otherwise be added to this run's (client_python docs: wipe the directory between runs).
    """
    path = multiprocess_dir()
    if path is None:
        path = tempfile.mkdtemp(prefix="calcinosis-cds-metrics-")
        os.environ[MULTIPROC_ENV] = path
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)
    return path


def mark_worker_dead(pid: int) -> None:
    """A worker was replaced (cds_service.server): retire its live-gauge files (its counters stay in the sums)."""
    if multiprocess_dir() is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


# ------------------------------------------------------------------------------------------------ exposition
class _SpoolDepthCollector:
    """The audit spool depth, read at scrape time (the spool directory is shared by all workers of a pod)."""

    def __init__(self, depth: int) -> None:
        self._depth = depth

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import GaugeMetricFamily

        yield GaugeMetricFamily("cds_audit_spool_depth",
                                "Hook-call audit records waiting in this pod's spool for the database.",
                                value=self._depth)


def render_metrics(spool_depth: int | None) -> tuple[bytes, str]:
    """The text exposition of all metrics (summed over workers in multiprocess mode) and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

    _metrics()  # so every metric appears (HELP/TYPE) from the first scrape
    if multiprocess_dir() is not None:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    if spool_depth is not None:
        extra = CollectorRegistry()
        extra.register(_SpoolDepthCollector(spool_depth))
        body += generate_latest(extra)
    return body, CONTENT_TYPE_LATEST
