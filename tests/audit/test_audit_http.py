"""The audit log behind the real HTTP layer (cds_service:create_app): Flask test client and gunicorn.

- hook calls produce call + card records with data provenance; feedback via HTTP is stored once;
- the database down: cards still served, feedback answered 503, records replayed afterwards;
- kill -9 of one gunicorn worker under load: every hook call that got a 200 is in the database or the spool;
- no token, JWT or clinical value in the captured logs.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from cds_service.audit import AuditLog, store
from cds_service.audit.db import create_audit_engine, upgrade_schema
from cds_service.audit.integrity import verify_chain
from cds_service.audit.schema import calls, cards, feedback
from cds_service.runtime import get_runtime
from tests.audit.conftest import CHAIN_KEY_ENV, TEST_CHAIN_KEY, TEST_KEYRING, Database
from tests.audit.factories import engine_for
from tests.audit.test_durability import Outage
from tests.deploy.service_process import worker_pids
from tests.support.app import make_app
from tests.support.fhir_builders import condition, hook_request, lab, patient, prefetch_for

REPO_ROOT = Path(__file__).resolve().parents[2]
# Distinctive lab values: if they ever show up in a log line, a clinical value leaked.
CALCIUM, PHOSPHATE = 10.4713, 7.2291
FAKE_TOKEN = "eyJhbGciOiJSUzM4NCJ9.fake-access-token-" + uuid.uuid4().hex


def _esrd_patient(pid: str) -> list[dict[str, Any]]:
    return [
        patient(pid),
        condition(pid, f"{pid}-esrd", "N18.6", display="End stage renal disease"),
        lab(pid, f"{pid}-ca", "17861-6", CALCIUM, "mg/dL", days_ago=1, specimen=f"{pid}-s1"),
        lab(pid, f"{pid}-p", "2777-1", PHOSPHATE, "mg/dL", days_ago=1, specimen=f"{pid}-s1"),
        lab(pid, f"{pid}-alb", "1751-7", 3.9, "g/dL", days_ago=1, specimen=f"{pid}-s1"),
    ]


def _hook_body(pid: str) -> dict[str, Any]:
    body = hook_request("patient-view", pid, prefetch=prefetch_for(_esrd_patient(pid)))
    body["prefetch"]["procedures"] = None  # "null": no data, and must be recorded as such
    body["fhirServer"] = "https://ehr.example.org/fhir"
    body["fhirAuthorization"] = {"access_token": FAKE_TOKEN, "token_type": "Bearer", "expires_in": 300,
                                 "scope": "patient/*.rs", "subject": "calcinosis-cds"}
    return body


@pytest.fixture
def http_app(database: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Flask]]:
    """Build the real app on the parametrised database (a shared PostgreSQL is migrated first, as in prod)."""
    monkeypatch.setattr(store, "RETRY_AFTER_S", 0.05)
    monkeypatch.setattr(store, "SPOOL_CHECK_INTERVAL_S", 0.0)
    if database.backend == "postgres":
        engine = create_audit_engine(database.url)
        upgrade_schema(engine)
        engine.dispose()
    apps: list[Flask] = []

    def build(url: str | None = None) -> Flask:
        app = make_app(database.data_dir, database_url=url or database.url,
                       allowed_fhir_servers=("https://ehr.example.org/",), audit_chain_key=TEST_CHAIN_KEY)
        apps.append(app)
        return app

    yield build
    for app in apps:
        get_runtime(app).close()


def _post_hook(client: FlaskClient, pid: str) -> tuple[dict[str, Any], dict[str, Any]]:
    body = _hook_body(pid)
    response = client.post("/cds-services/calcinosis-patient-view", json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    return body, response.get_json()


def test_hook_call_is_audited_with_provenance(http_app: Callable[..., Flask], database: Database) -> None:
    client = http_app().test_client()
    pid = f"pat-{uuid.uuid4().hex[:8]}"
    body, result = _post_hook(client, pid)
    assert result["cards"], "the ESRD patient with high Ca x P must get a card"

    engine = engine_for(database.url)
    with engine.connect() as connection:
        call = connection.execute(select(calls).where(calls.c.hook_instance == body["hookInstance"])).mappings().one()
        stored = connection.execute(select(cards).where(cards.c.call_id == call["id"])).mappings().all()
    assert call["patient_id"] == pid
    assert call["user_id"] == "Practitioner/pr-1"
    assert call["http_status"] == 200
    assert call["data_sources"]["patient"] == "prefetch"
    assert call["data_sources"]["procedures"] == "null"
    assert call["rules_evaluated"], "the rules that ran are recorded with their versions"
    assert {row["card_uuid"] for row in stored if row["disposition"] == "shown"} == {
        card["uuid"] for card in result["cards"]}
    evidence = [item for row in stored for item in row["evidence"]]
    assert any(item.get("resource_id", "").endswith(f"{pid}-ca") for item in evidence)
    assert FAKE_TOKEN not in str(dict(call))
    assert verify_chain(engine, TEST_KEYRING).ok
    engine.dispose()


def test_feedback_over_http_is_stored_once(http_app: Callable[..., Flask], database: Database) -> None:
    client = http_app().test_client()
    _, result = _post_hook(client, f"pat-{uuid.uuid4().hex[:8]}")
    card_uuid = result["cards"][0]["uuid"]
    item = {"card": card_uuid, "outcome": "overridden", "outcomeTimestamp": "2025-06-15T12:00:00Z",
            "overrideReason": {"reason": {"code": "will-recheck",
                                          "system": "https://calcinosis-cds.org/fhir/CodeSystem/override"}}}
    for _ in range(2):
        response = client.post("/cds-services/calcinosis-patient-view/feedback", json={"feedback": [item]})
        assert response.status_code == 200
    engine = engine_for(database.url)
    with engine.connect() as connection:
        rows = connection.execute(select(feedback).where(feedback.c.card_uuid == card_uuid)).mappings().all()
    assert len(rows) == 1
    assert rows[0]["card_known"] is True
    assert rows[0]["override_code"] == "will-recheck"
    engine.dispose()


def test_database_down_cards_still_served_then_replayed(
        http_app: Callable[..., Flask], database: Database, capfd: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    outage = Outage(database)
    try:
        client = http_app(outage.url).test_client()
        pid = f"pat-{uuid.uuid4().hex[:8]}"
        outage.begin()
        body, result = _post_hook(client, pid)  # decision support does not stop
        assert result["cards"]
        item = {"card": result["cards"][0]["uuid"], "outcome": "overridden",
                "outcomeTimestamp": "2025-06-15T12:00:00Z"}
        refused = client.post("/cds-services/calcinosis-patient-view/feedback", json={"feedback": [item]})
        assert refused.status_code == 503
        assert refused.get_json()["resourceType"] == "OperationOutcome"
        assert list(database.settings().spool_dir.glob("*.call.json"))
        outage.end()
        time.sleep(0.1)
        retried = client.post("/cds-services/calcinosis-patient-view/feedback", json={"feedback": [item]})
        assert retried.status_code == 200  # the EHR's retry: the spool is replayed first, then stored
    finally:
        outage.close()
    engine = engine_for(database.url)
    with engine.connect() as connection:
        assert connection.execute(select(calls.c.id).where(calls.c.hook_instance == body["hookInstance"])).first()
        known = connection.execute(select(feedback.c.card_known)).scalar_one()
    assert known is True
    engine.dispose()
    logs = caplog.text + "".join(capfd.readouterr())
    assert "audit database unavailable" in logs  # the outage itself is logged ...
    for secret in (pid, FAKE_TOKEN, str(CALCIUM), str(PHOSPHATE)):
        assert secret not in logs  # ... but never a patient id, token or lab value


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
@pytest.mark.integration
def test_kill_9_of_a_worker_loses_no_acknowledged_call(database: Database, tmp_path: Path) -> None:
    """kill -9 of one worker of the shipped server (``calcinosis-cds serve``) under load: every call answered 200
    is in the audit log (directly or through the spool), and the chain verifies."""
    if database.backend == "postgres":
        engine = create_audit_engine(database.url)
        upgrade_schema(engine)
        engine.dispose()
    port = _free_port()
    env = {**os.environ, **CHAIN_KEY_ENV, "PYTHONPATH": str(REPO_ROOT), "CDS_DEV": "1",
           "CDS_DATA_DIR": str(database.data_dir),
           "CDS_DATABASE_URL": database.url, "CDS_ALLOWED_FHIR_SERVERS": "https://ehr.example.org/",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"), "CDS_HOST": "127.0.0.1", "CDS_PORT": str(port),
           "WEB_CONCURRENCY": "2", "CDS_WORKER_THREADS": "4"}
    (tmp_path / "prom").mkdir()
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        master = subprocess.Popen(
            [sys.executable, "-m", "cds_service.cli", "serve", "--dev"],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    acknowledged: list[str] = []
    failures: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()
    try:
        url = f"http://127.0.0.1:{port}/cds-services/calcinosis-patient-view"
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:   # refused, or accepted while the worker still boots
                pass
            assert master.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)

        def load() -> None:
            session = requests.Session()
            while not stop.is_set():
                body = _hook_body(f"pat-{uuid.uuid4().hex[:8]}")
                try:
                    response = session.post(url, json=body, timeout=20)
                except requests.RequestException:
                    with lock:
                        failures.append(0)  # connection cut by the kill: not acknowledged
                    continue
                with lock:
                    if response.status_code == 200:
                        acknowledged.append(body["hookInstance"])
                    else:
                        failures.append(response.status_code)

        threads = [threading.Thread(target=load, daemon=True) for _ in range(6)]
        for thread in threads:
            thread.start()
        time.sleep(2.0)
        workers = worker_pids(master.pid)
        assert len(workers) == 2, (workers, log_path.read_text()[-3000:])
        os.kill(workers[0], signal.SIGKILL)
        time.sleep(3.0)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        stop.set()
        master.send_signal(signal.SIGTERM)
        try:
            master.wait(timeout=30)
        except subprocess.TimeoutExpired:
            master.kill()
            master.wait()

    assert len(acknowledged) > 20, (len(acknowledged), failures, log_path.read_text()[-2000:])
    assert all(code == 0 for code in failures), (failures, [line for line in log_path.read_text().splitlines()
                                                         if '"ERROR"' in line or 'Traceback' in line][:5])
    # only cut connections, never an error status
    audit = AuditLog.open(database.settings(), create_schema=True)  # replays anything left in the spool
    try:
        engine = engine_for(database.url)
        with engine.connect() as connection:
            stored = {row.hook_instance for row in connection.execute(select(calls.c.hook_instance))}
        result = verify_chain(engine, TEST_KEYRING)
        engine.dispose()
    finally:
        audit.close()
    missing = [hook for hook in acknowledged if hook not in stored]
    assert missing == []
    assert result.ok, result.message
    logs = log_path.read_text()
    assert FAKE_TOKEN not in logs
    assert str(CALCIUM) not in logs
    assert str(PHOSPHATE) not in logs
