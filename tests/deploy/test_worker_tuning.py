"""Worker processes: each builds its own app (content checked again), freezes the start-up objects out of the GC
(issue #7), and the server writes no access line of its own (the app's JSON line is the access log)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import gc
from cds_service.config import load_settings
from cds_service.buffered_wsgi import BufferedWSGI
from cds_service.gc_tuning import REQUEST_WORKER_THRESHOLDS
from cds_service.server import worker_app
settings = load_settings(None, dev=True, data_dir={data_dir!r}, audit_enabled=False, log_level="WARNING")
assert gc.get_freeze_count() == 0
app = worker_app(settings, 2, 20.0)
assert isinstance(app, BufferedWSGI)
assert gc.get_freeze_count() > 10_000, gc.get_freeze_count()  # the app's value sets, templates, modules
assert gc.get_threshold() == REQUEST_WORKER_THRESHOLDS
assert gc.isenabled()
cycle = []
cycle.append(cycle)
del cycle
assert gc.collect() >= 1  # garbage made after the freeze is still collected
print("ok")
"""

BROKEN_CONTENT = """
import cds_service.engine
from cds_service import ContentError
from cds_service.config import load_settings
from cds_service.server import worker_app
cds_service.engine.check_content = lambda: ["value set x: broken on purpose"]
settings = load_settings(None, dev=True, data_dir={data_dir!r}, audit_enabled=False, log_level="WARNING")
try:
    worker_app(settings, 2, 20.0)
except ContentError as exc:
    assert "broken on purpose" in str(exc)
    print("refused")
"""


def _run(script: str, data_dir: str) -> str:
    done = subprocess.run([sys.executable, "-c", script.format(data_dir=data_dir)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def test_a_worker_freezes_its_built_app_and_keeps_collecting(tmp_path: object) -> None:
    assert _run(SCRIPT, str(tmp_path)) == "ok"


def test_a_worker_checks_the_clinical_content_itself(tmp_path: object) -> None:
    assert _run(BROKEN_CONTENT, str(tmp_path)) == "refused"


def test_the_server_writes_no_access_line_and_routes_its_messages_to_the_json_handler() -> None:
    from cds_service.server import SERVER_LOG_CONFIG, build_server
    from cds_service.serving import HEADER_BUFFER_BYTES, ServingOptions

    server = build_server("127.0.0.1", 0, "INFO", ServingOptions(workers=3, threads=2, request_read_timeout_s=7))
    assert server.log_access is False
    assert server.workers == 3
    assert server.respawn_failed_workers is True
    assert server.http1_settings.keep_alive is False
    assert server.http1_settings.header_read_timeout == 7000
    assert server.http1_settings.max_buffer_size == HEADER_BUFFER_BYTES
    loggers = SERVER_LOG_CONFIG["loggers"]
    assert loggers["_granian"] == {"handlers": [], "propagate": True}  # the root logger's JSON handler
    assert loggers["granian.access"]["handlers"] == []
