"""Tamper evidence: `calcinosis-cds audit verify` fails and names the record when rows change out of band."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from cds_service.audit import AuditLog
from cds_service.audit.chain import GENESIS_HASH, link_hash
from cds_service.audit.schema import calls, cards, chain_head
from cds_service.cli import main
from tests.audit.conftest import Database
from tests.audit.factories import engine_for, execute, make_call, make_card, make_feedback


def _verify(database: Database) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["audit", "verify"], env={
        "CDS_DATABASE_URL": database.url, "CDS_DATA_DIR": str(database.data_dir)})
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


def test_intact_chain_verifies(database: Database, populated: list[str]) -> None:
    code, output = _verify(database)
    assert code == 0, output
    assert "10 record(s) verified" in output


def test_changed_row_is_named(database: Database, populated: list[str]) -> None:
    engine = engine_for(database.url)
    with engine.connect() as connection:
        card_id = connection.execute(select(cards.c.id).where(cards.c.card_uuid == populated[3])).scalar_one()
    execute(engine, "UPDATE cards SET indicator = 'info' WHERE id = :id", id=card_id)
    code, output = _verify(database)
    assert code == 1
    assert f"cards id {card_id}: hash mismatch" in output


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
    """An attacker who knows the algorithm but cannot move chain_head is still caught."""
    engine = engine_for(database.url)
    with engine.connect() as connection:
        head = connection.execute(select(chain_head)).one()
        template = dict(connection.execute(select(calls).limit(1)).mappings().one())
    forged = dict(template, id=head.last_seq + 1, record_uuid="forged", hook_instance="forged",
                  received_at=datetime.now(UTC), recorded_at=datetime.now(UTC))
    content = {key: value for key, value in forged.items() if key != "record_hash"}
    forged["record_hash"] = link_hash("calls", content, head.last_hash)
    with engine.begin() as connection:
        connection.execute(calls.insert().values(**forged))
    code, output = _verify(database)
    assert code == 1
    assert "chain_head does not match" in output


def test_empty_database_verifies(database: Database, audit: AuditLog) -> None:
    code, output = _verify(database)
    assert code == 0, output
    assert "0 record(s)" in output
    assert GENESIS_HASH == "0" * 64


def test_verify_explains_an_unmigrated_database(database: Database) -> None:
    code, output = _verify(database)  # no AuditLog opened: no schema
    assert code == 2
    assert "calcinosis-cds db upgrade" in output
