"""Clinical revision 2: both sides of every boundary that §8 (clinical-rules.md) introduces or moves.

Each test cites its C-change; numbers are §8's own. Thresholds are normative in mg/dL (§8 intro).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from cds_service.runtime import get_runtime
from tests.support import fhir_builders as fb
from tests.support.app import make_app

from .builders import (
    ACCESS_MEASUREMENT,
    ALBUMIN_DIALYSIS,
    CPT,
    CRRT,
    HEMODIALYSIS,
    HEMOPERFUSION_CPT,
    IV,
    PARATHYROIDECTOMY,
    PD_CATHETER_REMOVAL,
    PERITONEAL_DIALYSIS,
    RENAL_DIALYSIS,
    al_hydroxide_draft,
    born,
    ca_chloride,
    card,
    card_text,
    cond,
    crrt_fluid,
    draft,
    has_delete,
    infant,
    iv_gluconate,
    iv_sodium_phosphate,
    med,
    mg_oxide_draft,
    mg_sulfate_iv,
    obs,
    outcome,
    patient,
    pn_admixture,
    proc,
    ref_range,
    remove_only,
    run,
    service_request,
    warfarin_draft,
    when,
)
from .patients import tp12, tp22, tp26, tp29

R = list[dict[str, Any]]


def ids(result: Any) -> list[str]:
    return sorted(rule_id for rule_id, _ind in outcome(result))


def _text(card_json: dict[str, Any]) -> str:
    return str(card_json["summary"]) + "\n" + str(card_json["detail"])


def _recorded(result: Any, oid: str) -> bool:
    """The resource id is in the audit-facing record of the evaluation (skipped / set-aside values, §8 C6)."""
    found = [str(s.get("id", "")) for s in result.skipped]
    for item in getattr(result, "set_aside", None) or ():
        found.append(str(item.get("resource_id", "") if isinstance(item, dict) else getattr(item, "resource_id", "")))
    return any(f == oid or f.endswith("/" + oid) for f in found)


def _code_of(resource: dict[str, Any]) -> str:
    codings: list[dict[str, Any]] = (resource.get("code") or {}).get("coding") or [{}]
    return str(codings[0].get("code", ""))


def _g5d_conditions() -> R:
    """G5D without a dated session (N18.6 + Z99.2): every result is pre-dialysis (§8.0)."""
    return [cond("N18.6"), cond("Z99.2")]


def _hd() -> R:
    """G5D with a haemodialysis session two days ago (labs at d-1 are outside its post-dialysis window)."""
    return [cond("N18.6"), proc(HEMODIALYSIS, days=2)]


def _pair(ca: float, p: float, days: float = 1, *, hours: float = 0, alb: float | None = 4.0,
          spec: str = "s1") -> R:
    res = [obs("ca", ca, days, hours=hours, specimen=spec), obs("p", p, days, hours=hours, specimen=spec)]
    if alb is not None:
        res.append(obs("alb", alb, days, hours=hours, specimen=spec))
    return res


def _order(resources: R, drafts: list[dict[str, Any]], pt: dict[str, Any] | None = None,
           hook: str = "order-select", selections: list[str] | None = None) -> Any:
    return run(pt or patient(60), resources, hook, drafts, selections=selections)


def _r08(resources: R, pt: dict[str, Any] | None = None, d: dict[str, Any] | None = None) -> Any:
    return _order(resources, [d or iv_gluconate()], pt)


def _r09(resources: R, pt: dict[str, Any] | None = None) -> Any:
    return _order(resources, [iv_sodium_phosphate()], pt)


def _assert_lowered_to_info(result: Any, rule_id: str = "iv-calcium-order") -> dict[str, Any]:
    assert outcome(result) == [(rule_id, "info")]
    c = card(result, rule_id)
    assert not has_delete(c), [s["label"] for s in c["suggestions"]]
    return c


def _assert_tier_with_remove_last(result: Any, indicator: str, rule_id: str = "iv-calcium-order") -> None:
    assert outcome(result) == [(rule_id, indicator)]
    c = card(result, rule_id)
    labels = [s["label"] for s in c["suggestions"]]
    assert remove_only(c) == [len(labels) - 1], labels


# === C1: R05 whenever R01 and R02 did not fire ==========================================================


@pytest.mark.parametrize(("p", "expected"), [
    (7.0, [("hyperphosphatemia", "info")]),    # Ca x P exactly 70.0, no CKD: not R01, not R02 -> R05
    (7.01, [("caxp-high", "warning")]),        # 70.07 > 70: R01 (R05 folded)
])
def test_c1_pair_of_exactly_70_without_ckd_still_reports_phosphate(p: float, expected: list[tuple[str, str]]) -> None:
    """§8 C1: a pair of 70.0 exactly without CKD must not leave a high phosphate unreported."""
    assert outcome(run(patient(55), [obs("egfr", 95, 1), *_pair(10.0, p)])) == expected


@pytest.mark.parametrize(("p", "expected"), [(4.5, []), (4.51, [("hyperphosphatemia", "info")])])
def test_c1_adult_phosphate_threshold_with_a_pair(p: float, expected: list[tuple[str, str]]) -> None:
    """§8 C1 with §2.7: adult P > 4.5 mg/dL with a normal pair (Ca 9.5) and no CKD."""
    assert outcome(run(patient(55), [obs("egfr", 95, 1), *_pair(9.5, p)])) == expected


def _g5d_phosphates(values: list[tuple[float, float]]) -> R:
    """G5D, Ca 9.0 drawn 60 h before the latest P (no pair), PTH current; ``values`` = (P, days ago)."""
    res = [*_g5d_conditions(), obs("ca", 9.0, 3.5), obs("pth", 250, 40)]
    res += [obs("p", value, days) for value, days in values]
    return res


@pytest.mark.parametrize(("values", "fires"), [
    ([(7.0, 1)], True),                        # one result >= 7.0
    ([(6.9, 1)], False),                       # one result > 5.5 but < 7.0, nothing before it
    ([(5.6, 1), (5.6, 10)], True),             # the two most recent both > 5.5
    ([(5.6, 1), (5.5, 10)], False),            # the one before is not > 5.5
    ([(5.6, 1), (5.6, 89)], True),             # the one before within 90 days
    ([(5.6, 1), (5.6, 91)], False),            # the one before older than 90 days
])
def test_c1_g5d_alert_volume_gate(values: list[tuple[float, float]], fires: bool) -> None:
    """§8.0 high phosphate / C1 (D): in G5D, R05 needs the latest P >= 7.0, or it and the previous both > 5.5."""
    got = outcome(run(patient(64), _g5d_phosphates(values)))
    assert got == ([("hyperphosphatemia", "info")] if fires else [])


@pytest.mark.parametrize(("hours_after_end", "fires"), [(2, False), (7, True)])
def test_c1_gate_uses_pre_dialysis_phosphate_only(hours_after_end: float, fires: bool) -> None:
    """§8.0/C18: a P 7.5 drawn 2 h after a session ends is set aside; the latest pre-dialysis P is 5.0."""
    start = when(days=1, hours=12)          # session 36 h .. 32 h before NOW
    end = when(days=1, hours=8)
    res = [cond("N18.6"), proc(HEMODIALYSIS, period=(start, end)), obs("ca", 9.0, 4), obs("pth", 250, 40),
           obs("p", 5.0, 1, hours=14), obs("p", 7.5, 1, hours=8 - hours_after_end)]
    got = outcome(run(patient(64), res))
    assert got == ([("hyperphosphatemia", "info")] if fires else [])


@pytest.mark.parametrize(("ca", "hours_apart", "wording"), [
    (8.3, 0, True),      # total Ca < 8.4 mg/dL, same specimen
    (8.4, 0, False),     # not low
    (8.3, 25, False),    # low, but more than 24 h from the phosphate
])
def test_c1_low_calcium_wording(ca: float, hours_apart: float, wording: bool) -> None:
    """§8 C1: low calcium (same specimen or <= 24 h from the phosphate) adds the 'may be tolerated' sentence."""
    res = [obs("egfr", 95, 1), obs("p", 6.0, 1, specimen="s1"), obs("ca", ca, 1, hours=hours_apart, specimen="s2"),
           obs("alb", 4.0, 1, hours=hours_apart, specimen="s2")]
    if hours_apart == 0:
        res = [obs("egfr", 95, 1), *_pair(ca, 6.0)]
    result = run(patient(55), res)
    assert outcome(result) == [("hyperphosphatemia", "info")]
    detail = card(result, "hyperphosphatemia")["detail"]
    assert ("mild asymptomatic hypocalcemia may be tolerated" in detail) is wording


@pytest.mark.parametrize(("ionized", "wording"), [(1.11, True), (1.12, False)])
def test_c1_low_ionized_calcium_wording(ionized: float, wording: bool) -> None:
    """§8 C1: ionized calcium is judged first; low = below the default LLN 1.12 mmol/L."""
    res = [obs("egfr", 95, 1), *_pair(9.0, 6.0), obs("ica", ionized, 1)]
    result = run(patient(55), res)
    assert outcome(result) == [("hyperphosphatemia", "info")]
    assert ("mild asymptomatic hypocalcemia may be tolerated" in card(result, "hyperphosphatemia")["detail"]) is wording


# === C2: IV calcium indication markers and low-calcium markers ==========================================


@pytest.mark.parametrize(("k", "hours", "kind", "indicated"), [
    (6.0, 3, "k", True),
    (5.9, 3, "k", False),
    (7.1, 23, "k", True),
    (7.1, 25, "k", False),          # outside 24 h
    (6.5, 3, "k_blood", True),      # whole-blood potassium 6298-4 is accepted (§8.0 specimen exception)
])
def test_c2_potassium_indication_marker(k: float, hours: float, kind: str, indicated: bool) -> None:
    """§8 C2: K >= 6.0 mmol/L within 24 h -> info, no Remove; else TP22's Ca x P 76.3 is critical (§8.0)."""
    case = tp22(k=k, k_hours=hours, k_kind=kind)
    result = run(case["patient"], case["resources"], "order-select", case["drafts"])
    if indicated:
        c = _assert_lowered_to_info(result)
        assert re.search(r"\b(K|potassium)\s*" + re.escape(f"{k:.1f}"), c["summary"], re.IGNORECASE), c["summary"]
    else:
        _assert_tier_with_remove_last(result, "critical")


def _g5d_normal(ca: float = 9.0, p: float = 4.0, *, days: float = 1, hours: float = 0, alb: float = 4.0) -> R:
    """G5D (haemodialysis d-2) with a same-specimen pair: R08 tier T2 -> warning."""
    return [*_hd(), *_pair(ca, p, days, hours=hours, alb=alb)]


@pytest.mark.parametrize(("ionized", "hours", "low"), [
    (0.99, 2, True),
    (1.0, 2, False),
    (0.99, 25, False),      # ionized older than 24 h: the total 9.0 is used instead
])
def test_c2_ionized_low_calcium_marker(ionized: float, hours: float, low: bool) -> None:
    """§8 C2: ionized Ca < 1.0 mmol/L within 24 h, without TLS or hyperphosphatemia -> info, no Remove."""
    result = _r08([*_g5d_normal(), obs("ica", ionized, 0, hours=hours)])
    if low:
        _assert_lowered_to_info(result)
    else:
        _assert_tier_with_remove_last(result, "warning")


@pytest.mark.parametrize(("ca", "hours", "low"), [
    (7.4, 24, True),
    (7.5, 24, False),
    (7.4, 71, True),
    (7.4, 73, False),       # older than 72 h: no marker, the G5D tier stands
])
def test_c2_total_low_calcium_marker(ca: float, hours: float, low: bool) -> None:
    """§8 C2: corrected/total Ca < 7.5 mg/dL within 72 h is a low-calcium marker."""
    result = _r08(_g5d_normal(ca, 4.0, days=0, hours=hours))
    if low:
        _assert_lowered_to_info(result)
    else:
        _assert_tier_with_remove_last(result, "warning")


@pytest.mark.parametrize(("extra", "alb", "low"), [
    ([], 4.0, True),                                   # corrected = 7.0
    ([], 2.0, False),                                  # corrected 7.0 + 0.8 x 2.0 = 8.6: corrected wins over total
    ([obs("ica", 1.15, 0, hours=2)], 4.0, False),      # ionized (normal) wins over corrected/total
])
def test_c2_marker_precedence(extra: R, alb: float, low: bool) -> None:
    """§8.0 marker precedence: ionized <= 24 h, then corrected <= 72 h, then total <= 72 h."""
    result = _r08([*_g5d_normal(7.0, 4.0, alb=alb), *extra])
    if low:
        _assert_lowered_to_info(result)
    else:
        _assert_tier_with_remove_last(result, "warning")


@pytest.mark.parametrize(("p", "tier_alone"), [(6.5, "warning"), (10.1, "critical")])
def test_c2_low_calcium_with_hyperphosphatemia_is_warning_without_remove(p: float, tier_alone: str) -> None:
    """§8 C2: low-Ca marker + HYPERPHOSPHATEMIA (no TLS): `warning`, never critical, no Remove, C2 summary."""
    result = _r08(_g5d_normal(7.0, p))
    assert outcome(result) == [("iv-calcium-order", "warning")]
    c = card(result, "iv-calcium-order")
    assert not has_delete(c)
    assert f"P {p:.1f} mg/dL" in c["summary"]
    assert "lowest effective dose" in c["summary"]
    # Control: the same phosphate with a calcium that is not low keeps its tier (and Remove, last).
    control_ca = 9.0 if tier_alone == "warning" else 7.6
    _assert_tier_with_remove_last(_r08([*_hd(), *_pair(control_ca, p)]), tier_alone)


@pytest.mark.parametrize("extra", [[], [obs("k", 6.5, 0, hours=2)]])
def test_c2_markers_never_create_a_card(extra: R) -> None:
    """§8 C2/§8.0: markers only lower a card a tier would raise; low Ca or high K in a no-risk patient: no card."""
    res = [obs("egfr", 95, 1), obs("egfr", 96, 200), *_pair(7.0, 3.5), *extra]
    assert outcome(_r08(res)) == []


@pytest.mark.parametrize(("k", "expected"), [(6.0, "info"), (5.4, "warning")])
def test_c2_indication_marker_governs_over_tls(k: float, expected: str) -> None:
    """§8.0 marker precedence: an indication marker (K >= 6.0) governs over TLS + low calcium: info, no Remove."""
    case = tp12()
    case["resources"] = [r for r in case["resources"] if _code_of(r) != "2823-3"]
    case["resources"].append(obs("k", k, 0, specimen="s1"))
    result = run(case["patient"], case["resources"], "order-select", case["drafts"])
    if expected == "info":
        _assert_lowered_to_info(result)
    else:
        assert outcome(result) == [("iv-calcium-order", "warning")]


def _tp10_like() -> R:
    """G5D with Ca x P 78.0 same specimen d-1: R08 critical without a marker (§8.0)."""
    return [cond("N18.6"), proc(HEMODIALYSIS, days=3), *_pair(9.75, 8.0)]


@pytest.mark.parametrize(("days", "indicated"), [(29, True), (31, False)])
def test_c2_parathyroidectomy_within_30_days(days: float, indicated: bool) -> None:
    """§8 C2/§8.0: a completed parathyroidectomy within 30 days (hungry bone) is an indication marker."""
    res = [*_tp10_like(), proc(PARATHYROIDECTOMY, days=days, system=CPT, display="Parathyroidectomy")]
    result = _r08(res)
    if indicated:
        _assert_lowered_to_info(result)
    else:
        _assert_tier_with_remove_last(result, "critical")


@pytest.mark.parametrize(("extra", "indicated"), [
    ([proc(CRRT, status="in-progress", period=(when(2), None))], True),
    ([proc(CRRT, period=(when(3), when(0, hours=23)))], True),         # ended 23 h ago
    ([proc(CRRT, period=(when(3), when(1, hours=1)))], False),         # ended 25 h ago
    ([service_request(CRRT, "active", text="Continuous renal replacement therapy")], True),
    ([service_request(CRRT, "completed", text="Continuous renal replacement therapy")], False),
    ([med("Trisodium citrate 4% anticoagulant solution")], False),    # citrate without CRRT: no marker
])
def test_c2_crrt_and_citrate_markers(extra: R, indicated: bool) -> None:
    """§8.0 C2/C7 data: CRRT in progress or ended <= 24 h, or an active CRRT ServiceRequest, is a marker."""
    result = _r08([*_tp10_like(), *extra])
    if indicated:
        _assert_lowered_to_info(result)
    else:
        _assert_tier_with_remove_last(result, "critical")


def test_order_sign_makes_every_draft_a_trigger() -> None:
    """§8.0: on order-sign every draft MedicationRequest in draftOrders is a trigger (no selections)."""
    signed = _order(_tp10_like(), [iv_gluconate("rxs")], hook="order-sign", selections=[])
    assert outcome(signed) == [("iv-calcium-order", "critical")]
    unselected = _order(_tp10_like(), [iv_gluconate("rxs"), draft("other", "Paracetamol 1 g")],
                        selections=["MedicationRequest/other"])
    assert outcome(unselected) == []


# === §8.0 `critical` on IV orders =========================================================================


@pytest.mark.parametrize(("hours", "indicator"), [(47, "critical"), (49, "warning")])
def test_critical_needs_the_later_draw_within_48h(hours: float, indicator: str) -> None:
    """§8.0: Ca x P > 70 is critical only when the pair's later draw is <= 48 h before NOW."""
    # G5D without a dated session, so no sample is post-dialysis (§8.0).
    _assert_tier_with_remove_last(_r08([*_g5d_conditions(), *_pair(9.75, 8.0, 0, hours=hours)]), indicator)


@pytest.mark.parametrize(("gap", "indicator"), [(23, "critical"), (25, "warning")])
def test_critical_needs_a_pair_drawn_within_24h(gap: float, indicator: str) -> None:
    """§8.0 (§2.5.3 stands): a pair drawn more than 24 h apart never drives a critical card."""
    res = [*_hd(), obs("ca", 9.75, 0, hours=2), obs("p", 8.0, 0, hours=2 + gap)]
    _assert_tier_with_remove_last(_r08(res), indicator)


@pytest.mark.parametrize(("ca", "hours", "indicator"), [
    (12.0, 24, "critical"),
    (11.9, 24, "warning"),
    (12.0, 71, "critical"),
    (12.0, 73, "warning"),      # older than 72 h: hypercalcemia (<= 7 d) keeps T2
])
def test_critical_total_calcium_12_within_72h(ca: float, hours: float, indicator: str) -> None:
    """§8.0: total/corrected Ca >= 12.0 mg/dL within 72 h makes R08 critical (C10 keeps 12.0 for R08/R09)."""
    res = [obs("egfr", 95, 1), obs("egfr", 96, 200), *_pair(ca, 2.8, 0, hours=hours)]
    _assert_tier_with_remove_last(_r08(res), indicator)


@pytest.mark.parametrize(("ionized", "indicator"), [(1.6, "critical"), (1.59, "warning")])
def test_critical_ionized_calcium_1_6(ionized: float, indicator: str) -> None:
    """§8.0: ionized Ca >= 1.6 mmol/L within 72 h is critical; 1.59 is hypercalcemia (T2 warning)."""
    res = [obs("egfr", 95, 1), *_pair(9.5, 3.0), obs("ica", ionized, 0, hours=2)]
    _assert_tier_with_remove_last(_r08(res), indicator)


@pytest.mark.parametrize(("days", "expected"), [(6, [("iv-phosphate-order", "critical")]), (8, [])])
def test_critical_r09_hyperphosphatemia_current_7_days(days: float, expected: list[tuple[str, str]]) -> None:
    """§8.0: for R09 HYPERPHOSPHATEMIA (current, <= 7 d) is critical; older results do not count on order hooks."""
    res = [obs("egfr", 95, 1), obs("egfr", 96, 200), *_pair(9.0, 4.6, days)]
    assert outcome(_r09(res)) == expected


# === C3: IV phosphate and hypophosphatemia ==============================================================


def _r09_g5d(p: float, *, hours: float = 24, kind: str = "p", extra: R | None = None, ca: float = 8.9) -> Any:
    res = [*_hd(), obs(kind, p, 0, hours=hours, specimen="s1"),
           obs("ca", ca, 0, hours=hours, specimen="s1"), obs("alb", 4.0, 0, hours=hours, specimen="s1")]
    return _r09(res + (extra or []))


@pytest.mark.parametrize(("p", "unit", "hours", "low"), [
    (2.4, None, 24, True),
    (2.5, None, 24, False),
    (0.80, "mmol/L", 24, True),       # 0.80 x 3.097 = 2.48 mg/dL
    (0.81, "mmol/L", 24, False),      # 2.509 mg/dL: compare after converting (§8.0 C3 details)
    (2.4, None, 71, True),
    (2.4, None, 73, False),           # older than 72 h
])
def test_c3_hypophosphatemia_lowers_r09(p: float, unit: str | None, hours: float, low: bool) -> None:
    """§8 C3: the latest pre-dialysis P within 72 h < 2.5 mg/dL -> R09 at most info, no Remove."""
    result = _r09_g5d(p, hours=hours, kind="p_si" if unit == "mmol/L" else "p")
    if low:
        c = _assert_lowered_to_info(result, "iv-phosphate-order")
        assert "hyperphosphatemia" not in c["summary"].lower()
    else:
        _assert_tier_with_remove_last(result, "warning", "iv-phosphate-order")


@pytest.mark.parametrize(("p", "severe"), [(0.99, True), (1.0, False)])
def test_c3_severe_wording_below_1_0(p: float, severe: bool) -> None:
    """§8 C3: P < 1.0 mg/dL -> "severe hypophosphatemia – IV replacement reasonable"; 1.0-2.4 -> oral route."""
    c = _assert_lowered_to_info(_r09_g5d(p), "iv-phosphate-order")
    if severe:
        assert "severe hypophosphatemia" in c["summary"]
        assert "IV replacement reasonable" in c["summary"]
    else:
        assert "severe" not in c["summary"].lower()
        assert "consider the oral route" in c["summary"]


@pytest.mark.parametrize(("extra", "ca", "indicator"), [
    ([], 10.5, "warning"),                                            # hypercalcemia: tiers unchanged
    ([obs("ica", 0.99, 0, hours=2)], 8.9, "warning"),                 # ionized < 1.0: tiers unchanged
    ([cond("E83.59", text="Calciphylaxis")], 8.9, "critical"),        # CALCIPHYLAXIS_DX: critical (§8.0)
])
def test_c3_exceptions_keep_the_tiers(extra: R, ca: float, indicator: str) -> None:
    """§8 C3: with hypercalcemia, ionized < 1.0 or calciphylaxis the tiers apply; no hyperphosphatemia claimed."""
    result = _r09_g5d(2.0, extra=extra, ca=ca)
    _assert_tier_with_remove_last(result, indicator, "iv-phosphate-order")
    assert "hyperphosphatemia" not in card(result, "iv-phosphate-order")["summary"].lower()


@pytest.mark.parametrize(("hours_after_end", "low"), [(1, False), (7, True)])
def test_c3_uses_the_latest_pre_dialysis_phosphate(hours_after_end: float, low: bool) -> None:
    """§8 C3/C18: a low P drawn 1 h after a session is set aside; the pre-dialysis P 4.0 is used."""
    start, end = when(days=1, hours=12), when(days=1, hours=8)
    res = [cond("N18.6"), proc(HEMODIALYSIS, period=(start, end)), obs("p", 4.0, 1, hours=14),
           obs("ca", 8.9, 1, hours=14), obs("p", 2.0, 1, hours=8 - hours_after_end)]
    result = _r09(res)
    if low:
        _assert_lowered_to_info(result, "iv-phosphate-order")
    else:
        _assert_tier_with_remove_last(result, "warning", "iv-phosphate-order")


# === C4: calcinosis cutis is not calciphylaxis ===========================================================


def test_c4_calcinosis_cutis_with_g5d_is_warning_not_critical() -> None:
    """§8 C4/§8.0: L94.2 never makes a card critical; G5D gives the T2 warning; no "calciphylaxis" wording."""
    result = _r08([*_g5d_normal(), cond("L94.2")])
    _assert_tier_with_remove_last(result, "warning")
    assert "calciphylaxis" not in card_text(card(result, "iv-calcium-order")).lower()


def test_c4_calcinosis_cutis_alone_gives_r09_info() -> None:
    """§8 C4: an active L94.2 with no other tier gives R09 `info`, naming calcinosis cutis."""
    result = _r09([obs("egfr", 95, 1), obs("egfr", 96, 200), *_pair(9.2, 3.5), cond("L94.2")])
    assert outcome(result) == [("iv-phosphate-order", "info")]
    c = card(result, "iv-phosphate-order")
    assert "calcinosis cutis" in _text(c).lower()
    assert "calciphylaxis" not in card_text(c).lower()


@pytest.mark.parametrize(("dx", "r07"), [
    (cond("L94.2"), True),                                  # R07 is replaced by R20 only for CALCIPHYLAXIS_DX
    (cond("E83.59", text="Calciphylaxis"), False),
])
def test_c4_r20_names_the_diagnosis_and_r07_replacement(dx: dict[str, Any], r07: bool) -> None:
    """§8 C4: R20 keeps both diagnoses, each named correctly; R07 is replaced by R20 only for calciphylaxis."""
    res = [*_g5d_conditions(), cond("E11.9"), obs("bmi", 32, 20), obs("pth", 300, 30), *_pair(9.0, 7.5), dx]
    result = run(patient(62, "female"), res)
    got = ids(result)
    assert "documented-calcinosis" in got
    assert ("calciphylaxis-risk" in got) is r07
    text = card_text(card(result, "documented-calcinosis")).lower()
    if r07:
        assert "calcinosis cutis" in text
        assert "calciphylaxis" not in card(result, "documented-calcinosis")["summary"].lower()
    else:
        assert "calciphylaxis" in text


# === C5: what counts as dialysis ============================================================================


def _c5_patient(extra: R) -> Any:
    """No CKD condition; Ca 10.0 x P 6.0 = 60 d-1; PTH current. G5D -> R02; otherwise -> R05 (C1)."""
    return run(patient(57), [*_pair(10.0, 6.0), obs("pth", 200, 30), *extra])


G5D_OUTCOME = [("caxp-above-target", "info")]
NOT_G5D_OUTCOME = [("hyperphosphatemia", "info")]


@pytest.mark.parametrize(("hours_inside", "g5d"), [(1, True), (-1, False)])
def test_c5_dialysis_within_30_days_tests_the_end(hours_inside: float, g5d: bool) -> None:
    """§8 C5/§8.0: a dialysis Procedure is current when its end is within 30 days (± 1 h)."""
    end = when(days=30, hours=-hours_inside)
    start = when(days=30, hours=-hours_inside + 4)
    got = outcome(_c5_patient([proc(HEMODIALYSIS, period=(start, end))]))
    assert got == (G5D_OUTCOME if g5d else NOT_G5D_OUTCOME)


@pytest.mark.parametrize(("resource", "g5d"), [
    (proc(HEMODIALYSIS, days=2), True),
    (proc(PERITONEAL_DIALYSIS, days=2), True),
    (proc(CRRT, days=2), True),
    (proc(PD_CATHETER_REMOVAL, days=2), False),
    (proc(ALBUMIN_DIALYSIS, days=2), False),
    (proc(HEMOPERFUSION_CPT, days=2, system=CPT), False),
    (proc(ACCESS_MEASUREMENT, days=2), False),
    (proc(HEMODIALYSIS, performed_string="2019, at the old unit"), False),   # undated: history
    (proc(HEMODIALYSIS, undated=True), False),
])
def test_c5_dialysis_procedure_value_set(resource: dict[str, Any], g5d: bool) -> None:
    """§8 C5: only treatments count as dialysis; access/catheter procedures, albumin dialysis, hemoperfusion,
    and undated Procedures do not."""
    got = outcome(_c5_patient([resource]))
    assert got == (G5D_OUTCOME if g5d else NOT_G5D_OUTCOME)


@pytest.mark.parametrize(("extra", "replace_z992", "g5d"), [
    ([], None, False),                                                  # TP26: transplant wins
    ([proc(HEMODIALYSIS, days=10)], None, True),                        # dialysis within 30 days
    ([cond("T86.12")], None, True),                                     # graft failure
    ([cond("T86.11")], None, True),                                     # graft rejection
    ([], cond("Z99.2", onset_days=6 * 365, recorded_days=1), False),   # onset is the evidence date, not recorded
    ([], cond("Z99.2", onset_days=400), True),                          # tie with Z94.0 (d-400): dialysis wins
])
def test_c5_transplant_wins_over_stale_dialysis(extra: R, replace_z992: dict[str, Any] | None, g5d: bool) -> None:
    """§8 C5: KIDNEY_TX evidence newer than every dialysis evidence, no dialysis <= 30 d and no T86.11/T86.12
    -> KIDNEY_TX with the eGFR stage (G3: no R03), not G5D (R03 for the missing PTH, dialysis wording)."""
    case = tp26(extra)
    if replace_z992 is not None:
        case["resources"] = [r for r in case["resources"] if _code_of(r) != "Z99.2"]
        case["resources"].append(replace_z992)
    result = run(case["patient"], case["resources"])
    assert ("mineral-labs-due" in ids(result)) is g5d, outcome(result)
    if not g5d:
        assert outcome(result) == [("hypercalcemia", "info")]
        assert "dialysis" not in card_text(card(result, "hypercalcemia")).lower()


def test_c5_undated_transplant_counts_as_older() -> None:
    """§8.0: undated evidence counts as older than any dated evidence: an undated Z94.0 loses to Z99.2."""
    case = tp26()
    case["resources"] = [r for r in case["resources"] if _code_of(r) != "Z94.0"]
    case["resources"].append(cond("Z94.0"))
    assert "mineral-labs-due" in ids(run(case["patient"], case["resources"]))


# === C6: plausibility ranges and dates ======================================================================


def _adult_no_ckd(*res: dict[str, Any]) -> R:
    return [obs("egfr", 95, 1), obs("egfr", 96, 200), *res]


def _plausibility_cases() -> list[tuple[str, Any, Any, list[str], list[str]]]:
    """(name, inside-run, outside-run, ids inside, ids outside); each pair differs only in one value."""

    def pv(resources: R) -> Any:
        return run(patient(50), resources)

    def ca_upper(x: float) -> Any:
        return pv(_adult_no_ckd(obs("ca", x, 1, specimen="s1", oid="v"), obs("p", 3.0, 1, specimen="s1"),
                                obs("alb", 4.0, 1, specimen="s1")))

    def ca_lower(x: float) -> Any:
        return pv(_adult_no_ckd(obs("ca", x, 1, specimen="s1", oid="v"), obs("p", 3.0, 1, specimen="s1")))

    def p_upper(x: float) -> Any:
        return pv(_adult_no_ckd(*_pair(9.0, 3.0, 5), obs("ca", 9.0, 1, specimen="s9"),
                                obs("p", x, 1, specimen="s9", oid="v")))

    def p_lower(x: float) -> Any:
        return _r09([*_hd(), obs("p", x, 1, specimen="s1", oid="v"), obs("ca", 8.9, 1, specimen="s1")])

    def ica_upper(x: float) -> Any:
        return pv(_adult_no_ckd(obs("ica", x, 1, oid="v")))

    def ica_lower(x: float) -> Any:
        return _r08([*_g5d_normal(), obs("ica", x, 0, hours=2, oid="v")])

    def alb(ca: float) -> Any:
        return lambda x: pv(_adult_no_ckd(obs("ca", ca, 1, specimen="s1"), obs("p", 3.0, 1, specimen="s1"),
                                          obs("alb", x, 1, specimen="s1", oid="v")))

    def pth(x: float) -> Any:
        return pv([*_g5d_conditions(), *_pair(9.2, 5.0), obs("pth", x, 30, oid="v")])

    def potassium(x: float) -> Any:
        case = tp22(k=x)
        case["resources"][-1]["id"] = "v"
        return run(case["patient"], case["resources"], "order-select", case["drafts"])

    def mg_lower(x: float) -> Any:
        return _order([cond("N18.4"), obs("mg", x, 3, oid="v")], [mg_oxide_draft()])

    def mg_upper(x: float) -> Any:
        return _order(_adult_no_ckd(obs("mg", x, 3, oid="v")), [mg_oxide_draft()])

    def vitd(x: float) -> Any:
        return pv(_adult_no_ckd(obs("vitd", x, 5, oid="v")))

    return [
        ("total Ca 25 mg/dL", ca_upper(25.0), ca_upper(25.1), ["caxp-high"], []),
        ("total Ca 2 mg/dL", ca_lower(2.0), ca_lower(1.99), ["albumin-needed"], []),
        ("P 30 mg/dL", p_upper(30.0), p_upper(30.1), ["caxp-high"], []),
        ("P 0.1 mg/dL", p_lower(0.1), p_lower(0.09), ["iv-phosphate-order"], ["iv-phosphate-order"]),
        ("ionized 5 mmol/L", ica_upper(5.0), ica_upper(5.01), ["hypercalcemia"], []),
        ("ionized 0.3 mmol/L", ica_lower(0.3), ica_lower(0.29), ["iv-calcium-order"], ["iv-calcium-order"]),
        ("albumin 0.5 g/dL", alb(9.0)(0.5), alb(9.0)(0.49), ["hypercalcemia"], []),
        ("albumin 8 g/dL", alb(12.0)(8.0), alb(12.0)(8.1), [], ["hypercalcemia"]),
        ("PTH 10,000 pg/mL", pth(10000), pth(10001), ["pth-high"], ["mineral-labs-due"]),
        ("PTH 0 pg/mL", pth(0), pth(-0.1), [], ["mineral-labs-due"]),
        ("K 12 mmol/L", potassium(12.0), potassium(12.1), ["iv-calcium-order"], ["iv-calcium-order"]),
        ("Mg 0.2 mg/dL", mg_lower(0.2), mg_lower(0.19), [], ["al-mg-binder-order"]),
        ("Mg 20 mg/dL", mg_upper(20.0), mg_upper(20.1), ["al-mg-binder-order"], []),
        ("25-OH D 1000 ng/mL", vitd(1000), vitd(1001), ["vitamin-d-excess"], []),
    ]


PLAUSIBILITY = _plausibility_cases()


@pytest.mark.parametrize(("name", "inside", "outside", "ids_inside", "ids_outside"), PLAUSIBILITY,
                         ids=[c[0] for c in PLAUSIBILITY])
def test_c6_plausibility_edges(name: str, inside: Any, outside: Any, ids_inside: list[str],
                               ids_outside: list[str]) -> None:
    """§8 C6: a value just inside the plausibility range is used; just outside it is skipped and recorded."""
    assert ids(inside) == ids_inside, (name, outcome(inside))
    assert ids(outside) == ids_outside, (name, outcome(outside))
    assert not _recorded(inside, "v")
    assert _recorded(outside, "v"), (name, outside.skipped)
    if name in ("P 0.1 mg/dL", "ionized 0.3 mmol/L", "K 12 mmol/L"):
        # same card, different indicator: the outside value was not used
        assert outcome(inside)[0][1] == "info"
        assert outcome(outside)[0][1] in ("warning", "critical")


@pytest.mark.parametrize(("hours_ahead", "used"), [(23, True), (25, False)])
def test_c6_future_dates_beyond_24h_are_skipped(hours_ahead: float, used: bool) -> None:
    """§8 C6: a result dated more than 24 h in the future is skipped (not fatal)."""
    res = _adult_no_ckd(obs("ca", 10.4, 0, hours=-hours_ahead, specimen="s1", oid="fa"),
                        obs("p", 7.2, 0, hours=-hours_ahead, specimen="s1", oid="fb"))
    result = run(patient(50), res)
    assert ids(result) == (["caxp-high"] if used else [])
    assert _recorded(result, "fa") is not used


@pytest.mark.parametrize(("date", "skipped"), [("1899-12-31T00:00:00Z", True), ("1900-01-01T12:00:00Z", False)])
def test_c6_dates_before_1900_are_skipped(date: str, skipped: bool) -> None:
    """§8 C6: a result dated before 1900 is skipped and recorded; the current pair still fires R01."""
    res = _adult_no_ckd(*_pair(10.4, 7.2), obs("ca", 9.0, at=date, oid="old"))
    result = run(patient(50), res)
    assert ids(result) == ["caxp-high"]
    assert _recorded(result, "old") is skipped


def test_c6_implausible_value_is_named_as_ignored_on_the_card_that_fires() -> None:
    """§8 C6: values set aside are named in the detail of the cards that fire ("ignored")."""
    res = _adult_no_ckd(*_pair(10.4, 7.2), obs("ca", 30.0, 0, hours=2, oid="big"))
    result = run(patient(50), res)
    assert ids(result) == ["caxp-high"]
    detail = card(result, "caxp-high")["detail"]
    assert re.search(r"ignored", detail, re.IGNORECASE)
    assert "30" in detail


# === C7: ICU and parenteral nutrition ========================================================================


def test_c7_pn_admixture_is_at_most_info_on_both_classes() -> None:
    """§8 C7: a PN admixture with calcium and phosphate raises R08 and R09 to at most `info` (G5D: T2)."""
    assert outcome(_r08(_g5d_normal())) == [("iv-calcium-order", "warning")]   # control: plain IV calcium
    result = _order(_g5d_normal(), [pn_admixture()])
    assert sorted(outcome(result)) == [("iv-calcium-order", "info"), ("iv-phosphate-order", "info")]


def test_c7_pn_admixture_in_a_critical_patient_keeps_critical() -> None:
    """§8 C7: "at most info unless a critical condition holds" (interpretation: the §8.0 critical conditions)."""
    result = _order(_tp10_like(), [pn_admixture(phosphate=False)])
    assert outcome(result) == [("iv-calcium-order", "critical")]


@pytest.mark.parametrize("text", [
    "Prismasol BGK 4/2.5 replacement fluid (calcium chloride 2.5 mEq/L)",
    "Phoxillum BK4/2.5 replacement fluid with calcium and phosphate",
    "CRRT dialysate with calcium chloride 3.0 mEq/L",
])
def test_c7_crrt_fluid_never_triggers(text: str) -> None:
    """§8 C7/§8.0: CRRT replacement fluids and dialysate are never orders for R08/R09."""
    assert outcome(_order(_tp10_like(), [crrt_fluid(text=text)])) == []
    assert outcome(_order(_tp10_like(), [ca_chloride(route=IV)]))[0][0] == "iv-calcium-order"  # control


@pytest.fixture
def http_app(tmp_path: Path) -> Iterator[Flask]:
    """The real app (dev mode, SQLite audit log): the once-per-24 h state lives in the audit log."""
    app = make_app(tmp_path)
    yield app
    get_runtime(app).close()


def _order_select_http(app: Flask, pid: str, resources: R, drafts: R) -> list[tuple[str, str]]:
    by_type: dict[str, R] = {}
    for r in resources:
        by_type.setdefault(r["resourceType"], []).append(r)
    services = app.test_client().get("/cds-services").get_json()["services"]
    keys = next(s for s in services if s["id"] == "calcinosis-order-select")["prefetch"]
    prefetch: dict[str, Any] = {}
    used: set[str] = set()
    for key, template in keys.items():
        rtype = template.split("?")[0].split("/")[0]
        prefetch[key] = by_type["Patient"][0] if rtype == "Patient" else fb.searchset(
            [] if rtype in used else by_type.get(rtype, []))
        used.add(rtype)
    body = fb.hook_request("order-select", pid, prefetch=prefetch, drafts=drafts)
    response = app.test_client().post("/cds-services/calcinosis-order-select", json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    return sorted((c["source"]["topic"]["code"], c["indicator"]) for c in response.get_json()["cards"])


def test_c7_pn_card_at_most_once_per_24h_per_patient(http_app: Flask) -> None:
    """§8 C7: a parenteral-nutrition card is shown at most once per 24 h per patient (a new PN draft included);
    an ordinary IV calcium order is not affected."""
    pid = f"pt-{uuid.uuid4().hex[:10]}"
    resources = [fb.patient(pid, age_years=60), fb.condition(pid, f"{pid}-esrd", "N18.6"),
                 fb.condition(pid, f"{pid}-z992", "Z99.2"),
                 fb.lab(pid, f"{pid}-ca", "17861-6", 9.0, "mg/dL", days_ago=1, specimen="s1"),
                 fb.lab(pid, f"{pid}-p", "2777-1", 4.0, "mg/dL", days_ago=1, specimen="s1")]

    def pn(oid: str) -> dict[str, Any]:
        return pn_admixture(oid) | {"subject": {"reference": f"Patient/{pid}"}}

    first = _order_select_http(http_app, pid, resources, [pn(f"{pid}-pn1")])
    assert first == [("iv-calcium-order", "info"), ("iv-phosphate-order", "info")]
    second = _order_select_http(http_app, pid, resources, [pn(f"{pid}-pn2")])
    assert second == []
    gluconate = iv_gluconate(f"{pid}-ca1") | {"subject": {"reference": f"Patient/{pid}"}}
    assert _order_select_http(http_app, pid, resources, [gluconate]) == [("iv-calcium-order", "warning")]


# === C8: PTH in pmol/L =======================================================================================


@pytest.mark.parametrize(("pmol", "expected"), [(62.1, [("pth-high", "info")]), (62.0, [])])
def test_c8_pth_pmol_converted_with_9_43(pmol: float, expected: list[tuple[str, str]]) -> None:
    """§8 C8: 14866-8 pmol/L x 9.43 -> pg/mL; 62.1 -> 585.6 > 9 x 65 (R06 in G5D); 62.0 -> 584.7."""
    res = [*_g5d_conditions(), *_pair(9.2, 5.0), obs("pth_si", pmol, 30)]
    assert outcome(run(patient(60), res)) == expected


# === C9: ionized wording =====================================================================================


@pytest.mark.parametrize(("ionized", "ref_high", "threshold"), [
    (1.33, None, r"1\.32 mmol/L"),
    (1.31, 1.30, r"1\.30? mmol/L"),
])
def test_c9_ionized_hypercalcemia_states_the_ionized_threshold(ionized: float, ref_high: float | None,
                                                                threshold: str) -> None:
    """§8 C9: hypercalcemia resting on ionized Ca states the ionized threshold (lab ULN, else 1.32), never 10.2."""
    ref = (1.12, ref_high) if ref_high else None
    result = run(patient(50), _adult_no_ckd(obs("ica", ionized, 1, ref=ref)))
    assert outcome(result) == [("hypercalcemia", "info")]
    text = _text(card(result, "hypercalcemia"))
    assert re.search(threshold, text), text
    assert "10.2" not in text


def test_c9_ionized_at_the_threshold_is_not_hypercalcemia() -> None:
    """§8 C9/§2.4: ionized 1.32 mmol/L is not above the default ULN."""
    assert outcome(run(patient(50), _adult_no_ckd(obs("ica", 1.32, 1)))) == []


# === C10: hypercalcemia grades ===============================================================================


@pytest.mark.parametrize(("ca", "indicator", "grade"), [
    (11.9, "info", "mild"),
    (12.0, "warning", "moderate"),
    (13.9, "warning", "moderate"),
    (14.0, "warning", "severe"),
])
def test_c10_total_calcium_grades(ca: float, indicator: str, grade: str) -> None:
    """§8 C10: mild > 10.2 to < 12.0; moderate 12.0 to < 14.0; severe >= 14.0; R04 warning from 12.0."""
    result = run(patient(50), _adult_no_ckd(*_pair(ca, 3.0)))
    assert outcome(result) == [("hypercalcemia", indicator)]
    c = card(result, "hypercalcemia")
    if grade != "mild":
        assert grade in c["summary"].lower(), c["summary"]
    if grade != "severe":
        assert "severe" not in c["summary"].lower()
        assert not re.search(r"severe\s+hypercalc", c["detail"], re.IGNORECASE)


@pytest.mark.parametrize(("ionized", "grade"), [(1.59, "mild"), (1.6, "moderate"), (1.99, "moderate"),
                                                 (2.0, "severe")])
def test_c10_ionized_grades(ionized: float, grade: str) -> None:
    """§8 C10: ionized moderate >= 1.6, severe >= 2.0 mmol/L (D)."""
    result = run(patient(50), _adult_no_ckd(obs("ica", ionized, 1)))
    c = card(result, "hypercalcemia")
    if grade == "mild":
        assert c["indicator"] == "info"
        assert not re.search(r"moderate|severe", c["summary"], re.IGNORECASE)
    else:
        assert c["indicator"] == "warning"
        assert grade in c["summary"].lower()
        if grade == "moderate":
            assert "severe" not in c["summary"].lower()


# === C11: children and adolescents ==========================================================================


@pytest.mark.parametrize(("days_after_13th_birthday", "fires"), [(0, True), (-1, False)])
def test_c11_r01_at_13_years(days_after_13th_birthday: int, fires: bool) -> None:
    """§8 C11/§2.5.7: R01 from age 13; at 12 (13 tomorrow) an adult range without an age band cannot fire it."""
    pt = born(13, days_after_13th_birthday)
    assert ids(run(pt, _pair(10.0, 7.5))) == (["caxp-high"] if fires else [])


@pytest.mark.parametrize(("days_after_13th_birthday", "fires"), [(0, True), (-1, False)])
def test_c11_r02_at_13_years(days_after_13th_birthday: int, fires: bool) -> None:
    """§8 C11: R02 (CKD, Ca x P >= 55) from age 13."""
    res = [cond("N18.4"), *_pair(10.0, 6.0), obs("pth", 100, 30)]
    got = outcome(run(born(13, days_after_13th_birthday), res))
    assert got == ([("caxp-above-target", "info")] if fires else [])


@pytest.mark.parametrize(("days_after_18th_birthday", "fires"), [(0, True), (-1, False)])
def test_c11_r05_at_18_years(days_after_18th_birthday: int, fires: bool) -> None:
    """§8 C11: under 18, R05 uses only an age-banded range; an adult P 5.0 (> 4.5) fires from 18."""
    res = _adult_no_ckd(*_pair(9.0, 5.0))
    got = outcome(run(born(18, days_after_18th_birthday), res))
    assert got == ([("hyperphosphatemia", "info")] if fires else [])


@pytest.mark.parametrize(("days_after_18th_birthday", "fires"), [(0, True), (-1, False)])
def test_c11_r04_uses_the_age_banded_uln_under_18(days_after_18th_birthday: int, fires: bool) -> None:
    """§8 C11: R04 in children uses an age-banded ULN (10.8 for 10-30 a); adults use 10.2."""
    band = ref_range(8.8, 10.8, "mg/dL", age=(10, 30, "a"))
    res = _adult_no_ckd(obs("ca", 10.5, 1, specimen="s1", ranges=[band]), obs("p", 3.5, 1, specimen="s1"),
                        obs("alb", 4.0, 1, specimen="s1"))
    got = outcome(run(born(18, days_after_18th_birthday), res))
    assert got == ([("hypercalcemia", "info")] if fires else [])


@pytest.mark.parametrize(("ranges", "interpretation", "fires"), [
    ([ref_range(2.9, 4.8, "mg/dL", age=(10, 18, "a"))], None, True),     # banded ULN covering 15 years
    ([ref_range(2.9, 4.8, "mg/dL", age=(1, 5, "a"))], None, False),      # band does not cover the patient
    ([ref_range(2.5, 4.5, "mg/dL")], None, False),                      # no band: not age-specific
    (None, "H", False),                                                  # H without an age-banded range
])
def test_c11_adolescent_phosphate(ranges: list[dict[str, Any]] | None, interpretation: str | None,
                                  fires: bool) -> None:
    """§8 C11: at 15, R05 fires only on an age-banded range covering the age (or H/HH with one)."""
    res = _adult_no_ckd(obs("p", 5.0, 1, specimen="s1", ranges=ranges, interpretation=interpretation),
                        obs("ca", 9.0, 1, specimen="s1"), obs("alb", 4.0, 1, specimen="s1"))
    got = outcome(run(patient(15), res))
    assert got == ([("hyperphosphatemia", "info")] if fires else [])


@pytest.mark.parametrize(("unit", "covering", "not_covering"), [
    ("a", (1, 3), (5, 12)),
    ("mo", (12, 36), (60, 144)),
    ("wk", (52, 156), (260, 624)),
    ("d", (365, 1095), (1825, 4380)),
])
def test_c11_age_band_units(unit: str, covering: tuple[int, int], not_covering: tuple[int, int]) -> None:
    """§8 C11: `referenceRange.age` units a/mo/wk/d are honoured (a 2-year-old; P 7.5 above a banded 7.0)."""

    def child(band: tuple[int, int]) -> Any:
        rng = ref_range(4.0, 7.0, "mg/dL", age=(band[0], band[1], unit))
        return run(patient(2), [obs("ca", 10.0, 1, specimen="s1"), obs("p", 7.5, 1, specimen="s1", ranges=[rng]),
                                obs("alb", 4.0, 1, specimen="s1")])

    assert "caxp-high" in ids(child(covering))
    assert ids(child(not_covering)) == []


@pytest.mark.parametrize(("ca", "expected"), [(12.0, [("hypercalcemia", "warning")]), (11.9, [])])
def test_c11_under_one_year_only_r04_at_12(ca: float, expected: list[tuple[str, str]]) -> None:
    """§8 C11: under 1 year only R04 at total Ca >= 12.0 fires on patient-view (not R01/R05 on banded P)."""
    p_band = ref_range(4.8, 8.0, "mg/dL", age=(0, 12, "mo"))
    ca_band = ref_range(8.8, 11.0, "mg/dL", age=(0, 12, "mo"))
    res = [obs("ca", ca, 1, specimen="s1", ranges=[ca_band]), obs("p", 9.0, 1, specimen="s1", ranges=[p_band]),
           obs("alb", 4.0, 1, specimen="s1")]
    assert outcome(run(infant(6), res)) == expected


@pytest.mark.parametrize(("months", "expected"), [(13, [("hypercalcemia", "info")]), (11, [])])
def test_c11_one_year_boundary_for_r04(months: int, expected: list[tuple[str, str]]) -> None:
    """§8 C11: at 13 months R04 uses the age-banded ULN (10.8); at 11 months only Ca >= 12.0 counts."""
    band = ref_range(8.8, 10.8, "mg/dL", age=(0, 24, "mo"))
    res = [obs("ca", 11.0, 1, specimen="s1", ranges=[band]), obs("p", 5.0, 1, specimen="s1"),
           obs("alb", 4.0, 1, specimen="s1")]
    assert outcome(run(infant(months), res)) == expected


# === C12: calcinosis cutis lab window =======================================================================


@pytest.mark.parametrize(("days", "expected"), [(8, []), (364, []), (366, [("mineral-labs-due", "info")])])
def test_c12_calcinosis_cutis_asks_for_labs_only_after_365_days(days: float, expected: list[tuple[str, str]]) -> None:
    """§8 C12: CALCINOSIS_CUTIS_DX without CKD G4+ asks for Ca/P only when none exists within 365 days."""
    res = [cond("L94.2"), obs("egfr", 95, 1), *_pair(9.2, 3.6, days)]
    assert outcome(run(patient(45, "female"), res)) == expected


@pytest.mark.parametrize(("onset", "expected"), [(89, [("mineral-labs-due", "info")]), (91, [])])
def test_c12_recent_calciphylaxis_uses_the_7_day_window(onset: float, expected: list[tuple[str, str]]) -> None:
    """§8 C12: CALCIPHYLAXIS_DX with onset <= 90 days keeps the 7-day window; older onset without CKD: 90 days."""
    res = [cond("E83.59", text="Calciphylaxis", onset_days=onset), obs("egfr", 95, 1), *_pair(9.2, 3.6, 8)]
    assert outcome(run(patient(45, "female"), res)) == expected


# === C13: display never contradicts the rule ===============================================================


def test_c13_caxp_70_04_is_not_displayed_as_70_0() -> None:
    """§8 C13: Ca x P 70.04 must not display as "70.0" next to "> 70"."""
    result = run(patient(50), _adult_no_ckd(*_pair(10.0, 7.004)))
    assert ids(result) == ["caxp-high"]
    c = card(result, "caxp-high")
    assert "70.04" in c["summary"] or re.search(r">\s?70\b", c["summary"]), c["summary"]
    assert not re.search(r"(?<![\d.])70\.0(?!\d)", c["summary"]), c["summary"]
    assert "70.04" in c["detail"] or not re.search(r"(?<![\d.])70\.0(?!\d)", c["detail"]), c["detail"]


def test_c13_calcium_10_204_is_not_displayed_as_10_2() -> None:
    """§8 C13: a calcium of 10.204 (> 10.2) gets enough decimals, or is written "> 10.2"."""
    result = run(patient(50), _adult_no_ckd(*_pair(10.204, 3.0)))
    assert outcome(result) == [("hypercalcemia", "info")]
    summary = card(result, "hypercalcemia")["summary"]
    assert "10.204" in summary or re.search(r">\s?10\.2\b", summary), summary
    assert not re.search(r"calcium\s+10\.2\s*mg", summary, re.IGNORECASE), summary


@pytest.mark.parametrize(("hours", "phrase"), [(22, "22 h ago"), (47, "47 h ago"), (49, "2 days ago")])
def test_c13_ages_under_48h_in_hours(hours: float, phrase: str) -> None:
    """§8 C13: data ages under 48 h are given in hours ("drawn 22 h ago"), not as calendar words ("today")."""
    result = run(patient(50), _adult_no_ckd(*_pair(10.0, 7.5, 0, hours=hours)))
    summary = card(result, "caxp-high")["summary"]
    assert phrase in summary, summary
    assert "today" not in summary.lower()


# === C14: suggestion groups ===============================================================================


def test_c14_chloride_in_tls_offers_replace_and_no_remove() -> None:
    """§8.0/C14: calcium chloride in TLS: "Replace" is offered and no "Remove"; `any` selection."""
    case = tp12()
    result = run(case["patient"], case["resources"], "order-select", [ca_chloride("rxtls")])
    assert outcome(result) == [("iv-calcium-order", "warning")]
    c = card(result, "iv-calcium-order")
    assert c["selectionBehavior"] == "any"
    assert [a["type"] for a in c["suggestions"][0]["actions"]] == ["delete", "create"]
    assert remove_only(c) == []


# === C15: KDIGO caveat ======================================================================================


def test_c15_r20_cites_the_kdigo_caveat_with_caxp() -> None:
    """§8 C15: the KDIGO caveat wherever Ca x P is cited, including R20."""
    res = [cond("E83.59", text="Calciphylaxis"), obs("egfr", 95, 1), *_pair(10.0, 6.0)]
    result = run(patient(55, "female"), res)
    c = card(result, "documented-calcinosis")
    assert "60.0" in c["detail"]
    assert "KDIGO" in c["detail"]


# === C16: R24 warfarin ======================================================================================


WARFARIN = "Warfarin Sodium 5 MG Oral Tablet"


@pytest.mark.parametrize(("history", "fires"), [
    ([med(WARFARIN, "855332", "completed", authored_days=89)], False),
    ([med(WARFARIN, "855332", "completed", authored_days=91)], True),
    ([med(WARFARIN, "855332", "stopped", authored_days=30)], False),
    ([med(WARFARIN, "855332", "entered-in-error", authored_days=10)], True),
    ([med(WARFARIN, "855332", "completed", "MedicationStatement", effective_days=89)], False),
    ([med(WARFARIN, "855332", "completed", "MedicationStatement", effective_days=91)], True),
    ([med(WARFARIN, "855332", "completed", "MedicationStatement", asserted_days=89)], False),
    ([med(WARFARIN, "855332", "completed", "MedicationStatement", effective_period=(120, 80))], False),
])
def test_c16_no_warfarin_within_90_days(history: R, fires: bool) -> None:
    """§8 C16/§8.0: R24 only when no warfarin MedicationRequest (authoredOn) or MedicationStatement
    (effective[x], else dateAsserted) of any status except entered-in-error exists within 90 days."""
    case = tp29(history)
    got = outcome(run(case["patient"], case["resources"], "order-select", case["drafts"]))
    assert got == ([("warfarin-calciphylaxis-risk", "warning")] if fires else [])


@pytest.mark.parametrize(("resources", "fires"), [
    ([cond("E83.59", text="Calciphylaxis"), obs("egfr", 95, 1), *_pair(9.2, 3.6)], True),   # any renal state
    ([cond("N18.5"), *_pair(9.0, 6.0, 10)], True),                                           # G5 + high P
    ([*_hd(), *_pair(9.0, 6.0, 89)], True),                                                  # abnormality <= 90 d
    ([*_hd(), *_pair(9.0, 6.0, 91)], False),                                                 # > 90 days
    ([*_hd(), *_pair(9.0, 4.0, 1)], False),                                                  # no abnormality
    ([cond("Z94.0", recorded_days=500), obs("egfr", 40, 5), *_pair(10.8, 3.4, 5)], False),  # KIDNEY_TX alone
    ([cond("N18.4"), *_pair(9.0, 6.0, 5)], False),                                           # G4 is not enough
])
def test_c16_r24_trigger(resources: R, fires: bool) -> None:
    """§8 C16/§8.0: CALCIPHYLAXIS_DX in any renal state, or G5D/G5 with an R07 mineral abnormality <= 90 d."""
    got = outcome(_order(resources, [warfarin_draft()], patient(66, "female")))
    assert got == ([("warfarin-calciphylaxis-risk", "warning")] if fires else [])


def test_c16_r24_on_order_sign_and_not_for_unselected_drafts() -> None:
    """§8.0 triggers: order-sign evaluates every draft; order-select only the selected ones."""
    case = tp29()
    signed = run(case["patient"], case["resources"], "order-sign", case["drafts"], selections=[])
    assert outcome(signed) == [("warfarin-calciphylaxis-risk", "warning")]
    unselected = run(case["patient"], case["resources"], "order-select",
                     [*case["drafts"], draft("x", "Paracetamol 1 g")], selections=["MedicationRequest/x"])
    assert outcome(unselected) == []


# === C17: R21 aluminium and magnesium =======================================================================


@pytest.mark.parametrize(("resources", "expected"), [
    ([cond("N18.31")], "info"),
    ([obs("egfr", 59, 100), obs("egfr", 55, 5)], "info"),            # < 60 sustained: >= 90 days apart
    ([obs("egfr", 59, 85), obs("egfr", 55, 5)], None),               # 80 days apart: not sustained
    ([obs("egfr", 60, 100), obs("egfr", 60, 5)], None),              # not < 60
    ([cond("N17.9", onset_days=29), obs("egfr", 95, 40)], "info"),   # AKI <= 30 days
    ([cond("N17.9", onset_days=31), obs("egfr", 95, 40)], None),
    ([cond("N18.4")], "info"),
    ([cond("N18.5")], "warning"),
    ([cond("N18.6"), cond("Z99.2")], "warning"),
    ([obs("egfr", 95, 5), obs("egfr", 96, 200)], None),
])
def test_c17_aluminium_by_kidney_function(resources: R, expected: str | None) -> None:
    """§8 C17: aluminium binders: G3a+ or AKI -> info; G5/G5D -> warning (KDIGO 2017)."""
    got = outcome(_order(resources, [al_hydroxide_draft()]))
    assert got == ([("al-mg-binder-order", expected)] if expected else [])


@pytest.mark.parametrize(("resources", "fires"), [
    ([cond("N18.4")], True),
    ([cond("N18.32")], False),
    ([obs("egfr", 95, 5), obs("mg", 2.5, 3)], True),                            # > default ULN 2.4
    ([obs("egfr", 95, 5), obs("mg", 2.4, 3)], False),
    ([obs("egfr", 95, 5), obs("mg", 2.5, 3, ref=(1.8, 2.6))], False),          # lab ULN wins
    ([cond("N18.4"), obs("mg", 1.6, 3)], False),                               # below default LLN 1.7
    ([cond("N18.4"), obs("mg", 1.7, 3)], True),
    ([obs("egfr", 95, 5), obs("mg_si", 1.05, 3)], True),                       # 1.05 x 2.431 = 2.55
    ([obs("egfr", 95, 5), obs("mg_si", 0.98, 3)], False),                      # 2.38
    ([obs("egfr", 95, 5), obs("mg", 2.0, 3, unit="meq/L")], True),              # 2.0 x 1.215 = 2.43
    ([obs("egfr", 95, 5), obs("mg", 2.5, 31)], False),                          # not within 30 days
])
def test_c17_magnesium_by_stage_and_serum_magnesium(resources: R, fires: bool) -> None:
    """§8 C17: Mg binders/supplements: G4+ or latest Mg (<= 30 d) > ULN -> info; never when Mg < LLN."""
    got = outcome(_order(resources, [mg_oxide_draft()]))
    assert got == ([("al-mg-binder-order", "info")] if fires else [])


def test_c17_iv_magnesium_sulfate_is_out_of_scope() -> None:
    """§8.0 C17 details: IV magnesium sulfate is out of scope (binders and oral supplements only)."""
    assert outcome(_order([cond("N18.5")], [mg_sulfate_iv()])) == []


# === C18: samples around dialysis ==========================================================================


SESSION_START_H = 30   # hours before NOW
SESSION_END_H = 26


def _c18(sample_hours_before_now: float, session: dict[str, Any] | None = None) -> Any:
    s = session or proc(HEMODIALYSIS, period=(when(0, hours=SESSION_START_H), when(0, hours=SESSION_END_H)))
    res = [cond("N18.6"), s, obs("pth", 200, 30), *_pair(10.0, 7.5, 0, hours=sample_hours_before_now)]
    return run(patient(60), res)


USED = [("caxp-high", "warning")]
SET_ASIDE = [("mineral-labs-due", "info")]


@pytest.mark.parametrize(("minutes_after_window_end", "used"), [(-1, False), (1, True)])
def test_c18_window_ends_6h_after_the_session(minutes_after_window_end: float, used: bool) -> None:
    """§8 C18/§8.0: results from the session start to end + 6 h are set aside (± 1 min)."""
    t = SESSION_END_H - 6 - minutes_after_window_end / 60
    result = _c18(t)
    assert outcome(result) == (USED if used else SET_ASIDE)
    if not used:
        detail = card(result, "mineral-labs-due")["detail"]
        assert re.search(r"dialysis", detail, re.IGNORECASE), detail
        assert re.search(r"set aside|ignored|not used", detail, re.IGNORECASE), detail


@pytest.mark.parametrize(("minutes_after_start", "used"), [(0, True), (1, False)])
def test_c18_window_starts_after_the_session_start(minutes_after_start: float, used: bool) -> None:
    """§8.0: post-dialysis means start < t <= end + 6 h; a sample at the start itself is pre-dialysis."""
    result = _c18(SESSION_START_H - minutes_after_start / 60)
    assert outcome(result) == (USED if used else SET_ASIDE)


@pytest.mark.parametrize(("minutes_after_window_end", "used"), [(-1, False), (1, True)])
def test_c18_session_without_end_lasts_4h(minutes_after_window_end: float, used: bool) -> None:
    """§8 C18 (D): no performedPeriod.end -> start + 4 h; the window ends 10 h after the start."""
    session = proc(HEMODIALYSIS, period=(when(0, hours=SESSION_START_H), None))
    t = SESSION_START_H - 10 - minutes_after_window_end / 60
    assert outcome(_c18(t, session)) == (USED if used else SET_ASIDE)


@pytest.mark.parametrize(("code", "used"), [
    (PERITONEAL_DIALYSIS, True), (CRRT, True), (RENAL_DIALYSIS, False), (HEMODIALYSIS, False)])
def test_c18_only_intermittent_sessions_set_samples_aside(code: str, used: bool) -> None:
    """§8 C18/§8.0: PD and CRRT samples are not excluded; "renal dialysis" counts as intermittent."""
    session = proc(code, period=(when(0, hours=SESSION_START_H), when(0, hours=SESSION_END_H)))
    assert outcome(_c18(SESSION_END_H - 1, session)) == (USED if used else SET_ASIDE)


@pytest.mark.parametrize(("hours_after_end", "indicator"), [(1, "warning"), (7, "critical")])
def test_c18_applies_to_r08_tiers(hours_after_end: float, indicator: str) -> None:
    """§8 C18: a post-dialysis pair never drives the R08 tier; the G5D tier (warning) remains."""
    session = proc(HEMODIALYSIS, period=(when(0, hours=SESSION_START_H), when(0, hours=SESSION_END_H)))
    res = [cond("N18.6"), session, *_pair(9.75, 8.0, 0, hours=SESSION_END_H - hours_after_end)]
    _assert_tier_with_remove_last(_r08(res), indicator)
