"""The load profiler (benchmarks/profile_load.py, stack_components.py): how it charges samples, and a smoke
run of the real thing.

The smoke run starts the floor and the service under gunicorn, drives them with wrk and samples the workers with
py-spy for about a second each, so the normal test run stays fast (the profile itself: BENCHMARKS.md).
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# benchmarks/ is a folder of scripts, not an installed package ("benchmarks" here is this tests/ package).
_SPEC = importlib.util.spec_from_file_location("stack_components", REPO / "benchmarks" / "stack_components.py")
assert _SPEC is not None
assert _SPEC.loader is not None
stack_components = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(stack_components)
classify = stack_components.classify
component_shares = stack_components.component_shares

_VIEW = "Flask.dispatch_request (flask/app.py:902)"
_API = "call_service (cds_service/api.py:80)"


def test_a_sample_is_charged_to_the_innermost_matching_frame() -> None:
    parse = [_VIEW, _API, "read_json_body (cds_service/http_json.py:69)", "_decode (cds_service/http_json.py:56)"]
    assert classify(parse) == "JSON decode of the body (msgspec)"
    history = [_VIEW, _API, "handle_hook_call (cds_service/hook_handler.py:60)",
               "apply_alert_policy (cds_service/alert_policy.py:54)",
               "HotPath.alert_history (cds_service/audit/hotpath.py:353)"]
    assert classify(history) == "audit log (write, alert-history read)"
    assert classify(history[:-1]) == "alert policy"
    # The view itself on top of the stack: its return frees the parsed body.
    assert classify(["Flask.wsgi_app (flask/app.py:1511)", _VIEW]) == "freeing the parsed body (end of view)"
    assert classify(["<module> (somewhere.py:1)"]) == "other (interpreter, threads)"
    # The production server's own Python (issue 16), not "app glue" although it lives in cds_service/; the
    # typed decode of issue 18 is charged to the body's JSON decode.
    assert classify(["BufferedWsgi.__call__ (cds_service/buffered_wsgi.py:120)"]) == \
        "server (buffered_wsgi, granian, gunicorn)"
    assert classify([_VIEW, _API, "decode_envelope (fhir_mappings/wire.py:305)"]) == \
        "JSON decode of the body (msgspec)"


def test_component_shares_read_py_spys_raw_format() -> None:
    raw = [
        f'process 10:"gunicorn";{_VIEW};{_API};_decode (cds_service/http_json.py:56) 30\n',
        f'process 11:"gunicorn";{_VIEW} 10\n',
        "not a sample line\n",
    ]
    shares, total = component_shares(raw)
    assert total == 40
    assert shares == {"JSON decode of the body (msgspec)": 30, "freeing the parsed body (end of view)": 10}


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (./scripts/test installs it)")
def test_profile_load_smoke_prints_both_tables() -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/profile_load.py", "--seconds", "1", "--connections", "4"], cwd=REPO,
        capture_output=True, text=True, timeout=180, check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    out = done.stdout
    floor = re.search(r"^\| floor \(empty handler\) \| ([\d,]+) \| ([\d.]+) \| 0 \|$", out, re.MULTILINE)
    service = re.search(r"^\| service \| ([\d,]+) \| ([\d.]+) \| 0 \|$", out, re.MULTILINE)
    assert floor, out
    assert service, out
    assert float(service.group(2)) > float(floor.group(2)) > 0  # a hook call costs more CPU than an empty handler
    rows = re.findall(r"^\| (.+?) \| ([\d.]+)% \| ([\d.]+) \|$", out, re.MULTILINE)
    names = {name for name, _share, _ms in rows}
    # The audit log is on (SQLite) and every call parses the body and runs the engine.
    assert {"audit log (write, alert-history read)", "JSON decode of the body (msgspec)",
            "engine: FHIR -> facts (extract)"} <= names, out
    assert abs(sum(float(share) for _name, share, _ms in rows) - 100.0) < 1.0
