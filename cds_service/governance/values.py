"""The numeric values a patient-view call computed, recorded fired or not (issue 19 item 2).

Lowering a threshold in the what-if simulator needs the values of the calls that did not fire, so every
patient-view call stores them in ``calls.governance_values`` (migration 0006). Each value is the one the rules
would test: a Ca x P pair or result older than its rule's window is stale (section 2.6) and recorded as None.
"""

from __future__ import annotations

from typing import Any

from cds_service.rules.states import PatientState
from cds_service.rules.thresholds import CAXP_SEED_THRESHOLD, DOWNWEIGHT_DAYS, PTH_CURRENT_DAYS

FORMAT = 1  # bump when the meaning of a key changes; the simulator reads only formats it knows


def governance_values(state: PatientState) -> dict[str, Any]:
    """Ca x P, calcium, phosphate, PTH multiple and R07 co-factor count of ``state`` (JSON-ready).

    ``cofactors`` counts R07's co-factors other than warfarin (clinical-rules.md R07: warfarin alone suffices,
    otherwise >= 2 co-factors); it is None when R07 cannot apply (not CKD G5/G5D or kidney transplant, or
    calciphylaxis documented), so the simulator never counts those calls. ``r07_mineral`` says whether one of
    R07's mineral abnormalities was present (the co-factor threshold only matters then).
    """
    pair = state.pair if state.fresh(state.pair, DOWNWEIGHT_DAYS) else None
    calcium = state.calcium if state.fresh(state.calcium, DOWNWEIGHT_DAYS) else None
    phosphate = state.phosphate if state.fresh(state.phosphate, DOWNWEIGHT_DAYS) else None
    pth = state.pth if state.fresh(state.pth, PTH_CURRENT_DAYS) else None
    r07_applies = not state.calciphylaxis_dx and (state.in_stage("G5", "G5D") or state.kidney_tx)
    return {
        "format": FORMAT,
        "caxp": None if pair is None else round(pair.product, 3),
        "calcium": None if calcium is None else round(calcium.value, 3),
        "calcium_basis": None if calcium is None else calcium.basis,
        "phosphate": None if phosphate is None else round(phosphate.value, 3),
        "pth_multiple": None if pth is None else round(pth.value / state.pth_uln(), 3),
        "cofactors": _cofactor_count(state) if r07_applies else None,
        "warfarin": state.on_warfarin,
        "r07_mineral": r07_applies and _r07_mineral(pair is not None and pair.product > CAXP_SEED_THRESHOLD, state),
    }


def _cofactor_count(state: PatientState) -> int:
    """R07's co-factors other than warfarin, as cds_service.rules.patient_view.calciphylaxis_risk counts them."""
    facts = state.facts
    flags = (
        state.obese,
        state.diabetes,
        state.female,
        state.hypoalbuminemia and state.albumin is not None,
        facts.has_medication("med-oral-calcium") and facts.has_medication("med-active-vitamin-d"),
    )
    return sum(1 for flag in flags if flag)


def _r07_mineral(caxp_high: bool, state: PatientState) -> bool:
    """One of R07's mineral abnormalities (Ca x P > 70, hypercalcemia, P > 5.5 mg/dL, PTH > 9 x ULN)."""
    calcium = state.calcium
    return bool(
        caxp_high
        or (calcium is not None and calcium.high and state.fresh(calcium, DOWNWEIGHT_DAYS))
        or (state.phosphate is not None and state.fresh(state.phosphate, DOWNWEIGHT_DAYS)
            and state.phosphate_above_g5_target())
        or (state.pth is not None and state.fresh(state.pth, PTH_CURRENT_DAYS) and state.pth_marked())
    )
