"""Acceptance: `pip install .` in a fresh venv, then `calcinosis-cds serve --dev` serves discovery."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_fresh_install_serves_discovery(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = venv / "bin" / "pip"
    install = subprocess.run([str(pip), "install", "-q", str(REPO)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    port = _free_port()
    env = {**os.environ, "CDS_DATA_DIR": str(tmp_path / "data"), "WEB_CONCURRENCY": "1"}
    env.pop("CDS_DATABASE_URL", None)
    proc = subprocess.Popen([str(venv / "bin" / "calcinosis-cds"), "serve", "--dev", "--port", str(port)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                response = requests.get(f"http://127.0.0.1:{port}/cds-services", timeout=2)
                break
            except requests.ConnectionError:
                assert proc.poll() is None, proc.stdout.read().decode()[-3000:] if proc.stdout else ""
                assert time.monotonic() < deadline, "service did not start within 60 s"
                time.sleep(0.3)
        assert response.status_code == 200
        ids = {s["id"] for s in response.json()["services"]}
        assert ids == {"calcinosis-patient-view", "calcinosis-order-select", "calcinosis-order-sign"}
        # The embedded SQLite audit database was created on first start.
        assert (tmp_path / "data" / "audit.sqlite3").exists()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
