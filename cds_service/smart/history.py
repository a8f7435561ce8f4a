"""The patient's alert history (cards and clinician outcomes) from the audit log (issue #4, issue 15 item 5).

Only this tenant's history: the cards of calls whose (normalised) FHIR server is the viewer's own launch's FHIR
base URL. Patient ids are unique only within one EHR, so another EHR's cards for the same id never show here.
Each card lists the feedback of its own client only (feedback from another client is stored as unmatched and has
no effect, issue 15 item 2); times are this service's receive times.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, select
from sqlalchemy.exc import SQLAlchemyError

from cds_service.audit.records import as_utc
from cds_service.audit.schema import calls, cards, feedback
from cds_service.runtime import Runtime
from cds_service.tenant import same_client

log = logging.getLogger(__name__)

HISTORY_LIMIT = 50


@dataclass(frozen=True)
class HistoryEntry:
    """One card the service issued for the patient, and what the clinician did with it."""

    issued_at: str
    hook: str
    rule_id: str
    indicator: str
    summary: str
    disposition: str
    outcomes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class History:
    """Entries newest first, or ``hidden_reason`` saying why the history is not shown."""

    entries: list[HistoryEntry]
    hidden_reason: str | None = None


def _when(value: datetime | None) -> str:
    return "" if value is None else f"{as_utc(value):%Y-%m-%d %H:%M}"


def _outcome_text(row: Any) -> str:
    reason = row.override_display or row.override_code
    comment = (row.override_comment or "").strip()
    because = "; ".join(part for part in (reason, comment) if part)
    when = _when(row.received_at or row.recorded_at)  # this server's receipt, not the EHR's outcomeTimestamp
    return f"{row.outcome}{f' ({because})' if because else ''} {when}".strip()


def _history_rows(engine: Engine, patient_id: str, fhir_server: str) -> tuple[list[Any], dict[str, list[str]]]:
    query = (
        select(cards.c.card_uuid, cards.c.rule_id, cards.c.indicator, cards.c.summary, cards.c.disposition,
               calls.c.hook, calls.c.received_at, calls.c.client_iss, calls.c.client_tenant)
        .select_from(cards.join(calls, calls.c.id == cards.c.call_id))
        .where(and_(calls.c.patient_id == patient_id, calls.c.fhir_server == fhir_server))
        .order_by(calls.c.received_at.desc(), cards.c.id.desc())
        .limit(HISTORY_LIMIT)
    )
    outcomes: dict[str, list[str]] = defaultdict(list)
    with engine.connect() as connection:
        rows = list(connection.execute(query))
        clients = {row.card_uuid: (row.client_iss, row.client_tenant) for row in rows}
        if clients:
            items = connection.execute(
                select(feedback.c.card_uuid, feedback.c.outcome, feedback.c.override_code,
                       feedback.c.override_display, feedback.c.override_comment, feedback.c.received_at,
                       feedback.c.recorded_at, feedback.c.client_iss, feedback.c.client_tenant)
                .where(feedback.c.card_uuid.in_(list(clients)))
                .order_by(feedback.c.id))
            for item in items:
                card_iss, card_tenant = clients[item.card_uuid]
                if same_client(item.client_iss, item.client_tenant, card_iss, card_tenant):
                    outcomes[item.card_uuid].append(_outcome_text(item))
    return rows, outcomes


def patient_history(runtime: Runtime, patient_id: str, fhir_server: str | None) -> History:
    """The last HISTORY_LIMIT cards of ``patient_id`` on ``fhir_server`` (normalised); hidden (with a reason)
    when there is no audit log.

    Callers show it only for the patient of the browser's own SMART launch (the EHR authorised that user for
    that patient on that FHIR server).
    """
    if runtime.audit is None:
        return History([], "The alert history is hidden: the audit log is switched off in this deployment "
                           "(CDS_AUDIT_ENABLED=0).")
    if fhir_server is None:
        return History([])
    try:
        rows, outcomes = _history_rows(runtime.audit.engine, patient_id, fhir_server)
    except SQLAlchemyError as exc:
        log.warning("smart_history_unavailable", extra={"error_type": type(exc).__name__})
        return History([], "The alert history is temporarily unavailable (the audit database did not answer).")
    entries = [
        HistoryEntry(
            issued_at=_when(row.received_at),
            hook=str(row.hook or ""),
            rule_id=str(row.rule_id or ""),
            indicator=str(row.indicator or ""),
            summary=str(row.summary or ""),
            disposition=str(row.disposition or ""),
            outcomes=outcomes.get(row.card_uuid, []),
        )
        for row in rows
    ]
    return History(entries)
