"""Schema migrations: shipped in the package, run programmatically; a shared database must be upgraded first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner

from cds_service.audit import AuditLog, AuditSchemaError
from cds_service.audit.db import create_audit_engine, head_revision
from cds_service.audit.schema import metadata
from cds_service.cli import main
from tests.audit.conftest import Database

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_open_without_create_schema_explains_how_to_upgrade(database: Database) -> None:
    with pytest.raises(AuditSchemaError, match="calcinosis-cds db upgrade"):
        AuditLog.open(database.settings(), create_schema=False)


def test_db_upgrade_then_open_checks_only(database: Database) -> None:
    env = {"CDS_DATABASE_URL": database.url, "CDS_DATA_DIR": str(database.data_dir)}
    result = CliRunner().invoke(main, ["db", "upgrade"], env=env)
    assert result.exit_code == 0, result.output
    assert f"revision {head_revision()}" in result.output
    again = CliRunner().invoke(main, ["db", "upgrade"], env=env)  # idempotent
    assert again.exit_code == 0, again.output
    audit = AuditLog.open(database.settings(), create_schema=False)
    try:
        assert audit.ping()
    finally:
        audit.close()


def test_migrations_match_the_table_definitions(database: Database) -> None:
    engine = create_audit_engine(database.url)
    try:
        AuditLog.open(database.settings(), create_schema=True).close()
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), metadata)
        assert differences == []
    finally:
        engine.dispose()


def test_concurrent_upgrades_do_not_race(database: Database) -> None:
    """Several replicas/workers starting at once: the migration lock lets exactly one create the schema."""
    script = ("from cds_service.audit.db import create_audit_engine, upgrade_schema; import sys; "
              "upgrade_schema(create_audit_engine(sys.argv[1]))")
    processes = [subprocess.Popen([sys.executable, "-c", script, database.url], cwd=REPO_ROOT,
                                  stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for process in processes:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
    audit = AuditLog.open(database.settings(), create_schema=False)
    audit.close()


def test_unsupported_database_url_is_a_clear_error(database: Database) -> None:
    with pytest.raises(ValueError, match="unsupported audit database"):
        create_audit_engine("mysql://localhost/x")
