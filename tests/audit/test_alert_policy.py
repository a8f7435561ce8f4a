"""Alert-fatigue controls: silent mode, suppression after override, order dedup, fail-open."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cds_service.alert_policy import apply_alert_policy
from cds_service.audit import AuditLog, AuditUnavailable
from cds_service.config import load_settings
from tests.audit.conftest import Database
from tests.audit.factories import make_call, make_feedback

RULE = "calcinosis.phosphate.high"


@dataclass(frozen=True)
class Assessed:
    """Stands in for cds_service.engine.AssessedCard (same attributes)."""

    rule_id: str = RULE
    order_key: str | None = None
    card: dict[str, Any] = field(default_factory=lambda: {"uuid": str(uuid.uuid4()), "summary": "Check phosphate",
                                                          "indicator": "warning", "source": {"label": "x"}})
    rule_version: str = "1.0.0"
    indicator: str = "warning"
    evidence: list[dict[str, Any]] = field(default_factory=lambda: [{"name": "phosphate", "value": 6.1}])
    suggestion_uuids: list[str] = field(default_factory=list)


def _store(audit: AuditLog, patient: str, hook: str, records: list[Any], when: datetime) -> None:
    audit.record_hook_call(make_call(patient, records, hook=hook, received_at=when))


def test_silent_rule_is_logged_not_shown(database: Database) -> None:
    settings = database.settings(silent_rules=(RULE,))
    assessed = [Assessed(), Assessed(rule_id="calcinosis.other")]
    shown, records = apply_alert_policy(assessed, hook="patient-view", patient_id="p", now=datetime.now(UTC),
                                        settings=settings, audit=None)
    assert shown == [assessed[1].card]
    assert [record.disposition for record in records] == ["silent", "shown"]
    assert records[0].card_uuid == assessed[0].card["uuid"]
    assert records[0].evidence == assessed[0].evidence


def test_overridden_rule_is_suppressed_within_the_window(database: Database, audit: AuditLog) -> None:
    settings = database.settings(suppress_overridden_hours=24.0)
    now = datetime.now(UTC)
    first = Assessed()
    shown, records = apply_alert_policy([first], hook="patient-view", patient_id="pat-s", now=now - timedelta(hours=2),
                                        settings=settings, audit=audit)
    assert shown == [first.card]
    _store(audit, "pat-s", "patient-view", records, now - timedelta(hours=2))
    audit.record_feedback([make_feedback(first.card["uuid"], when=now - timedelta(hours=1))])

    again = Assessed()
    shown, records = apply_alert_policy([again], hook="patient-view", patient_id="pat-s", now=now,
                                        settings=settings, audit=audit)
    assert shown == []
    assert records[0].disposition == "suppressed"
    other_patient, _ = apply_alert_policy([Assessed()], hook="patient-view", patient_id="pat-t", now=now,
                                          settings=settings, audit=audit)
    assert len(other_patient) == 1
    after_window, _ = apply_alert_policy([Assessed()], hook="patient-view", patient_id="pat-s",
                                         now=now + timedelta(hours=24), settings=settings, audit=audit)
    assert len(after_window) == 1


def test_order_select_repeat_is_shown_but_marked(database: Database, audit: AuditLog) -> None:
    settings = database.settings(order_dedup_minutes=30.0)
    now = datetime.now(UTC)
    first = Assessed(order_key="MedicationRequest/draft-9")
    _, records = apply_alert_policy([first], hook="order-select", patient_id="pat-o", now=now - timedelta(minutes=5),
                                    settings=settings, audit=audit)
    assert records[0].repeat_of is None
    _store(audit, "pat-o", "order-select", records, now - timedelta(minutes=5))

    repeat = Assessed(order_key="MedicationRequest/draft-9")
    shown, records = apply_alert_policy([repeat], hook="order-select", patient_id="pat-o", now=now,
                                        settings=settings, audit=audit)
    assert shown == [repeat.card]  # still shown: hiding it while the order is edited would be unsafe
    assert records[0].disposition == "shown"
    assert records[0].repeat_of == first.card["uuid"]
    other_draft = Assessed(order_key="MedicationRequest/draft-10")
    _, records = apply_alert_policy([other_draft], hook="order-select", patient_id="pat-o", now=now,
                                    settings=settings, audit=audit)
    assert records[0].repeat_of is None
    _, records = apply_alert_policy([Assessed(order_key="MedicationRequest/draft-9")], hook="patient-view",
                                    patient_id="pat-o", now=now, settings=settings, audit=audit)
    assert records[0].repeat_of is None  # dedup is for order hooks only


class _BrokenAudit:
    def alert_history(self, *args: object) -> None:  # the one read apply_alert_policy makes per call
        raise AuditUnavailable("down")


@pytest.mark.parametrize("hook", ["patient-view", "order-select"])
def test_fails_open_when_the_log_is_unavailable(hook: str) -> None:
    settings = load_settings({})
    assessed = [Assessed(order_key="MedicationRequest/1")]
    shown, records = apply_alert_policy(assessed, hook=hook, patient_id="p", now=datetime.now(UTC),
                                        settings=settings, audit=_BrokenAudit())  # type: ignore[arg-type]
    assert shown == [assessed[0].card]
    assert records[0].disposition == "shown"
    assert records[0].repeat_of is None


def test_parenteral_nutrition_card_at_most_once_per_24_hours(database: Database, audit: AuditLog) -> None:
    """§8 C7: a PN card (engine key "parenteral-nutrition") is shown once per 24 h per patient, whichever draft."""
    settings = database.settings(order_dedup_minutes=30.0)
    now = datetime.now(UTC)
    first = Assessed(rule_id="iv-calcium-order", order_key="parenteral-nutrition")
    shown, records = apply_alert_policy([first], hook="order-select", patient_id="pat-pn",
                                        now=now - timedelta(hours=23), settings=settings, audit=audit)
    assert shown == [first.card]
    _store(audit, "pat-pn", "order-select", records, now - timedelta(hours=23))

    again = Assessed(rule_id="iv-calcium-order", order_key="parenteral-nutrition")
    shown, records = apply_alert_policy([again], hook="order-select", patient_id="pat-pn", now=now,
                                        settings=settings, audit=audit)
    assert shown == []
    assert records[0].disposition == "suppressed"
    assert records[0].repeat_of == first.card["uuid"]
    other_draft = Assessed(rule_id="iv-calcium-order", order_key="MedicationRequest/not-pn")
    shown, _ = apply_alert_policy([other_draft], hook="order-select", patient_id="pat-pn", now=now,
                                  settings=settings, audit=audit)
    assert shown == [other_draft.card]   # a non-PN IV calcium card is never capped this way
    later, _ = apply_alert_policy([Assessed(rule_id="iv-calcium-order", order_key="parenteral-nutrition")],
                                  hook="order-select", patient_id="pat-pn", now=now + timedelta(hours=2),
                                  settings=settings, audit=audit)
    assert len(later) == 1   # 25 h after the first one
