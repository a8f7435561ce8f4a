"""Clinical revision 2 (clinical-rules.md §8): TP01-TP33 table-driven, with the §8 conditions per patient.

TP01-TP20 keep their §5 outcomes (``EXPECTED``) and must also meet the revision-wide card rules of §8 (rules
v0.2, deletion never first, never Remove together with Replace, ``any`` on R08/R09); TP21-TP33 come from
``EXPECTED_R2`` (§8.4) with their extra conditions; TP10 and TP12 are checked as amended in §8.4.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from .builders import (
    card,
    card_text,
    cond,
    has_delete,
    obs,
    outcome,
    remove_only,
    run,
    suggestion_kinds,
)
from .patients import (
    EXPECTED,
    EXPECTED_R2,
    R2Case,
    tp10,
    tp11,
    tp12,
    tp13,
    tp14,
    tp17,
    tp22,
    tp24,
    tp25,
    tp27,
    tp28,
    tp29,
    tp30,
    tp31,
    tp33,
)

ORDER_CARDS = ("iv-calcium-order", "iv-phosphate-order")


def _run(case: dict[str, Any]) -> Any:
    return run(case["patient"], case["resources"], case.get("hook", "patient-view"), case.get("drafts"))


def _all_cases() -> list[tuple[str, dict[str, Any]]]:
    cases = [(case_id, build()) for case_id, build, _exp in EXPECTED]
    cases += [(c.case_id, c.build()) for c in EXPECTED_R2]
    return cases


ALL_CASES = _all_cases()


def _labels(card_json: dict[str, Any]) -> list[str]:
    return [s.get("label", "") for s in card_json.get("suggestions", [])]


# --- revision-wide card rules over every TP01-TP33 card ---------------------------------------------------


@pytest.mark.parametrize(("case_id", "case"), ALL_CASES, ids=[c[0] for c in ALL_CASES])
def test_every_card_follows_the_revision2_card_rules(case_id: str, case: dict[str, Any]) -> None:
    """§8 intro (rules v0.2), C2 (R08/R09: deletion never first), C14 (never Remove with Replace; R08/R09 ``any``)."""
    result = _run(case)
    for c in result.cards:
        cj = c.card
        assert "rules v0.2" in cj["source"]["label"], (case_id, cj["source"]["label"])
        assert len(cj["summary"]) <= 140, (case_id, cj["summary"])
        kinds = suggestion_kinds(cj)
        if kinds and c.rule_id in ORDER_CARDS:  # §8 C2: "in every R08/R09 card the deletion is never first"
            assert kinds[0] != {"delete"}, f"{case_id} {c.rule_id}: first suggestion is a deletion {_labels(cj)}"
        replaces = [i for i, k in enumerate(kinds) if k == {"delete", "create"}]
        if replaces:
            assert remove_only(cj) == [], f"{case_id} {c.rule_id}: both Replace and Remove offered"
        if c.rule_id in ORDER_CARDS and kinds:
            assert cj.get("selectionBehavior") == "any", (case_id, c.rule_id, cj.get("selectionBehavior"))
        if case.get("hook", "patient-view") == "patient-view":
            assert c.indicator != "critical"


def test_tp10_is_still_the_only_critical_card_in_tp01_to_tp33() -> None:
    """§5 assertion (c) over the extended suite: §8.0 `critical` holds only for TP10."""
    criticals = [case_id for case_id, case in ALL_CASES for c in _run(case).cards if c.indicator == "critical"]
    assert criticals == ["TP10"]


# --- TP21-TP33 (§8.4) --------------------------------------------------------------------------------------


def _check_r2(case: R2Case, result: Any) -> None:
    got = outcome(result)
    assert len(got) == len(set(got)), f"duplicate cards: {got}"
    if case.allowed:
        assert all(e in got for e in case.expected), got
        assert all(g in case.expected or g in case.allowed for g in got), got
    else:
        assert sorted(got) == sorted(case.expected), got
    for c in result.cards:
        cj = c.card
        text = card_text(cj).lower()
        if case.no_delete:
            assert not has_delete(cj), f"{case.case_id}: delete action in {_labels(cj)}"
        if case.no_remove_only:
            assert remove_only(cj) == [], f"{case.case_id}: a separate Remove in {_labels(cj)}"
        if case.first_is_replace:
            first = cj["suggestions"][0]
            assert [a["type"] for a in first["actions"]] == ["delete", "create"], _labels(cj)
            assert "gluconate" in json.dumps(first["actions"][1]["resource"]).lower()
        for word in case.forbidden_anywhere:
            assert word not in text, f"{case.case_id}: '{word}' in {c.rule_id} card"
        for word in case.forbidden_in_summary:
            assert word not in cj["summary"].lower(), f"{case.case_id}: '{word}' in {cj['summary']!r}"
        for pattern in case.summary_patterns:
            assert re.search(pattern, cj["summary"], re.IGNORECASE), (pattern, cj["summary"])
    for pattern in case.detail_patterns:
        assert any(re.search(pattern, c.card["detail"], re.IGNORECASE) for c in result.cards), pattern


@pytest.mark.parametrize("case", EXPECTED_R2, ids=[c.case_id for c in EXPECTED_R2])
def test_revision2_patient(case: R2Case) -> None:
    """§8.4 TP21-TP33: expected rule ids and indicators plus the per-patient §8 conditions."""
    result = _run(case.build())
    _check_r2(case, result)
    assert not [s for s in result.skipped if s.get("resource_type") in ("engine", "rule")], result.skipped


# --- TP10 and TP12 as amended in §8.4 ----------------------------------------------------------------------


def test_tp10_amended_consult_before_remove_and_selection_any() -> None:
    """§8.4 TP10: `selectionBehavior: any`, the consult before "Remove this IV calcium order", which is last."""
    result = _run(tp10())
    assert outcome(result) == [("iv-calcium-order", "critical")]
    c = card(result, "iv-calcium-order")
    assert c["selectionBehavior"] == "any"
    labels = _labels(c)
    removes = remove_only(c)
    assert removes == [len(labels) - 1], labels
    assert "remove this iv calcium order" in labels[-1].lower()
    consult = [i for i, s in enumerate(c["suggestions"]) if "consult" in json.dumps(s).lower()]
    assert consult, labels
    assert consult[0] < removes[0], labels
    assert c["overrideReasons"]


def test_tp12_amended_tls_stays_warning_with_c2_summary_and_tls_removal_last() -> None:
    """§8.4 TP12 / §8 C2: TLS + hyperphosphatemia keep the warning; C2 summary; TLS removal is the last suggestion."""
    result = _run(tp12())
    assert outcome(result) == [("iv-calcium-order", "warning")]
    c = card(result, "iv-calcium-order")
    assert "P 6.8 mg/dL" in c["summary"]
    assert "lowest effective dose" in c["summary"]
    labels = _labels(c)
    assert remove_only(c) == [len(labels) - 1], labels
    assert labels[-1].startswith("Asymptomatic hypocalcemia in TLS: consider not giving calcium"), labels


def test_tp11_chloride_replace_first_and_no_separate_remove() -> None:
    """§8 C2 order (1) replace chloride with gluconate first; C14 Remove omitted when Replace applies."""
    c = card(_run(tp11()), "iv-calcium-order")
    assert suggestion_kinds(c)[0] == {"delete", "create"}
    assert remove_only(c) == []
    assert c["selectionBehavior"] == "any"


def test_tp13_phosphate_card_names_hypercalcemia_not_hyperphosphatemia() -> None:
    """§8 C3: with hypercalcemia the tiers apply (warning) and the text never claims hyperphosphatemia (P 2.0)."""
    result = _run(tp13())
    assert outcome(result) == [("iv-phosphate-order", "warning")]
    c = card(result, "iv-phosphate-order")
    assert "hyperphosphatemia" not in c["summary"].lower()
    assert "hypercalcemia" in c["summary"].lower()
    labels = _labels(c)
    assert remove_only(c) == [len(labels) - 1], labels


def test_tp14_calciphylaxis_card_carries_the_kdigo_caveat() -> None:
    """§8 C15: the KDIGO caveat wherever Ca x P is cited, including R07."""
    c = card(_run(tp14()), "calciphylaxis-risk")
    assert "72.5" in c["detail"]
    assert "KDIGO" in c["detail"]


def test_tp17_grade_word_is_moderate_never_severe() -> None:
    """§8 C10: 12.4 mg/dL is "moderate" (12.0 to < 14.0); "severe" is never used below 14.0."""
    result = _run(tp17())
    texts = [(c.card["summary"] + " " + c.card["detail"]).lower() for c in result.cards]
    assert any("moderate" in t for t in texts), texts
    # The grade legend ("severe ≥ 14.0") may be shown; the patient's grade must not be "severe".
    assert not any("severe" in c.card["summary"].lower() for c in result.cards)
    assert not any(re.search(r"severe\s+hypercalc", t) for t in texts), texts


def test_tp22_summary_leads_with_the_indication_and_keeps_calcification_facts() -> None:
    """§8 C2: "IV calcium with K 7.1 mmol/L – likely indicated ..."; the detail keeps the Ca x P facts."""
    c = card(_run(tp22()), "iv-calcium-order")
    assert c["summary"].startswith("IV calcium with K 7.1 mmol/L"), c["summary"]
    assert "likely indicated" in c["summary"]
    assert "76.3" in c["detail"]


def test_tp24_band_wording_and_detail_advice() -> None:
    """§8 C3: P 1.0-2.4 mg/dL -> "hypophosphatemia – consider the oral route"; detail: sodium phosphate, recheck."""
    c = card(_run(tp24()), "iv-phosphate-order")
    assert "consider the oral route" in c["summary"]
    assert "severe" not in c["summary"].lower()
    assert "sodium phosphate" in c["detail"].lower()
    assert re.search(r"6\s*[–-]\s*12 h", c["detail"]), c["detail"]


def test_tp25_control_documented_calciphylaxis_makes_it_critical() -> None:
    """§8 C4/§8.0: CALCIPHYLAXIS_DX (not L94.2) can make R08 critical, and then the card names calciphylaxis."""
    case = tp25()
    case["resources"].append(cond("E83.59", text="Calciphylaxis"))
    result = _run(case)
    assert outcome(result) == [("iv-calcium-order", "critical")]
    assert "calciphylaxis" in card(result, "iv-calcium-order")["summary"].lower()


def test_tp27_control_without_pth_asks_for_it() -> None:
    """§8 C8 control: without the pmol/L PTH the same G5D patient gets R03."""
    result = _run(tp27(with_pth=False))
    assert outcome(result) == [("mineral-labs-due", "info")]


def test_tp28_interpretation_h_without_age_band_does_not_count() -> None:
    """§8 C11: `interpretation` H counts only with an age-banded referenceRange covering the patient's age."""
    got = outcome(_run(tp28(interpretation="H")))
    assert all(g == ("hypercalcemia", "info") for g in got), got


def test_tp29_r24_offers_review_and_recommends_no_drug() -> None:
    """§8 C16: R24 suggests a nephrology review, never a deletion; the decision is left to the prescriber."""
    c = card(_run(tp29()), "warfarin-calciphylaxis-risk")
    assert any("nephrology" in json.dumps(s).lower() for s in c.get("suggestions", []))
    assert not has_delete(c)
    assert "prescriber" in c["detail"].lower()


def test_tp30_control_aluminium_with_normal_kidneys_gives_no_card() -> None:
    """§8 C17 control: aluminium hydroxide with eGFR 95 and no CKD -> no R21."""
    case = tp30()
    case["resources"] = [obs("egfr", 95, 20), obs("egfr", 96, 200)]
    assert outcome(_run(case)) == []


def test_tp31_future_value_is_recorded_for_audit() -> None:
    """§8 C6: the value dated 9999-12-31 is set aside and always named in the audit record."""
    result = _run(tp31())
    assert "ca-future" in json.dumps(result.skipped), result.skipped
    assert not [s for s in result.skipped if s.get("resource_type") == "engine"]


def test_tp33_control_high_magnesium_gives_r21() -> None:
    """§8 C17 control: the same transplant patient with Mg 2.5 mg/dL (> ULN 2.4) gets R21 info."""
    assert outcome(_run(tp33(mg=2.5))) == [("al-mg-binder-order", "info")]
