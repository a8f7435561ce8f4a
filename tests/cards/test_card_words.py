"""Card words (issue 13 item 3): the contract checker's text guard, and every card of the test patients and the
golden cases passes it (no {...} annotations, no "None"/"none" as a value, no raw codes, no line twice)."""

from __future__ import annotations

from typing import Any

import pytest

from cds_service.engine import EngineOptions, PatientRecord, assess
from tests.cards.card_cases import BASE_URL, all_cards
from tests.contract.checker import ContractViolation, card_text_problems, check_hook_response


def _card(summary: str = "Ca x P 75.0 mg²/dL² exceeds 70", detail: str = "- Calcium: **10.0 mg/dL**") -> dict[str, Any]:
    return {"uuid": "4f5c0d57-5b5f-4f8e-9a3a-9d6c0c1f0a11", "summary": summary, "detail": detail,
            "indicator": "info", "source": {"label": "x"}}


@pytest.mark.parametrize(("summary", "detail", "found"), [
    ("Calcium carbonate 1 {pill}", "ok", "annotation"),
    ("ok", "Dose: 1 {tbl} daily", "annotation"),
    ("ok", "Stage: {stage}", "annotation"),
    ("ok", "- Route: none", "as a value"),
    ("ok", "- Dose: None", "as a value"),
    ("Phosphate None mg/dL", "ok", "as a value"),
    ("ok", "Albumin (none)", "as a value"),
    ("ok", "- Condition 46177005", "raw code"),
    ("CKD from Condition N18.6", "ok", "raw code"),
    ("ok", "- Calcium 10.0\n- Phosphate 7.5\n- Calcium 10.0", "repeats a line"),
])
def test_guard_rejects(summary: str, detail: str, found: str) -> None:
    problems = card_text_problems(_card(summary, detail))
    assert any(found in p for p in problems), problems
    with pytest.raises(ContractViolation, match="card words"):
        check_hook_response({"cards": [_card(summary, detail)]})


@pytest.mark.parametrize("detail", [
    "No other contributing factors found in the record.",
    "Monitor calcium (none in 24 h)",
    "None of the values is older than 7 days.",
    "- End-stage renal disease (N18.6)",
    "**Values used**\n- Calcium: **10.0 mg/dL**\n\n**Contributing factors found**\n- CKD G5D",
    "Formula, KDIGO caveat and sources: [rule page](https://cds.example.org/rules/caxp-high)",
])
def test_guard_accepts_plain_clinical_text(detail: str) -> None:
    assert card_text_problems(_card(detail=detail)) == []


def test_every_test_patient_card_passes_the_word_guard() -> None:
    cards = all_cards()
    assert len(cards) >= 15
    bad = [f"{case_id} {c['source']['topic']['code']}: {p}" for case_id, c in cards for p in card_text_problems(c)]
    assert bad == []


def test_every_golden_case_card_passes_the_word_guard() -> None:
    """The golden cases (section 5 variants, boundaries, sandbox shapes, synthetic and malformed records),
    assessed as tests/engine/test_extract_equivalence.py assesses them, with cards carrying their links."""
    from tests.engine.golden_cases import golden_cases

    bad: list[str] = []
    count = 0
    for case in golden_cases():
        options = EngineOptions(**{**case.options, "links_base_url": BASE_URL})
        drafts = case.drafts if isinstance(case.drafts, list) else []
        selections = case.selections if case.selections is not None else [
            f"MedicationRequest/{d['id']}" for d in drafts if isinstance(d, dict) and "id" in d]
        record = PatientRecord(patient=case.patient, resources=case.resources, draft_orders=case.drafts,
                               selections=selections)
        for hook in case.hooks:
            for assessed in assess(record, hook, case.now, options).cards:
                count += 1
                bad += [f"{case.case_id} {hook} {assessed.rule_id}: {p}" for p in card_text_problems(assessed.card)]
    assert count > 20
    assert bad == [], f"{len(bad)} problems, first: " + "; ".join(bad[:10])
