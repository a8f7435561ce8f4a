"""Table-driven tests for the section 5 test patients TP01-TP20 and assertions (a)-(f)."""

from __future__ import annotations

from typing import Any

import pytest

from cards import render

from .builders import action_codes, card, outcome, run
from .patients import EXPECTED, tp01, tp02, tp04, tp05, tp06, tp07, tp10, tp11, tp12, tp14, tp15, tp19


def _run(case: dict[str, Any], **options: bool) -> Any:
    return run(case["patient"], case["resources"], case.get("hook", "patient-view"), case.get("drafts"),
               **options)


@pytest.mark.parametrize(("case_id", "build", "expected"), EXPECTED, ids=[e[0] for e in EXPECTED])
def test_test_patient(case_id: str, build: Any, expected: list[tuple[str, str]]) -> None:
    result = _run(build())
    assert outcome(result) == expected
    assert result.skipped == []
    assert not render.MISSING_PHRASES


def test_a_every_summary_fits_and_b_no_critical_on_patient_view() -> None:
    criticals = []
    for case_id, build, _expected in EXPECTED:
        case = build()
        result = _run(case)
        for c in result.cards:
            assert len(c.card["summary"]) < 140, (case_id, c.card["summary"])
            if c.indicator == "critical":
                criticals.append(case_id)
            if case.get("hook", "patient-view") == "patient-view":
                assert c.indicator != "critical"
    assert criticals == ["TP10"]  # (c) TP10 is the only critical card in the suite


def test_d_lower_case_unit_gives_same_result() -> None:
    si = _run(tp02())
    lower = _run(tp01(unit_ca="mg/dl", ca=10.02, p=7.495, unit_p="mg/dl"))
    assert outcome(lower) == outcome(si) == [("caxp-high", "warning")]
    assert card(lower, "caxp-high")["summary"] == card(si, "caxp-high")["summary"]


def test_e_preliminary_is_excluded_by_default() -> None:
    assert outcome(_run(tp06(bad_status="preliminary"))) == []


def test_f_provisional_esrd_never_raises_r08() -> None:
    assert outcome(_run(tp07(esrd_verification="provisional"))) == []


def test_tp01_detail_and_suggestions() -> None:
    c = card(_run(tp01()), "caxp-high")
    assert "75.0" in c["summary"]
    assert "drawn 2 days ago" in c["summary"]
    assert "2731-8" in action_codes(c)
    assert any(a["resource"]["code"].get("text") == "Nephrology consult"
               for s in c["suggestions"] for a in s["actions"] if "resource" in a)
    assert "Hyperphosphatemia" in c["detail"]
    assert "No PTH" in c["detail"]
    assert "decision support, not a diagnosis" in c["detail"]
    assert "KDIGO" in c["detail"]


def test_tp02_detail_shows_reported_and_converted_values() -> None:
    c = card(_run(tp02()), "caxp-high")
    assert "75.1" in c["summary"]
    assert "reported 2.5 mmol/L" in c["detail"]
    assert "10.0 mg/dL" in c["detail"]


def test_tp04_folds_hypercalcemia_and_suggests_workup() -> None:
    c = card(_run(tp04()), "caxp-high")
    assert "calcium uncorrected" in c["detail"]
    assert "1,25" in c["detail"]
    assert {"1751-7", "1994-3", "62290-2", "2731-8"} <= action_codes(c)


def test_tp05_mentions_last_pair() -> None:
    c = card(_run(tp05()), "mineral-labs-due")
    assert c["summary"] == "CKD G5D: no serum calcium or phosphate in 90 days – order labs"
    assert "80.2" in c["detail"]
    assert "120 days ago" in c["detail"]
    assert {"17861-6", "2777-1", "1751-7"} <= action_codes(c)


def test_tp10_critical_card_shape() -> None:
    result = _run(tp10())
    c = card(result, "iv-calcium-order")
    assert c["selectionBehavior"] == "any"  # §8.4 TP10 amended (C14)
    assert c["overrideReasons"]
    assert all(r["display"] for r in c["overrideReasons"])
    deletes = [a for s in c["suggestions"] for a in s["actions"] if a["type"] == "delete"]
    assert deletes == [{"type": "delete", "description": deletes[0]["description"],
                        "resourceId": ["MedicationRequest/rx10"]}]
    assert result.cards[0].order_key == "MedicationRequest/rx10"
    assert "78.0" in c["summary"]


def test_tp11_route_inferred_and_gluconate_replacement() -> None:
    c = card(_run(tp11()), "iv-calcium-order")
    assert c["summary"] == "IV calcium chloride in CKD G5D (Ca x P 59.8, P 6.5) – calcification/extravasation risk"
    assert "route inferred as IV" in c["detail"]
    replace = [s for s in c["suggestions"] if len(s["actions"]) == 2]
    assert len(replace) == 1
    delete, create = replace[0]["actions"]
    assert delete["type"] == "delete"
    assert create["type"] == "create"
    assert "dose to be confirmed by pharmacy" in create["resource"]["note"][0]["text"]
    assert "doseAndRate" not in create["resource"]["dosageInstruction"][0]


def test_tp12_tls_variant() -> None:
    c = card(_run(tp12()), "iv-calcium-order")
    assert "P 6.8 mg/dL" in c["summary"]  # §8.4 TP12 amended: the summary follows C2
    assert any("consider not giving calcium" in s["label"] for s in c["suggestions"])


def test_tp14_r07_summary_and_r06_folded() -> None:
    result = _run(tp14())
    c = card(result, "calciphylaxis-risk")
    assert c["summary"].startswith("Calciphylaxis risk: dialysis + Ca x P 72.5 + warfarin, obesity, diabetes, female")
    assert "PTH 900" in c["detail"]


def test_tp15_ctd_card_when_configured() -> None:
    assert outcome(_run(tp15(), ctd_info_card=True)) == [("connective-tissue-disease", "info")]


def test_tp19_lower_bound_detail() -> None:
    c = card(_run(tp19()), "caxp-high")
    assert "≥90.0" in c["summary"]
    assert "above the assay limit (&gt;10.0)" in c["detail"]
