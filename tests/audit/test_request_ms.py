"""``calls.request_ms`` (issue 15 item 7): migration 0004 adds it, the spool keeps it; the calls export pages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alembic import command
from sqlalchemy import inspect

from cds_service.audit import AuditLog
from cds_service.audit.db import alembic_config, create_audit_engine
from cds_service.audit.queries import AuditFilter, iter_calls
from cds_service.audit.records import SpooledCall, call_from_json, call_to_json
from tests.audit.conftest import Database
from tests.audit.factories import make_call


def _call_columns(database: Database, revision: str, *, downgrade: bool = False) -> set[str]:
    engine = create_audit_engine(database.url)
    try:
        with engine.begin() as connection:
            config = alembic_config(connection)
            if downgrade:
                command.downgrade(config, revision)
            else:
                command.upgrade(config, revision)
        return {column["name"] for column in inspect(engine).get_columns("calls")}
    finally:
        engine.dispose()


def test_migration_0004_adds_and_removes_request_ms(database: Database) -> None:
    assert "request_ms" not in _call_columns(database, "0003")
    assert "request_ms" in _call_columns(database, "0004")
    assert "request_ms" not in _call_columns(database, "0003", downgrade=True)
    assert "request_ms" in _call_columns(database, "0004")


def test_request_ms_survives_the_spool() -> None:
    spooled = SpooledCall("f0e1d2c3-0000-4000-8000-000000000001", make_call(request_ms=12.5, duration_ms=0.3))
    assert call_from_json(call_to_json(spooled)).record.request_ms == 12.5
    older = call_to_json(spooled)
    del older["call"]["request_ms"]  # a file spooled by a version without request_ms
    assert call_from_json(older).record.request_ms is None


def test_calls_export_pages_through_equal_receipt_times(audit: AuditLog) -> None:
    """iter_calls reads in pages (keyset on received_at, id): ties on received_at are neither lost nor repeated."""
    moment = datetime(2025, 6, 1, 8, 0, tzinfo=UTC)
    made = [make_call(f"pat-{i}", [], received_at=moment if i < 5 else moment + timedelta(seconds=i))
            for i in range(8)]
    for record in made:
        audit.record_hook_call(record)
    exported = [row["hook_instance"] for row in iter_calls(audit.engine, AuditFilter(), batch=3)]
    assert exported == [record.hook_instance for record in made]
    assert [row["patient_id"] for row in iter_calls(audit.engine, AuditFilter(patient_id="pat-6"), batch=1)] == [
        "pat-6"]


def test_counted_skipped_resources_survive_the_spool() -> None:
    """A summarised skip entry (issue 16 item 1: a count and the first ids) replays as it was recorded."""
    skipped = [{"resource_type": "Condition", "id": "", "reason": "code is not a CodeableConcept", "count": 10_000,
                "first_ids": ["bad-0", "bad-1"]},
               {"resource_type": "Observation", "id": "o1", "reason": "dated in the future"}]
    spooled = SpooledCall("f0e1d2c3-0000-4000-8000-000000000002", make_call(skipped_resources=skipped))
    assert call_from_json(call_to_json(spooled)).record.skipped_resources == skipped
