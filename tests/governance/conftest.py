"""The audit tests' database fixtures (SQLite and real PostgreSQL) for the governance tests."""

from tests.audit.conftest import audit, database, open_audit

__all__ = ["audit", "database", "open_audit"]
