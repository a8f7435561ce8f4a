"""The production image, built and run (issue #14) -- its own CI step: ``scripts/test-container``.

No Docker engine runs on the CI machines; Debian's buildah builds the project's Dockerfile without a daemon
(``--isolation chroot --storage-driver vfs``) on a base image made from Debian packages (tests/deploy/buildah.py)
and runs it. The image is then used as production uses it:

- started with its own ENTRYPOINT and CMD, as the image's user (uid 10001, checked on the running processes), in
  production mode (a trusted-issuers file mounted read-only, every call signed), with nothing secret in the image;
- ``/healthz``, ``/readyz``, discovery and one hook call on the embedded SQLite database, the call then found in
  that database by ``calcinosis-cds audit export`` run from the image;
- the same against the real PostgreSQL after ``calcinosis-cds db upgrade`` run from the image, on a database
  created for this test and dropped afterwards;
- SIGTERM to the container's main process (the ``calcinosis-cds serve`` master, PID 1 in a pod) stops it
  cleanly (exit 0);
- the image size is printed.

Deselected from the main suite (``-m "not container"`` in pytest's addopts) so it runs once, in its own step:
``pytest -m container tests/deploy/test_container_run.py``. Needs root, buildah and debootstrap.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from tests.deploy.buildah import Buildah, build_image, cache_dir, ensure_base_image, missing_tools
from tests.deploy.clients import PATIENT_VIEW, CdsClient, new_patient_id, rule_of
from tests.deploy.service_process import AUDIT_CHAIN_KEY, REPO, free_port, json_log_records
from tests.support.fhir_builders import esrd_with_high_caxp, hook_request, prefetch_for
from tests.support.postgres import fresh_database

pytestmark = [pytest.mark.container, pytest.mark.slow, pytest.mark.postgres, pytest.mark.integration,
              pytest.mark.timeout(1200)]

IMAGE = "localhost/calcinosis-cds:container-test"
PUBLIC_BASE_URL = "https://cds.example.org"
ISSUERS_IN_CONTAINER = "/run/calcinosis-cds/trusted-issuers.json"
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|PRIVATE|CREDENTIAL|DATABASE_URL", re.I)
IMAGE_USER = 10001
# The container's server processes (master and workers) all run this command line (deploy/docker-entrypoint.sh).
SERVE_COMMAND = "calcinosis-cds serve"


@dataclass
class Image:
    """The built image with the buildah that holds it and its OCI config."""

    buildah: Buildah
    name: str
    config: dict[str, Any]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Image]:
    """Base image (cached), then the project's Dockerfile built on it."""
    if os.geteuid() != 0:
        pytest.fail("the container test needs root (buildah --isolation chroot); run scripts/test-container")
    missing = missing_tools()
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: apt-get install buildah debootstrap (scripts/test-container)")
    cache = cache_dir()
    buildah = Buildah(cache)
    started = time.monotonic()
    base, how = ensure_base_image(buildah, cache)
    print(f"\n[container] base image {base} ({how}) in {time.monotonic() - started:.0f} s")
    started = time.monotonic()
    build_image(buildah, REPO, base, IMAGE, tmp_path_factory.mktemp("build"))
    size = buildah.image_size_bytes(IMAGE)
    print(f"[container] built {IMAGE} in {time.monotonic() - started:.0f} s; image size {size / 1e6:.0f} MB")
    inspected = buildah.inspect_image(IMAGE)
    yield Image(buildah, IMAGE, dict(inspected["OCIv1"]["config"]))
    buildah.run("rmi", "--force", IMAGE, check=False)
    buildah.run("rmi", "--prune", check=False)  # untagged leftovers; the cached base image stays


@dataclass
class RunningContainer:
    """``buildah run`` of the image's entry point in a working container."""

    image: Image
    container: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def base_url(self) -> str:
        """Where the service listens (chroot isolation shares the host's network)."""
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        """Everything the container wrote so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def processes(self) -> list[tuple[int, int, str]]:
        """(pid, parent pid, command line) of every descendant of the buildah run process."""
        table: dict[int, tuple[int, str]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            table[int(entry.name)] = (ppid, cmdline)
        descendants: list[tuple[int, int, str]] = []
        frontier = {self.process.pid}
        while frontier:
            children = {pid for pid, (ppid, _) in table.items() if ppid in frontier}
            descendants += [(pid, table[pid][0], table[pid][1]) for pid in children]
            frontier = children
        return descendants

    def server_master(self) -> int:
        """PID of the container's main process: the ``calcinosis-cds serve`` whose parent is not one."""
        procs = self.processes()
        servers = {pid for pid, _, cmd in procs if SERVE_COMMAND in cmd}
        masters = [pid for pid, ppid, _ in procs if pid in servers and ppid not in servers]
        assert len(masters) == 1, procs
        return masters[0]

    def stop(self) -> int:
        """SIGTERM to the main process, as the kubelet sends to PID 1; returns buildah run's exit status."""
        if self.process.poll() is None:
            os.kill(self.server_master(), signal.SIGTERM)
            try:
                self.process.wait(timeout=45)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
                raise AssertionError("the container did not stop within 45 s of SIGTERM") from None
        return self.process.returncode


def _env_flags(env: dict[str, str]) -> list[str]:
    return [flag for name, value in env.items() for flag in ("--env", f"{name}={value}")]


def run_in_image(image: Image, container: str, *command: str, env: dict[str, str] | None = None,
                 volumes: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """A one-off command (e.g. ``calcinosis-cds db upgrade``) in ``container``, as the image's user."""
    volume_flags = [flag for v in volumes for flag in ("--volume", v)]
    return image.buildah.run("run", "--isolation", "chroot", *_env_flags(env or {}), *volume_flags, container,
                             "--", *command, timeout_s=300, check=False)


def start_container(image: Image, name: str, workdir: Path, env: dict[str, str], volumes: tuple[str, ...],
                    timeout_s: float = 120) -> RunningContainer:
    """A fresh working container running the image's ENTRYPOINT + CMD; waits for /healthz."""
    container = image.buildah.run("from", "--pull-never", "--name", f"{name}-{uuid.uuid4().hex[:8]}",
                                  image.name).stdout.strip()
    port = free_port()
    # CDS_HOST: the image listens on 0.0.0.0; chroot isolation shares the host's network, so stay on loopback.
    full_env = {**env, "CDS_PORT": str(port), "CDS_HOST": "127.0.0.1"}
    command = [*image.config.get("Entrypoint", []), *image.config.get("Cmd", [])]
    argv = image.buildah.argv("run", "--isolation", "chroot", *_env_flags(full_env),
                              *[flag for v in volumes for flag in ("--volume", v)], container, "--", *command)
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    running = RunningContainer(image, container, port, process, log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            image.buildah.run("rm", container, check=False)
            raise AssertionError(f"{name} exited with {process.returncode}:\n{running.log_text()[-4000:]}")
        try:
            if requests.get(f"{running.base_url}/healthz", timeout=2).status_code == 200:
                return running
        except requests.RequestException:
            pass
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    image.buildah.run("rm", container, check=False)
    raise AssertionError(f"{name} did not answer /healthz within {timeout_s} s:\n{running.log_text()[-4000:]}")


def uids_of(pid: int) -> set[int]:
    """Real, effective, saved and filesystem uid of a process."""
    status = Path(f"/proc/{pid}/status").read_text()
    (line,) = [line for line in status.splitlines() if line.startswith("Uid:")]
    return {int(value) for value in line.split()[1:]}


def exercise(running: RunningContainer, client: CdsClient) -> str:
    """healthz, readyz, discovery and one hook call with a card; checks the processes' user. Returns the call's
    hookInstance."""
    assert requests.get(f"{running.base_url}/healthz", timeout=10).status_code == 200
    deadline = time.monotonic() + 60
    while (ready := requests.get(f"{running.base_url}/readyz", timeout=10)).status_code != 200:
        assert time.monotonic() < deadline, ready.text
        time.sleep(0.5)

    discovery = requests.get(f"{running.base_url}/cds-services", timeout=10,
                             headers={"Authorization": f"Bearer {client.token('/cds-services')}"})
    assert discovery.status_code == 200, discovery.text
    assert PATIENT_VIEW in {s["id"] for s in discovery.json()["services"]}
    unsigned = requests.get(f"{running.base_url}/cds-services", timeout=10)
    assert unsigned.status_code == 401, "production mode: discovery needs a signed JWT"

    pid = new_patient_id()
    body = hook_request("patient-view", pid, prefetch=prefetch_for(esrd_with_high_caxp(pid)))
    answer = client.call(running.base_url, body)
    assert answer.status_code == 200, answer.text
    assert "caxp-high" in {rule_of(card) for card in answer.json()["cards"]}

    # Every process of the container runs as the image's unprivileged user (the master and its workers).
    servers = [pid for pid, _, cmd in running.processes() if SERVE_COMMAND in cmd]
    assert len(servers) >= 3, running.processes()  # master + WEB_CONCURRENCY=2 workers
    for process_id in servers:
        assert uids_of(process_id) == {IMAGE_USER}, process_id
    print(f"[container] {running.log_path.stem}: /healthz 200, /readyz 200, discovery 200 (401 unsigned), "
          f"hook call 200 with caxp-high; {len(servers)} server processes, all uid {IMAGE_USER}")
    return str(body["hookInstance"])


def assert_stopped_cleanly(running: RunningContainer) -> None:
    """SIGTERM -> exit status 0, the server's own shutdown messages, and no traceback in the log."""
    status = running.stop()
    log = running.log_text()
    assert status == 0, log[-4000:]
    records = json_log_records(log)
    messages = [str(r.get("message", "")) for r in records]
    assert any("Shutting down granian" in m for m in messages), messages[-20:]
    assert any("Granian shutdown completed" in m for m in messages), messages[-20:]
    assert "Traceback" not in log
    print(f"[container] {running.log_path.stem}: SIGTERM to the server's master -> exit 0, shut down cleanly")


def test_image_config_has_no_secrets_and_runs_as_the_unprivileged_user(image: Image) -> None:
    config = image.config
    assert config.get("User") == f"{IMAGE_USER}:{IMAGE_USER}"
    for variable in config.get("Env", []):
        name, _, value = variable.partition("=")
        assert not SECRET_NAME.search(name), variable
        assert "://" not in value or "@" not in value, variable
    assert config.get("Entrypoint") == ["docker-entrypoint.sh"]
    assert config.get("Cmd") == ["serve"]
    container = image.buildah.run("from", "--pull-never", image.name).stdout.strip()
    try:
        # The build mounted a pip config (and the machine's CA bundle over the base image's own): its settings
        # may not have entered a layer. buildah leaves an empty file where it bind-mounted one; nothing more.
        leftovers = run_in_image(image, container, "sh", "-c", "test ! -s /etc/pip.conf && id -u")
        assert leftovers.returncode == 0, leftovers.stdout + leftovers.stderr
        assert leftovers.stdout.strip() == str(IMAGE_USER)
        # Installed exactly from the runtime lock: the same distributions at the same versions, nothing else.
        listed = run_in_image(image, container, "pip", "list", "--format", "json", "--disable-pip-version-check")
        assert listed.returncode == 0, listed.stderr
    finally:
        image.buildah.run("rm", container, check=False)
    installed = {_normalise(p["name"]): p["version"] for p in json.loads(listed.stdout)}
    installed.pop("calcinosis-cds")
    installed.pop("pip", None)
    installed.pop("setuptools", None)
    assert installed == runtime_lock_pins()
    print(f"[container] image config: user {IMAGE_USER}, no secret-like variables, {len(installed)} packages "
          "exactly as requirements/runtime.txt")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_lock_pins() -> dict[str, str]:
    """{distribution: version} of requirements/runtime.txt."""
    text = (REPO / "requirements" / "runtime.txt").read_text(encoding="utf-8")
    return {_normalise(m.group(1)): m.group(2) for m in re.finditer(r"^([A-Za-z0-9_.\-]+)==(\S+)", text, re.M)}


def test_serves_on_embedded_sqlite_and_stops_cleanly(image: Image, tmp_path: Path) -> None:
    client = CdsClient(public_base_url=PUBLIC_BASE_URL)
    issuers = client.write_issuers_file(tmp_path / "issuers.json")
    issuers.chmod(0o644)
    env = {"CDS_PUBLIC_BASE_URL": PUBLIC_BASE_URL, "CDS_TRUSTED_ISSUERS_FILE": ISSUERS_IN_CONTAINER,
           "CDS_AUDIT_CHAIN_KEY": AUDIT_CHAIN_KEY}
    running = start_container(image, "sqlite", tmp_path, env, (f"{issuers}:{ISSUERS_IN_CONTAINER}:ro",))
    try:
        hook_instance = exercise(running, client)
    finally:
        assert_stopped_cleanly(running)
    # The call was committed to the embedded database inside the container (CDS_DATA_DIR of the image).
    exported = run_in_image(image, running.container, "calcinosis-cds", "audit", "export", "--format", "ndjson",
                            env=env)
    image.buildah.run("rm", running.container, check=False)
    assert exported.returncode == 0, exported.stderr
    assert hook_instance in exported.stdout
    print("[container] sqlite: the call is in the embedded database (`calcinosis-cds audit export` in the image)")


@pytest.fixture
def database_url() -> Iterator[str]:
    """A PostgreSQL database of its own on the shared server, dropped afterwards."""
    with fresh_database("cds_container") as url:
        yield url


def test_serves_on_postgresql_after_db_upgrade_from_the_image(image: Image, tmp_path: Path,
                                                              database_url: str) -> None:
    client = CdsClient(public_base_url=PUBLIC_BASE_URL)
    issuers = client.write_issuers_file(tmp_path / "issuers.json")
    issuers.chmod(0o644)
    env = {"CDS_PUBLIC_BASE_URL": PUBLIC_BASE_URL, "CDS_TRUSTED_ISSUERS_FILE": ISSUERS_IN_CONTAINER,
           "CDS_DATABASE_URL": database_url, "CDS_AUDIT_CHAIN_KEY": AUDIT_CHAIN_KEY}

    # The migration Job: `calcinosis-cds db upgrade` from the same image, before any replica starts.
    job = image.buildah.run("from", "--pull-never", image.name).stdout.strip()
    try:
        upgrade = run_in_image(image, job, "calcinosis-cds", "db", "upgrade", env=env)
    finally:
        image.buildah.run("rm", job, check=False)
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    print("[container] postgres: `calcinosis-cds db upgrade` from the image -> exit 0")

    running = start_container(image, "postgres", tmp_path, env, (f"{issuers}:{ISSUERS_IN_CONTAINER}:ro",))
    try:
        hook_instance = exercise(running, client)
    finally:
        assert_stopped_cleanly(running)
        image.buildah.run("rm", running.container, check=False)
    with psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://")) as connection:
        rows = connection.execute("SELECT count(*) FROM calls WHERE hook_instance = %s", (hook_instance,)).fetchone()
    assert rows == (1,)
    print("[container] postgres: the call is in the PostgreSQL audit log")
