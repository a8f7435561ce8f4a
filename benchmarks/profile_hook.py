"""Profile one scenario of the benchmark in-process with pyinstrument (the findings in BENCHMARKS.md came from this).

    python benchmarks/profile_hook.py typical            # patient-view, ~150 obs, audit on SQLite
    python benchmarks/profile_hook.py large --calls 10   # 5,000 observations
    python benchmarks/profile_hook.py order --audit off

The app is built exactly as gunicorn builds it (``create_app`` with CDS_* settings, dev mode) and called through
Flask's test client, so HTTP parsing, JSON, the engine, the alert policy and the audit write are all included;
only the socket and gunicorn are not.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import (  # noqa: E402
    MAX_REQUEST_BYTES,
    ORDER_SELECT,
    PATIENT_VIEW,
    PLACEHOLDER_INSTANCE,
    build_record,
    hook_body,
    iv_calcium_draft,
)


def main(argv: list[str] | None = None) -> int:
    """Warm up, then profile ``--calls`` requests and print pyinstrument's text report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("record", choices=["small", "typical", "large", "order"])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--audit", choices=["sqlite", "off"], default="sqlite")
    parser.add_argument("--html", type=Path, default=None, help="also write an HTML report here")
    options = parser.parse_args(argv)
    try:
        from pyinstrument import Profiler
    except ImportError:
        print("error: pip install pyinstrument (it is in the dev extra)", file=sys.stderr)
        return 2
    from cds_service import create_app
    from cds_service.gc_tuning import tune_for_request_worker

    size = {"small": 20, "typical": 150, "large": 5000, "order": 150}[options.record]
    record = build_record(size)
    if options.record == "order":
        service, body = ORDER_SELECT, hook_body("order-select", record, draft=iv_calcium_draft(record.patient.id))
    else:
        service, body = PATIENT_VIEW, hook_body("patient-view", record)
    raw = json.dumps(body)
    with tempfile.TemporaryDirectory(prefix="calcinosis-profile-") as tmp:
        app = create_app(dev=True, data_dir=tmp, audit_enabled=options.audit == "sqlite", log_level="WARNING",
                         max_request_bytes=MAX_REQUEST_BYTES)
        client = app.test_client()

        def call() -> None:
            data = raw.replace(PLACEHOLDER_INSTANCE, str(uuid.uuid4()))
            answer = client.post(f"/cds-services/{service}", data=data, content_type="application/json")
            if answer.status_code != 200:
                raise SystemExit(f"HTTP {answer.status_code}: {answer.get_data(as_text=True)[:500]}")

        for _ in range(3):
            call()
        tune_for_request_worker()  # as gunicorn's post_worker_init does in production
        profiler = Profiler(interval=0.0005)
        started = time.perf_counter()
        profiler.start()
        for _ in range(options.calls):
            call()
        profiler.stop()
        elapsed = (time.perf_counter() - started) / options.calls * 1000.0
        app.extensions["calcinosis"].close()
    print(f"{options.record}: {elapsed:.1f} ms per call (in-process, profiled) over {options.calls} calls")
    print(profiler.output_text(unicode=False, color=False, show_all=False))
    if options.html:
        options.html.write_text(profiler.output_html(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
