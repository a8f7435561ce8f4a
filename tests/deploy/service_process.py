"""Run the service the way the container does -- ``calcinosis-cds serve`` (granian workers) -- as a subprocess.

Each instance binds 127.0.0.1 on a free port chosen at run time, has its own data directory (spool) and its
own Prometheus multiprocess directory, writes stdout+stderr to a log file, and is stopped with SIGTERM.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
# The container's entry point runs exactly this command (deploy/docker-entrypoint.sh).
SERVE_ARGS = ["-m", "cds_service.cli", "serve"]
# The audit chain's HMAC key (required outside --dev): one random key per test session.
AUDIT_CHAIN_KEY = secrets.token_hex(32)


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_environment(**overrides: str) -> dict[str, str]:
    """The caller's environment without any CDS_* / metrics variables, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env["PYTHONPATH"] = str(REPO)
    env["CDS_AUDIT_CHAIN_KEY"] = AUDIT_CHAIN_KEY
    env.update(overrides)
    return env


@dataclass
class ServiceProcess:
    """One running server (master process) with its workers."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    metrics_dir: Path

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:<port>"""
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        """Everything the instance wrote so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """GET /metrics, parsed: {(sample name, sorted labels): value}."""
        response = requests.get(f"{self.base_url}/metrics", timeout=10)
        response.raise_for_status()
        return parse_metrics(response.text)

    def stop(self) -> None:
        """SIGTERM (graceful shutdown), then SIGKILL if it has not exited within 30 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def parse_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text exposition -> {(sample name, sorted labels): value}."""
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def metric(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(value for (sample, sample_labels), value in samples.items()
               if sample == name and wanted <= set(sample_labels))


def start_service(name: str, workdir: Path, env: dict[str, str], *, workers: int = 2,
                  ready_path: str = "/readyz", timeout_s: float = 90.0,
                  args: list[str] | None = None) -> ServiceProcess:
    """Start ``calcinosis-cds serve`` (``workers`` workers) and wait until ``ready_path`` answers 200."""
    port = free_port()
    data_dir = workdir / f"{name}-data"
    metrics_dir = workdir / f"{name}-metrics"
    log_path = workdir / f"{name}.log"
    full_env = {**env, "CDS_HOST": "127.0.0.1", "CDS_PORT": str(port), "CDS_DATA_DIR": str(data_dir),
                "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "WEB_CONCURRENCY": str(workers)}
    with log_path.open("wb") as log_file:
        process = subprocess.Popen([sys.executable, *(args or SERVE_ARGS)], cwd=REPO, env=full_env,
                                   stdout=log_file, stderr=subprocess.STDOUT)
    service = ServiceProcess(name, port, process, log_path, metrics_dir)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{service.log_text()[-4000:]}")
        try:
            if requests.get(f"{service.base_url}{ready_path}", timeout=2).status_code == 200:
                return service
        except requests.RequestException:
            pass
        time.sleep(0.2)
    service.stop()
    raise RuntimeError(f"{name} not ready within {timeout_s} s:\n{service.log_text()[-4000:]}")


def run_cli(*args: str, env: dict[str, str], timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
    """``calcinosis-cds ARGS`` (as ``python -m cds_service.cli``), output captured."""
    return subprocess.run([sys.executable, "-m", "cds_service.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout_s, check=False)


def json_log_records(text: str) -> list[dict[str, Any]]:
    """Every non-empty line parsed as a JSON object; raises AssertionError naming the first line that is not."""
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise AssertionError(f"log line {number} is not JSON: {line[:300]}") from None
        assert isinstance(record, dict), f"log line {number} is not a JSON object: {line[:300]}"
        records.append(record)
    return records


def worker_pids(master_pid: int) -> list[int]:
    """The server's worker processes: the master's children that run the service."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if parent == master_pid and b"cds_service" in command:
            children.append(int(entry.name))
    return sorted(children)
