"""`audit export` (ndjson, csv, fhir), `audit stats` and `audit purge` on a log the tests produce."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner, Result
from fhir.resources.R4B.bundle import Bundle
from sqlalchemy import func, select

from cds_service.audit import AuditLog
from cds_service.audit.integrity import purge_before, verify_chain
from cds_service.audit.schema import calls, cards, checkpoints, feedback
from cds_service.cli import main
from tests.audit.conftest import CHAIN_KEY_ENV, TEST_KEYRING, Database
from tests.audit.factories import engine_for, execute, make_call, make_card, make_feedback

RULE_A = "calcinosis.phosphate.high"
RULE_B = "calcinosis.ckd.product"
T0 = datetime(2025, 6, 1, 8, 0, tzinfo=UTC)


def _cli(database: Database, *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env={
        **CHAIN_KEY_ENV, "CDS_DATABASE_URL": database.url, "CDS_DATA_DIR": str(database.data_dir)})


@pytest.fixture
def scenario(audit: AuditLog) -> dict[str, str]:
    """A small alert history with a known answer.

    Rule A: pat-1 (overridden twice, two reasons), pat-2 (accepted), pat-3 (no response), an order alert for pat-4
    shown then repeated on the same draft (the repeat overridden), one suppressed card. Rule B: one silent card.
    """
    a1, a2, a3 = make_card(RULE_A), make_card(RULE_A), make_card(RULE_A)
    order = make_card(RULE_A, order_key="MedicationRequest/d1")
    repeat = make_card(RULE_A, order_key="MedicationRequest/d1", repeat_of=order.card_uuid)
    suppressed = make_card(RULE_A, disposition="suppressed")
    silent = make_card(RULE_B, disposition="silent")
    audit.record_hook_call(make_call("pat-1", [a1, silent], received_at=T0))
    audit.record_hook_call(make_call("pat-2", [a2], received_at=T0 + timedelta(hours=1)))
    audit.record_hook_call(make_call("pat-3", [a3], received_at=T0 + timedelta(hours=2)))
    audit.record_hook_call(make_call("pat-4", [order], hook="order-select", received_at=T0 + timedelta(hours=3)))
    audit.record_hook_call(make_call("pat-4", [repeat], hook="order-select",
                                     received_at=T0 + timedelta(hours=3, minutes=2)))
    audit.record_hook_call(make_call("pat-1", [suppressed], received_at=T0 + timedelta(hours=4)))
    audit.record_feedback([
        make_feedback(a1.card_uuid, code="not-relevant", when=T0 + timedelta(minutes=1)),
        make_feedback(a1.card_uuid, code="already-treated", when=T0 + timedelta(minutes=2)),
        make_feedback(a2.card_uuid, outcome="accepted", when=T0 + timedelta(hours=1, minutes=1)),
        make_feedback(repeat.card_uuid, code="not-relevant", when=T0 + timedelta(hours=3, minutes=3)),
    ])
    return {"a1": a1.card_uuid, "a2": a2.card_uuid, "order": order.card_uuid, "repeat": repeat.card_uuid}


def test_export_ndjson(database: Database, scenario: dict[str, str]) -> None:
    result = _cli(database, "audit", "export", "--format", "ndjson")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 7
    required = {"card_uuid", "hook_instance", "service_id", "hook", "rule_id", "indicator", "patient_id",
                "issued_at", "feedback"}
    assert all(required <= row.keys() for row in rows)
    by_uuid = {row["card_uuid"]: row for row in rows}
    assert [item["outcome"] for item in by_uuid[scenario["a1"]]["feedback"]] == ["overridden", "overridden"]
    assert by_uuid[scenario["a1"]]["patient_id"] == "pat-1"
    assert by_uuid[scenario["a1"]]["issued_at"] == "2025-06-01T08:00:00.000000Z"
    assert by_uuid[scenario["repeat"]]["repeat_of"] == scenario["order"]


def test_export_filters(database: Database, scenario: dict[str, str]) -> None:
    by_patient = _cli(database, "audit", "export", "--format", "ndjson", "--patient", "pat-1")
    assert {json.loads(line)["patient_id"] for line in by_patient.stdout.splitlines()} == {"pat-1"}
    assert len(by_patient.stdout.splitlines()) == 3
    by_rule = _cli(database, "audit", "export", "--format", "ndjson", "--rule", RULE_B)
    assert [json.loads(line)["rule_id"] for line in by_rule.stdout.splitlines()] == [RULE_B]
    window = _cli(database, "audit", "export", "--format", "ndjson", "--since", "2025-06-01T09:00:00Z",
                  "--until", "2025-06-01T11:00:00Z")
    assert [json.loads(line)["card_uuid"] for line in window.stdout.splitlines()][0] == scenario["a2"]
    assert len(window.stdout.splitlines()) == 2
    bad = _cli(database, "audit", "export", "--format", "ndjson", "--since", "yesterday")
    assert bad.exit_code == 2
    assert "ISO 8601" in bad.output


def test_export_csv(database: Database, scenario: dict[str, str]) -> None:
    result = _cli(database, "audit", "export", "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 7
    a1 = next(row for row in rows if row["card_uuid"] == scenario["a1"])
    assert a1["feedback_outcomes"] == "overridden;overridden"
    assert a1["rule_id"] == RULE_A
    assert json.loads(a1["evidence"])[0]["unit"] == "mg/dL"


def test_export_fhir_bundle_parses_with_fhir_resources(database: Database, scenario: dict[str, str]) -> None:
    result = _cli(database, "audit", "export", "--format", "fhir")
    assert result.exit_code == 0, result.output
    bundle = Bundle.model_validate(json.loads(result.stdout))
    assert bundle.type == "collection"
    assert bundle.entry is not None
    assert len(bundle.entry) == 7
    events = [entry.resource for entry in bundle.entry]
    assert all(event is not None and event.get_resource_type() == "AuditEvent" for event in events)
    first = json.loads(result.stdout)["entry"][0]["resource"]
    assert first["action"] == "E"
    assert {"Patient/pat-1"} & {entity.get("what", {}).get("reference") for entity in first["entity"]}
    empty = _cli(database, "audit", "export", "--format", "fhir", "--patient", "nobody")
    assert Bundle.model_validate(json.loads(empty.stdout)).entry is None


def test_stats(database: Database, scenario: dict[str, str]) -> None:
    result = _cli(database, "audit", "stats", "--json")
    assert result.exit_code == 0, result.output
    report = {row["rule_id"]: row for row in json.loads(result.stdout)["rules"]}
    rule_a = report[RULE_A]
    assert rule_a["cards_issued"] == 4  # a1, a2, a3, the order alert; its repeat is counted once
    assert rule_a["repeats"] == 1
    assert rule_a["suppressed"] == 1
    assert rule_a["distinct_patients"] == 4
    assert rule_a["accepted"] == 1
    assert rule_a["overridden"] == 2  # a1, and the order alert via its repeat
    assert rule_a["no_response"] == 1  # a3
    assert rule_a["top_override_reasons"][0]["code"] == "not-relevant"
    assert rule_a["top_override_reasons"][0]["count"] == 2
    assert report[RULE_B]["silent"] == 1
    assert report[RULE_B]["cards_issued"] == 0
    later = json.loads(_cli(database, "audit", "stats", "--json", "--since", "2025-06-01T10:30:00Z").stdout)
    assert {row["rule_id"]: row["cards_issued"] for row in later["rules"]} == {RULE_A: 1}
    table = _cli(database, "audit", "stats")
    assert RULE_A in table.output
    assert "override reason: Not relevant for this patient x2" in table.output


def test_purge_keeps_the_chain_verifiable(database: Database, audit: AuditLog) -> None:
    old = [make_call(cards_=[make_card(), make_card()]) for _ in range(3)]
    for record in old:
        audit.record_hook_call(record)
    audit.record_feedback([make_feedback(old[0].cards[0].card_uuid)])
    engine = engine_for(database.url)
    with engine.connect() as connection:
        last_old = connection.execute(select(func.max(feedback.c.recorded_at))).scalar_one()
    cutoff = last_old + timedelta(microseconds=1)
    new = [make_call() for _ in range(2)]
    for record in new:
        audit.record_hook_call(record)

    result = _cli(database, "audit", "purge", "--before", cutoff.isoformat(), "--yes")
    assert result.exit_code == 0, result.output
    assert "calls: 3" in result.output
    assert "cards: 6" in result.output
    assert "feedback: 1" in result.output
    with engine.connect() as connection:
        remaining = sorted(connection.execute(select(calls.c.hook_instance)).scalars())
    assert remaining == sorted(record.hook_instance for record in new)
    verified = _cli(database, "audit", "verify")
    assert verified.exit_code == 0, verified.output

    # Still tamper-evident after the purge, including the checkpoint itself.
    execute(engine, "UPDATE checkpoints SET anchor_hash = :h", h="0" * 64)
    broken = _cli(database, "audit", "verify")
    assert broken.exit_code == 1
    engine.dispose()


def test_repeated_purges_and_purging_everything(database: Database, audit: AuditLog) -> None:
    for _ in range(2):
        audit.record_hook_call(make_call())
    engine = engine_for(database.url)
    first = purge_before(engine, datetime.now(UTC) + timedelta(days=1), TEST_KEYRING.current)
    assert first.counts["calls"] == 2
    assert verify_chain(engine, TEST_KEYRING).ok
    audit.record_hook_call(make_call())
    second = purge_before(engine, datetime.now(UTC) + timedelta(days=1), TEST_KEYRING.current)
    assert second.counts == {"feedback": 0, "cards": 1, "calls": 1, "checkpoints": 1, "anchors": 0}
    result = verify_chain(engine, TEST_KEYRING)
    assert result.ok, result.message
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(checkpoints)).scalar_one() == 1
        assert connection.execute(select(func.count()).select_from(cards)).scalar_one() == 0
    nothing = purge_before(engine, datetime(2000, 1, 1, tzinfo=UTC), TEST_KEYRING.current)
    assert nothing.purged_through_id is None
    assert verify_chain(engine, TEST_KEYRING).ok
    engine.dispose()


def test_purge_asks_for_confirmation(database: Database, audit: AuditLog) -> None:
    audit.record_hook_call(make_call())
    result = CliRunner().invoke(main, ["audit", "purge", "--before", "2999-01-01"], input="n\n", env={
        "CDS_DATABASE_URL": database.url, "CDS_DATA_DIR": str(database.data_dir)})
    assert result.exit_code == 1
    engine = engine_for(database.url)
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(calls)).scalar_one() == 1
    engine.dispose()
