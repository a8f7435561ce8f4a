"""The patient's current findings from the SAME engine the patient-view hook uses; none is ever hidden.

The viewer must never disagree with the cards: it runs ``assess(..., "patient-view", ...)`` on the same data
(the patient-view prefetch queries) and shows each card's rule id (``source.topic.code``), indicator and summary
verbatim. Rules on trial (``CDS_SILENT_RULES``) are left out as they are from the cards. An override never hides
a finding here (issue 15 item 5): a finding a clinician overrode with a reason, on the same evidence, is listed
and marked "overridden by <user> on <date>: <reason>" (the same test as the hook's suppression,
cds_service.alert_policy.find_override, for any user of this FHIR server).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from cds_service.alert_policy import card_fingerprints, find_override
from cds_service.audit.overrides import OverrideSeen, overrides_on_server
from cds_service.engine import PatientRecord, assess
from cds_service.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OverrideMark:
    """Who overrode a finding, when (this service's receipt) and why."""

    user: str
    date: str
    reason: str

    @property
    def text(self) -> str:
        """The line the viewer shows under the finding."""
        return f"overridden by {self.user} on {self.date}: {self.reason}"


@dataclass(frozen=True)
class Finding:
    """One card as the viewer lists it."""

    rule_id: str
    indicator: str
    summary: str
    detail: str
    title: str
    override: OverrideMark | None = None


@dataclass(frozen=True)
class Findings:
    """Every current finding (card order), and how many resources were skipped."""

    shown: list[Finding]
    skipped: int = 0


def _finding(card: dict[str, Any], override: OverrideMark | None) -> Finding:
    source = card.get("source")
    source = source if isinstance(source, dict) else {}
    topic = source.get("topic")
    topic = topic if isinstance(topic, dict) else {}
    return Finding(
        rule_id=str(topic.get("code") or ""),
        indicator=str(card.get("indicator") or "info"),
        summary=str(card.get("summary") or ""),
        detail=str(card.get("detail") or ""),
        title=str(topic.get("display") or ""),
        override=override,
    )


def _mark(item: OverrideSeen) -> OverrideMark:
    reason = item.display or item.code or ""
    comment = (item.comment or "").strip()
    because = f"{reason} ({comment})" if reason and comment else reason or comment
    return OverrideMark(user=item.card_user_id or "an unnamed user", date=f"{item.received_at:%Y-%m-%d %H:%M} UTC",
                        reason=because)


def _recent_overrides(runtime: Runtime, fhir_server: str | None, patient_id: str | None,
                      now: datetime) -> list[OverrideSeen]:
    hours = runtime.settings.suppress_overridden_hours
    if runtime.audit is None or fhir_server is None or patient_id is None or hours <= 0:
        return []
    try:
        return overrides_on_server(runtime.audit.engine, fhir_server, patient_id, now - timedelta(hours=hours))
    except SQLAlchemyError as exc:  # the findings are all shown anyway; only the marks are missing
        log.warning("smart_overrides_unavailable", extra={"error_type": type(exc).__name__})
        return []


def current_findings(runtime: Runtime, patient: dict[str, Any], resources: list[dict[str, Any]],
                     now: datetime, fhir_server: str | None = None) -> Findings:
    """Assess the record as a patient-view hook call would; every finding, overridden ones marked.

    ``fhir_server``: the launch's FHIR base URL (normalised); overrides are read for that server only.
    """
    assessment = assess(PatientRecord(patient=patient, resources=resources), "patient-view", now,
                        runtime.engine_options)
    patient_id = patient.get("id") if isinstance(patient.get("id"), str) else None
    silent = set(runtime.settings.silent_rules)
    cards = [card for card in assessment.cards if card.rule_id not in silent]
    overrides = _recent_overrides(runtime, fhir_server, patient_id, now) if cards else []
    findings = []
    for assessed, evidence in zip(cards, card_fingerprints(cards, resources), strict=True):
        found = find_override(overrides, assessed.rule_id, assessed.indicator, evidence, None)
        findings.append(_finding(assessed.card, _mark(found) if found is not None else None))
    return Findings(shown=findings, skipped=len(assessment.skipped))
