"""Prometheus metrics (issue #8 "Observability"): what is counted, and sums over several server workers,
including one that died and was replaced (issue 16 item 8)."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from cds_service import ConfigError, create_app
from cds_service.metrics import check_multiprocess_dir, prepare_multiprocess_dir
from tests.deploy.service_process import (
    base_environment,
    metric,
    parse_metrics,
    start_service,
    worker_pids,
)
from tests.security.tokens import make_key, settings_for, write_issuers_file
from tests.support.fhir_builders import esrd_with_high_caxp, hook_request, prefetch_for

PATIENT_VIEW = "calcinosis-patient-view"


def _scrape(client: FlaskClient) -> dict[Any, float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    return parse_metrics(response.get_data(as_text=True))


def test_requests_are_counted_per_endpoint_and_status(client: FlaskClient) -> None:
    before = _scrape(client)
    for _ in range(5):
        assert client.get("/cds-services").status_code == 200
    after = _scrape(client)
    name, labels = "cds_http_requests_total", {"endpoint": "cds.discovery", "status": "200"}
    assert metric(after, name, **labels) - metric(before, name, **labels) == 5
    histogram = "cds_http_request_duration_seconds_count"
    assert metric(after, histogram, endpoint="cds.discovery") - metric(before, histogram,
                                                                         endpoint="cds.discovery") == 5


def test_cards_are_counted_by_rule_indicator_and_disposition(client: FlaskClient) -> None:
    pid = "metrics-esrd-1"
    before = _scrape(client)
    response = client.post(f"/cds-services/{PATIENT_VIEW}",
                           json=hook_request("patient-view", pid, prefetch=prefetch_for(esrd_with_high_caxp(pid))))
    assert response.status_code == 200
    cards = response.get_json()["cards"]
    assert cards, "the ESRD patient with Ca x P 75.6 must get cards"
    after = _scrape(client)
    for card in cards:
        rule_id = card["source"]["topic"]["code"]
        labels = {"rule_id": rule_id, "indicator": card["indicator"], "disposition": "shown"}
        assert metric(after, "cds_cards_total", **labels) - metric(before, "cds_cards_total", **labels) >= 1
    shown = metric(after, "cds_cards_total", disposition="shown") - metric(before, "cds_cards_total",
                                                                           disposition="shown")
    assert shown == len(cards)
    # Labels are rule ids and service ids, never the patient.
    assert pid not in client.get("/metrics").get_data(as_text=True)


def test_412_is_counted_per_service(client: FlaskClient) -> None:
    before = _scrape(client)
    response = client.post(f"/cds-services/{PATIENT_VIEW}", json=hook_request("patient-view", "metrics-412"))
    assert response.status_code == 412
    after = _scrape(client)
    name = "cds_prefetch_unavailable_total"
    assert metric(after, name, service=PATIENT_VIEW) - metric(before, name, service=PATIENT_VIEW) == 1


def test_401_is_counted(tmp_path: Path) -> None:
    issuers = write_issuers_file(tmp_path / "issuers.json",
                                 [{"iss": "https://ehr.example.org", "jwks": {"keys": [make_key("ES384").public_jwk]}}])
    app = create_app(settings_for(issuers, data_dir=str(tmp_path / "data")))
    client = app.test_client()
    before = _scrape(client)
    assert client.get("/cds-services").status_code == 401
    assert client.get("/cds-services", headers={"Authorization": "Bearer not-a-jwt"}).status_code == 401
    after = _scrape(client)
    name = "cds_auth_rejected_total"
    assert metric(after, name, endpoint="cds.discovery") - metric(before, name, endpoint="cds.discovery") == 2


def test_spool_depth_is_reported(client: FlaskClient) -> None:
    assert metric(_scrape(client), "cds_audit_spool_depth") == 0


def test_a_missing_multiprocess_dir_stops_start_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "does-not-exist"))
    with pytest.raises(ConfigError, match="PROMETHEUS_MULTIPROC_DIR"):
        check_multiprocess_dir()


def test_prepare_removes_files_of_a_previous_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_4242.db").write_bytes(b"stale")
    (directory / "keep.txt").write_text("not ours")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    assert prepare_multiprocess_dir() == str(directory)
    assert sorted(p.name for p in directory.iterdir()) == ["keep.txt"]


def _per_worker_discovery_counts(metrics_dir: Path) -> list[float]:
    """cds_http_requests_total{endpoint=cds.discovery} as recorded by each worker's own file."""
    counts = []
    for db_file in sorted(metrics_dir.glob("counter_*.db")):
        single = Path(tempfile.mkdtemp(dir=metrics_dir.parent))
        try:
            shutil.copy(db_file, single / db_file.name)
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=str(single))  # type: ignore[no-untyped-call]
            samples = parse_metrics(generate_latest(registry).decode())
            counts.append(metric(samples, "cds_http_requests_total", endpoint="cds.discovery"))
        finally:
            shutil.rmtree(single)
    return counts


@pytest.mark.slow
def test_metrics_sum_over_all_server_workers(tmp_path: Path) -> None:
    """N calls spread over 2 workers: every scrape, whichever worker answers it, reports exactly N."""
    service = start_service("metrics", tmp_path, base_environment(CDS_DEV="1"), workers=2)
    try:
        calls = 0
        per_worker: list[float] = []
        # Fresh connections from several threads; repeat until both workers have served some (the kernel
        # decides which worker accepts, so spreading is checked, not assumed).
        with ThreadPoolExecutor(max_workers=8) as pool:
            for _ in range(10):
                statuses = list(pool.map(lambda _: requests.get(f"{service.base_url}/cds-services",
                                                                timeout=10).status_code, range(40)))
                assert statuses == [200] * 40
                calls += 40
                per_worker = [count for count in _per_worker_discovery_counts(service.metrics_dir) if count]
                if len(per_worker) >= 2:
                    break
        assert len(per_worker) >= 2, "the load never reached both workers"
        assert sum(per_worker) == calls
        for _ in range(6):  # several scrapes land on different workers; each must report the total
            samples = service.scrape()
            assert metric(samples, "cds_http_requests_total", endpoint="cds.discovery", status="200") == calls
            assert metric(samples, "cds_http_request_duration_seconds_count", endpoint="cds.discovery") == calls
    finally:
        service.stop()


def _discovery_calls(base_url: str, count: int) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda _: requests.get(f"{base_url}/cds-services", timeout=10).status_code,
                                 range(count)))
    assert statuses == [200] * count


@pytest.mark.slow
def test_metrics_stay_correct_when_a_worker_is_killed_and_replaced(tmp_path: Path) -> None:
    """kill -9 of a worker that served calls: its counts stay in the sums, its live-gauge files are retired, and
    the replacement's counts add up (client_python "Multiprocess Mode"; the server's respawn hook)."""
    service = start_service("worker-death", tmp_path, base_environment(CDS_DEV="1"), workers=2)
    try:
        calls = 0
        victim = None
        for _ in range(10):
            _discovery_calls(service.base_url, 40)
            calls += 40
            workers = worker_pids(service.process.pid)
            assert len(workers) == 2, workers
            served = {pid: metric(_single_file_samples(service.metrics_dir / f"counter_{pid}.db"),
                                  "cds_http_requests_total", endpoint="cds.discovery") for pid in workers}
            victim = next((pid for pid, count in served.items() if count > 0), None)
            if victim is not None:
                break
        assert victim is not None, "no worker served the calls"
        # A live gauge as client_python writes it for this worker (multiprocess_mode="livesum"): the respawn
        # hook must retire it, as gunicorn's child_exit did.
        live_file = service.metrics_dir / f"gauge_livesum_{victim}.db"
        shutil.copy(service.metrics_dir / f"counter_{victim}.db", live_file)

        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if f'"worker_pid": {victim}' in service.log_text() and len(worker_pids(service.process.pid)) == 2:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"worker {victim} was not replaced:\n{service.log_text()[-3000:]}")
        assert not live_file.exists(), "the dead worker's live-gauge file was not retired"
        assert victim not in worker_pids(service.process.pid)

        _discovery_calls(service.base_url, 20)
        calls += 20
        for _ in range(4):  # whichever worker answers the scrape, the dead one's calls are still counted
            samples = service.scrape()
            assert metric(samples, "cds_http_requests_total", endpoint="cds.discovery", status="200") == calls
    finally:
        service.stop()
    assert service.process.returncode == 0, service.log_text()[-3000:]


def _single_file_samples(db_file: Path) -> dict[Any, float]:
    """The samples of one worker's metrics file alone (empty when the worker recorded nothing yet)."""
    if not db_file.exists():
        return {}
    single = Path(tempfile.mkdtemp(dir=db_file.parent.parent))
    try:
        shutil.copy(db_file, single / db_file.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(single))  # type: ignore[no-untyped-call]
        return parse_metrics(generate_latest(registry).decode())
    finally:
        shutil.rmtree(single)
