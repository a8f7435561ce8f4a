"""Golden test of every card: the rule/card split of issue 17 must not change what a clinician sees.

For every case of ``golden_cases.py`` (the section 5 and §8.4 test patients TP01-TP33, their variants and the
synthetic cohort) and each of its hooks, every card the engine returns is recorded verbatim apart from its uuids:
summary, indicator, detail, source, links, suggestions (with the FHIR resources they create), selectionBehavior and
overrideReasons, plus the rule id and version and the audit evidence behind it. ``golden_cards.json.gz`` holds the
answers of the code before the issue 17 refactor (one line per case, written byte-reproducibly).

A wording change on purpose is listed in ``docs/clinical-changes.md`` and the file rewritten with

    CALCINOSIS_REGEN_GOLDEN=1 .venv/bin/pytest -q -p no:cacheprovider tests/engine/test_golden_cards.py

then reviewed (``zdiff`` of the old and new file). The regeneration run skips instead of passing.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import pytest

from cds_service.engine import EngineOptions, PatientRecord, assess

from .golden_cases import GoldenCase, cases_by_id, read_golden, write_golden

GOLDEN = Path(__file__).with_name("golden_cards.json.gz")
REGENERATE = os.environ.get("CALCINOSIS_REGEN_GOLDEN") == "1"
FORMAT = 1


def _without_uuids(card: dict[str, Any]) -> dict[str, Any]:
    card = json.loads(json.dumps(card))
    assert card.pop("uuid")
    for suggestion in card.get("suggestions", []):
        assert suggestion.pop("uuid")
    return card


def cards_of(case: GoldenCase) -> dict[str, Any]:
    """Hook -> the cards the current code answers for ``case`` (JSON-ready)."""
    options = EngineOptions(**case.options)
    selections = case.selections if case.selections is not None else [
        f"MedicationRequest/{d['id']}" for d in case.drafts if isinstance(d, dict) and "id" in d]
    record = PatientRecord(patient=case.patient, resources=case.resources, draft_orders=case.drafts,
                           selections=selections)
    out: dict[str, Any] = {}
    for hook in case.hooks:
        result = assess(record, hook, case.now, options)
        out[hook] = [{"rule_id": c.rule_id, "rule_version": c.rule_version, "card": _without_uuids(c.card),
                      "evidence": json.loads(json.dumps(c.evidence, default=str))} for c in result.cards]
    return json.loads(json.dumps(out))


def _cases() -> dict[str, GoldenCase]:
    return cases_by_id()


@functools.cache
def _golden() -> dict[str, Any]:
    return read_golden(GOLDEN, FORMAT)


def _write_golden() -> None:
    write_golden(GOLDEN, FORMAT, cards_of)


def test_golden_cards_cover_exactly_the_cases() -> None:
    if REGENERATE:
        _write_golden()
        _golden.cache_clear()
        pytest.skip("golden cards regenerated; review the diff")
    assert set(_golden()) == set(_cases()), "golden cases differ from golden_cases.py: regenerate on purpose"


def test_golden_cards_cover_every_rule() -> None:
    """The file is only a safety net for the rules it shows: nearly every registered rule has a card in it."""
    from cds_service.rules import RULES

    seen = {card["rule_id"] for case in _golden().values() for cards in case.values() for card in cards}
    assert len(seen) >= len(RULES) - 3, sorted(set(RULES) - seen)


@pytest.mark.parametrize("case_id", list(_cases()))
def test_same_cards_as_before(case_id: str) -> None:
    if REGENERATE:
        pytest.skip("regenerating")
    golden = _golden().get(case_id)
    assert golden is not None, f"{case_id} is not in {GOLDEN.name}: regenerate on purpose"
    assert cards_of(_cases()[case_id]) == golden
