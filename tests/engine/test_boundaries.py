"""Both sides of every threshold and window (clinical-rules.md sections 2.5-2.7 and 3)."""

from __future__ import annotations

from typing import Any

import pytest

from .builders import IV, cond, draft, obs, outcome, patient, proc, ref_range, run


def _g5d() -> list[dict[str, Any]]:
    return [cond("N18.6"), proc("302497006", days=40)]


def _pair(ca: float, p: float, days: float = 1, **kw: Any) -> list[dict[str, Any]]:
    return [obs("ca", ca, days, specimen="s1", **kw), obs("p", p, days, specimen="s1", **kw),
            obs("alb", 4.0, days, specimen="s1")]


def ids(result: Any) -> list[str]:
    return [rule_id for rule_id, _ind in outcome(result)]


# --- Ca x P 70 (strict) and 55 (inclusive) -------------------------------------------------------------

@pytest.mark.parametrize(("ca", "p", "expected"), [
    (10.0, 7.0, [("caxp-above-target", "info")]),     # exactly 70.0: not R01, R02 in CKD
    (10.0, 7.001, [("caxp-high", "warning")]),
    (10.0, 5.5, [("caxp-above-target", "info")]),      # exactly 55.0 fails the KDOQI target
    (10.0, 5.49, []),
])
def test_caxp_thresholds_in_ckd(ca: float, p: float, expected: list[tuple[str, str]]) -> None:
    pth = [obs("pth", 200, 30)]
    assert outcome(run(patient(60), _g5d() + _pair(ca, p) + pth)) == expected


def test_r02_needs_ckd() -> None:
    """Without CKD there is no R02; the high phosphate is reported by R05 instead (§8 C1)."""
    assert ids(run(patient(60), _pair(10.0, 6.0))) == ["hyperphosphatemia"]


# --- recency windows of the pair (30 / 90 days) ---------------------------------------------------------

@pytest.mark.parametrize(("days", "expected"), [
    (30, [("caxp-high", "warning")]),
    (31, [("caxp-high", "info")]),
    (89.9, [("caxp-high", "info")]),
    (91, []),
])
def test_pair_age_windows(days: float, expected: list[tuple[str, str]]) -> None:
    assert outcome(run(patient(50), _pair(10.0, 7.5, days))) == expected


# --- age 13 --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("age", "expected"), [(12, []), (13, ["caxp-high"])])
def test_caxp_age_13(age: int, expected: list[str]) -> None:
    assert ids(run(patient(age), _pair(10.0, 7.5))) == expected


def test_child_fires_when_above_own_reference_range() -> None:
    """Under 13 only an age-banded range is the lab's own age-specific range (§8 C11)."""
    banded = [ref_range(4.0, 7.0, "mg/dL", age=(5, 12, "a"))]
    resources = [obs("ca", 10.0, 1, specimen="s1", ref=(8.8, 10.8)), obs("p", 7.5, 1, specimen="s1", ranges=banded),
                 obs("alb", 4.0, 1, specimen="s1")]
    assert ids(run(patient(8), resources)) == ["caxp-high"]


def test_child_adult_range_without_age_band_never_fires_caxp() -> None:
    """§8 C11: a range without an age band cannot make R01 fire under 13."""
    resources = [obs("ca", 10.0, 1, specimen="s1", ref=(8.8, 10.8)), obs("p", 7.5, 1, specimen="s1", ref=(4.0, 7.0)),
                 obs("alb", 4.0, 1, specimen="s1")]
    assert "caxp-high" not in ids(run(patient(8), resources))


# --- pairing: 24 h / 48 h / dialysis guard ----------------------------------------------------------------

@pytest.mark.parametrize(("hours", "expected"), [
    (47, [("caxp-high", "warning")]),
    (49, [("hyperphosphatemia", "info")]),   # no pair: P 7.5 > 5.5 in G5D stands alone
])
def test_pairing_48h(hours: float, expected: list[tuple[str, str]]) -> None:
    resources = _g5d() + [obs("ca", 10.0, 3, hours=0), obs("p", 7.5, 3, hours=-hours), obs("pth", 200, 20)]
    assert outcome(run(patient(60), resources)) == expected


@pytest.mark.parametrize(("hours", "indicator"), [(23, "critical"), (25, "warning")])
def test_fallback_pair_never_drives_critical(hours: float, indicator: str) -> None:
    resources = _g5d() + [obs("ca", 10.0, 2, hours=0), obs("p", 8.0, 2, hours=-hours)]
    result = run(patient(60), resources, "order-select", [draft("rx", "Calcium gluconate 1 g", route=IV)])
    assert outcome(result) == [("iv-calcium-order", indicator)]


def test_no_pair_across_a_dialysis_session() -> None:
    resources = [cond("N18.6"), proc("302497006", days=2), obs("ca", 10.0, 3), obs("p", 7.5, 1.5),
                 obs("pth", 200, 20)]
    assert ids(run(patient(60), resources)) == ["hyperphosphatemia"]


# --- calcium 10.2 / 12.0 ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("ca", "expected"), [
    (10.2, []),
    (10.21, [("hypercalcemia", "info")]),
    (11.99, [("hypercalcemia", "info")]),
    (12.0, [("hypercalcemia", "warning")]),
])
def test_hypercalcemia_thresholds(ca: float, expected: list[tuple[str, str]]) -> None:
    resources = _pair(ca, 3.0) + [obs("pth", 30, 5), obs("vitd", 40, 5)]
    assert outcome(run(patient(50), resources)) == expected


def test_corrected_calcium_drives_hypercalcemia() -> None:
    # TP18 arithmetic: 9.8 + 0.8 x (4.0 - 2.0) = 11.4
    resources = [cond("N18.4"), obs("ca", 9.8, 2, specimen="s"), obs("alb", 2.0, 2, specimen="s"),
                 obs("p", 4.0, 2, specimen="s"), obs("pth", 60, 10), obs("vitd", 40, 10)]
    result = run(patient(70), resources)
    assert outcome(result) == [("hypercalcemia", "info")]
    assert "11.4" in result.cards[0].card["summary"]


# --- phosphate 4.5 / 5.5 ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("p", "expected"), [(4.5, []), (4.51, ["hyperphosphatemia"])])
def test_phosphate_adult_threshold(p: float, expected: list[str]) -> None:
    assert ids(run(patient(40), [obs("p", p, 2)])) == expected


@pytest.mark.parametrize(("previous", "p", "expected"), [
    (6.0, 5.5, []), (6.0, 5.51, ["hyperphosphatemia"]),   # two results: both > 5.5 needed
    (None, 5.51, []), (None, 6.99, []), (None, 7.0, ["hyperphosphatemia"]),   # one result: >= 7.0 needed
])
def test_phosphate_g5d_target(previous: float | None, p: float, expected: list[str]) -> None:
    """R05 in CKD G5D needs the last two pre-dialysis P > 5.5 mg/dL, or one >= 7.0 (§8.0 / C1 volume gate)."""
    earlier = [obs("p", previous, 20)] if previous is not None else []
    resources = _g5d() + earlier + [obs("p", p, 2), obs("pth", 200, 20), obs("ca", 9.0, 10)]
    assert ids(run(patient(60), resources)) == expected


# --- PTH 9 x ULN ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("pth", "expected"), [(585, []), (585.5, [("pth-high", "info")])])
def test_pth_nine_times_uln(pth: float, expected: list[tuple[str, str]]) -> None:
    resources = _g5d() + _pair(9.0, 4.0) + [obs("pth", pth, 20)]
    assert outcome(run(patient(60), resources)) == expected


# --- 25-OH vitamin D 80 / 150 ng/mL ------------------------------------------------------------------------

@pytest.mark.parametrize(("vitd", "unit", "expected"), [
    (79.9, None, []),
    (80, None, [("vitamin-d-excess", "info")]),
    (149.9, None, [("vitamin-d-excess", "info")]),
    (150, None, [("vitamin-d-excess", "warning")]),
    (374.4, "nmol/L", [("vitamin-d-excess", "warning")]),   # = 150 ng/mL
])
def test_vitamin_d_thresholds(vitd: float, unit: str | None, expected: list[tuple[str, str]]) -> None:
    resources = _pair(9.5, 3.5) + [obs("vitd", vitd, 10, unit=unit)]
    assert outcome(run(patient(40), resources)) == expected


def test_vitamin_d_in_dialysis_downgraded_without_hypercalcemia() -> None:
    resources = _g5d() + _pair(9.0, 4.0) + [obs("vitd", 160, 10), obs("pth", 200, 20)]
    assert outcome(run(patient(60), resources)) == [("vitamin-d-excess", "info")]


# --- R03 windows --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("days", "expected"), [(89, []), (91, ["mineral-labs-due"])])
def test_r03_ca_p_window_g5d(days: float, expected: list[str]) -> None:
    resources = _g5d() + _pair(9.0, 4.0, days) + [obs("pth", 200, 20)]
    assert ids(run(patient(60), resources)) == expected


@pytest.mark.parametrize(("days", "expected"), [(179, []), (181, ["mineral-labs-due"])])
def test_r03_pth_window_g5d(days: float, expected: list[str]) -> None:
    resources = _g5d() + _pair(9.0, 4.0, 5) + [obs("pth", 200, days)]
    assert ids(run(patient(60), resources)) == expected


# --- R07 co-factor count ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("extra", "fires"), [
    ([], False),                                   # female only: one co-factor
    ([cond("E11.9")], True),                       # female + diabetes
])
def test_r07_needs_two_cofactors(extra: list[dict[str, Any]], fires: bool) -> None:
    resources = _g5d() + _pair(9.0, 7.0) + [obs("pth", 200, 20)] + extra
    assert ("calciphylaxis-risk" in ids(run(patient(60, "female"), resources))) is fires


# --- eGFR-based staging ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("first_days", "staged"), [(89, False), (91, True)])
def test_g4_by_sustained_egfr(first_days: float, staged: bool) -> None:
    resources = [obs("egfr", 25, first_days), obs("egfr", 24, 1)]
    result = run(patient(60), resources, "order-select", [draft("rx", "Aluminum hydroxide 320 MG Oral Tablet")])
    assert (outcome(result) == [("al-mg-binder-order", "info")]) is staged
