"""Start and drive the in-memory FHIR R4 test server (tests/fhir_server, Medplum's router on Node).

The integration tests and the benchmark need a *real* FHIR server (issue 2 item 6, issue 7); see
../shared/reference/real-components.md section A for why it is Medplum's router behind our own wrapper.

Library use::

    server = FhirTestServer.start(latency_ms=0, require_token=None)
    server.load([patient, observation])          # one transaction of PUT Type/id entries
    requests.get(f"{server.base_url}/Observation?patient=...")
    server.stop()

Manual trials / benchmark::

    python -m tests.support.fhir_server --port 8090 --latency-ms 100 --load fixtures.json
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import requests

Resource = dict[str, Any]

SERVER_DIR = Path(__file__).resolve().parent.parent / "fhir_server"
# FHIR R4 id datatype (https://hl7.org/fhir/R4/datatypes.html#id). Medplum's MemoryRepository accepts any
# string, so the helper checks it: a bad id would otherwise load fine here and fail on a real server.
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}\Z")  # \Z: "$" would accept a final newline
_REQUEST_TIMEOUT_S = 60.0  # Synthea transactions take ~0.2 s; this only bounds a wedged server.


class FhirServerError(RuntimeError):
    """The test server could not be started, or answered a request with an error."""


def ensure_node_modules(server_dir: Path = SERVER_DIR) -> None:
    """Run ``npm ci`` in ``server_dir`` if its dependencies are not installed yet."""
    if (server_dir / "node_modules" / "@medplum" / "fhir-router" / "package.json").is_file():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise FhirServerError("npm is not on PATH; install Node.js 20+ to run the FHIR test server")
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"], cwd=server_dir, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise FhirServerError(f"`npm ci` in {server_dir} failed ({done.returncode}):\n{done.stderr[-4000:]}")


def outcome_text(body: Any) -> str:
    """Summarise an OperationOutcome (or any JSON body) as one line for an error message."""
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        parts = [
            str(issue.get("details", {}).get("text") or issue.get("diagnostics") or issue.get("code"))
            for issue in body.get("issue", [])
            if isinstance(issue, dict)
        ]
        return "; ".join(parts) or "OperationOutcome without issues"
    return json.dumps(body)[:500]


class FhirTestServer:
    """One running ``node server.mjs`` process bound to 127.0.0.1, with helpers to load and inspect it."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, stderr_path: Path, token: str | None):
        """Wrap an already started process; use :meth:`start` instead of calling this directly."""
        self._process = process
        self.port = port
        self._stderr_path = stderr_path
        self._token = token
        self._http = requests.Session()
        if token is not None:
            self._http.headers["Authorization"] = f"Bearer {token}"

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:PORT``: where the test-only ``/__requests`` endpoint lives."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The FHIR base URL, e.g. ``http://127.0.0.1:PORT/fhir`` (what a hook request's fhirServer names)."""
        return f"{self.origin}/fhir"

    @classmethod
    def start(
        cls,
        latency_ms: int = 0,
        require_token: str | None = None,
        *,
        port: int = 0,
        startup_timeout_s: float = 30.0,
    ) -> FhirTestServer:
        """Start a fresh, empty server and return once ``/fhir/metadata`` answers.

        ``port=0`` lets the OS choose a free port. ``latency_ms`` delays every FHIR response;
        ``require_token`` makes every /fhir request without ``Authorization: Bearer <token>`` fail with 401
        (this helper's own requests send it). Raises :class:`FhirServerError`, including the server's stderr,
        if the server does not come up.
        """
        if latency_ms < 0 or not 0 <= port <= 65535:
            raise ValueError(f"latency_ms must be >= 0 and port within 0..65535 (got {latency_ms}, {port})")
        if require_token is not None and not require_token.strip():
            raise ValueError("require_token must be a non-empty string or None")
        node = shutil.which("node")
        if node is None:
            raise FhirServerError("node is not on PATH; install Node.js 20+ to run the FHIR test server")
        ensure_node_modules()
        # --experimental-websocket: @medplum/core 5.x needs a global WebSocket, which Node 20 hides behind
        # this flag (real-components.md A.2). Node 22+ accepts the flag as a no-op.
        command = [node, "--experimental-websocket", "server.mjs", "--port", str(port)]
        command += ["--latency-ms", str(latency_ms)]
        if require_token is not None:
            command.append(f"--require-token={require_token}")  # "=" form: a token may start with "-"
        fd, stderr_name = tempfile.mkstemp(prefix="fhir-test-server-", suffix=".stderr")
        os.close(fd)
        stderr_path = Path(stderr_name)
        with stderr_path.open("ab") as stderr:
            # A new session: Ctrl-C in a terminal reaches only Python, which then stops the server itself.
            process = subprocess.Popen(
                command, cwd=SERVER_DIR, stdout=subprocess.PIPE, stderr=stderr, start_new_session=True
            )
        deadline = time.monotonic() + startup_timeout_s
        try:
            bound_port = _read_port_line(process, deadline)
            server = cls(process, bound_port, stderr_path, require_token)
            server._wait_until_ready(deadline)
        except BaseException as error:
            _terminate(process)
            stderr_text = stderr_path.read_text(errors="replace")[-4000:]
            stderr_path.unlink(missing_ok=True)
            if isinstance(error, FhirServerError):
                raise FhirServerError(f"{error}\n--- server stderr ---\n{stderr_text}") from None
            raise
        atexit.register(server.stop)  # a crashed test session must not leave a node process behind
        return server

    def _wait_until_ready(self, deadline: float) -> None:
        """Poll ``GET /fhir/metadata`` until it answers 200 or the deadline passes."""
        last_problem = "no answer yet"
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise FhirServerError(f"FHIR test server exited with code {self._process.returncode}")
            try:
                answer = self._http.get(f"{self.base_url}/metadata", timeout=5)
                if answer.status_code == 200:
                    return
                last_problem = f"HTTP {answer.status_code}"
            except requests.RequestException as error:
                last_problem = type(error).__name__
            time.sleep(0.05)
        raise FhirServerError(f"FHIR test server did not answer /fhir/metadata in time ({last_problem})")

    def load(self, resources: Iterable[Resource]) -> Resource:
        """Store ``resources`` with their own ids: one transaction Bundle of ``PUT Type/id`` entries.

        Returns the transaction-response Bundle. Raises ``ValueError`` for a resource without a valid
        ``resourceType``/``id``, and :class:`FhirServerError` (with the OperationOutcome) if the server
        refuses the bundle.
        """
        entries = []
        for index, resource in enumerate(resources):
            kind = resource.get("resourceType") if isinstance(resource, dict) else None
            rid = resource.get("id") if isinstance(resource, dict) else None
            if not isinstance(kind, str) or not kind.isalpha():
                raise ValueError(f"resources[{index}] has no valid resourceType")
            if not isinstance(rid, str) or not _FHIR_ID.match(rid):
                raise ValueError(f"resources[{index}] ({kind}) needs an id matching [A-Za-z0-9-.]{{1,64}}")
            entries.append(
                {
                    "fullUrl": f"{self.base_url}/{kind}/{rid}",
                    "resource": resource,
                    "request": {"method": "PUT", "url": f"{kind}/{rid}"},
                }
            )
        return self.post_bundle({"resourceType": "Bundle", "type": "transaction", "entry": entries})

    def post_bundle(self, bundle: Resource) -> Resource:
        """POST a transaction or batch Bundle as is (e.g. a Synthea bundle with urn:uuid references).

        Returns the response Bundle; raises :class:`FhirServerError` if the request or any entry failed.
        """
        answer = self._http.post(
            self.base_url,
            json=bundle,
            timeout=_REQUEST_TIMEOUT_S,
            headers={"Content-Type": "application/fhir+json"},
        )
        body = _json_or_text(answer)
        if answer.status_code >= 300 or not isinstance(body, dict):
            raise FhirServerError(f"bundle refused with HTTP {answer.status_code}: {outcome_text(body)}")
        # Medplum answers some malformed entries with 200 overall and an error status per entry.
        responses = [entry.get("response", {}) for entry in body.get("entry", [])]
        failed = [
            f"entry[{index}] {response.get('status')}: {outcome_text(response.get('outcome'))}"
            for index, response in enumerate(responses)
            if not str(response.get("status", "")).startswith("2")
        ]
        if failed:
            raise FhirServerError("bundle entries failed: " + " | ".join(failed[:10]))
        return body

    def delete(self, resource_type: str, resource_id: str) -> None:
        """Delete one resource; a resource that is already gone is not an error."""
        answer = self._http.delete(
            f"{self.base_url}/{resource_type}/{resource_id}", timeout=_REQUEST_TIMEOUT_S
        )
        if answer.status_code not in (200, 204, 404, 410):
            raise FhirServerError(
                f"DELETE {resource_type}/{resource_id}: HTTP {answer.status_code}: "
                f"{outcome_text(_json_or_text(answer))}"
            )

    def requests(self) -> list[dict[str, Any]]:
        """FHIR requests seen since start (or the last clear).

        Each is ``{method, url, authorization_present}``, plus ``status`` and ``processing_ms`` (the server's own
        time for the request, without the added latency; also sent as ``Server-Timing``) once it was answered.
        """
        answer = requests.get(f"{self.origin}/__requests", timeout=10)
        answer.raise_for_status()
        seen: list[dict[str, Any]] = answer.json()
        return seen

    def clear_requests(self) -> None:
        """Forget the FHIR requests recorded so far."""
        requests.delete(f"{self.origin}/__requests", timeout=10).raise_for_status()

    def is_running(self) -> bool:
        """Whether the server process is still alive."""
        return self._process.poll() is None

    def stderr_text(self) -> str:
        """What the server has written to stderr so far (for diagnosing a failing test)."""
        try:
            return self._stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        """Stop the server process (SIGTERM, then SIGKILL) and clean up; safe to call twice."""
        _terminate(self._process)
        self._http.close()
        self._stderr_path.unlink(missing_ok=True)
        atexit.unregister(self.stop)

    def __enter__(self) -> FhirTestServer:
        """Use the server as a context manager that stops it on exit."""
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop the server."""
        self.stop()


def _read_port_line(process: subprocess.Popen[bytes], deadline: float) -> int:
    """Read the server's first stdout line, ``{"listening": <port>}``, before ``deadline``."""
    assert process.stdout is not None
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while b"\n" not in buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FhirServerError("FHIR test server did not print its port in time")
            if not selector.select(timeout=remaining):
                continue
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                process.wait(timeout=5)
                raise FhirServerError(
                    f"FHIR test server exited with code {process.returncode} before listening"
                )
            buffer += chunk
    line = buffer.split(b"\n", 1)[0]
    try:
        port = json.loads(line)["listening"]
    except (ValueError, KeyError, TypeError):
        raise FhirServerError(f"unexpected first line from the FHIR test server: {line[:200]!r}") from None
    if not isinstance(port, int):
        raise FhirServerError(f"unexpected port from the FHIR test server: {port!r}")
    return port


def _terminate(process: subprocess.Popen[bytes]) -> None:
    """Stop ``process``: SIGTERM, wait briefly, then SIGKILL."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    if process.stdout is not None:
        process.stdout.close()


def _json_or_text(answer: requests.Response) -> Any:
    """The response body as JSON if it is JSON, else as text."""
    try:
        return answer.json()
    except ValueError:
        return answer.text


def _load_file(server: FhirTestServer, path: Path) -> int:
    """Load one JSON file: a transaction/batch Bundle as is; other Bundles, lists or a resource via PUT."""
    content = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(content, dict) and content.get("resourceType") == "Bundle":
        if content.get("type") in ("transaction", "batch"):
            return len(server.post_bundle(content).get("entry", []))
        content = [entry["resource"] for entry in content.get("entry", []) if "resource" in entry]
    resources = content if isinstance(content, list) else [content]
    server.load(resources)
    return len(resources)


def main(argv: list[str] | None = None) -> int:
    """CLI: start the server, optionally load files, print the base URL, run until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m tests.support.fhir_server", description=main.__doc__)
    parser.add_argument("--port", type=int, default=8090, help="port on 127.0.0.1 (0 = any free port)")
    parser.add_argument("--latency-ms", type=int, default=0, help="delay every FHIR response by N ms")
    parser.add_argument(
        "--require-token", default=None, help="reject /fhir requests without this bearer token"
    )
    parser.add_argument(
        "--load",
        type=Path,
        action="append",
        default=[],
        metavar="FILE.json",
        help="Bundle, list of resources or one resource to load (repeatable)",
    )
    options = parser.parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        server = FhirTestServer.start(options.latency_ms, options.require_token, port=options.port)
    except (FhirServerError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    with server:
        for path in options.load:
            try:
                count = _load_file(server, path)
            except (OSError, ValueError, KeyError, FhirServerError) as error:
                print(f"error: cannot load {path}: {error}", file=sys.stderr)
                return 1
            print(f"loaded {count} entries from {path}", file=sys.stderr)
        print(server.base_url, flush=True)
        while not stop.wait(timeout=1.0):
            if not server.is_running():
                print(f"error: FHIR test server exited:\n{server.stderr_text()}", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
