"""CPU time per hook call inside one process: the service without a server, socket or other requests (issue 18).

    python benchmarks/in_process.py                 # typical record, audit off and on SQLite
    python benchmarks/in_process.py --calls 400

The app is built as production builds it (``create_app`` with the benchmark's settings, dev mode) and called
through Flask's test client, so body reading, JSON decoding, validation, extraction, rules, cards, the alert
policy and the audit append are all counted; the HTTP server is not. The figure is process CPU time
(``time.process_time``: user + system, every thread of this process), not wall time, so waiting for an fsync
costs nothing here and a busy neighbour on the other core changes it less than a wall-clock figure. Each
measurement is the lowest of ``rounds`` batches: the machine is a shared VM and its speed drifts (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@dataclass(frozen=True)
class CpuFigure:
    """CPU milliseconds per call: the lowest batch and the median batch."""

    label: str
    best_ms: float
    median_ms: float
    calls: int


def cpu_per_call(label: str, service: str, body: dict[str, Any], *, audit: bool, calls: int, rounds: int,
                 placeholder: str, max_request_bytes: int) -> CpuFigure:
    """Process CPU per call of ``body`` posted to ``service`` (a fresh hookInstance each time)."""
    from cds_service import create_app
    from cds_service.gc_tuning import tune_for_request_worker

    raw = json.dumps(body)
    batches: list[float] = []
    with tempfile.TemporaryDirectory(prefix="calcinosis-cpu-") as tmp:
        app = create_app(dev=True, data_dir=tmp, audit_enabled=audit, log_level="WARNING",
                         max_request_bytes=max_request_bytes)
        client = app.test_client()
        # The bodies are made before the clock starts: the client's own work is not the service's.
        bodies = [raw.replace(placeholder, str(uuid.uuid4())).encode() for _ in range(calls * rounds + 5)]

        def call(data: bytes) -> None:
            answer = client.post(f"/cds-services/{service}", data=data, content_type="application/json")
            if answer.status_code != 200:
                raise SystemExit(f"HTTP {answer.status_code}: {answer.get_data(as_text=True)[:500]}")

        for data in bodies[:5]:  # warm-up: value-set index, templates, prepared SQL
            call(data)
        tune_for_request_worker()  # as the server does in each worker (cds_service.gc_tuning)
        for number in range(rounds):
            batch = bodies[5 + number * calls: 5 + (number + 1) * calls]
            started = time.process_time()
            for data in batch:
                call(data)
            batches.append((time.process_time() - started) / calls * 1000.0)
        app.extensions["calcinosis"].close()
    batches.sort()
    return CpuFigure(label, batches[0], batches[len(batches) // 2], calls)


def main(argv: list[str] | None = None) -> int:
    """Print the CPU per typical call, audit off and on SQLite."""
    from benchmarks.run import MAX_REQUEST_BYTES, PATIENT_VIEW, PLACEHOLDER_INSTANCE, build_record, hook_body

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per batch")
    parser.add_argument("--rounds", type=int, default=5, help="batches; the lowest is reported")
    options = parser.parse_args(argv)
    body = hook_body("patient-view", build_record(150))
    for audit in (False, True):
        figure = cpu_per_call(f"typical, audit {'SQLite' if audit else 'off'}", PATIENT_VIEW, body, audit=audit,
                              calls=options.calls, rounds=options.rounds, placeholder=PLACEHOLDER_INSTANCE,
                              max_request_bytes=MAX_REQUEST_BYTES)
        print(f"{figure.label}: {figure.best_ms:.2f} ms CPU per call (median batch {figure.median_ms:.2f} ms, "
              f"{options.rounds} x {figure.calls} calls)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
