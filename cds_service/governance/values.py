"""The numeric values a patient-view call computed, recorded fired or not (issue 19 item 2).

Lowering a threshold in the what-if simulator needs the values of the calls that did not fire, so every
patient-view call stores them in ``calls.governance_values`` (migration 0006). Each value is the one the rules
would test: a Ca x P pair or result older than its rule's window is stale (section 2.6) and recorded as None.
"""

from __future__ import annotations

from typing import Any

from cds_service.rules.patient_view import WARFARIN_COFACTOR, calciphylaxis_cofactors, calciphylaxis_minerals
from cds_service.rules.states import PatientState
from cds_service.rules.thresholds import DOWNWEIGHT_DAYS, PTH_CURRENT_DAYS

# Bump when the meaning of a key changes; the simulator reads only the current format. 2 (issue 19 review):
# r07_mineral comes from the rule's own calciphylaxis_minerals; format 1 used a copy that kept a high ionized
# calcium for 90 days (the rule: 72 h) and counted upper-bound Ca x P pairs, so its rows are not simulated.
FORMAT = 2


def governance_values(state: PatientState) -> dict[str, Any]:
    """Ca x P, calcium, phosphate, PTH multiple and R07 co-factor count of ``state`` (JSON-ready).

    ``cofactors`` counts R07's co-factors other than warfarin (clinical-rules.md R07: warfarin alone suffices,
    otherwise >= 2 co-factors); it is None when R07 cannot apply (not CKD G5/G5D or kidney transplant, or
    calciphylaxis documented), so the simulator never counts those calls. ``r07_mineral`` says whether one of
    R07's mineral abnormalities was present (the co-factor threshold only matters then): the rule's own
    ``calciphylaxis_minerals``, so the two never disagree (ionized calcium's 72-hour window, upper-bound pairs).
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
        "r07_mineral": r07_applies and bool(calciphylaxis_minerals(state)),
    }


def _cofactor_count(state: PatientState) -> int:
    """R07's co-factors other than warfarin: the rule's own list (``calciphylaxis_cofactors``)."""
    return sum(1 for words, _line in calciphylaxis_cofactors(state) if words.key != WARFARIN_COFACTOR)
