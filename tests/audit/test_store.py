"""AuditLog on SQLite and PostgreSQL: hook calls, cards, feedback, jti cache, concurrency."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from cds_service.audit import AuditLog
from cds_service.audit.integrity import verify_chain
from cds_service.audit.schema import calls, cards, feedback
from tests.audit.conftest import TEST_KEYRING, Database
from tests.audit.factories import TENANT, count, engine_for, make_call, make_card, make_feedback

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_hook_call_and_cards_are_stored_with_provenance(audit: AuditLog, database: Database) -> None:
    card = make_card(order_key="MedicationRequest/mr-1")
    record = make_call("pat-42", [card, make_card("calcinosis.ckd.product")], client_tenant="tenant-a")
    audit.record_hook_call(record)

    engine = engine_for(database.url)
    with engine.connect() as connection:
        call = connection.execute(select(calls)).mappings().one()
        stored_cards = connection.execute(select(cards).order_by(cards.c.id)).mappings().all()
    assert call["hook_instance"] == record.hook_instance
    assert call["patient_id"] == "pat-42"
    assert call["client_tenant"] == "tenant-a"
    assert call["client_jti"] == record.client_jti
    assert call["data_sources"] == {"patient": "prefetch", "labs": "fetched"}
    assert call["skipped_resources"] == [{"resource_type": "Observation", "id": "bad-1", "reason": "no value"}]
    assert call["rules_evaluated"] == [["calcinosis.phosphate.high", "1.0.0"]]
    assert call["duration_ms"] == pytest.approx(12.5)
    assert [row["card_uuid"] for row in stored_cards] == [card.card_uuid, record.cards[1].card_uuid]
    assert all(row["call_id"] == call["id"] for row in stored_cards)
    assert stored_cards[0]["evidence"] == card.evidence
    assert stored_cards[0]["order_key"] == "MedicationRequest/mr-1"
    assert stored_cards[0]["suggestion_uuids"] == card.suggestion_uuids
    assert verify_chain(engine, TEST_KEYRING).ok
    engine.dispose()


def test_feedback_joins_its_card_and_duplicates_are_stored_once(audit: AuditLog, database: Database) -> None:
    record = make_call()
    audit.record_hook_call(record)
    item = make_feedback(record.cards[0].card_uuid)
    audit.record_feedback([item, item])  # the same item twice in one request
    audit.record_feedback([item])  # and again (EHR retry)
    unknown = make_feedback("no-such-card", outcome="accepted")
    audit.record_feedback([unknown])

    engine = engine_for(database.url)
    with engine.connect() as connection:
        rows = connection.execute(
            select(feedback.c.card_uuid, feedback.c.card_known, cards.c.rule_id)
            .select_from(feedback.outerjoin(cards, cards.c.card_uuid == feedback.c.card_uuid))
            .order_by(feedback.c.id)
        ).all()
    assert [(row.card_uuid, row.card_known, row.rule_id) for row in rows] == [
        (record.cards[0].card_uuid, True, "calcinosis.phosphate.high"),
        ("no-such-card", False, None),
    ]
    assert verify_chain(engine, TEST_KEYRING).ok
    engine.dispose()


def test_a_changed_feedback_item_is_a_new_item(audit: AuditLog, database: Database) -> None:
    record = make_call()
    audit.record_hook_call(record)
    when = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    audit.record_feedback([make_feedback(record.cards[0].card_uuid, when=when)])
    audit.record_feedback([make_feedback(record.cards[0].card_uuid, when=when + timedelta(seconds=1))])
    engine = engine_for(database.url)
    assert count(engine, "feedback") == 2
    engine.dispose()


def _first_alert(audit: AuditLog, patient: str, rule: str, order_key: str, since: datetime) -> str | None:
    history = audit.alert_history(TENANT.key, patient, [], None, [(rule, order_key)], since)
    return history.first_alerts.get((rule, order_key))


def _overridden(audit: AuditLog, patient: str, rule: str, since: datetime) -> bool:
    return rule in audit.alert_history(TENANT.key, patient, [rule], since, [], None).overridden


def test_recently_overridden_and_order_alert_lookup(audit: AuditLog) -> None:
    now = datetime.now(UTC)
    first = make_card(order_key="MedicationRequest/draft-1")
    audit.record_hook_call(make_call("pat-7", [first], hook="order-select", received_at=now - timedelta(minutes=5)))
    repeat = make_card(order_key="MedicationRequest/draft-1", repeat_of=first.card_uuid)
    audit.record_hook_call(make_call("pat-7", [repeat], hook="order-select", received_at=now - timedelta(minutes=1)))

    found = _first_alert(audit, "pat-7", first.rule_id, "MedicationRequest/draft-1",
                                          now - timedelta(minutes=30))
    assert found == first.card_uuid  # the series' first alert, even though the newest match is the repeat
    assert _first_alert(audit, "pat-7", first.rule_id, "MedicationRequest/other",
                                         now - timedelta(minutes=30)) is None
    assert _first_alert(audit, "pat-8", first.rule_id, "MedicationRequest/draft-1",
                                         now - timedelta(minutes=30)) is None
    assert _first_alert(audit, "pat-7", first.rule_id, "MedicationRequest/draft-1",
                                         now - timedelta(seconds=30)) is None

    assert not _overridden(audit, "pat-7", first.rule_id, now - timedelta(hours=24))
    audit.record_feedback([make_feedback(first.card_uuid, when=now - timedelta(hours=2))])
    assert _overridden(audit, "pat-7", first.rule_id, now - timedelta(hours=24))
    assert not _overridden(audit, "pat-7", first.rule_id, now - timedelta(hours=1))
    assert not _overridden(audit, "pat-8", first.rule_id, now - timedelta(hours=24))
    assert not _overridden(audit, "pat-7", "other.rule", now - timedelta(hours=24))


def test_remember_jti_detects_replays_across_instances(open_audit: Callable[..., AuditLog]) -> None:
    first, second = open_audit(), open_audit()  # two workers / instances on one database
    expires = datetime.now(UTC) + timedelta(minutes=5)
    assert first.remember_jti("https://ehr.example.org", "jti-1", expires) is True
    assert second.remember_jti("https://ehr.example.org", "jti-1", expires) is False
    assert second.remember_jti("https://other.example.org", "jti-1", expires) is True


def test_remember_jti_is_atomic_under_concurrency(audit: AuditLog) -> None:
    expires = datetime.now(UTC) + timedelta(minutes=5)
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def claim() -> None:
        barrier.wait()
        results.append(audit.remember_jti("https://ehr.example.org", "contested", expires))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]


def test_ping(audit: AuditLog) -> None:
    assert audit.ping() is True


def test_concurrent_threads_store_every_call_in_one_chain(audit: AuditLog, database: Database) -> None:
    threads_count, per_thread = 8, 10
    written: list[tuple[str, list[str]]] = []
    lock = threading.Lock()

    def work(index: int) -> None:
        for _ in range(per_thread):
            record = make_call(f"pat-{index}", [make_card(), make_card("calcinosis.ckd.product")])
            audit.record_hook_call(record)
            with lock:
                written.append((record.hook_instance, [card.card_uuid for card in record.cards]))

    threads = [threading.Thread(target=work, args=(index,)) for index in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not list(database.settings().spool_dir.glob("*.json")), "nothing should have been spooled"
    _assert_exactly_stored(database, written)


@pytest.mark.slow
def test_concurrent_processes_store_every_call_in_one_chain(database: Database,
                                                             audit: AuditLog) -> None:
    processes, per_process, cards_per_call = 4, 15, 2
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    workers = [
        subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "tests" / "audit" / "_worker.py"), database.url,
             str(database.data_dir), str(per_process), str(cards_per_call), f"proc{index}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT,
        )
        for index in range(processes)
    ]
    written: list[tuple[str, list[str]]] = []
    for worker in workers:
        out, err = worker.communicate(timeout=180)
        assert worker.returncode == 0, err
        for line in out.splitlines():
            hook_instance, *card_uuids = line.split()
            written.append((hook_instance, card_uuids))
    assert len(written) == processes * per_process
    assert not list(database.settings().spool_dir.glob("*.json")), "nothing should have been spooled"
    _assert_exactly_stored(database, written)


def _assert_exactly_stored(database: Database, written: list[tuple[str, list[str]]]) -> None:
    engine = engine_for(database.url)
    with engine.connect() as connection:
        stored_calls = connection.execute(select(calls.c.id, calls.c.hook_instance)).all()
        stored_cards = connection.execute(select(cards.c.card_uuid, cards.c.call_id)).all()
    assert sorted(row.hook_instance for row in stored_calls) == sorted(hook for hook, _ in written)
    call_by_instance = {row.hook_instance: row.id for row in stored_calls}
    expected_cards = {card: call_by_instance[hook] for hook, card_uuids in written for card in card_uuids}
    assert {row.card_uuid: row.call_id for row in stored_cards} == expected_cards
    result = verify_chain(engine, TEST_KEYRING)
    assert result.ok, result.message
    assert result.records_checked == len(stored_calls) + len(stored_cards)
    engine.dispose()
