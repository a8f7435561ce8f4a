"""The patient's alert history (cards and clinician outcomes) from the local audit log (issue #4)."""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from cds_service.audit.queries import AuditFilter, iter_cards
from cds_service.runtime import Runtime

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


def _outcome_text(item: dict[str, Any]) -> str:
    outcome = str(item.get("outcome") or "")
    reason = item.get("override_reason") or {}
    display = reason.get("display") if isinstance(reason, dict) else None
    when = str(item.get("outcome_timestamp") or "")[:16].replace("T", " ")
    return f"{outcome}{f' ({display})' if display else ''} {when}".strip()


def patient_history(runtime: Runtime, patient_id: str) -> History:
    """The last HISTORY_LIMIT cards of ``patient_id``; hidden (with a reason) when there is no audit log.

    Callers show it only for the patient of the browser's own SMART launch (the EHR authorised that user for
    that patient); the audit database is local to this service in this deployment shape.
    """
    if runtime.audit is None:
        return History([], "The alert history is hidden: the audit log is switched off in this deployment "
                           "(CDS_AUDIT_ENABLED=0).")
    try:
        rows: deque[dict[str, Any]] = deque(
            iter_cards(runtime.audit.engine, AuditFilter(patient_id=patient_id)), maxlen=HISTORY_LIMIT)
    except SQLAlchemyError as exc:
        log.warning("smart_history_unavailable", extra={"error_type": type(exc).__name__})
        return History([], "The alert history is temporarily unavailable (the audit database did not answer).")
    entries = [
        HistoryEntry(
            issued_at=str(row.get("issued_at") or "")[:16].replace("T", " "),
            hook=str(row.get("hook") or ""),
            rule_id=str(row.get("rule_id") or ""),
            indicator=str(row.get("indicator") or ""),
            summary=str(row.get("summary") or ""),
            disposition=str(row.get("disposition") or ""),
            outcomes=[_outcome_text(item) for item in row.get("feedback") or [] if isinstance(item, dict)],
        )
        for row in reversed(rows)
    ]
    return History(entries)
