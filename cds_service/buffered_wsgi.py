"""ASGI front for the Flask (WSGI) app: a worker thread is used only once the whole request has arrived.

Why (issue 16 item 8): a WSGI server hands a thread to a request as soon as its headers are parsed, and the
app then blocks that thread reading ``wsgi.input``; under gunicorn (gthread) even the headers are read on a
worker thread. A few clients sending one byte every few seconds therefore held every thread and ``/healthz``
timed out. Here the HTTP server (granian, Rust) parses the headers on its own event loop without any Python
thread, this class collects the body on the worker's asyncio loop (one small task per connection, bounded by
``CDS_MAX_REQUEST_BYTES`` and ``CDS_BODY_READ_TIMEOUT_S``), and only then runs the WSGI app on one of a few
threads. Slow senders cost memory up to the size limit, never a thread.

The environ is PEP 3333's, built from the ASGI HTTP scope (ASGI 3.0 "HTTP & WebSocket" spec, "WSGI
compatibility"). Responses are collected in the thread and sent in one piece: every response of this service is
a small JSON or HTML document.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from cds_service.errors import operation_outcome

log = logging.getLogger(__name__)

# environ key: time.perf_counter() when the request reached this front, so the audit's request_ms counts the body
# read and the wait for a thread too (issue 15 item 7; read by cds_service/__init__.py).
EDGE_STARTED = "calcinosis.edge_started"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
StartResponse = Callable[..., Any]


class WSGIApp(Protocol):
    """A PEP 3333 application (Flask's ``app.wsgi_app`` chain)."""

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]: ...


class _TooLarge:
    """Marker: the body went past the limit; only its size so far is known."""

    def __init__(self, size: int) -> None:
        self.size = size


class BufferedWSGI:
    """An ASGI 3 application running ``app`` (WSGI) on ``threads`` threads after reading each body in full."""

    def __init__(self, app: WSGIApp, *, threads: int, max_body_bytes: int, body_timeout_s: float,
                 on_shutdown: Callable[[], None] | None = None) -> None:
        self._app = app
        self._max_body = max_body_bytes
        self._body_timeout_s = body_timeout_s
        self._on_shutdown = on_shutdown
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="wsgi")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point: ``http`` requests and the ``lifespan`` protocol (start-up, graceful shutdown)."""
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":  # websockets: not served (granian's WSGI/ASGI option --no-ws)
            return
        started = time.perf_counter()
        try:
            body = await asyncio.wait_for(self._read_body(scope, receive), self._body_timeout_s)
        except TimeoutError:
            # The client stopped sending: answer without involving the app (no thread was ever used).
            await _send_json(send, 408, operation_outcome(
                f"request body not received within {self._body_timeout_s:g} s", status=408, code="timeout"))
            return
        if body is None:  # the client went away before the body was complete
            return
        environ = wsgi_environ(scope, body)
        environ[EDGE_STARTED] = started
        loop = asyncio.get_running_loop()
        status, headers, payload = await loop.run_in_executor(self._executor, _run_app, self._app, environ)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | _TooLarge | None:
        declared = _content_length(scope)
        if declared is not None and declared > self._max_body:
            # Not read at all: the app answers 413 from the declared length (Flask MAX_CONTENT_LENGTH).
            return _TooLarge(declared)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                return _TooLarge(size)
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                # In-flight requests have finished (the server drains them first); release pools and the audit
                # database, then the threads.
                if self._on_shutdown is not None:
                    await asyncio.get_running_loop().run_in_executor(self._executor, self._on_shutdown)
                self._executor.shutdown(wait=True)
                await send({"type": "lifespan.shutdown.complete"})
                return


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # malformed: left to the body read and the app
    return None


def wsgi_environ(scope: Scope, body: bytes | _TooLarge) -> dict[str, Any]:
    """The PEP 3333 environ for an ASGI HTTP ``scope`` whose body has been read (or found too large)."""
    server = scope.get("server") or ("127.0.0.1", 80)
    client = scope.get("client") or ("", 0)
    # ASGI's path is percent-decoded text; WSGI's PATH_INFO is the decoded bytes as latin-1 (PEP 3333 "Unicode").
    path = scope["path"].encode("utf-8").decode("latin-1")
    root_path = scope.get("root_path", "").encode("utf-8").decode("latin-1")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": root_path,
        "PATH_INFO": path[len(root_path):] if root_path and path.startswith(root_path) else path,
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1]) if server[1] is not None else "80",
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "REMOTE_ADDR": str(client[0]),
        "REMOTE_PORT": str(client[1]),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        # The input holds exactly CONTENT_LENGTH bytes (werkzeug may then read it without a length).
        "wsgi.input_terminated": True,
    }
    for raw_name, raw_value in scope.get("headers", ()):
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        value = raw_value.decode("latin-1")
        if name in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = name
        else:
            key = f"HTTP_{name}"
        # Repeated headers are joined with a comma (RFC 9110 section 5.3), as WSGI servers do.
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    if isinstance(body, _TooLarge):
        # No bytes to give: the declared (or counted) size makes the app refuse with its own 413 OperationOutcome.
        environ["CONTENT_LENGTH"] = str(body.size)
        environ["wsgi.input"] = io.BytesIO(b"")
    else:
        if body or "CONTENT_LENGTH" in environ:
            environ["CONTENT_LENGTH"] = str(len(body))
        environ["wsgi.input"] = io.BytesIO(body)
    return environ


def _run_app(app: WSGIApp, environ: dict[str, Any]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Call the WSGI app in this (worker) thread; its status, headers and whole body."""
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info is not None and started:
            raise exc_info[1].with_traceback(exc_info[2])
        started[:] = [status, headers]
        return chunks.append

    chunks: list[bytes] = []
    result = app(environ, start_response)
    try:
        for chunk in result:
            if chunk:
                chunks.append(chunk)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    if not started:
        raise RuntimeError("the WSGI application returned without calling start_response")
    status_line, header_list = started
    headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in header_list]
    return int(status_line.split(" ", 1)[0]), headers, b"".join(chunks)


async def _send_json(send: Send, status: int, document: dict[str, Any]) -> None:
    payload = json.dumps(document).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/fhir+json"), (b"content-length", str(len(payload)).encode()),
        (b"connection", b"close"), (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": payload})
