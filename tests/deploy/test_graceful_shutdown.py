"""Start and stop of ``calcinosis-cds serve`` (the container's PID 1): SIGTERM lets in-flight calls finish, and a
configuration error stops start-up with one JSON message.

A hook call without prefetch makes the service fetch from the EHR's FHIR server; here that server (a small
stdlib HTTP server on 127.0.0.1) answers each query after 3 s, so the call is in flight when the master gets
SIGTERM one second in. It must still get its 200, the master must exit 0, and the log must stay JSON lines.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.deploy.service_process import base_environment, free_port, json_log_records, run_cli, start_service
from tests.support.fhir_builders import hook_request

FHIR_DELAY_S = 3.0


class _SlowFhir(BaseHTTPRequestHandler):
    """A Patient for ``/Patient/<id>``, an empty searchset for anything else, each after FHIR_DELAY_S."""

    def do_GET(self) -> None:  # noqa: N802 - the http.server hook name
        time.sleep(FHIR_DELAY_S)
        if "/Patient/" in self.path:
            document: dict[str, Any] = {"resourceType": "Patient", "id": self.path.rsplit("/", 1)[-1]}
        else:
            document = {"resourceType": "Bundle", "type": "searchset", "entry": []}
        payload = json.dumps(document).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the http.server signature
        return None


@pytest.fixture
def slow_fhir() -> Iterator[str]:
    """Base URL of a FHIR server on 127.0.0.1 that takes FHIR_DELAY_S per request."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowFhir)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_sigterm_lets_an_in_flight_hook_call_finish_and_exits_0(tmp_path: Path, slow_fhir: str) -> None:
    env = base_environment(CDS_DEV="1", CDS_ALLOWED_FHIR_SERVERS=f"{slow_fhir}/")
    service = start_service("graceful", tmp_path, env, workers=2, ready_path="/healthz")
    outcome: dict[str, Any] = {}

    def call() -> None:
        started = time.monotonic()
        try:
            answer = requests.post(f"{service.base_url}/cds-services/calcinosis-patient-view", timeout=30,
                                   json=hook_request("patient-view", "graceful-1", fhir_server=slow_fhir,
                                                     token="graceful-access-token"))
            outcome.update(status=answer.status_code, body=answer.json(), seconds=time.monotonic() - started)
        except requests.RequestException as exc:
            outcome["error"] = repr(exc)

    try:
        caller = threading.Thread(target=call)
        caller.start()
        time.sleep(1.0)  # the call is waiting on the FHIR server now
        service.process.send_signal(signal.SIGTERM)
        caller.join(timeout=40)
        returncode = service.process.wait(timeout=40)
    finally:
        service.stop()
    assert "error" not in outcome, outcome
    assert outcome["status"] == 200, outcome
    assert outcome["seconds"] >= FHIR_DELAY_S  # it really was in flight across the SIGTERM
    assert "cards" in outcome["body"]
    assert returncode == 0, service.log_text()[-3000:]
    records = json_log_records(service.log_text())
    messages = [str(record.get("message")) for record in records]
    assert "Granian shutdown completed, see ya!" in messages
    served = [r for r in records if r.get("message") == "request" and r.get("endpoint") == "cds.call_service"]
    assert [r["status"] for r in served] == [200]
    assert "Traceback" not in service.log_text()


def test_a_configuration_error_stops_start_up_with_one_json_message_and_exit_2(tmp_path: Path) -> None:
    """Production mode without CDS_PUBLIC_BASE_URL: the master refuses before any worker starts, no traceback."""
    env = base_environment(CDS_DATA_DIR=str(tmp_path / "data"), PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
                           CDS_PORT=str(free_port()))
    done = run_cli("serve", env=env, timeout_s=120)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output[-3000:]
    assert "Traceback" not in output
    records = json_log_records(done.stdout)
    refusals = [r for r in records if str(r.get("message", "")).startswith("calcinosis-cds cannot start")]
    assert len(refusals) == 1, records[-5:]
    assert "CDS_PUBLIC_BASE_URL" in refusals[0]["message"]
