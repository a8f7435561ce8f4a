"""Feedback belongs to the card's client (issue 15 item 2): matched by card uuid AND the (iss, tenant) of the call
that produced the card; anything else is stored as ``unmatched`` and has no effect. SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from cds_service.alert_policy import CallScope, apply_alert_policy
from cds_service.audit import AuditLog
from cds_service.audit.records import SpooledCall
from cds_service.audit.schema import feedback
from tests.audit.conftest import Database
from tests.audit.factories import ISSUER, TENANT, engine_for, make_call, make_card, make_feedback

DOC = "Practitioner/doc-1"
RULE = "calcinosis.phosphate.high"


class _Assessed:
    """The card make_card describes, as the engine would hand it to the policy again."""

    def __init__(self) -> None:
        self.card: dict[str, Any] = {"uuid": str(uuid.uuid4()), "summary": "s", "overrideReasons": [
            {"system": "https://example.org/override-reasons", "code": "not-relevant", "display": "x"}]}
        self.rule_id, self.rule_version, self.indicator = RULE, "1.0.0", "warning"
        self.evidence: list[dict[str, Any]] = [{"name": "phosphate", "resource_id": "Observation/ob-1"}]
        self.suggestion_uuids: list[str] = []
        self.order_key: str | None = None


RESOURCES = [{"resourceType": "Observation", "id": "ob-1",
              "meta": {"versionId": "1", "lastUpdated": "2025-01-01T00:00:00Z"}}]


def _suppressed(audit: AuditLog, database: Database, patient: str, now: datetime) -> bool:
    _, records = apply_alert_policy([_Assessed()], hook="patient-view", patient_id=patient, now=now,
                                    settings=database.settings(), audit=audit, scope=CallScope(TENANT.key, DOC),
                                    resources=RESOURCES)
    return records[0].disposition == "suppressed"


def _stored(database: Database, card_uuid: str) -> list[dict[str, Any]]:
    engine = engine_for(database.url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(select(feedback).where(feedback.c.card_uuid == card_uuid)
                                      .order_by(feedback.c.id)).mappings().all()
        return [dict(row) for row in rows]
    finally:
        engine.dispose()


def test_feedback_for_an_unknown_card_is_stored_unmatched(audit: AuditLog, database: Database) -> None:
    unknown = str(uuid.uuid4())
    audit.record_feedback([make_feedback(unknown, comment="no such card")])
    (row,) = _stored(database, unknown)
    assert row["match"] == "unmatched"
    assert row["card_known"] is False
    assert row["client_iss"] == ISSUER


def test_feedback_from_another_client_is_unmatched_and_has_no_effect(audit: AuditLog, database: Database) -> None:
    now, patient = datetime.now(UTC), f"pat-{uuid.uuid4().hex[:8]}"
    card = make_card()
    audit.record_hook_call(make_call(patient, [card], received_at=now - timedelta(hours=2), user_id=DOC))
    intruder = make_feedback(card.card_uuid, when=now - timedelta(hours=1), comment="not mine to dismiss",
                             client_iss="https://intruder.example.net")
    audit.record_feedback([intruder])
    assert _stored(database, card.card_uuid)[0]["match"] == "unmatched"
    assert not _suppressed(audit, database, patient, now)
    # The same tenant claim matters too: the card's client has no tenant claim.
    audit.record_feedback([make_feedback(card.card_uuid, when=now - timedelta(hours=1), comment="x",
                                         client_tenant="another-hospital")])
    assert not _suppressed(audit, database, patient, now)

    # The card's own client, with identical content otherwise: a new item (not taken for a resend), effective.
    audit.record_feedback([make_feedback(card.card_uuid, when=now - timedelta(hours=1), comment="not mine to dismiss")])
    rows = _stored(database, card.card_uuid)
    assert [row["match"] for row in rows] == ["unmatched", "unmatched", "matched"]
    assert _suppressed(audit, database, patient, now)


def test_dev_feedback_without_a_client_matches_by_uuid(audit: AuditLog, database: Database) -> None:
    now, patient = datetime.now(UTC), f"pat-{uuid.uuid4().hex[:8]}"
    card = make_card()
    audit.record_hook_call(make_call(patient, [card], received_at=now - timedelta(hours=2), user_id=DOC))
    audit.record_feedback([make_feedback(card.card_uuid, when=now - timedelta(hours=1), client_iss=None)])
    assert _stored(database, card.card_uuid)[0]["match"] == "matched"
    assert _suppressed(audit, database, patient, now)


def test_feedback_for_a_card_in_another_instances_spool_is_matched_on_replay(
        open_audit: Callable[..., AuditLog], database: Database, tmp_path: Path) -> None:
    # Two instances on one database, each with its own spool. A could not store the call (it waits in A's spool)
    # when the clinician's override reached B.
    instance_a = open_audit(data_dir=str(tmp_path / "a"))
    instance_b = open_audit(data_dir=str(tmp_path / "b"))
    now, patient = datetime.now(UTC), f"pat-{uuid.uuid4().hex[:8]}"
    card = make_card()
    instance_a._spool.put(SpooledCall(str(uuid.uuid4()),
                                      make_call(patient, [card], received_at=now - timedelta(hours=2), user_id=DOC)))
    instance_b.record_feedback([make_feedback(card.card_uuid, when=now - timedelta(hours=1))])
    assert _stored(database, card.card_uuid)[0]["match"] == "unmatched"  # what was known at receipt
    assert not _suppressed(instance_b, database, patient, now)

    assert instance_a.replay_spool() == 1
    assert _suppressed(instance_b, database, patient, now)  # matched now, through either instance
    assert _suppressed(instance_a, database, patient, now)
