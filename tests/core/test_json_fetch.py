"""The one bounded JSON fetch (cds_service/json_fetch.py, issue 17 item 5), against a real local HTTP server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from cds_service.json_fetch import JsonFetchFailed, fetch_json

CAP = 1000
TIMEOUT = (2.0, 2.0)


class _Handler(BaseHTTPRequestHandler):
    """Paths: /small (JSON object), /big-declared (Content-Length over the cap), /big-chunked (no length),
    /redirect (302 elsewhere), /text (not JSON), /nan (NaN, which is not JSON), /echo (POST: the form back),
    /slow (answers after the timeout)."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        """Keep the test output quiet."""

    def _send(self, status: int, body: bytes, *, length: bool = True, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        if self.path == "/small":
            self._send(200, b'{"ok": true}')
        elif self.path == "/big-declared":
            self._send(200, b'{"x": "' + b"a" * (CAP * 2) + b'"}')
        elif self.path == "/big-chunked":
            self.close_connection = True
            self._send(200, b'{"x": "' + b"a" * (CAP * 2) + b'"}', length=False)
        elif self.path == "/redirect":
            self._send(302, b"", headers={"Location": "/small"})
        elif self.path == "/text":
            self._send(404, b"not found, and not JSON")
        elif self.path == "/nan":
            self._send(200, b'{"value": NaN}')

        elif self.path == "/slow":
            threading.Event().wait(3)
            self._send(200, b"{}")

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        form = self.rfile.read(int(self.headers["Content-Length"])).decode()
        self._send(400, json.dumps({"error": "invalid_grant", "form": form}).encode())


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_json_object_comes_back_with_its_status(base: str) -> None:
    reply = fetch_json(f"{base}/small", max_bytes=CAP, timeout=TIMEOUT)
    assert (reply.status, reply.object()) == (200, {"ok": True})


@pytest.mark.parametrize("path", ["/big-declared", "/big-chunked"])
def test_a_body_over_the_cap_is_refused_whether_declared_or_not(base: str, path: str) -> None:
    with pytest.raises(JsonFetchFailed) as failed:
        fetch_json(f"{base}{path}", max_bytes=CAP, timeout=TIMEOUT)
    assert failed.value.kind == "too-large"


def test_a_redirect_is_returned_not_followed(base: str) -> None:
    reply = fetch_json(f"{base}/redirect", max_bytes=CAP, timeout=TIMEOUT)
    assert reply.status == 302
    assert reply.body is None


def test_a_body_that_is_not_json_reads_as_none(base: str) -> None:
    reply = fetch_json(f"{base}/text", max_bytes=CAP, timeout=TIMEOUT)
    assert (reply.status, reply.body, reply.object()) == (404, None, None)


def test_nan_is_not_json(base: str) -> None:
    # RFC 8259 has no NaN; the standard library's parser, used here before issue 18, read it as a float.
    reply = fetch_json(f"{base}/nan", max_bytes=CAP, timeout=TIMEOUT)
    assert (reply.status, reply.body) == (200, None)


def test_a_form_is_posted_and_an_error_body_still_read(base: str) -> None:
    reply = fetch_json(f"{base}/token", max_bytes=CAP, timeout=TIMEOUT, form={"code": "abc"})
    assert reply.status == 400
    assert reply.body == {"error": "invalid_grant", "form": "code=abc"}


def test_a_server_slower_than_the_read_timeout_is_a_timeout(base: str) -> None:
    with pytest.raises(JsonFetchFailed) as failed:
        fetch_json(f"{base}/slow", max_bytes=CAP, timeout=(2.0, 0.5))
    assert failed.value.kind == "timeout"


def test_a_closed_port_is_unreachable() -> None:
    with pytest.raises(JsonFetchFailed) as failed:
        fetch_json("http://127.0.0.1:9/", max_bytes=CAP, timeout=TIMEOUT)
    assert failed.value.kind == "unreachable"


def test_every_outbound_json_read_goes_through_it() -> None:
    # The cap-and-read code exists once (issue 17 item 5): no other module reads a raw response body.
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    packages = ("cds_service", "fhir_mappings", "cards", "synth", "findings")
    readers = sorted(str(path.relative_to(root)) for package in packages
                     if (root / package).is_dir() for path in (root / package).rglob("*.py")
                     if "raw.read(" in path.read_text(encoding="utf-8"))
    assert readers == ["cds_service/json_fetch.py"]
