"""scripts/setup-postgres (issue #14): what ./scripts/test runs to give a fresh Debian machine the PostgreSQL the
tests expect -- shown on a throw-away cluster (pg_createcluster on another port), dropped afterwards, so the
shared server at 127.0.0.1:5432 is never touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.deploy.service_process import REPO, free_port

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SCRIPT = REPO / "scripts" / "setup-postgres"


def _server_version() -> str:
    return sorted(os.listdir("/usr/lib/postgresql"), key=lambda v: [int(p) for p in v.split(".")])[-1]


@pytest.fixture
def throwaway_cluster() -> Iterator[tuple[str, str, int]]:
    """(version, name, port) of a cluster that does not exist yet; dropped (stopped first) afterwards."""
    if os.geteuid() != 0:
        pytest.skip("creating a PostgreSQL cluster needs root")
    if shutil.which("pg_createcluster") is None:
        pytest.fail("Debian's PostgreSQL packages are not installed (./scripts/test installs them)")
    version, name, port = _server_version(), f"cds_setup_{uuid.uuid4().hex[:8]}", free_port()
    try:
        yield version, name, port
    finally:
        subprocess.run(["pg_dropcluster", "--stop", version, name], capture_output=True, check=False, timeout=120)
        # pg_dropcluster keeps files it did not create: the script's conf.d file.
        shutil.rmtree(f"/etc/postgresql/{version}/{name}", ignore_errors=True)
    listed = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=True).stdout
    assert name not in listed


def _run_setup(version: str, name: str, port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), "--version", version, "--cluster", name, "--port", str(port)],
                          capture_output=True, text=True, timeout=300, check=False)


def test_sets_up_a_new_cluster_as_the_tests_expect_and_is_idempotent(
        throwaway_cluster: tuple[str, str, int]) -> None:
    version, name, port = throwaway_cluster
    first = _run_setup(version, name, port)
    assert first.returncode == 0, first.stdout + first.stderr

    # The tests' connection: TCP to 127.0.0.1, user postgres, no password (trust), database `test`.
    dsn = f"host=127.0.0.1 port={port} user=postgres dbname=test connect_timeout=5"
    with psycopg.connect(dsn) as connection:
        assert connection.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        assert connection.execute("SHOW port").fetchone() == (str(port),)
        rules = connection.execute(
            "SELECT type, address, auth_method FROM pg_hba_file_rules WHERE type LIKE 'host%' ORDER BY line_number"
        ).fetchall()
        # The loopback trust rules come before every other TCP rule (the first match wins).
        assert rules[:2] == [("host", "127.0.0.1", "trust"), ("host", "::1", "trust")], rules
        # ... and nothing else is trusted over TCP.
        assert all(method != "trust" for _, address, method in rules[2:]), rules
        connection.execute("CREATE TABLE setup_probe (id int)")  # a usable database, not just a name

    hba = Path(f"/etc/postgresql/{version}/{name}/pg_hba.conf")
    before = hba.read_text()
    second = _run_setup(version, name, port)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "ready" in second.stdout
    assert hba.read_text() == before, "a cluster that already answers is left as it is"
    with psycopg.connect(dsn) as connection:
        assert connection.execute("SELECT count(*) FROM setup_probe").fetchone() == (0,)


def test_repairs_a_stopped_cluster_that_does_not_trust_tcp(throwaway_cluster: tuple[str, str, int]) -> None:
    """A cluster as Debian creates it (scram for TCP, stopped) is configured and started."""
    version, name, port = throwaway_cluster
    subprocess.run(["pg_createcluster", version, name, "--port", str(port)], capture_output=True, check=True,
                   timeout=120)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=3").close()
    result = _run_setup(version, name, port)
    assert result.returncode == 0, result.stdout + result.stderr
    with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=test connect_timeout=5") as connection:
        assert connection.execute("SELECT current_database()").fetchone() == ("test",)
