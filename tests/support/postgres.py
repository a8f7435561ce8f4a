"""The shared PostgreSQL test server (127.0.0.1:5432, trust auth, database ``test``): reachability and throw-away
databases.

Tests that need it carry ``@pytest.mark.postgres``; the root conftest calls :func:`require_postgres` before each
of them. Locally a missing server SKIPS them with a message saying how to get one; CI sets
``CALCINOSIS_REQUIRE_POSTGRES=1`` (in ``.ci/run``), which turns that skip into a failure, so CI never passes
with the audit-log and multi-instance tests silently not run (issue 17 item 8).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg import sql

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"
REQUIRE_ENV = "CALCINOSIS_REQUIRE_POSTGRES"
_HOW_TO = "start it with `sudo scripts/setup-postgres` (./scripts/test does this when run as root)"


def _postgres_up() -> bool:
    try:
        with psycopg.connect(PG_ADMIN):
            return True
    except psycopg.OperationalError:
        return False


def _start_local_cluster() -> None:
    """Start an installed but stopped Debian cluster (what scripts/setup-postgres created earlier)."""
    versions = os.listdir("/etc/postgresql") if os.path.isdir("/etc/postgresql") else []
    for version in versions:
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],  # noqa: S603,S607
                       check=False, capture_output=True, timeout=60)


def require_postgres() -> None:
    """Return when PostgreSQL answers; else skip the test (locally) or fail it (CI: CALCINOSIS_REQUIRE_POSTGRES=1)."""
    if _postgres_up():
        return
    _start_local_cluster()
    if _postgres_up():
        return
    message = f"PostgreSQL at 127.0.0.1:5432 (database `test`) is not reachable; {_HOW_TO}"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{message}. {REQUIRE_ENV}=1: PostgreSQL tests are required here, not skipped")
    pytest.skip(f"{message}. Skipped locally; CI sets {REQUIRE_ENV}=1 and fails instead")


@contextmanager
def fresh_database(prefix: str) -> Iterator[str]:
    """Create ``<prefix>_<random>`` and yield its SQLAlchemy URL; dropped afterwards."""
    require_postgres()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        finally:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
