"""Upgrading a database written before the chain was keyed (revision 0002) to head (issue 15 item 6).

The legacy rows are written here the way the service wrote them then (SHA-256 of the canonical JSON over the
columns of revision 0002), independently of the code under test. After ``db upgrade`` they verify with the
legacy form, a keyed anchor vouches for them, new records are keyed, and anything unkeyed after the anchor, or
a keyless rewrite of the legacy part, fails verification.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from click.testing import CliRunner
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import IntegrityError

from cds_service.audit import AuditLog
from cds_service.audit.chain import GENESIS_HASH, canonical_json
from cds_service.audit.db import alembic_config, create_audit_engine, current_revision, head_revision
from cds_service.audit.integrity import verify_chain
from cds_service.audit.schema import CHAINED_TABLES, anchors, calls, cards, chain_head, feedback
from cds_service.cli import main
from tests.audit.conftest import CHAIN_KEY_ENV, TEST_KEYRING, Database
from tests.audit.factories import make_call, make_card, make_feedback

T0 = datetime(2026, 1, 5, 9, 30, 15, 123456, tzinfo=UTC)


def _old_hash(table_name: str, row: dict[str, Any], previous: str) -> str:
    payload = {"table": table_name, "row": row, "prev": previous}
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


def _legacy_rows() -> list[tuple[str, dict[str, Any]]]:
    """Two hook calls with a card each and an override, every column of revision 0002 (record_hash aside)."""
    rows: list[tuple[str, dict[str, Any]]] = []
    for index in (1, 2):
        call_id = len(rows) + 1
        rows.append(("calls", {
            "id": call_id, "record_uuid": str(uuid.uuid4()), "hook_instance": str(uuid.uuid4()),
            "service_id": "calcinosis-patient-view", "hook": "patient-view", "patient_id": f"pat-{index}",
            "user_id": "Practitioner/doc-1", "encounter_id": None, "client_iss": "https://ehr.example.org",
            "client_tenant": None, "client_jti": str(uuid.uuid4()), "received_at": T0 + timedelta(minutes=index),
            "duration_ms": 12.345678901234567, "http_status": 200,
            "data_sources": {"patient": "prefetch", "labs": "fetched"},
            "skipped_resources": [{"resource_type": "Observation", "id": "bad-1", "reason": "no value"}],
            "rules_evaluated": [["caxp-high", "0.1.0"]], "error": None, "recorded_at": T0 + timedelta(minutes=index),
        }))
        rows.append(("cards", {
            "id": call_id + 1, "call_id": call_id, "card_uuid": str(uuid.uuid4()), "rule_id": "caxp-high",
            "rule_version": "0.1.0", "indicator": "warning", "summary": "Ca × P 63.4 mg²/dL²",
            "evidence": [{"name": "ca_x_p", "value": 63.4, "unit": "mg2/dL2", "time": "2026-01-04T08:00:00Z"}],
            "suggestion_uuids": [str(uuid.uuid4())], "disposition": "shown", "order_key": None, "repeat_of": None,
            "recorded_at": T0 + timedelta(minutes=index),
        }))
    rows.append(("feedback", {
        "id": 5, "item_key": "a" * 64, "service_id": "calcinosis-patient-view", "card_uuid": rows[1][1]["card_uuid"],
        "card_known": True, "outcome": "overridden", "accepted_suggestions": [], "override_code": "not-relevant",
        "override_system": "https://example.org/override-reasons", "override_display": "Not relevant",
        "override_comment": None, "outcome_timestamp": T0 + timedelta(minutes=3),
        "recorded_at": T0 + timedelta(minutes=3),
    }))
    return rows


@pytest.fixture
def legacy(database: Database) -> Iterator[Engine]:
    """A database at revision 0002 holding five records hashed the way they were then."""
    engine = create_audit_engine(database.url)
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0002")
    previous = GENESIS_HASH
    tables = {"calls": calls, "cards": cards, "feedback": feedback}
    with engine.begin() as connection:
        for table_name, row in _legacy_rows():
            previous = _old_hash(table_name, row, previous)
            connection.execute(tables[table_name].insert().values(**row, record_hash=previous))
        connection.execute(chain_head.update().values(last_seq=5, last_hash=previous))
    yield engine
    engine.dispose()


def _db_upgrade(database: Database, **env: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["db", "upgrade"], env={
        "CDS_DATABASE_URL": database.url, "CDS_DATA_DIR": str(database.data_dir), **env})
    return result.exit_code, result.output


def test_upgrade_anchors_the_legacy_chain_and_keys_what_follows(database: Database, legacy: Engine) -> None:
    code, output = _db_upgrade(database, **CHAIN_KEY_ENV)
    assert code == 0, output
    with legacy.connect() as connection:
        anchor = connection.execute(select(anchors)).mappings().one()
        head = connection.execute(select(chain_head)).one()
        legacy_key_ids = {row.key_id for name in ("calls", "cards", "feedback")
                          for row in connection.execute(select(CHAINED_TABLES[name].c.key_id))}
    assert legacy_key_ids == {None}
    assert (anchor["id"], anchor["kind"], anchor["legacy_through_id"]) == (6, "keyed-chain", 5)
    assert anchor["key_id"] == TEST_KEYRING.current.key_id
    assert (head.last_seq, head.last_hash) == (6, anchor["record_hash"])
    result = verify_chain(legacy, TEST_KEYRING)
    assert result.ok, result.message
    assert result.records_checked == 6

    audit = AuditLog.open(database.settings(), create_schema=False)
    try:
        record = make_call("pat-3", [make_card()])
        audit.record_hook_call(record)
        audit.record_feedback([make_feedback(record.cards[0].card_uuid)])
    finally:
        audit.close()
    with legacy.connect() as connection:
        new_key_ids = [row.key_id for name in ("calls", "cards", "feedback")
                       for row in connection.execute(select(CHAINED_TABLES[name].c.key_id)
                                                     .where(CHAINED_TABLES[name].c.id > 6))]
    assert new_key_ids == [TEST_KEYRING.current.key_id] * 3
    result = verify_chain(legacy, TEST_KEYRING)
    assert result.ok, result.message
    assert result.records_checked == 9

    # A writer without the key (the previous version, or someone with database access) appends in the old form.
    with legacy.connect() as connection:
        template = dict(connection.execute(select(calls).where(calls.c.id == 7)).mappings().one())
    forged = {name: template[name] for name in _legacy_rows()[0][1]}
    forged.update(id=10, record_uuid=str(uuid.uuid4()), hook_instance=str(uuid.uuid4()))
    forged_hash = _old_hash("calls", forged, str(head_hash(legacy)))
    if database.backend == "postgres":
        # A shared PostgreSQL refuses it outright (an instance of the previous version during a rollout).
        with pytest.raises(IntegrityError, match="ck_calls_keyed"), legacy.begin() as connection:
            connection.execute(calls.insert().values(**forged, record_hash=forged_hash))
        with legacy.begin() as connection:  # ...until someone drops the constraint: verification still fails
            connection.execute(text("ALTER TABLE calls DROP CONSTRAINT ck_calls_keyed"))
    with legacy.begin() as connection:
        connection.execute(calls.insert().values(**forged, record_hash=forged_hash))
        connection.execute(chain_head.update().values(last_seq=10, last_hash=forged_hash))
    result = verify_chain(legacy, TEST_KEYRING)
    assert not result.ok
    assert (result.table, result.record_id) == ("calls", 10)
    assert "unkeyed record after keyed ones" in result.message


def head_hash(engine: Engine) -> str:
    """The hash chain_head names."""
    with engine.connect() as connection:
        return str(connection.execute(select(chain_head.c.last_hash)).scalar_one())


def test_a_changed_legacy_record_is_named(database: Database, legacy: Engine) -> None:
    assert _db_upgrade(database, **CHAIN_KEY_ENV)[0] == 0
    with legacy.begin() as connection:
        connection.execute(text("UPDATE cards SET summary = 'Ca x P 40' WHERE id = 2"))
    result = verify_chain(legacy, TEST_KEYRING)
    assert (result.ok, result.table, result.record_id) == (False, "cards", 2)
    assert "hash mismatch" in result.message


def test_a_keyless_rewrite_of_the_legacy_part_is_caught_at_the_anchor(database: Database, legacy: Engine) -> None:
    """Change a legacy value and recompute the legacy hashes after it: the keyed anchor no longer matches."""
    assert _db_upgrade(database, **CHAIN_KEY_ENV)[0] == 0
    columns = {name: list(row) for name, row in _legacy_rows()}  # the columns of revision 0002 per table
    previous = GENESIS_HASH
    with legacy.begin() as connection:
        for row_id, name in enumerate(("calls", "cards", "calls", "cards", "feedback"), start=1):
            table = CHAINED_TABLES[name]
            stored = connection.execute(select(table).where(table.c.id == row_id)).mappings().one()
            row = {column: stored[column] for column in columns[name]}
            if row_id == 2:
                row["summary"] = "Ca x P 40"
                connection.execute(table.update().where(table.c.id == 2).values(summary=row["summary"]))
            previous = _old_hash(name, row, previous)
            connection.execute(table.update().where(table.c.id == row_id).values(record_hash=previous))
    result = verify_chain(legacy, TEST_KEYRING)
    assert (result.ok, result.table, result.record_id) == (False, "anchors", 6)
    assert "the unkeyed records before this keyed anchor (from calls id 1 on) were changed" in result.message


def test_upgrade_without_a_key_stops_with_the_fix_and_changes_nothing(database: Database, legacy: Engine) -> None:
    code, output = _db_upgrade(database)
    assert code == 2
    assert "audit migration 0005 must anchor the existing 5 unkeyed audit record(s)" in output
    assert "CDS_AUDIT_CHAIN_KEY" in output
    with legacy.connect() as connection:
        assert current_revision(connection) == "0002"
    assert _db_upgrade(database, **CHAIN_KEY_ENV)[0] == 0
    with legacy.connect() as connection:
        assert current_revision(connection) == head_revision()


def test_an_empty_database_needs_no_anchor_and_no_key(database: Database) -> None:
    code, output = _db_upgrade(database)
    assert code == 0, output
    engine = create_audit_engine(database.url)
    try:
        with engine.connect() as connection:
            assert connection.execute(select(anchors)).first() is None
    finally:
        engine.dispose()
