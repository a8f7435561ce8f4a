"""Overrides received for a patient: what the alert policy and the SMART viewer read (issue 15 items 2-5).

One row per override feedback item joined to its card and the call that produced the card. Whether it counts
(a reason, the same client, the same user, the same evidence, not a higher indicator) is decided by
:mod:`cds_service.alert_policy` from these facts, so the hot path and the viewer apply the same rules.
The join on card uuid is made at read time: feedback that arrived before its card (the card was still in
another instance's spool) takes effect as soon as the card is replayed into the database.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, select

from cds_service.audit.records import as_utc
from cds_service.audit.schema import calls, cards, feedback


@dataclass(frozen=True)
class OverrideSeen:
    """An ``overridden`` feedback item with the card it names and that card's call."""

    card_uuid: str
    rule_id: str
    indicator: str
    evidence_fingerprint: list[str] | None
    override_codes: list[str] | None
    card_user_id: str | None
    card_client_iss: str | None
    card_client_tenant: str | None
    feedback_client_iss: str | None
    feedback_client_tenant: str | None
    code: str | None
    system: str | None
    display: str | None
    comment: str | None
    received_at: datetime


# The column order of every override read (the hot path's SQL text and the Core query below).
OVERRIDE_COLUMNS = (
    cards.c.card_uuid, cards.c.rule_id, cards.c.indicator, cards.c.evidence_fingerprint, cards.c.override_codes,
    calls.c.user_id, calls.c.client_iss, calls.c.client_tenant,
    feedback.c.client_iss, feedback.c.client_tenant, feedback.c.override_code, feedback.c.override_system,
    feedback.c.override_display, feedback.c.override_comment, feedback.c.received_at,
)


def _strings(value: Any) -> list[str] | None:
    """A JSON list column as read by any driver (SQLite text, psycopg already parsed); None stays None."""
    if value is None:
        return None
    if isinstance(value, str | bytes):
        value = json.loads(value)
    return [str(item) for item in value] if isinstance(value, list) else None


def _time(value: Any) -> datetime:
    if isinstance(value, str):  # SQLite through the DB-API: SQLAlchemy's naive-UTC text
        value = datetime.fromisoformat(value)
    return as_utc(value)


def override_from_row(row: Sequence[Any]) -> OverrideSeen:
    """An :class:`OverrideSeen` from a row in ``OVERRIDE_COLUMNS`` order (raw DB-API or SQLAlchemy)."""
    return OverrideSeen(
        card_uuid=str(row[0]), rule_id=str(row[1]), indicator=str(row[2]),
        evidence_fingerprint=_strings(row[3]), override_codes=_strings(row[4]),
        card_user_id=row[5], card_client_iss=row[6], card_client_tenant=row[7],
        feedback_client_iss=row[8], feedback_client_tenant=row[9],
        code=row[10], system=row[11], display=row[12], comment=row[13], received_at=_time(row[14]),
    )


def overrides_on_server(engine: Engine, fhir_server: str, patient_id: str, since: datetime) -> list[OverrideSeen]:
    """Overrides received since ``since`` for ``patient_id`` on cards of calls from ``fhir_server`` (normalised).

    The SMART viewer's read: its launch knows the FHIR server, not the CDS client, so it covers every client of
    that server (the feedback-to-card client check still applies, in the policy).
    """
    query = (
        select(*OVERRIDE_COLUMNS)
        .select_from(feedback.join(cards, cards.c.card_uuid == feedback.c.card_uuid)
                     .join(calls, calls.c.id == cards.c.call_id))
        .where(and_(feedback.c.outcome == "overridden", feedback.c.received_at >= as_utc(since),
                    calls.c.fhir_server == fhir_server, calls.c.patient_id == patient_id))
        .order_by(feedback.c.received_at)
    )
    with engine.connect() as connection:
        return [override_from_row(tuple(row)) for row in connection.execute(query)]
