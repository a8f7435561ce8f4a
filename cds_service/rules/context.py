"""Detail blocks shared by several rules: contributing factors and missing data (escaped markdown)."""

from __future__ import annotations

from collections.abc import Collection

from cards.render import bullet_block, phrase
from fhir_mappings.facts import LabResult
from fhir_mappings.states import PatientState

from .base import calcium_text, num, stage_label
from .thresholds import CURRENT_DAYS, PTH_CURRENT_DAYS, VITAMIN_D_DAYS, VITD_POSSIBLE_EXCESS


def factor_lines(state: PatientState, shown: Collection[LabResult] = ()) -> list[str]:
    """Contributing risk factors found (section R01 detail list; R16/R18 context).

    ``shown``: results the card's values block already gives; their factor lines are left out (each fact once
    per card, issue 13 item 3).
    """
    lines: list[str] = []
    if state.ckd_stage:
        lines.append(phrase("factor_ckd", stage=stage_label(state), source=state.ckd_source))
    cal = state.calcium
    if cal is not None and cal.high and state.fresh(cal, CURRENT_DAYS) and cal.result not in shown:
        lines.append(phrase("factor_hypercalcemia", value=calcium_text(cal), basis=cal.basis))
    p = state.phosphate
    if p is not None and state.fresh(p, CURRENT_DAYS) and state.phosphate_high() and p not in shown:
        lines.append(phrase("factor_hyperphosphatemia", value=num(p.value)))
    if state.pth is not None and state.fresh(state.pth, PTH_CURRENT_DAYS) and state.pth_high():
        lines.append(phrase("factor_pth", value=num(state.pth.value), uln=num(state.pth_uln())))
    for cond in state.facts.conditions_in("cond-sarcoidosis"):
        lines.append(phrase("factor_sarcoidosis", name=cond.display or cond.code))
    vitd = state.latest("lab-vitamin-d-25oh", days=VITAMIN_D_DAYS)
    if vitd is not None and vitd.exceeds(VITD_POSSIBLE_EXCESS, inclusive=True):
        lines.append(phrase("factor_vitamin_d", value=num(vitd.value)))
    if state.tls_active:
        lines.append(phrase("factor_tls", reason=state.tls_reason))
    if state.kidney_tx:
        lines.append(phrase("factor_kidney_tx"))
    if state.other_tx:
        lines.append(phrase("factor_other_tx"))
    for name in state.ctd:
        lines.append(phrase("factor_ctd", name=name))
    for cond in state.facts.conditions_in("cond-malignancy", "cond-multiple-myeloma", "cond-leukemia"):
        lines.append(phrase("factor_malignancy", name=cond.display or cond.code))
        break
    return lines


def factors_block(state: PatientState, shown: Collection[LabResult] = ()) -> str:
    """``**Contributing factors found**`` list (without the ``shown`` values), or a 'none found' line."""
    lines = factor_lines(state, shown)
    return bullet_block("factors_heading", lines) if lines else phrase("factors_none")


def missing_lines(state: PatientState, pair_calcium_albumin: bool = True) -> list[str]:
    """What was missing or stale (albumin with the calcium, PTH 180 days, 25-OH D 180 days)."""
    lines: list[str] = []
    cal = state.calcium
    if pair_calcium_albumin and cal is not None and cal.basis == "measured":
        lines.append(phrase("albumin_missing"))
    no_pth = state.latest("lab-pth", days=PTH_CURRENT_DAYS) is None
    no_vitd = state.latest("lab-vitamin-d-25oh", days=VITAMIN_D_DAYS) is None
    if no_pth and no_vitd:
        lines.append(phrase("missing_pth_vitamin_d"))   # one line: the card's length budget (issue 13 item 3)
    elif no_pth:
        lines.append(phrase("missing_pth"))
    elif no_vitd:
        lines.append(phrase("missing_vitamin_d"))
    return lines


def missing_block(state: PatientState, pair_calcium_albumin: bool = True) -> str:
    """``**Missing or stale**`` list ('' when nothing is missing)."""
    return bullet_block("missing_heading", missing_lines(state, pair_calcium_albumin))
