"""Fixtures for the audit-log tests: the same tests run on SQLite and on the machine's real PostgreSQL.

PostgreSQL: 127.0.0.1:5432, trust auth, user postgres. Each test gets a uniquely named database that is
dropped afterwards. The PostgreSQL cases carry the ``postgres`` mark: skipped with a message when no server is
reachable locally, a failure in CI (CALCINOSIS_REQUIRE_POSTGRES=1; tests/support/postgres.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from cds_service.audit import AuditLog
from cds_service.audit.keys import Keyring, parse_key
from cds_service.config import Settings, load_settings
from tests.support.postgres import PG_ADMIN, require_postgres

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:{port}/{name}"
# The audit chain key of the test databases (issue 15 item 6); CHAIN_KEY_ENV for CLI runs and subprocesses.
TEST_CHAIN_KEY = "test-audit-chain-key-0123456789abcdef"
TEST_KEYRING = Keyring(current=parse_key(TEST_CHAIN_KEY, "tests"), retired={})
CHAIN_KEY_ENV = {"CDS_AUDIT_CHAIN_KEY": TEST_CHAIN_KEY}


@dataclass(frozen=True)
class Database:
    """One throw-away audit database and the data directory (spool) of the service using it."""

    backend: str
    url: str
    data_dir: Path
    pg_name: str | None = None

    def settings(self, url: str | None = None, **overrides: object) -> Settings:
        """Service settings pointing at this database (or at ``url``, e.g. through a proxy)."""
        values: dict[str, object] = {"data_dir": str(self.data_dir), "database_url": url or self.url,
                                     "audit_chain_key": TEST_CHAIN_KEY, **overrides}
        return load_settings({}, **values)

    def url_via_port(self, port: int) -> str:
        """The PostgreSQL URL of this database reached through another port (a proxy)."""
        assert self.pg_name is not None
        return PG_URL.format(port=port, name=self.pg_name)


def _create_pg_database() -> str:
    name = f"cds_audit_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def _drop_pg_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An empty audit database on each backend (parametrised)."""
    data_dir = tmp_path / "data"
    if request.param == "sqlite":
        yield Database("sqlite", f"sqlite:///{tmp_path / 'db' / 'audit.sqlite3'}", data_dir)
        return
    require_postgres()
    name = _create_pg_database()
    try:
        yield Database("postgres", PG_URL.format(port=5432, name=name), data_dir, pg_name=name)
    finally:
        _drop_pg_database(name)


@pytest.fixture
def open_audit(database: Database) -> Iterator[Callable[..., AuditLog]]:
    """Open AuditLog instances on ``database`` (schema created); all closed after the test."""
    opened: list[AuditLog] = []

    def opener(url: str | None = None, **overrides: object) -> AuditLog:
        audit = AuditLog.open(database.settings(url, **overrides), create_schema=True)
        opened.append(audit)
        return audit

    yield opener
    for audit in opened:
        audit.close()


@pytest.fixture
def audit(open_audit: Callable[..., AuditLog]) -> AuditLog:
    """One AuditLog on the parametrised database."""
    return open_audit()
