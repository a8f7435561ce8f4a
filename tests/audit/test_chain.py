"""Tamper evidence: `calcinosis-cds audit verify` fails and names the record when rows change out of band.

The chain is keyed (issue 15 item 6): it verifies with its key and fails with another; recomputing the hashes
with the old unkeyed algorithm after changing a value is caught at the changed record; `audit checkpoint`
prints the head for anchoring outside the database and `verify --checkpoint` holds the chain to it.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, select, update

from cds_service.audit import AuditLog
from cds_service.audit.chain import GENESIS_HASH, canonical_json, keyed_content, link_hash
from cds_service.audit.integrity import verify_chain
from cds_service.audit.keys import Keyring, parse_key
from cds_service.audit.legacy_chain import LEGACY_COLUMNS
from cds_service.audit.schema import CHAINED_TABLES, calls, cards, chain_head
from cds_service.cli import main
from tests.audit.conftest import CHAIN_KEY_ENV, TEST_CHAIN_KEY, TEST_KEYRING, Database
from tests.audit.factories import engine_for, execute, make_call, make_card, make_feedback

OTHER_KEY = "another-audit-chain-key-fedcba9876543210"


def _verify(database: Database, *args: str, key: str = TEST_CHAIN_KEY, **env: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["audit", "verify", *args], env={
        "CDS_AUDIT_CHAIN_KEY": key, "CDS_DATABASE_URL": database.url, "CDS_DATA_DIR": str(database.data_dir),
        **env})
    return result.exit_code, result.output


@pytest.fixture
def populated(audit: AuditLog) -> list[str]:
    """Three calls (two cards each) and one feedback item; returns the card uuids."""
    uuids: list[str] = []
    for patient in ("pat-a", "pat-b", "pat-c"):
        record = make_call(patient, [make_card(), make_card("calcinosis.ckd.product")])
        audit.record_hook_call(record)
        uuids.extend(card.card_uuid for card in record.cards)
    audit.record_feedback([make_feedback(uuids[0])])
    return uuids


def _all_records(engine: Engine) -> list[tuple[str, dict[str, Any]]]:
    """Every chained row in sequence order, as (table, row)."""
    rows: list[tuple[str, dict[str, Any]]] = []
    with engine.connect() as connection:
        for name, table in CHAINED_TABLES.items():
            rows.extend((name, dict(row)) for row in connection.execute(select(table)).mappings())
    return sorted(rows, key=lambda item: int(item[1]["id"]))


def _old_unkeyed_hash(table_name: str, row: dict[str, Any], previous: str, *, legacy_columns: bool) -> str:
    """The algorithm before issue 15: SHA-256 of the canonical JSON of every column but record_hash
    (``legacy_columns``: only those the tables had then, the exact form of a record written before 0005)."""
    names = LEGACY_COLUMNS[table_name] if legacy_columns else [key for key in row if key != "record_hash"]
    content = {key: row.get(key) for key in names}
    payload = {"table": table_name, "row": content, "prev": previous}
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


def _rewrite_from(engine: Engine, first_id: int, *, drop_key_id: bool) -> None:
    """What someone with write access but without the key does after changing a value: recompute the hash of
    every record from ``first_id`` on with the old unkeyed algorithm, and move chain_head to match.

    ``drop_key_id``: also pass the records off as written before the chain was keyed (key_id NULL, hashed
    exactly as such records were)."""
    _drop_keyed_constraints(engine)
    previous = GENESIS_HASH
    with engine.begin() as connection:
        for table_name, row in _all_records(engine):
            if row["id"] >= first_id:
                if drop_key_id:
                    row["key_id"] = None
                row["record_hash"] = _old_unkeyed_hash(table_name, row, previous, legacy_columns=drop_key_id)
                table = CHAINED_TABLES[table_name]
                connection.execute(update(table).where(table.c.id == row["id"])
                                   .values(record_hash=row["record_hash"], key_id=row["key_id"]))
            previous = row["record_hash"]
        connection.execute(update(chain_head).values(last_hash=previous))


def _drop_keyed_constraints(engine: Engine) -> None:
    """On PostgreSQL the database refuses unkeyed rows after the anchor (migration 0005); someone with write
    access can drop that guard, and verification must not depend on it."""
    if engine.dialect.name == "postgresql":
        for name in ("calls", "cards", "feedback", "checkpoints"):
            execute(engine, f"ALTER TABLE {name} DROP CONSTRAINT ck_{name}_keyed")  # fixed names


def test_intact_chain_verifies(database: Database, populated: list[str]) -> None:
    code, output = _verify(database)
    assert code == 0, output
    assert "10 record(s) verified" in output


def test_every_record_is_keyed_with_the_configured_key(database: Database, populated: list[str]) -> None:
    records = _all_records(engine_for(database.url))
    assert len(records) == 10
    assert {row["key_id"] for _table, row in records} == {TEST_KEYRING.current.key_id}
    assert TEST_CHAIN_KEY not in json.dumps([row for _table, row in records], default=str)


def test_another_key_fails_at_the_first_record(database: Database, populated: list[str]) -> None:
    code, output = _verify(database, key=OTHER_KEY)
    assert code == 1
    assert "calls id 1: signed with chain key id" in output
    assert TEST_KEYRING.current.key_id in output
    assert TEST_CHAIN_KEY not in output
    # The same key id with another secret (a forged keyring entry) does not verify either.
    forged = Keyring(current=parse_key(OTHER_KEY, "test"), retired={})
    forged.current.key_id = TEST_KEYRING.current.key_id
    result = verify_chain(engine_for(database.url), forged)
    assert not result.ok
    assert (result.table, result.record_id) == ("calls", 1)
    assert "hash mismatch" in result.message


@pytest.mark.parametrize("drop_key_id", [False, True], ids=["key-id-kept", "posing-as-legacy"])
def test_rewrite_with_the_old_unkeyed_algorithm_is_named(database: Database, populated: list[str],
                                                         drop_key_id: bool) -> None:
    """Change a value, then recompute every later hash without the key: the changed record is named."""
    engine = engine_for(database.url)
    with engine.connect() as connection:
        card_id = connection.execute(select(cards.c.id).where(cards.c.card_uuid == populated[3])).scalar_one()
    execute(engine, "UPDATE cards SET indicator = 'info' WHERE id = :id", id=card_id)
    _rewrite_from(engine, card_id, drop_key_id=drop_key_id)
    code, output = _verify(database)
    assert code == 1
    assert f"cards id {card_id}:" in output
    expected = "unkeyed record after keyed ones" if drop_key_id else "hash mismatch"
    assert expected in output


def test_whole_chain_rewritten_as_unkeyed_is_caught(database: Database, populated: list[str]) -> None:
    """Every record rehashed without the key and passed off as written before the chain was keyed."""
    engine = engine_for(database.url)
    execute(engine, "UPDATE calls SET patient_id = 'someone-else' WHERE id = 1")
    _rewrite_from(engine, 1, drop_key_id=True)
    code, output = _verify(database)
    assert code == 1
    assert "calls id 1: unkeyed record(s) from here on are not vouched for by a keyed anchor" in output


def test_changed_row_is_named(database: Database, populated: list[str]) -> None:
    engine = engine_for(database.url)
    with engine.connect() as connection:
        card_id = connection.execute(select(cards.c.id).where(cards.c.card_uuid == populated[3])).scalar_one()
    execute(engine, "UPDATE cards SET indicator = 'info' WHERE id = :id", id=card_id)
    code, output = _verify(database)
    assert code == 1
    assert f"cards id {card_id}: hash mismatch" in output


def test_changed_key_id_is_named(database: Database, populated: list[str]) -> None:
    engine = engine_for(database.url)
    _drop_keyed_constraints(engine)
    execute(engine, "UPDATE calls SET key_id = NULL WHERE id = 1")
    code, output = _verify(database)
    assert code == 1
    assert "calls id 1:" in output


def test_changed_json_evidence_is_named(database: Database, populated: list[str]) -> None:
    engine = engine_for(database.url)
    with engine.connect() as connection:
        row = connection.execute(select(cards.c.id, cards.c.evidence).where(
            cards.c.card_uuid == populated[0])).one()
    tampered = [dict(row.evidence[0], value=1.0)]
    with engine.begin() as connection:
        connection.execute(cards.update().where(cards.c.id == row.id).values(evidence=tampered))
    code, output = _verify(database)
    assert code == 1
    assert f"cards id {row.id}: hash mismatch" in output


def test_deleted_row_is_named(database: Database, populated: list[str]) -> None:
    engine = engine_for(database.url)
    with engine.connect() as connection:
        card_id = connection.execute(select(cards.c.id).where(cards.c.card_uuid == populated[2])).scalar_one()
    execute(engine, "DELETE FROM cards WHERE id = :id", id=card_id)
    code, output = _verify(database)
    assert code == 1
    assert f"(sequence {card_id}) were deleted" in output
    assert f"id {card_id + 1}:" in output  # the record after the gap is named


def test_deleting_the_newest_records_is_detected(database: Database, populated: list[str]) -> None:
    engine = engine_for(database.url)
    execute(engine, "DELETE FROM feedback")
    code, output = _verify(database)
    assert code == 1
    assert "newest record(s) (sequence 10..10) were deleted" in output


def test_row_inserted_out_of_band_is_named(database: Database, populated: list[str]) -> None:
    engine = engine_for(database.url)
    with engine.connect() as connection:
        head = connection.execute(select(chain_head)).one()
        template = dict(connection.execute(select(calls).limit(1)).mappings().one())
    forged = dict(template, id=head.last_seq + 1, record_uuid="forged", hook_instance="forged",
                  record_hash="f" * 64)
    with engine.begin() as connection:
        connection.execute(calls.insert().values(**forged))
    code, output = _verify(database)
    assert code == 1
    assert f"calls id {head.last_seq + 1}" in output


def test_out_of_band_insert_with_correct_hash_but_stale_head_is_detected(
        database: Database, populated: list[str]) -> None:
    """Even someone holding the key is caught when they cannot move chain_head."""
    engine = engine_for(database.url)
    with engine.connect() as connection:
        head = connection.execute(select(chain_head)).one()
        template = dict(connection.execute(select(calls).limit(1)).mappings().one())
    forged = dict(template, id=head.last_seq + 1, record_uuid="forged", hook_instance="forged",
                  received_at=datetime.now(UTC), recorded_at=datetime.now(UTC))
    columns = [column.name for column in calls.columns if column.name != "record_hash"]
    forged["record_hash"] = link_hash(TEST_KEYRING.current, "calls", keyed_content(columns, forged), head.last_hash)
    with engine.begin() as connection:
        connection.execute(calls.insert().values(**forged))
    code, output = _verify(database)
    assert code == 1
    assert "chain_head does not match" in output


def test_checkpoint_prints_the_head_and_verify_holds_the_chain_to_it(
        database: Database, audit: AuditLog, populated: list[str]) -> None:
    env = {**CHAIN_KEY_ENV, "CDS_DATABASE_URL": database.url, "CDS_DATA_DIR": str(database.data_dir)}
    result = CliRunner().invoke(main, ["audit", "checkpoint", "--json"], env=env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    engine = engine_for(database.url)
    with engine.connect() as connection:
        head = connection.execute(select(chain_head)).one()
    assert (report["head_seq"], report["head_hash"], report["records"]) == (head.last_seq, head.last_hash, 10)
    assert report["key_id"] == TEST_KEYRING.current.key_id
    assert datetime.fromisoformat(report["time"]) <= datetime.now(UTC)
    text = CliRunner().invoke(main, ["audit", "checkpoint"], env=env)
    assert f"head {head.last_seq}:{head.last_hash}" in text.output
    anchor = f"{report['head_seq']}:{report['head_hash']}"

    audit.record_hook_call(make_call("pat-d", [make_card()]))  # the chain grows past the checkpoint
    code, output = _verify(database, "--checkpoint", anchor)
    assert code == 0, output

    # Truncating to before the checkpoint (the third call on) and moving chain_head to match passes a plain
    # verify...
    for table in ("feedback", "cards", "calls"):
        execute(engine, f"DELETE FROM {table} WHERE id >= 7")  # noqa: S608 - fixed table names
    with engine.connect() as connection:
        last_hash = connection.execute(select(cards.c.record_hash).where(cards.c.id == 6)).scalar_one()
    execute(engine, "UPDATE chain_head SET last_seq = 6, last_hash = :hash", hash=last_hash)
    code, output = _verify(database)
    assert code == 0, output
    assert "6 record(s) verified" in output
    # ...but not against the checkpoint kept outside the database.
    code, output = _verify(database, "--checkpoint", anchor)
    assert code == 1
    assert f"before the checkpoint kept outside the database (sequence {report['head_seq']})" in output


def test_checkpoint_refuses_a_broken_chain(database: Database, populated: list[str]) -> None:
    execute(engine_for(database.url), "UPDATE calls SET hook = 'order-select' WHERE id = 1")
    result = CliRunner().invoke(main, ["audit", "checkpoint"], env={
        **CHAIN_KEY_ENV, "CDS_DATABASE_URL": database.url, "CDS_DATA_DIR": str(database.data_dir)})
    assert result.exit_code == 1
    assert "calls id 1: hash mismatch" in result.output


def test_empty_database_verifies(database: Database, audit: AuditLog) -> None:
    code, output = _verify(database)
    assert code == 0, output
    assert "0 record(s)" in output
    assert GENESIS_HASH == "0" * 64


def test_verify_explains_an_unmigrated_database(database: Database) -> None:
    code, output = _verify(database)  # no AuditLog opened: no schema
    assert code == 2
    assert "calcinosis-cds db upgrade" in output


def test_verify_without_a_key_says_how_to_configure_one(database: Database, populated: list[str]) -> None:
    code, output = _verify(database, key="")
    assert code == 2
    assert "CDS_AUDIT_CHAIN_KEY is required" in output
