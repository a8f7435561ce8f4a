"""Detail blocks shared by several rules: contributing factors and missing data, as phrase keys (cards words them)."""

from __future__ import annotations

from collections.abc import Collection

from fhir_mappings.facts import LabResult
from findings import Bullets, Markdown, Phrase

from .base import calcium_text, num, stage_label
from .states import PatientState
from .thresholds import CURRENT_DAYS, PTH_CURRENT_DAYS, VITAMIN_D_DAYS, VITD_POSSIBLE_EXCESS


def factor_lines(state: PatientState, shown: Collection[LabResult] = ()) -> list[Markdown]:
    """Contributing risk factors found (section R01 detail list; R16/R18 context).

    ``shown``: results the card's values block already gives; their factor lines are left out (each fact once
    per card, issue 13 item 3).
    """
    lines: list[Markdown] = []
    if state.ckd_stage:
        lines.append(Phrase.of("factor_ckd", stage=stage_label(state), source=state.ckd_source))
    cal = state.calcium
    if cal is not None and cal.high and state.fresh(cal, CURRENT_DAYS) and cal.result not in shown:
        lines.append(Phrase.of("factor_hypercalcemia", value=calcium_text(cal), basis=cal.basis))
    p = state.phosphate
    if p is not None and state.fresh(p, CURRENT_DAYS) and state.phosphate_high() and p not in shown:
        lines.append(Phrase.of("factor_hyperphosphatemia", value=num(p.value)))
    if state.pth is not None and state.fresh(state.pth, PTH_CURRENT_DAYS) and state.pth_high():
        lines.append(Phrase.of("factor_pth", value=num(state.pth.value), uln=num(state.pth_uln())))
    for cond in state.facts.conditions_in("cond-sarcoidosis"):
        lines.append(Phrase.of("factor_sarcoidosis", name=cond.display or cond.code))
    vitd = state.latest("lab-vitamin-d-25oh", days=VITAMIN_D_DAYS)
    if vitd is not None and vitd.exceeds(VITD_POSSIBLE_EXCESS, inclusive=True):
        lines.append(Phrase.of("factor_vitamin_d", value=num(vitd.value)))
    if state.tls_active:
        lines.append(Phrase.of("factor_tls", reason=state.tls_reason))
    if state.kidney_tx:
        lines.append(Phrase.of("factor_kidney_tx"))
    if state.other_tx:
        lines.append(Phrase.of("factor_other_tx"))
    for name in state.ctd:
        lines.append(Phrase.of("factor_ctd", name=name))
    for cond in state.facts.conditions_in("cond-malignancy", "cond-multiple-myeloma", "cond-leukemia"):
        lines.append(Phrase.of("factor_malignancy", name=cond.display or cond.code))
        break
    return lines


def factors_block(state: PatientState, shown: Collection[LabResult] = ()) -> Markdown:
    """``**Contributing factors found**`` list (without the ``shown`` values), or a 'none found' line."""
    lines = factor_lines(state, shown)
    return Bullets("factors_heading", tuple(lines)) if lines else Phrase.of("factors_none")


def missing_lines(state: PatientState, pair_calcium_albumin: bool = True) -> list[Markdown]:
    """What was missing or stale (albumin with the calcium, PTH 180 days, 25-OH D 180 days)."""
    lines: list[Markdown] = []
    cal = state.calcium
    if pair_calcium_albumin and cal is not None and cal.basis == "measured":
        lines.append(Phrase.of("albumin_missing"))
    no_pth = state.latest("lab-pth", days=PTH_CURRENT_DAYS) is None
    no_vitd = state.latest("lab-vitamin-d-25oh", days=VITAMIN_D_DAYS) is None
    if no_pth and no_vitd:
        lines.append(Phrase.of("missing_pth_vitamin_d"))   # one line: the card's length budget (issue 13 item 3)
    elif no_pth:
        lines.append(Phrase.of("missing_pth"))
    elif no_vitd:
        lines.append(Phrase.of("missing_vitamin_d"))
    return lines


def missing_block(state: PatientState, pair_calcium_albumin: bool = True) -> Markdown:
    """``**Missing or stale**`` list ('' when nothing is missing)."""
    return Bullets("missing_heading", tuple(missing_lines(state, pair_calcium_albumin)))
