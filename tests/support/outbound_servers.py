"""Local HTTP servers for the outbound-call tests (issue 16 items 2-4).

- :class:`CookieSettingServer` plays an EHR's FHIR server and SMART authorization server at once. It answers
  every request with ``Set-Cookie`` headers and records, per request, the raw request target, the ``Cookie``
  header it received and whether a bearer token came with it; a test then proves that no cookie is stored or
  replayed, and that a dot-segment URL never reaches a path outside the allowed base.
- :class:`CollapsingProxy` forwards to an upstream server after rewriting every ``//`` in the raw request target
  to ``/``, as some real reverse proxies do (the SMART launcher's proxy among them): a query value such as
  ``http://loinc.org|2000-8`` sent with its ``//`` unencoded arrives as ``http:/loinc.org|2000-8``.

Both bind 127.0.0.1 on a free port, serve from a daemon thread, and stop with ``stop()`` (or as context managers).
"""

from __future__ import annotations

import http.client
import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

_SEARCH_TYPE = re.compile(r"/([A-Z][A-Za-z]+)$")
_READ = re.compile(r"/([A-Z][A-Za-z]+)/([^/?]+)$")


@dataclass(frozen=True)
class SeenRequest:
    """One request as the server received it: the raw target, and the Cookie/Authorization it carried."""

    method: str
    target: str
    cookie: str | None
    authorization: bool


class _Threaded:
    """A ThreadingHTTPServer on 127.0.0.1:0 running in a daemon thread."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._server.owner = self  # type: ignore[attr-defined]
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Stop serving and close the socket; safe to call twice."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> _Threaded:
        """Use as a context manager that stops the server on exit."""
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Stop the server."""
        self.stop()


class _CookieHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Quiet: the test output should not carry one line per request."""

    def _owner(self) -> CookieSettingServer:
        owner: CookieSettingServer = self.server.owner  # type: ignore[attr-defined]
        return owner

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        owner = self._owner()
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        # Two cookies per answer: a host-only one and one with an explicit Path, each unique per answer so a
        # replay names the answer it came from.
        serial = owner.next_serial()
        self.send_header("Set-Cookie", f"tracker={serial}; Path=/")
        self.send_header("Set-Cookie", f"session-{serial}=user-{serial}; Path=/fhir; HttpOnly")
        self.end_headers()
        self.wfile.write(data)

    def _record(self) -> None:
        self._owner().record(SeenRequest(self.command, self.path, self.headers.get("Cookie"),
                                         self.headers.get("Authorization", "").startswith("Bearer ")))

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        """Serve discovery documents, FHIR reads and (empty or paged) searches."""
        self._record()
        owner = self._owner()
        path, _, query = self.path.partition("?")
        if path.endswith("/.well-known/smart-configuration"):
            self._answer(200, {"authorization_endpoint": f"{owner.origin}/authorize",
                               "token_endpoint": f"{owner.origin}/token",
                               "capabilities": ["launch-ehr", "permission-v2"]})
            return
        read = _READ.search(path)
        if read and not query:
            self._answer(200, {"resourceType": read.group(1), "id": read.group(2)})
            return
        search = _SEARCH_TYPE.search(path)
        if search:
            bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "entry": []}
            if owner.next_link and "page=2" not in query:
                bundle["link"] = [{"relation": "next", "url": owner.next_link}]
            self._answer(200, bundle)
            return
        self._answer(200, {"resourceType": "Basic", "id": "anything"})

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        """The token endpoint: a bearer grant for patient ``p1``."""
        self._record()
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self._answer(200, {"access_token": "issued-token", "token_type": "Bearer", "expires_in": 300,
                           "patient": "p1", "scope": "launch patient/*.rs"})


class CookieSettingServer(_Threaded):
    """A FHIR + SMART stand-in that sets cookies on every answer and records every request it receives."""

    def __init__(self) -> None:
        """Start on a free port."""
        self._lock = threading.Lock()
        self._seen: list[SeenRequest] = []
        self._serial = 0
        self.next_link: str | None = None  # when set, every first search page links to it as ``next``
        super().__init__(_CookieHandler)

    @property
    def base_url(self) -> str:
        """The FHIR base URL, ``http://127.0.0.1:PORT/fhir``."""
        return f"{self.origin}/fhir"

    def next_serial(self) -> int:
        """A new number for the cookies of one answer."""
        with self._lock:
            self._serial += 1
            return self._serial

    def record(self, seen: SeenRequest) -> None:
        """Remember one request."""
        with self._lock:
            self._seen.append(seen)

    @property
    def seen(self) -> list[SeenRequest]:
        """Every request received so far, in order."""
        with self._lock:
            return list(self._seen)

    def clear(self) -> None:
        """Forget the requests seen so far."""
        with self._lock:
            self._seen.clear()


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    _HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
                             "proxy-authorization", "proxy-authenticate", "host", "content-length"})

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Quiet."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        """Collapse ``//`` in the raw target, forward to the upstream, relay the answer."""
        proxy: CollapsingProxy = self.server.owner  # type: ignore[attr-defined]
        target = re.sub(r"/{2,}", "/", self.path)
        proxy.record(self.path, target)
        upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=30)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in self._HOP_BY_HOP}
            upstream.request("GET", target, headers=headers)
            answer = upstream.getresponse()
            body = answer.read()
            self.send_response(answer.status)
            for name, value in answer.getheaders():
                if name.lower() not in self._HOP_BY_HOP:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        finally:
            upstream.close()


class CollapsingProxy(_Threaded):
    """A forwarding proxy that rewrites ``//`` to ``/`` in the request target, as some real proxies do."""

    def __init__(self, upstream_origin: str) -> None:
        """Forward to ``upstream_origin`` (``http://host:port``)."""
        parts = urlsplit(upstream_origin)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self._lock = threading.Lock()
        self.rewrites: list[tuple[str, str]] = []  # (target received, target forwarded)
        super().__init__(_ProxyHandler)

    def record(self, received: str, forwarded: str) -> None:
        """Remember one forwarded request."""
        with self._lock:
            self.rewrites.append((received, forwarded))
