"""Slow clients cannot stall the service (issue 16 item 8), through the real server process.

Under gunicorn gthread workers (the previous serving model) four connections sending one header line every 4 s
held every worker thread, and with 8 of them three ``/healthz`` calls in a row timed out at 5 s. These tests open
8 such connections on 127.0.0.1 (bounded in number and time) against ``calcinosis-cds serve`` -- the container's
own command -- and require ``/healthz`` and a hook call to complete within a client's 5 s timeout while the slow
connections are verifiably still open. Slow senders of a body are covered too: a WSGI server hands a thread to a
request once its headers are in, so a body trickled byte by byte would hold that thread.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
import requests

from tests.deploy.service_process import ServiceProcess, base_environment, start_service
from tests.support.fhir_builders import esrd_with_high_caxp, hook_request, prefetch_for

SLOW_CONNECTIONS = 8
SEND_EVERY_S = 4.0
CLIENT_TIMEOUT_S = 5.0
HOOK_PATH = "/cds-services/calcinosis-patient-view"


class SlowClients:
    """``count`` loopback connections, each sending a little every ``SEND_EVERY_S`` seconds until closed.

    ``mode`` "headers": a request line, then one more header line each time (the headers never end).
    ``mode`` "body": complete headers announcing a 2,000-byte body, then one byte of it each time.
    Every connection stops after ``limit_s`` seconds at most, whatever happens to the test.
    """

    def __init__(self, port: int, count: int, mode: str, limit_s: float = 40.0) -> None:
        self._port = port
        self._count = count
        self._mode = mode
        self._limit_s = limit_s
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.connected = 0
        self.failed_sends = 0
        self.answers: list[bytes] = []

    def __enter__(self) -> SlowClients:
        for _ in range(self._count):
            thread = threading.Thread(target=self._run, daemon=True)
            thread.start()
            self._threads.append(thread)
        deadline = time.monotonic() + 5
        while self.connected < self._count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.connected == self._count, "the slow connections could not all be opened"
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _run(self) -> None:
        deadline = time.monotonic() + self._limit_s
        with socket.create_connection(("127.0.0.1", self._port), timeout=5) as sock:
            with self._lock:
                self.connected += 1
            try:
                if self._mode == "headers":
                    sock.sendall(f"POST {HOOK_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())
                else:
                    sock.sendall(f"POST {HOOK_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                                 "\r\nContent-Length: 2000\r\n\r\n{".encode())
                sent = 0
                while not self._stop.wait(SEND_EVERY_S) and time.monotonic() < deadline:
                    sock.sendall(f"X-Slow-{sent}: a\r\n".encode() if self._mode == "headers" else b" ")
                    sent += 1
            except OSError:
                with self._lock:
                    self.failed_sends += 1
                self._collect_answer(sock)

    def _collect_answer(self, sock: socket.socket) -> None:
        try:
            sock.settimeout(2)
            data = sock.recv(65536)
        except OSError:
            data = b""
        with self._lock:
            self.answers.append(data)


def _dev_service(name: str, tmp_path: Path, **env: str) -> ServiceProcess:
    return start_service(name, tmp_path, base_environment(CDS_DEV="1", **env), workers=2, ready_path="/healthz")


def _hook_body(pid: str) -> dict[str, Any]:
    return hook_request("patient-view", pid, prefetch=prefetch_for(esrd_with_high_caxp(pid)))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["headers", "body"])
def test_healthz_and_a_hook_call_answer_while_8_slow_clients_are_sending(tmp_path: Path, mode: str) -> None:
    service = _dev_service(f"slow-{mode}", tmp_path)
    try:
        with SlowClients(service.port, SLOW_CONNECTIONS, mode) as slow:
            time.sleep(1.0)  # every slow request is under way (headers started, or body started)
            for _ in range(3):
                started = time.monotonic()
                health = requests.get(f"{service.base_url}/healthz", timeout=CLIENT_TIMEOUT_S)
                assert health.status_code == 200
                assert time.monotonic() - started < CLIENT_TIMEOUT_S
            hook = requests.post(f"{service.base_url}{HOOK_PATH}", json=_hook_body("slow-clients-1"),
                                 timeout=CLIENT_TIMEOUT_S)
            assert hook.status_code == 200, hook.text
            assert hook.json()["cards"], "the ESRD patient with Ca x P 75.6 gets cards"
            # The slow connections were open and being fed the whole time (none refused or cut short).
            assert slow.failed_sends == 0
    finally:
        service.stop()


@pytest.mark.slow
def test_a_client_still_sending_its_body_after_the_read_timeout_gets_408(tmp_path: Path) -> None:
    """CDS_REQUEST_READ_TIMEOUT_S bounds how long a slow body is waited for (an OperationOutcome, then close)."""
    service = _dev_service("read-timeout", tmp_path, CDS_REQUEST_READ_TIMEOUT_S="2")
    try:
        with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
            sock.sendall(f"POST {HOOK_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         "Content-Length: 2000\r\n\r\n{".encode())
            started = time.monotonic()
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
            waited = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b'"resourceType": "OperationOutcome"' in answer or b'"resourceType":"OperationOutcome"' in answer
        assert 1.5 < waited < 8, waited
        assert requests.get(f"{service.base_url}/healthz", timeout=CLIENT_TIMEOUT_S).status_code == 200
    finally:
        service.stop()


@pytest.mark.slow
def test_a_client_still_sending_headers_after_the_read_timeout_is_disconnected(tmp_path: Path) -> None:
    service = _dev_service("header-timeout", tmp_path, CDS_REQUEST_READ_TIMEOUT_S="2")
    try:
        with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
            sock.sendall(f"POST {HOOK_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())
            started = time.monotonic()
            closed = False
            while time.monotonic() - started < 8:
                try:
                    sock.sendall(b"X-Slow: a\r\n")
                    sock.settimeout(0.5)
                    if sock.recv(65536) == b"":
                        closed = True
                        break
                except TimeoutError:
                    continue
                except OSError:
                    closed = True
                    break
                # An answer (e.g. 408) counts as the server ending the request; read until it closes.
            waited = time.monotonic() - started
        assert closed, "the server kept a connection whose headers never ended"
        assert waited < 6, waited
    finally:
        service.stop()
