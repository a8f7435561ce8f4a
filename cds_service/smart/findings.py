"""The patient's current findings from the SAME engine and alert policy the patient-view hook uses.

The viewer must never disagree with the cards: it runs ``assess(..., "patient-view", ...)`` on the same data
(the patient-view prefetch queries) and applies the same silent/suppression policy, then shows each card's rule
id (``source.topic.code``), indicator and summary verbatim.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cds_service.alert_policy import apply_alert_policy
from cds_service.engine import PatientRecord, assess
from cds_service.runtime import Runtime


@dataclass(frozen=True)
class Finding:
    """One card as the viewer lists it."""

    rule_id: str
    indicator: str
    summary: str
    detail: str
    title: str


@dataclass(frozen=True)
class Findings:
    """Shown findings (card order), rule ids suppressed after a recent override, and skipped resources."""

    shown: list[Finding]
    suppressed: list[str] = field(default_factory=list)
    skipped: int = 0


def _finding(card: dict[str, Any]) -> Finding:
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
    )


def current_findings(runtime: Runtime, patient: dict[str, Any], resources: list[dict[str, Any]],
                     now: datetime) -> Findings:
    """Assess the record as a patient-view hook call would and return what its cards would say."""
    assessment = assess(PatientRecord(patient=patient, resources=resources), "patient-view", now,
                        runtime.engine_options)
    patient_id = patient.get("id") if isinstance(patient.get("id"), str) else None
    shown, records = apply_alert_policy(assessment.cards, hook="patient-view", patient_id=patient_id, now=now,
                                        settings=runtime.settings, audit=runtime.audit)
    return Findings(
        shown=[_finding(card) for card in shown],
        suppressed=[r.rule_id for r in records if r.disposition == "suppressed"],
        skipped=len(assessment.skipped),
    )
