"""cds_service.buffered_wsgi on its own: the ASGI side driven by hand, the real Flask app (and a probe app) behind.

The process-level behaviour (slow clients, header limits, graceful shutdown) is in test_slow_clients.py,
test_header_limits.py and test_graceful_shutdown.py; these check the translation itself and its limits.
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec

from cds_service.buffered_wsgi import BufferedWSGI, wsgi_environ
from tests.support.app import make_app
from tests.support.fhir_builders import esrd_with_high_caxp, hook_request, prefetch_for


def _scope(method: str = "POST", path: str = "/cds-services/calcinosis-patient-view", query: bytes = b"",
           headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": query, "root_path": "",
            "headers": headers or [], "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8080)}


def _drive(app: BufferedWSGI, scope: dict[str, Any], chunks: list[bytes] | None,
           *, disconnect: bool = False, stall: bool = False) -> list[dict[str, Any]]:
    """Run one request through ``app``: the body arrives in ``chunks``; return what the app sent."""
    sent: list[dict[str, Any]] = []
    pending = list(chunks or [b""])

    async def receive() -> dict[str, Any]:
        if pending:
            chunk = pending.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(pending) or stall}
        if disconnect:
            return {"type": "http.disconnect"}
        await asyncio.sleep(3600)  # a client that stopped sending
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def _status(sent: list[dict[str, Any]]) -> int:
    return int(sent[0]["status"])


def _json(sent: list[dict[str, Any]]) -> Any:
    return msgspec.json.decode(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))


def test_a_hook_call_in_several_chunks_reaches_the_flask_app_whole(tmp_path: Path) -> None:
    flask_app = make_app(tmp_path)
    app = BufferedWSGI(flask_app, threads=2, max_body_bytes=5 * 1024 * 1024, body_timeout_s=5)
    body = msgspec.json.encode(hook_request("patient-view", "bw-1", prefetch=prefetch_for(esrd_with_high_caxp("bw-1"))))
    chunks = [body[i:i + 1000] for i in range(0, len(body), 1000)]
    sent = _drive(app, _scope(headers=[(b"content-type", b"application/json"),
                                       (b"content-length", str(len(body)).encode())]), chunks)
    assert _status(sent) == 200
    assert _json(sent)["cards"]
    headers = dict(sent[0]["headers"])
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"x-request-id"]


def test_a_declared_oversized_body_is_not_read_and_the_app_answers_413(tmp_path: Path) -> None:
    # The same limit on both sides, as cds_service.server.worker_app sets them (CDS_MAX_REQUEST_BYTES).
    app = BufferedWSGI(make_app(tmp_path, max_request_bytes=2048), threads=1, max_body_bytes=2048, body_timeout_s=5)
    reads: list[int] = []

    class CountingChunks(list[bytes]):
        def pop(self, index: Any = -1) -> bytes:
            reads.append(1)
            return super().pop(index)

    sent = _drive(app, _scope(headers=[(b"content-type", b"application/json"), (b"content-length", b"999999")]),
                  CountingChunks([b"{" * 100]))
    assert _status(sent) == 413
    assert _json(sent)["resourceType"] == "OperationOutcome"
    assert reads == []


def test_a_streamed_body_past_the_limit_gets_the_apps_413(tmp_path: Path) -> None:
    # The same limit on both sides, as cds_service.server.worker_app sets them (CDS_MAX_REQUEST_BYTES).
    app = BufferedWSGI(make_app(tmp_path, max_request_bytes=2048), threads=1, max_body_bytes=2048, body_timeout_s=5)
    sent = _drive(app, _scope(headers=[(b"content-type", b"application/json")]), [b" " * 1500, b" " * 1500])
    assert _status(sent) == 413
    assert _json(sent)["resourceType"] == "OperationOutcome"


def test_a_client_that_stops_sending_gets_408_without_the_app_being_called() -> None:
    called = threading.Event()

    def probe(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        called.set()
        start_response("200 OK", [])
        return [b""]

    app = BufferedWSGI(probe, threads=1, max_body_bytes=2048, body_timeout_s=0.3)
    sent = _drive(app, _scope(headers=[(b"content-length", b"100")]), [b"{"], stall=True)
    assert _status(sent) == 408
    assert _json(sent)["resourceType"] == "OperationOutcome"
    assert not called.is_set()


def test_a_client_that_disconnects_mid_body_never_reaches_the_app() -> None:
    called = threading.Event()

    def probe(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        called.set()
        start_response("200 OK", [])
        return [b""]

    app = BufferedWSGI(probe, threads=1, max_body_bytes=2048, body_timeout_s=5)
    assert _drive(app, _scope(headers=[(b"content-length", b"100")]), [b"{"], disconnect=True, stall=True) == []
    assert not called.is_set()


def test_the_environ_follows_pep_3333() -> None:
    scope = _scope(method="GET", path="/smart/caf\u00e9", query=b"a=1&b=%2F",
                   headers=[(b"host", b"cds.example.org"), (b"content-type", b"text/plain"),
                            (b"x-forwarded-for", b"10.0.0.1"), (b"x-forwarded-for", b"10.0.0.2"),
                            (b"authorization", b"Bearer abc")])
    environ = wsgi_environ(scope, b"hello")
    assert environ["REQUEST_METHOD"] == "GET"
    assert environ["PATH_INFO"] == "/smart/caf\u00e9".encode().decode("latin-1")
    assert environ["QUERY_STRING"] == "a=1&b=%2F"
    assert environ["CONTENT_TYPE"] == "text/plain"
    assert environ["CONTENT_LENGTH"] == "5"
    assert environ["HTTP_HOST"] == "cds.example.org"
    assert environ["HTTP_X_FORWARDED_FOR"] == "10.0.0.1,10.0.0.2"
    assert environ["HTTP_AUTHORIZATION"] == "Bearer abc"
    assert environ["REMOTE_ADDR"] == "127.0.0.1"
    assert environ["SERVER_PORT"] == "8080"
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert environ["wsgi.url_scheme"] == "http"
    assert isinstance(environ["wsgi.input"], io.BytesIO)
    assert environ["wsgi.input"].read() == b"hello"
    assert "CONTENT_LENGTH" not in wsgi_environ(_scope(method="GET"), b"")


def test_lifespan_shutdown_closes_the_runtime_after_the_requests() -> None:
    closed = threading.Event()
    app = BufferedWSGI(lambda environ, start_response: [b""], threads=1, max_body_bytes=10, body_timeout_s=1,
                       on_shutdown=closed.set)
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send))
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert closed.is_set()
