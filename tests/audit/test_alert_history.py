"""``AuditLog.alert_history``: the one read per hook call behind suppression and order dedup (issue #7)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cds_service.alert_policy import CallScope, apply_alert_policy
from cds_service.audit import AuditLog
from cds_service.config import load_settings
from tests.audit.conftest import Database
from tests.audit.factories import TENANT, capture_driver_statements, make_call, make_card, make_feedback

RULE_A, RULE_B, RULE_C = "calcinosis.phosphate.high", "calcinosis.ckd.product", "calcinosis.iv.calcium"
DRAFT_1, DRAFT_2 = "MedicationRequest/draft-1", "MedicationRequest/draft-2"


def test_several_rules_and_orders_are_answered_at_once(audit: AuditLog) -> None:
    now = datetime.now(UTC)
    a, b = make_card(RULE_A), make_card(RULE_B)
    audit.record_hook_call(make_call("pat-1", [a, b], received_at=now - timedelta(hours=3)))
    other_patient = make_card(RULE_C)
    audit.record_hook_call(make_call("pat-2", [other_patient], received_at=now - timedelta(hours=3)))
    audit.record_feedback([make_feedback(a.card_uuid, when=now - timedelta(hours=2)),
                           make_feedback(other_patient.card_uuid, when=now - timedelta(hours=2))])

    first = make_card(RULE_C, order_key=DRAFT_1)
    audit.record_hook_call(make_call("pat-1", [first], hook="order-select", received_at=now - timedelta(minutes=4)))
    repeat = make_card(RULE_C, order_key=DRAFT_1, repeat_of=first.card_uuid)
    other_draft = make_card(RULE_A, order_key=DRAFT_2)
    audit.record_hook_call(make_call("pat-1", [repeat, other_draft], hook="order-select",
                                     received_at=now - timedelta(minutes=1)))

    history = audit.alert_history(TENANT.key, "pat-1", [RULE_A, RULE_B, RULE_C], now - timedelta(hours=24),
                                  [(RULE_C, DRAFT_1), (RULE_A, DRAFT_2), (RULE_A, DRAFT_1)],
                                  now - timedelta(minutes=30))
    assert history.overridden == {RULE_A}  # RULE_C was overridden for another patient only
    assert history.first_alerts == {(RULE_C, DRAFT_1): first.card_uuid, (RULE_A, DRAFT_2): other_draft.card_uuid}

    assert audit.alert_history(TENANT.key, "pat-1", [RULE_A], now - timedelta(hours=1), [], None).overridden == set()
    assert audit.alert_history(TENANT.key, "pat-1", [], None, [(RULE_C, DRAFT_1)],
                               now - timedelta(seconds=30)).first_alerts == {}


def test_the_policy_reads_the_log_once_per_call_however_many_cards(audit: AuditLog, database: Database,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    now = datetime.now(UTC)

    class Assessed:
        def __init__(self, rule_id: str, order_key: str | None) -> None:
            self.card = {"uuid": f"card-{rule_id}", "summary": "s"}
            self.rule_id, self.rule_version, self.indicator = rule_id, "1.0.0", "warning"
            self.evidence: list[dict[str, object]] = []
            self.suggestion_uuids: list[str] = []
            self.order_key = order_key

    audit.record_hook_call(make_call("pat-9", [make_card(RULE_A)]))  # the schema exists, a call is stored
    # Counted at the DB-API level: the hot path runs its SQL on the driver connection, past SQLAlchemy's events.
    statements = capture_driver_statements(audit, database.backend, monkeypatch)
    cards = [Assessed(rule, DRAFT_1) for rule in (RULE_A, RULE_B, RULE_C)]
    shown, records = apply_alert_policy(cards, hook="order-select", patient_id="pat-9", now=now,
                                        settings=load_settings({}), audit=audit,
                                        scope=CallScope(TENANT.key, "Practitioner/doc-1"))
    assert len(shown) == 3
    assert [r.disposition for r in records] == ["shown"] * 3
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 2, selects  # suppression + order dedup for all three cards (was six queries)


def test_the_newest_shown_card_of_a_draft_decides_its_series(audit: AuditLog) -> None:
    # Two series for one draft (an older one, then a new one): the newest shown card's series wins, by time
    # received, not by the order the rows were stored in; suppressed cards do not count.
    now = datetime.now(UTC)
    old_series = make_card(RULE_C, order_key=DRAFT_1)
    audit.record_hook_call(make_call("pat-5", [old_series], hook="order-select",
                                     received_at=now - timedelta(minutes=20)))
    new_series = make_card(RULE_C, order_key=DRAFT_1)
    audit.record_hook_call(make_call("pat-5", [new_series], hook="order-select",
                                     received_at=now - timedelta(minutes=10)))
    for minutes in (8, 6, 4):
        repeat = make_card(RULE_C, order_key=DRAFT_1, repeat_of=new_series.card_uuid)
        audit.record_hook_call(make_call("pat-5", [repeat], hook="order-select",
                                         received_at=now - timedelta(minutes=minutes)))
    stored_last_received_first = make_card(RULE_C, order_key=DRAFT_1)
    audit.record_hook_call(make_call("pat-5", [stored_last_received_first], hook="order-select",
                                     received_at=now - timedelta(minutes=25)))
    suppressed = make_card(RULE_C, order_key=DRAFT_1, disposition="suppressed")
    audit.record_hook_call(make_call("pat-5", [suppressed], hook="order-select",
                                     received_at=now - timedelta(minutes=1)))

    history = audit.alert_history(TENANT.key, "pat-5", [], None, [(RULE_C, DRAFT_1)], now - timedelta(minutes=30))
    assert history.first_alerts == {(RULE_C, DRAFT_1): new_series.card_uuid}
    assert audit.alert_history(TENANT.key, "pat-5", [], None, [(RULE_C, DRAFT_1)],
                               now - timedelta(minutes=2)).first_alerts == {}
