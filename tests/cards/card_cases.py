"""Every card the test patients produce: TP01-TP20 (tests/engine/patients.py) and the revision-2 patients
TP21-TP33 when their table exists (any ``tests/engine/patients*.py`` module's ``EXPECTED*`` lists), rendered
as the HTTP service renders them (with a public base URL, so cards carry their rule-page links)."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import tests.engine
from cds_service.engine import Assessment, EngineOptions, PatientRecord, assess
from tests.engine.builders import NOW

BASE_URL = "https://cds.example.org"


@dataclass(frozen=True)
class Case:
    """One test patient: its id and a builder of ``{"patient", "resources", "hook"?, "drafts"?}``."""

    case_id: str
    build: Callable[[], dict[str, Any]]


def _entries(value: object) -> Iterator[Case]:
    if not isinstance(value, (list, tuple)):
        return
    for entry in value:
        if isinstance(entry, (list, tuple)) and len(entry) >= 2 and isinstance(entry[0], str) and callable(entry[1]):
            yield Case(entry[0], entry[1])
        elif callable(getattr(entry, "build", None)) and isinstance(getattr(entry, "case_id", None), str):
            yield Case(entry.case_id, entry.build)


def test_patients() -> list[Case]:
    """All TP cases of every ``tests/engine/patients*`` table, first occurrence of an id wins."""
    found: dict[str, Case] = {}
    for module_info in sorted(pkgutil.iter_modules(tests.engine.__path__), key=lambda m: m.name):
        if not module_info.name.startswith("patients"):
            continue
        module = importlib.import_module(f"tests.engine.{module_info.name}")
        for name in sorted(vars(module)):
            if name.startswith("EXPECTED"):
                for case in _entries(getattr(module, name)):
                    found.setdefault(case.case_id, case)
    return list(found.values())


test_patients.__test__ = False  # type: ignore[attr-defined]  # a helper, not a pytest test


def run_case(case: Case, base_url: str = BASE_URL) -> Assessment:
    """Assess one case at NOW the way the hook endpoint does (all optional rules on)."""
    data = case.build()
    drafts = data.get("drafts") or []
    selections = data.get("selections")
    if selections is None:
        selections = [f"MedicationRequest/{d['id']}" for d in drafts if isinstance(d, dict) and "id" in d]
    record = PatientRecord(patient=data["patient"], resources=data["resources"], draft_orders=drafts,
                           selections=selections)
    options = EngineOptions(ctd_info_card=True, tumoral_calcinosis_rule=True, links_base_url=base_url)
    return assess(record, data.get("hook", "patient-view"), NOW, options)


def all_cards(base_url: str = BASE_URL) -> list[tuple[str, dict[str, Any]]]:
    """(case id, card JSON) of every card of every test patient."""
    return [(case.case_id, c.card) for case in test_patients() for c in run_case(case, base_url).cards]
