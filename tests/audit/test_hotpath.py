"""The hot path (prepared SQL on the DB-API connection, issue #7) stores exactly what SQLAlchemy Core would.

Rows written by ``AuditLog.record_hook_call`` (through the chain's one writer, issue 15 item 6) are compared
byte for byte with the same values inserted through SQLAlchemy Core into a second database, and read back
through the Core tables. Also: stale pooled PostgreSQL
connections after a restart are retried instead of spooled (there is no ``pool_pre_ping`` any more), and
SQLite writers queue on the kernel lock beside the database.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, select, text

from cds_service.audit import AuditLog, store
from cds_service.audit.chain import canonical_json, json_safe
from cds_service.audit.db import is_postgres
from cds_service.audit.integrity import verify_chain
from cds_service.audit.legacy_chain import legacy_link_hash
from cds_service.audit.records import HookCallRecord, SpooledCall
from cds_service.audit.schema import calls, cards
from tests.audit.conftest import PG_URL, TEST_KEYRING, Database, _create_pg_database, _drop_pg_database
from tests.audit.factories import TENANT, capture_driver_statements, make_call, make_card, make_feedback
from tests.audit.pgproxy import TcpProxy


def _tricky_call() -> HookCallRecord:
    """A record with every kind of value the conversions must get right."""
    odd_evidence: list[dict[str, Any]] = [
        {"name": "calcium", "value": 10.25, "unit": "mg/dL", "resource_id": "Observation/a", "time": None},
        {"name": "ca_x_p", "value": 1e16, "small": 1e-7, "nan": float("nan"), "inf": float("-inf"),
         "big": 2**70, "flag": True, "when": datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
         "day": date(2025, 1, 2), "dose": Decimal("1.50"), "tuple": (1, "x"), 7: "int key",
         "text": "Ca × P – ≥ 70 mg²/dL² \"quoted\" \\ back\nline\ttab \x01 \u2028 😀"},
    ]
    first = replace(make_card("caxp-high", order_key="MedicationRequest/draft-1"), evidence=odd_evidence,
                    summary="Ca x P 63.4 mg²/dL² – above target 😀")
    second = replace(make_card("pth-high", disposition="silent"), repeat_of=first.card_uuid, suggestion_uuids=[])
    return make_call(
        "pat-ü", [first, second],
        received_at=datetime(2025, 6, 15, 17, 45, 1, 123456, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        duration_ms=12.345678901234567,
        data_sources={"patient": "prefetch", "observations": "fetched", "ünïcode": "partial"},
        skipped_resources=[{"resource_type": "Observation", "id": "bad-1", "reason": "no value"}],
        rules_evaluated=[("caxp-high", "0.1.0"), ("pth-high", "0.1.0")],
        client_tenant=None,
        error="partial-data",
    )


def _store_via_core(engine: Engine, record: HookCallRecord, stored: dict[str, list[dict[str, Any]]]) -> None:
    """The values the service builds for ``record`` (store._call_rows), inserted through SQLAlchemy Core, with
    the chain columns the writer gave them (``stored``: the rows read back from the hot path's database)."""
    call_row = stored["calls"][0]
    rows = store._call_rows(SpooledCall(record_uuid=call_row["record_uuid"], record=record))
    chain_columns = ("id", "recorded_at", "key_id", "record_hash")
    with engine.begin() as connection:
        connection.execute(calls.insert().values(**rows.call, **{name: call_row[name] for name in chain_columns}))
        for values, card_row in zip(rows.cards, stored["cards"], strict=True):
            connection.execute(cards.insert().values(**values, call_id=call_row["id"],
                                                     **{name: card_row[name] for name in chain_columns}))
        last = stored["cards"][-1] if stored["cards"] else call_row
        connection.execute(text("UPDATE chain_head SET last_seq = :seq, last_hash = :hash WHERE id = 1"),
                           {"seq": last["id"], "hash": last["record_hash"]})


def _raw_rows(engine: Engine, table: str) -> list[Any]:
    """The rows as the database stores them: SQLite's own values, PostgreSQL's text form of each row."""
    if is_postgres(engine):
        with engine.connect() as connection:
            rows = connection.exec_driver_sql(f"SELECT {table}::text FROM {table} ORDER BY id")  # noqa: S608
            return [row[0] for row in rows]
    path = engine.url.database
    assert path is not None
    with sqlite3.connect(path) as connection:  # no type conversion at all
        return connection.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()  # noqa: S608


@pytest.fixture
def second_database(database: Database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """Another empty database on the same backend (for the Core path's copy of the same record)."""
    other = tmp_path_factory.mktemp("second")
    if database.backend == "sqlite":
        yield Database("sqlite", f"sqlite:///{other / 'db' / 'audit.sqlite3'}", other / "data")
        return
    name = _create_pg_database()
    try:
        yield Database("postgres", PG_URL.format(port=5432, name=name), other / "data", pg_name=name)
    finally:
        _drop_pg_database(name)


def test_hot_path_rows_are_byte_identical_to_the_core_path(
        open_audit: Callable[..., AuditLog], second_database: Database) -> None:
    record = _tricky_call()
    hot = open_audit()
    hot.record_hook_call(record)
    with hot.engine.connect() as connection:
        call_row = connection.execute(select(calls)).mappings().one()
        card_rows = connection.execute(select(cards).order_by(cards.c.id)).mappings().all()

    # Read back through the Core tables: the values the Core path would have returned.
    assert call_row["received_at"] == record.received_at
    assert call_row["received_at"].tzinfo is not None
    assert call_row["duration_ms"] == record.duration_ms
    assert call_row["data_sources"] == record.data_sources
    assert call_row["rules_evaluated"] == [["caxp-high", "0.1.0"], ["pth-high", "0.1.0"]]
    assert [row["card_uuid"] for row in card_rows] == [card.card_uuid for card in record.cards]
    assert all(row["call_id"] == call_row["id"] for row in card_rows)
    assert card_rows[0]["evidence"] == json_safe(record.cards[0].evidence)
    assert card_rows[0]["evidence"][1]["nan"] == "nan"
    assert card_rows[0]["evidence"][1]["big"] == 2**70
    assert card_rows[0]["summary"] == record.cards[0].summary
    assert card_rows[1]["repeat_of"] == record.cards[0].card_uuid
    assert card_rows[1]["suggestion_uuids"] == []

    assert call_row["key_id"] == TEST_KEYRING.current.key_id
    assert all(row["key_id"] == TEST_KEYRING.current.key_id for row in card_rows)

    # The same values through SQLAlchemy Core, in an empty database of its own: stored byte for byte alike.
    core = open_audit(second_database.url, data_dir=str(second_database.data_dir))
    _store_via_core(core.engine, record, {"calls": [dict(call_row)], "cards": [dict(row) for row in card_rows]})
    for table in ("calls", "cards", "chain_head"):
        assert _raw_rows(hot.engine, table) == _raw_rows(core.engine, table), table
    for audit in (hot, core):
        result = verify_chain(audit.engine, TEST_KEYRING)
        assert result.ok, result.message
        assert result.records_checked == 3


def test_tampering_with_a_hot_path_row_is_still_detected(audit: AuditLog) -> None:
    record = _tricky_call()
    audit.record_hook_call(record)
    assert verify_chain(audit.engine, TEST_KEYRING).ok
    with audit.engine.begin() as connection:
        connection.execute(cards.update().where(cards.c.card_uuid == record.cards[0].card_uuid)
                           .values(summary="changed"))
    result = verify_chain(audit.engine, TEST_KEYRING)
    assert not result.ok
    assert result.table == "cards"
    assert "hash mismatch" in result.message


@pytest.mark.parametrize("value", [
    {"a": 1, "b": [1, 2.5, None, True, "x"], "c": {"z": "ü", "y": "😀\n\"\\"}},
    {"f": 1e16, "g": 1e-7, "h": -0.0, "i": 2**70, "j": 0.1 + 0.2},
    {"nested": [{"when": datetime(2025, 1, 1, tzinfo=UTC)}, (1, 2)], 5: float("nan"), "d": Decimal("2.50")},
    [],
])
def test_legacy_rows_hashed_with_the_old_normalising_walk_still_verify(value: Any) -> None:
    """Rows written before the chain was keyed were hashed as SHA-256 of ``canonical_json`` (a recursive
    normalising walk) over the columns of revision 0002; verification rebuilds the same bytes without the walk
    for ``json_safe`` content, and ignores columns added later (NULL in those rows)."""
    row = {
        "id": 7, "call_id": 6, "card_uuid": "c-1", "rule_id": "caxp-high", "rule_version": "0.1.0",
        "indicator": "warning", "summary": "Ca × P 😀", "evidence": json_safe(value),
        "suggestion_uuids": [], "disposition": "shown", "order_key": None, "repeat_of": None,
        "recorded_at": datetime(2025, 6, 15, 17, 45, 1, 123456, tzinfo=timezone(timedelta(hours=2))),
    }
    previous = "ab" * 32
    old_hash = hashlib.sha256(canonical_json({"table": "cards", "row": row, "prev": previous})
                              .encode("utf-8")).hexdigest()
    read_back = dict(row, recorded_at=row["recorded_at"].astimezone(UTC), evidence_fingerprint=None,
                     override_codes=None, key_id=None, record_hash=old_hash)
    assert legacy_link_hash("cards", read_back, previous) == old_hash
    assert legacy_link_hash("cards", dict(read_back, indicator="info"), previous) != old_hash
    assert "NaN" not in canonical_json(row)  # json_safe turned the NaN into text


def test_policy_reads_are_at_most_two_selects_on_the_driver(audit: AuditLog, database: Database,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Counted at the DB-API level (the hot path bypasses SQLAlchemy's events)."""
    now = datetime.now(UTC)
    audit.record_hook_call(make_call("pat-9", [make_card("rule-a", order_key="MedicationRequest/d1")],
                                     hook="order-select"))
    statements = capture_driver_statements(audit, database.backend, monkeypatch)
    history = audit.alert_history(TENANT.key, "pat-9", ["rule-a", "rule-b", "rule-c"], now - timedelta(hours=24),
                                  [("rule-a", "MedicationRequest/d1"), ("rule-b", "MedicationRequest/d1")],
                                  now - timedelta(minutes=30))
    assert set(history.first_alerts) == {("rule-a", "MedicationRequest/d1")}
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 2, statements
    assert not [s for s in statements if s.lstrip().upper().startswith(("BEGIN", "ROLLBACK", "COMMIT"))]


def test_one_write_transaction_per_hook_call(audit: AuditLog, database: Database,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    audit.record_hook_call(make_call())  # the schema exists
    statements = capture_driver_statements(audit, database.backend, monkeypatch)
    audit.record_hook_call(make_call("pat-3", [make_card(), make_card(), make_card()]))
    if database.backend == "sqlite":  # SQLite traces each row of the executemany
        assert len([s for s in statements if s.startswith("INSERT INTO calls")]) == 1, statements
        assert len([s for s in statements if s.startswith("INSERT INTO cards")]) == 3, statements
        assert [s for s in statements if s.startswith(("BEGIN", "COMMIT"))] == ["BEGIN IMMEDIATE", "COMMIT"]
    else:  # one statement for the call, its cards and the chain head (data-modifying CTEs)
        combined = [s for s in statements if "INSERT INTO calls" in s and "INSERT INTO cards" in s]
        assert len(combined) == 1, statements
        assert "UPDATE chain_head" in combined[0]
    assert verify_chain(audit.engine, TEST_KEYRING).ok


def test_a_call_with_very_many_cards_is_stored_too(audit: AuditLog) -> None:
    """Beyond the single-statement limit on PostgreSQL the cards go in an executemany of their own."""
    for count in (0, 1, 150):
        audit.record_hook_call(make_call(f"pat-{count}", [make_card() for _ in range(count)]))
    assert audit.spool_depth() == 0
    result = verify_chain(audit.engine, TEST_KEYRING)
    assert result.ok, result.message
    assert result.records_checked == 3 + 0 + 1 + 150


# A restart of the database server; the SQLite file case is the checkout identity check.
@pytest.mark.parametrize("database", ["postgres"], indirect=True)
def test_after_a_postgres_restart_stale_connections_are_replaced_not_spooled(
        database: Database, open_audit: Callable[..., AuditLog]) -> None:
    proxy = TcpProxy(("127.0.0.1", 5432))
    proxy.start()
    try:
        audit = open_audit(database.url_via_port(proxy.port))
        first = make_call("pat-r")
        audit.record_hook_call(first)
        # Several pooled connections, all about to go stale.
        held = [audit.engine.raw_connection() for _ in range(3)]
        for connection in held:
            connection.close()
        proxy.stop()  # every open connection is cut, as when PostgreSQL restarts
        proxy.start()
        audit.record_feedback([make_feedback(first.cards[0].card_uuid, outcome="accepted")])  # Core path first
        for connection in [audit.engine.raw_connection() for _ in range(3)]:
            connection.close()
        proxy.stop()
        proxy.start()

        second = make_call("pat-r")
        audit.record_hook_call(second)  # a stale connection fails, a fresh one stores it
        assert audit.spool_depth() == 0
        now = datetime.now(UTC)
        assert audit.alert_history(TENANT.key, "pat-r", ["calcinosis.phosphate.high"], now - timedelta(hours=1),
                                   [], None).overridden == frozenset()
        audit.record_feedback([make_feedback(first.cards[0].card_uuid)])  # Core path: one retry too
        assert audit.ping()
        assert audit.alert_history(TENANT.key, "pat-r", ["calcinosis.phosphate.high"], now - timedelta(hours=1),
                                   [], None).overridden == {"calcinosis.phosphate.high"}
        with audit.engine.connect() as connection:
            stored = set(connection.execute(select(calls.c.hook_instance)).scalars())
        assert stored == {first.hook_instance, second.hook_instance}
        assert verify_chain(audit.engine, TEST_KEYRING).ok
    finally:
        proxy.stop()


@pytest.mark.parametrize("database", ["postgres"], indirect=True)
def test_a_database_that_stays_down_still_spools(database: Database, open_audit: Callable[..., AuditLog],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The one retry is for stale connections only: a real outage is not retried again and again."""
    monkeypatch.setattr(store, "RETRY_AFTER_S", 0.05)
    proxy = TcpProxy(("127.0.0.1", 5432))
    proxy.start()
    try:
        audit = open_audit(database.url_via_port(proxy.port))
        audit.record_hook_call(make_call())
        proxy.stop()
        started = time.monotonic()
        audit.record_hook_call(make_call())
        assert audit.spool_depth() == 1
        assert time.monotonic() - started < 5
        proxy.start()
        time.sleep(0.1)
        audit.replay_spool()
        assert audit.spool_depth() == 0
        assert verify_chain(audit.engine, TEST_KEYRING).records_checked == 4
    finally:
        proxy.stop()


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_sqlite_writers_wait_on_the_kernel_lock_beside_the_database(database: Database,
                                                                    audit: AuditLog) -> None:
    audit.record_hook_call(make_call())  # schema and lock file exist
    lock_path = f"{database.url.removeprefix('sqlite:///')}.writer-lock"
    assert os.path.exists(lock_path)
    fd = os.open(lock_path, os.O_RDWR)
    done = threading.Event()
    record = make_call("pat-lock")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another process's writer holds it
        writer = threading.Thread(target=lambda: (audit.record_hook_call(record), done.set()))
        writer.start()
        assert not done.wait(0.3), "the write did not wait for the writer lock"
        feedback_done = threading.Event()
        feedback_writer = threading.Thread(target=lambda: (
            audit.record_feedback([make_feedback(record.cards[0].card_uuid)]), feedback_done.set()))
        feedback_writer.start()
        assert not feedback_done.wait(0.2), "the Core write path did not wait for the writer lock"
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    assert done.wait(5)
    assert feedback_done.wait(5)
    writer.join()
    feedback_writer.join()
    with audit.engine.connect() as connection:
        assert record.hook_instance in set(connection.execute(select(calls.c.hook_instance)).scalars())
    assert audit.spool_depth() == 0
    assert verify_chain(audit.engine, TEST_KEYRING).ok
