"""Worker processes: start-up objects frozen out of the GC, no gunicorn access line (issue #7)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import gc
from cds_service import create_app, gunicorn_conf
from cds_service.gc_tuning import REQUEST_WORKER_THRESHOLDS
app = create_app(dev=True, data_dir={data_dir!r}, audit_enabled=False, log_level="WARNING")
assert gc.get_freeze_count() == 0
gunicorn_conf.post_worker_init(None)
assert gc.get_freeze_count() > 10_000, gc.get_freeze_count()  # the app's value sets, templates, modules
assert gc.get_threshold() == REQUEST_WORKER_THRESHOLDS
assert gc.isenabled()
cycle = []
cycle.append(cycle)
del cycle
assert gc.collect() >= 1  # garbage made after the freeze is still collected
print("ok")
"""


def test_post_worker_init_freezes_the_built_app_and_keeps_collecting(tmp_path: object) -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(data_dir=str(tmp_path))], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ok")


def test_serve_uses_the_same_worker_hook() -> None:
    import inspect

    from cds_service import server

    assert '"post_worker_init": gunicorn_conf.post_worker_init' in inspect.getsource(server.run)


def test_gunicorn_formats_no_access_line_of_its_own() -> None:
    from gunicorn.config import Config

    from cds_service import gunicorn_conf
    from cds_service.gunicorn_logging import AppAccessLogOnly

    config = Config()
    config.set("logger_class", gunicorn_conf.logger_class)
    config.set("logconfig_dict", gunicorn_conf.logconfig_dict)
    logger = config.logger_class(config)
    assert isinstance(logger, AppAccessLogOnly)
    # None for every argument: gunicorn's own access() would raise building its atoms from them.
    logger.access(None, None, None, None)
