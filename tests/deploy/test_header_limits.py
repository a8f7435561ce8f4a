"""Header size limits through the real server process (issue 16 item 7).

gunicorn refused any header line above 8,190 bytes with its own HTML 431 (no CORS, no OperationOutcome), below the
app's own token limit (cds_service.auth.MAX_TOKEN_CHARS, 16,384). Now the server takes header blocks up to
cds_service.serving.HEADER_BUFFER_BYTES (64 KiB), so:
- a signed client JWT of exactly the app's limit reaches the app and is accepted (200 with cards);
- a longer one, up to the server's limit, is refused by the app itself: 401 OperationOutcome (JSON) with the CORS
  headers a browser-based client needs to read it, and the reason in the log;
- only a header block far above that gets the server's own bare 431, before any app code runs. (The server's
  read buffer is HEADER_BUFFER_BYTES; it refuses headers that have not ended when the buffer is full after a
  read, so blocks up to 64 KiB always pass and the refusal comes somewhere below twice that, ~114 KB measured
  on loopback. 4 x 64 KiB is refused whatever the reads.)
"""

from __future__ import annotations

import re
import socket
from typing import Any

import pytest
import requests

from cds_service.auth import MAX_TOKEN_CHARS
from cds_service.serving import HEADER_BUFFER_BYTES
from tests.deploy.clients import PATIENT_VIEW, CdsClient
from tests.deploy.service_process import ServiceProcess, base_environment, start_service
from tests.support.fhir_builders import esrd_with_high_caxp, hook_request, prefetch_for

ORIGIN = "https://ehr.header-limits.example.org"
PATH = f"/cds-services/{PATIENT_VIEW}"


def padded_token(client: CdsClient, service: ServiceProcess, length: int) -> str:
    """A correctly signed client JWT of exactly ``length`` characters (a padding claim and header member)."""
    aud = service.base_url + PATH
    base = len(client.signer.token(aud, claims={"pad": ""}))
    for header_pad in range(4):  # base64url grows in steps of 4/3 characters: one of these lands exactly
        for pad in range(max(0, (length - base) * 3 // 4 - 8), (length - base) * 3 // 4 + 8):
            token = client.signer.token(aud, claims={"pad": "x" * pad}, headers={"x": "y" * header_pad})
            if len(token) == length:
                client.tokens.append(token)
                return token
    raise AssertionError(f"no token of exactly {length} characters")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One instance trusting the test client, with CORS for ORIGIN; dev mode so aud is the URL called."""
    tmp_path = tmp_path_factory.mktemp("header-limits")
    client = CdsClient(public_base_url="")
    issuers = client.write_issuers_file(tmp_path / "issuers.json")
    env = base_environment(CDS_DEV="1", CDS_TRUSTED_ISSUERS_FILE=str(issuers), CDS_CORS_ORIGINS=ORIGIN)
    running = start_service("header-limits", tmp_path, env, workers=1, ready_path="/healthz")
    client.public_base_url = running.base_url
    try:
        yield running, client
    finally:
        running.stop()


def _call(service: ServiceProcess, token: str, pid: str) -> requests.Response:
    body = hook_request("patient-view", pid, prefetch=prefetch_for(esrd_with_high_caxp(pid)))
    return requests.post(service.base_url + PATH, json=body, timeout=30,
                         headers={"Authorization": f"Bearer {token}", "Origin": ORIGIN})


@pytest.mark.slow
def test_a_token_of_exactly_the_apps_limit_reaches_the_app_and_is_accepted(service: Any) -> None:
    running, client = service
    token = padded_token(client, running, MAX_TOKEN_CHARS)
    assert len(token) == MAX_TOKEN_CHARS > 8190  # above gunicorn's old per-line limit
    answer = _call(running, token, "header-limit-ok")
    assert answer.status_code == 200, answer.text
    assert answer.json()["cards"]
    assert answer.headers["Access-Control-Allow-Origin"] == ORIGIN


@pytest.mark.slow
@pytest.mark.parametrize("length", [MAX_TOKEN_CHARS + 1, 40_000, HEADER_BUFFER_BYTES - 4096])
def test_a_longer_token_gets_the_apps_operation_outcome_with_cors(service: Any, length: int) -> None:
    running, client = service
    token = padded_token(client, running, length)
    answer = _call(running, token, f"header-limit-{length}")
    assert answer.status_code == 401
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.json()["resourceType"] == "OperationOutcome"
    assert answer.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert answer.headers.get("X-Request-ID")  # answered by the app, not the server
    assert f"token longer than {MAX_TOKEN_CHARS} characters" in running.log_text()


@pytest.mark.slow
def test_a_header_block_far_above_the_servers_limit_gets_the_servers_431_before_any_app_code(service: Any) -> None:
    running, _client = service
    before = running.log_text().count('"message": "request"')
    request = (f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: {ORIGIN}\r\n"
               f"Authorization: Bearer {'a' * (4 * HEADER_BUFFER_BYTES)}\r\nContent-Length: 2\r\n\r\n{{}}")
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
        try:
            sock.sendall(request.encode())
        except OSError:
            pass  # the server may stop reading once its buffer is full; its answer is still there
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            pass
    status = re.match(rb"HTTP/1\.1 (\d{3})", answer)
    assert status is not None, answer[:300]
    assert status.group(1) == b"431", answer[:300]
    assert running.log_text().count('"message": "request"') == before  # nothing reached the app
    assert requests.get(f"{running.base_url}/healthz", timeout=5).status_code == 200


def test_the_server_limit_leaves_room_for_the_apps_largest_token() -> None:
    """The configured numbers themselves: the token limit plus ordinary headers fit with room to spare."""
    assert HEADER_BUFFER_BYTES >= 2 * (MAX_TOKEN_CHARS + len("Authorization: Bearer \r\n")) + 8192
