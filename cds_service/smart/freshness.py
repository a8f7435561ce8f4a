"""What is missing or stale in the record, in the rules' own recency windows (clinical-rules.md section 2.6)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cards.ages import age_text
from cds_service.rules.thresholds import CURRENT_DAYS, DOWNWEIGHT_DAYS, PTH_CURRENT_DAYS
from cds_service.services import key_words
from fhir_mappings.facts import PatientFacts

# (label, lab kinds, days for "current") - the analytes the calcification rules read.
_TRACKED = (
    ("Total calcium", ("lab-calcium-total", "lab-calcium-blood"), CURRENT_DAYS),
    ("Phosphate", ("lab-phosphate",), CURRENT_DAYS),
    ("Albumin", ("lab-albumin",), CURRENT_DAYS),
    ("PTH", ("lab-pth",), PTH_CURRENT_DAYS),
)

# Human names of the patient-view prefetch keys, for "could not be read" notes.


@dataclass(frozen=True)
class DataNote:
    """One line of the "missing or stale" list; ``level`` is "missing", "stale", "aging" or "current"."""

    label: str
    level: str
    text: str


def lab_notes(facts: PatientFacts, now: datetime) -> list[DataNote]:
    """Per tracked analyte: none on record, stale (> 90 days), aging (31-90 days, down-weighted) or current."""
    notes = []
    for label, kinds, current_days in _TRACKED:
        results = [r for r in facts.labs if r.kind in kinds]
        if not results:
            notes.append(DataNote(label, "missing", "no result on record"))
            continue
        latest = max(results, key=lambda r: r.time)
        age_days = (now - latest.time).total_seconds() / 86400.0
        # The same age wording as the cards (§8 C13): hours under 48 h, then whole days.
        when = f"last {latest.time:%Y-%m-%d} ({age_text(now, latest.time)})"
        if age_days > max(DOWNWEIGHT_DAYS, current_days):
            notes.append(DataNote(label, "stale", f"{when}: stale, the rules no longer use it"))
        elif age_days > current_days:
            notes.append(DataNote(label, "aging", f"{when}: older than {current_days} days, findings down-weighted"))
        else:
            notes.append(DataNote(label, "current", when))
    return notes


def access_notes(unavailable: list[str], truncated: list[str], not_granted: list[str],
                 skipped: int) -> list[DataNote]:
    """Notes on data the viewer could not read: failed queries, scopes not granted, truncation, bad resources."""
    notes = [DataNote(key_words(key), "missing", "could not be read from the EHR (not shared or failed)")
             for key in unavailable]
    notes += [DataNote(f"{t} access", "missing", "the EHR did not grant read access for this app")
              for t in not_granted]
    notes += [DataNote(key_words(key), "aging", "only the most recent results were read (page limit)")
              for key in truncated]
    if skipped:
        notes.append(DataNote("Unreadable records", "missing",
                              f"{skipped} resource(s) could not be interpreted and were ignored"))
    return notes
