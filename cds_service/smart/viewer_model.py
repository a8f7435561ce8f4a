"""Assemble everything the viewer page shows for the launched patient (one call per page view)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cards.ages import patient_age_text
from cds_service.runtime import Runtime
from cds_service.smart.findings import Findings, current_findings
from cds_service.smart.freshness import DataNote, access_notes, lab_notes
from cds_service.smart.history import History, patient_history
from cds_service.smart.patient_data import load_patient_data
from cds_service.smart.trend import TrendChart, build_chart, trend_points
from cds_service.tenant import normalise_fhir_base
from fhir_mappings.extract import extract
from fhir_mappings.valuesets import default_index


@dataclass(frozen=True)
class Banner:
    """The patient banner: name, gender, age."""

    name: str
    gender: str
    age: str


@dataclass(frozen=True)
class ViewerModel:
    """The page's content."""

    banner: Banner
    chart: TrendChart
    findings: Findings
    notes: list[DataNote]
    history: History
    focus_rule: str | None
    generated_at: str


def patient_name(patient: dict[str, Any]) -> str:
    """A display name from ``Patient.name`` (official first, else the first), or "Unnamed patient"."""
    names = [n for n in patient.get("name") or [] if isinstance(n, dict)]
    if not names:
        return "Unnamed patient"
    chosen = next((n for n in names if n.get("use") == "official"), names[0])
    if isinstance(chosen.get("text"), str) and chosen["text"].strip():
        return str(chosen["text"]).strip()
    given = [g for g in chosen.get("given") or [] if isinstance(g, str)]
    family = chosen.get("family")
    family = family if isinstance(family, str) else ""
    return " ".join([*given, family]).strip() or "Unnamed patient"


def build_viewer_model(runtime: Runtime, auth: dict[str, Any], now: datetime,
                       not_granted: list[str]) -> ViewerModel:
    """Fetch the record with the session's token and compute chart, findings, notes and history."""
    data = load_patient_data(runtime, auth["iss"], auth["access_token"], auth["patient"])
    facts = extract(data.patient, data.resources, now, default_index(),
                    include_preliminary=runtime.settings.include_preliminary)
    age = facts.age_years()
    gender = data.patient.get("gender")
    banner = Banner(
        name=patient_name(data.patient),
        gender=gender if isinstance(gender, str) and gender else "gender unknown",
        age=patient_age_text(age),
    )
    fhir_server = normalise_fhir_base(auth["iss"])  # issue 15 items 1, 5: this launch's tenant only
    findings = current_findings(runtime, data.patient, data.resources, now, fhir_server)
    notes = lab_notes(facts, now) + access_notes(data.unavailable, data.truncated, not_granted, findings.skipped)
    return ViewerModel(
        banner=banner,
        chart=build_chart(trend_points(facts)),
        findings=findings,
        notes=notes,
        history=patient_history(runtime, auth["patient"], fhir_server),
        focus_rule=auth.get("rule"),
        generated_at=f"{now:%Y-%m-%d %H:%M} UTC",
    )
