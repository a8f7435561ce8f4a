"""Patient-view rules R01-R07, R14-R17, R19, R20, R22, R23 (clinical-rules.md section 3)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fhir_mappings.facts import LabResult
from fhir_mappings.labs import ORDER_CODE
from fhir_mappings.pairing import CaPPair
from findings import Markdown, Phrase, SuggestionSpec, Text, bullets, joined

from .base import (
    PATIENT_VIEW,
    Finding,
    RuleContext,
    calcium_evidence,
    calcium_kind,
    calcium_label,
    calcium_lines,
    calcium_text,
    caxp_text,
    days_ago,
    drawn_text,
    evidence,
    labs_suggestion,
    num,
    pair_evidence,
    pair_lines,
    rule,
    shown,
    stage_label,
    value_line,
)
from .context import factors_block, missing_block
from .states import CalciumStatus, PatientState
from .thresholds import (
    ALBUMIN_IONIZED_ADVICE,
    ALBUMIN_PAIR_WINDOW,
    ALP_DAYS,
    BICARBONATE_HIGH,
    CA_MG_PER_MMOL,
    CAXP_KDOQI_TARGET,
    CAXP_MIN_AGE_YEARS,
    CAXP_SEED_THRESHOLD,
    CURRENT_DAYS,
    DOWNWEIGHT_DAYS,
    EGFR_REDUCED,
    HYPERCALCEMIA_MG_DL,
    HYPOCALCEMIA_MG_DL,
    INFANT_AGE_YEARS,
    IONIZED_LOW_MG_DL,
    IONIZED_PAIR_WINDOW,
    LOW_CALCIUM_PAIR_WINDOW,
    MODERATE_HYPERCALCEMIA_MG_DL,
    PHOSPHATE_HIGH_MG_DL,
    PHOSPHATE_LOW_DEFAULT,
    PHOSPHATE_SINGLE_G5D,
    PHOSPHATE_TARGET_G5_MG_DL,
    PTH_CURRENT_DAYS,
    PTH_RECENT_DAYS,
    R03_ACUTE_CAP_DAYS,
    R03_CALCINOSIS_CUTIS_DAYS,
    R03_CALCIPHYLAXIS_DAYS,
    R03_CALCIPHYLAXIS_RECENT_DAYS,
    R03_WINDOWS,
    R19_MAX_AGE,
    R19_MIN_AGE,
    R19_SPAN_DAYS,
    R22_WINDOW_DAYS,
    TLS_LABS_DAYS,
    VITAMIN_D_DAYS,
    VITD_POSSIBLE_EXCESS,
    VITD_TOXIC,
)

PV = (PATIENT_VIEW,)
# The LOINC codes the cards suggest ordering, by lab kind: fhir_mappings/labs.toml is their one source.
ALBUMIN, IONIZED, CALCIUM, PHOSPHATE, PTH = (ORDER_CODE[k] for k in (
    "lab-albumin", "lab-calcium-ionized", "lab-calcium-total", "lab-phosphate", "lab-pth"))
ALP, VITD25, VITD125, POTASSIUM = (ORDER_CODE[k] for k in (
    "lab-alp", "lab-vitamin-d-25oh", "lab-vitamin-d-125", "lab-potassium"))
CKD_G4_PLUS = ("G4", "G5", "G5D")


# --- shared selections --------------------------------------------------------------------------------


def usable_pair(state: PatientState, max_days: float = DOWNWEIGHT_DAYS) -> CaPPair | None:
    """The latest pair if it is at most ``max_days`` old (section 2.6: > 90 days is stale)."""
    return state.pair if state.fresh(state.pair, max_days) else None


def paediatric_ok(state: PatientState, pair: CaPPair) -> bool:
    """Section 2.5.7: under 13, Ca x P cards need Ca or P above the lab's own *age-banded* reference high.

    §8 C11: a range without an ``age`` band is not age-specific (labs often send adult ranges).
    """
    if state.age is None or state.age >= CAXP_MIN_AGE_YEARS:
        return True
    return any(r.ref_age_banded and r.ref_high is not None and r.exceeds(r.ref_high)
               for r in (pair.calcium, pair.phosphate))


def albumin_near(state: PatientState, result: LabResult) -> bool:
    """An albumin from the same specimen or within 24 h of ``result``."""
    return any(
        (result.specimen and a.specimen == result.specimen) or abs(a.time - result.time) <= ALBUMIN_PAIR_WINDOW
        for a in state.facts.results("lab-albumin")
    )


def ionized_near(state: PatientState, result: LabResult) -> bool:
    """An ionized calcium within 24 h of ``result``."""
    return any(abs(i.time - result.time) <= IONIZED_PAIR_WINDOW for i in state.facts.results("lab-calcium-ionized"))


def current_hypercalcemia(state: PatientState, days: float = CURRENT_DAYS) -> bool:
    """HYPERCALCEMIA on a result no older than ``days`` (ionized: 72 h)."""
    cal = state.calcium
    if cal is None or not cal.high:
        return False
    return state.fresh(cal, 3 if cal.basis == "ionized" else days)


def consult(state: PatientState, hypercalcemia: bool) -> SuggestionSpec | None:
    """Nephrology for CKD G4+ / transplant; endocrinology for hypercalcemia without CKD (R01, D)."""
    if state.in_stage(*CKD_G4_PLUS) or state.kidney_tx:
        return SuggestionSpec(kind="consult", label="consult", specialty="nephrology")
    if hypercalcemia and not state.ckd_stage:
        return SuggestionSpec(kind="consult", label="consult", specialty="endocrinology")
    return None


def _keep(*items: SuggestionSpec | None) -> list[SuggestionSpec]:
    return [s for s in items if s is not None]


# --- R01 ------------------------------------------------------------------------------------------------


@rule("caxp-high", "R01", PV, fields={"caxp", "drawn"}, version="0.2.0", silent_for_infants=True, hosts_r03=True,
      folds=("caxp-above-target", "hyperphosphatemia", "hyperparathyroid-pattern", "hypercalcemia", "albumin-needed",
             "pth-high"))
def caxp_high(ctx: RuleContext) -> Finding | None:
    """R01: Ca x P > 70 mg2/dL2 (strict), pair <= 90 days; warning <= 30 days, info 31-90."""
    s = ctx.state
    pair = usable_pair(s)
    if pair is None or not pair.exceeds(CAXP_SEED_THRESHOLD) or not paediatric_ok(s, pair):
        return None
    current = s.fresh(pair, CURRENT_DAYS)
    cal = s.calcium
    hyper = current_hypercalcemia(s)
    notes = [] if current else [Phrase.of("downweighted", days=days_ago(s.now, pair.time))]
    values = pair_lines(pair, s.now)
    if cal is not None and cal.basis != "measured" and cal.result is pair.calcium:
        values += calcium_lines(cal, s.now)[1:]
    labs_albumin = [] if albumin_near(s, pair.calcium) else [ALBUMIN] + ([IONIZED] if hyper else [])
    need_pth = s.latest("lab-pth", days=PTH_CURRENT_DAYS) is None and (bool(s.ckd_stage) or hyper)
    sarcoid = s.facts.has_condition("cond-sarcoidosis")
    advice = [Phrase.of("advice_binders")]
    if s.in_stage(*CKD_G4_PLUS):
        advice.append(Phrase.of("advice_restrict_calcium_binders"))
    if sarcoid:
        advice.append(Phrase.of("advice_sarcoidosis"))
    return Finding(
        rule_id="caxp-high",
        indicator="warning" if current else "info",
        fields={
            "caxp": caxp_text(pair),
            "drawn": drawn_text(s.now, pair.time),
            "values_md": bullets("values_heading", values),
            "note_md": joined("\n", notes),
            "factors_md": factors_block(s, (pair.calcium, pair.phosphate)),
            "missing_md": missing_block(s, pair_calcium_albumin=not albumin_near(s, pair.calcium)),
            "advice_md": bullets("advice_heading", advice),
        },
        evidence=pair_evidence(pair),
        suggestions=_keep(
            labs_suggestion("order_albumin", labs_albumin),
            labs_suggestion("order_pth", [PTH] if need_pth else []),
            labs_suggestion("order_alp", [] if s.latest("lab-alp", days=ALP_DAYS) else [ALP]),
            labs_suggestion("order_vitd125", [VITD125] if sarcoid else []),
            consult(s, hyper),
        ),
    )


# --- R02 ------------------------------------------------------------------------------------------------


@rule("caxp-above-target", "R02", PV, fields={"caxp", "drawn", "stage"}, version="0.2.0", silent_for_infants=True,
      folds=("hyperphosphatemia",), hosts_r03=True)
def caxp_above_target(ctx: RuleContext) -> Finding | None:
    """R02: 55 <= Ca x P <= 70 in CKD G3-G5D, age >= 13, pair <= 90 days -> info."""
    s = ctx.state
    pair = usable_pair(s)
    if pair is None or not s.in_stage("G3", "G4", "G5", "G5D"):
        return None
    if s.age is not None and s.age < CAXP_MIN_AGE_YEARS:
        return None
    if not pair.exceeds(CAXP_KDOQI_TARGET, inclusive=True) or pair.exceeds(CAXP_SEED_THRESHOLD):
        return None
    need_pth = s.latest("lab-pth", days=PTH_CURRENT_DAYS) is None
    return Finding(
        rule_id="caxp-above-target",
        indicator="info",
        fields={
            "caxp": caxp_text(pair),
            "drawn": drawn_text(s.now, pair.time),
            "stage": stage_label(s),
            "values_md": bullets("values_heading", pair_lines(pair, s.now)),
            "factors_md": factors_block(s, (pair.calcium, pair.phosphate)),
            "missing_md": missing_block(s, pair_calcium_albumin=False),
            "advice_md": bullets("advice_heading", [Phrase.of("advice_binders")]),
        },
        evidence=pair_evidence(pair),
        suggestions=_keep(labs_suggestion("order_pth", [PTH] if need_pth else [])),
    )


# --- R03 ------------------------------------------------------------------------------------------------


@rule("mineral-labs-due", "R03", PV, fields={"group", "missing_labs", "window"}, version="0.2.0",
      silent_for_infants=True)
def mineral_labs_due(ctx: RuleContext) -> Finding | None:
    """R03: at-risk patient with no Ca or P (or PTH in G4-G5D) within the KDIGO-based window."""
    s = ctx.state
    windows: list[tuple[Markdown, int, int | None]] = []
    stage_window = R03_WINDOWS.get(s.ckd_stage or "")
    if stage_window is not None:
        cap, pth_window = stage_window
        windows.append((stage_label(s), cap, pth_window))
    if s.tls_active:
        windows.append((Text.of("group_tls"), R03_ACUTE_CAP_DAYS, None))
    if s.calciphylaxis_dx:
        # §8 C12: 7 days only while the diagnosis is recent (onset <= 90 days); later the stage window, else 90.
        recent = s.calciphylaxis_onset is not None and s.now - s.calciphylaxis_onset <= timedelta(
            days=R03_CALCIPHYLAXIS_RECENT_DAYS)
        days = R03_ACUTE_CAP_DAYS if recent else (stage_window[0] if stage_window else R03_CALCIPHYLAXIS_DAYS)
        windows.append((Text.of("group_calciphylaxis"), days, None))
    if s.calcinosis_cutis_dx and not s.in_stage(*CKD_G4_PLUS):
        # §8 C12: dystrophic calcinosis has normal mineral metabolism; one check in a year suffices.
        windows.append((Text.of("group_calcinosis_cutis"), R03_CALCINOSIS_CUTIS_DAYS, None))
    if not windows:
        return None
    group, cap_days, _ = min(windows, key=lambda w: w[1])
    pth_days = next((w[2] for w in windows if w[2] is not None), None)
    ca = s.latest("lab-calcium-total", "lab-calcium-blood", days=cap_days)
    p = s.latest("lab-phosphate", days=cap_days)
    cap_missing = ca is None or p is None
    pth_missing = pth_days is not None and s.latest("lab-pth", days=pth_days) is None
    if not cap_missing and not pth_missing:
        return None
    history: list[Markdown] = []
    if s.pair is not None:
        history.append(Phrase.of("last_pair", product=caxp_text(s.pair), date=s.pair.time.strftime("%Y-%m-%d"),
                              days=days_ago(s.now, s.pair.time)))
    for kinds in (("lab-calcium-total", "lab-calcium-blood"), ("lab-phosphate",), ("lab-pth",)):
        last = s.latest(*kinds)
        history.append(value_line(last, s.now) if last else Phrase.of("never_measured", name=kinds[0][4:]))
    labs = [CALCIUM, PHOSPHATE, ALBUMIN] if cap_missing else []
    if pth_missing:
        labs.append(PTH)
    window: int = cap_days
    missing_labs = Text.of("missing_ca_p")
    if not cap_missing:
        missing_labs, window = Text.of("missing_pth_lab"), pth_days or cap_days
    return Finding(
        rule_id="mineral-labs-due",
        indicator="info",
        fields={
            "group": group,
            "missing_labs": missing_labs,
            "window": str(window),
            "values_md": bullets("history_heading", history),
            "note_md": Phrase.of("kdigo_frequency_" + (s.ckd_stage or "acute").lower()),
        },
        evidence=[evidence(n, r) for n, r in (("calcium", ca), ("phosphate", p)) if r is not None],
        suggestions=_keep(labs_suggestion("order_mineral_labs", labs)),
    )


# --- R04 ------------------------------------------------------------------------------------------------


def threshold_text(cal: CalciumStatus) -> Text:
    """The limit that made the calcium high, in the measurand's own terms (§8 C9: ionized stays ionized)."""
    if cal.basis == "ionized":
        limit = cal.high_limit / CA_MG_PER_MMOL
        source = Text.of("limit_ionized_default") if cal.result.ref_high is None else Text.of("limit_lab")
        return Text.of("threshold_ionized", limit=f"{limit:.2f}", source=source)
    if cal.high_limit != HYPERCALCEMIA_MG_DL:
        return Text.of("threshold_child", limit=num(cal.high_limit))
    return Text.of("threshold_total", kind=calcium_kind(cal))


@rule("hypercalcemia", "R04", PV, fields={"ca_label", "ca_text", "alb", "severity", "drawn", "threshold"},
      version="0.2.0", folds=("albumin-needed",))   # not silent for infants: it checks total Ca >= 12.0 itself
def hypercalcemia(ctx: RuleContext) -> Finding | None:
    """R04: hypercalcemia on a result <= 30 days (ionized <= 72 h); warning if >= 12 mg/dL."""
    s = ctx.state
    cal = s.calcium
    if cal is None or not current_hypercalcemia(s):
        return None
    if s.age is not None and s.age < INFANT_AGE_YEARS and not (
            cal.basis != "ionized" and cal.result.exceeds(MODERATE_HYPERCALCEMIA_MG_DL, inclusive=True)):
        return None  # §8 C11: under 1 year only total Ca >= 12.0 mg/dL (fat necrosis of the newborn)
    corrected = cal.basis.startswith("corrected") and cal.albumin is not None
    confirm = corrected and (
        s.in_stage(*CKD_G4_PLUS) or (cal.albumin is not None and cal.albumin.below(ALBUMIN_IONIZED_ADVICE))
    )
    hints: list[Markdown] = []
    if s.facts.has_condition("cond-sarcoidosis"):
        hints.append(Phrase.of("hint_sarcoidosis"))
    if s.facts.has_condition("cond-malignancy", "cond-multiple-myeloma", "cond-leukemia", "cond-paget"):
        hints.append(Phrase.of("hint_malignancy"))
    if s.pth_high() and s.fresh(s.pth, PTH_CURRENT_DAYS):
        hints.append(Phrase.of("hint_hpt", value=num(s.pth.value) if s.pth else ""))
    vitd = s.latest("lab-vitamin-d-25oh", days=VITAMIN_D_DAYS)
    if vitd is not None and vitd.exceeds(VITD_POSSIBLE_EXCESS, inclusive=True):
        hints.append(Phrase.of("hint_vitamin_d", value=num(vitd.value)))
    if s.facts.has_medication("med-oral-calcium") and s.facts.has_medication("med-sodium-bicarbonate"):
        hints.append(Phrase.of("hint_milk_alkali"))
    return Finding(
        rule_id="hypercalcemia",
        indicator="warning" if cal.at_least_moderate else "info",  # §8 C10: warning from 12.0 mg/dL
        variant="confirm" if confirm else "",
        fields={
            "ca_label": calcium_label(cal),
            "ca_text": calcium_text(cal),
            "alb": num(cal.albumin.value) if cal.albumin else "",
            "severity": Text.of("hypercalcemia_" + cal.grade),
            "threshold": threshold_text(cal),
            "drawn": drawn_text(s.now, cal.time),
            "values_md": bullets("values_heading", calcium_lines(cal, s.now)),
            "note_md": Phrase.of("confirm_ionized") if confirm else "",
            "factors_md": (bullets("hints_heading", hints), "\n\n", factors_block(s, (cal.result,))),
        },
        evidence=calcium_evidence(cal),
        suggestions=_keep(
            labs_suggestion("order_ionized", [IONIZED] if confirm else []),
            labs_suggestion("order_pth", [] if s.latest("lab-pth", days=PTH_RECENT_DAYS) else [PTH]),
            labs_suggestion("order_vitd25", [] if vitd or s.latest("lab-vitamin-d-25oh", days=VITAMIN_D_DAYS)
                            else [VITD25]),
            labs_suggestion("order_vitd125", [VITD125] if s.facts.has_condition("cond-sarcoidosis") else []),
        ),
    )


# --- R05 ------------------------------------------------------------------------------------------------


def g5d_phosphate_gate(state: PatientState) -> bool:
    """§8.0 / C1 alert-volume gate for R05 in CKD G5D: the latest pre-dialysis P (<= 30 d) >= 7.0 mg/dL, or it
    and the one before it (<= 90 d) both > 5.5 mg/dL."""
    recent = state.facts.results("lab-phosphate")
    latest = recent[0] if recent else None
    if latest is None or not state.fresh(latest, CURRENT_DAYS):
        return False
    if latest.exceeds(PHOSPHATE_SINGLE_G5D, inclusive=True):
        return True
    before = recent[1] if len(recent) > 1 else None
    return (before is not None and state.fresh(before, DOWNWEIGHT_DAYS)
            and latest.exceeds(PHOSPHATE_TARGET_G5_MG_DL) and before.exceeds(PHOSPHATE_TARGET_G5_MG_DL))


def low_calcium_near(state: PatientState, p: LabResult) -> LabResult | None:
    """Low calcium by the section 2.3 order, same specimen or <= 24 h from ``p`` (§8 C1): ionized below the lab
    LLN (else 1.12 mmol/L), else corrected or total below 8.4 mg/dL."""
    def near(r: LabResult) -> bool:
        return bool(p.specimen and r.specimen == p.specimen) or abs(r.time - p.time) <= LOW_CALCIUM_PAIR_WINDOW

    ionized = next((r for r in state.facts.results("lab-calcium-ionized") if near(r)), None)
    if ionized is not None:
        return ionized if ionized.below(ionized.ref_low or IONIZED_LOW_MG_DL) else None
    corrected = next((r for r in state.facts.results("lab-calcium-corrected") if near(r)), None)
    if corrected is not None:
        return corrected if corrected.below(HYPOCALCEMIA_MG_DL) else None
    total = next((r for r in state.facts.results("lab-calcium-total", "lab-calcium-blood") if near(r)), None)
    return total if total is not None and total.below(HYPOCALCEMIA_MG_DL) else None


@rule("hyperphosphatemia", "R05", PV, fields={"p", "stage", "drawn"}, version="0.2.0", silent_for_infants=True)
def hyperphosphatemia(ctx: RuleContext) -> Finding | None:
    """R05: hyperphosphatemia on a current result (<= 30 d), reported whenever R01/R02 did not fire.

    §8 C1: with or without a Ca x P pair (a pair of 58.9 without CKD must not hide a high phosphate); when R01
    or R02 fires, consolidation folds this finding into it. G5D needs the §8.0 gate; G5 > 5.5 mg/dL; otherwise
    HYPERPHOSPHATEMIA (adults > 4.5 mg/dL or > ULN; under 18 an age-banded range only, §8 C11).
    """
    s = ctx.state
    p = s.phosphate
    if p is None or not s.fresh(p, CURRENT_DAYS):
        return None
    if s.in_stage("G5D"):
        high = g5d_phosphate_gate(s)
    elif s.in_stage("G5"):
        high = s.phosphate_above_g5_target()
    else:
        high = s.phosphate_high()
    if not high:
        return None
    g5 = s.in_stage("G5", "G5D")
    low_ca = low_calcium_near(s, p)
    values = [value_line(p, s.now)] + ([value_line(low_ca, s.now)] if low_ca is not None else [])
    pair = usable_pair(s, CURRENT_DAYS)
    notes = ([Phrase.of("pair_below_thresholds", product=caxp_text(pair))] if pair is not None
             else [Phrase.of("no_pair")])
    if low_ca is not None:
        notes.append(Phrase.of("tolerate_hypocalcemia"))
    return Finding(
        rule_id="hyperphosphatemia",
        indicator="info",
        variant="g5" if g5 else ("with_pair" if pair is not None else ""),
        fields={
            "p": shown(p.value, PHOSPHATE_HIGH_MG_DL, PHOSPHATE_TARGET_G5_MG_DL),
            "stage": stage_label(s),
            "drawn": drawn_text(s.now, p.time),
            "values_md": bullets("values_heading", values),
            "note_md": joined("\n\n", notes),
            "factors_md": factors_block(s, (p,)),
            "advice_md": bullets("advice_heading", [
                Phrase.of("advice_phosphate"), Phrase.of("advice_phosphate_dialysis") if s.on_dialysis else "",
                Phrase.of("advice_no_al_mg")]),
        },
        evidence=[evidence("phosphate", p)] + ([evidence("calcium_low", low_ca)] if low_ca is not None else []),
        suggestions=_keep(labs_suggestion("order_ca_albumin", [] if pair is not None else [CALCIUM, ALBUMIN])),
    )


# --- R06 ------------------------------------------------------------------------------------------------


@rule("pth-high", "R06", PV, fields={"pth", "multiple", "stage", "ca_text"}, version="0.2.0",
      silent_for_infants=True)
def pth_high(ctx: RuleContext) -> Finding | None:
    """R06: PTH > 9 x ULN in G5D (<= 180 d), or PTH > ULN / HPT condition with hypercalcemia."""
    s = ctx.state
    pth = s.pth
    hyper = current_hypercalcemia(s)
    variant = ""
    if pth is not None and s.in_stage("G5D") and s.fresh(pth, PTH_CURRENT_DAYS) and s.pth_marked():
        variant = "marked"
    elif pth is not None and s.fresh(pth, PTH_RECENT_DAYS) and s.pth_high() and hyper:
        variant = "hypercalcemia"
    elif hyper and s.facts.has_condition("cond-hyperparathyroidism"):
        variant = "condition"
    if not variant:
        return None
    cal = s.calcium
    values = [value_line(pth, s.now)] if pth else []
    if cal is not None and hyper:
        values += calcium_lines(cal, s.now)
    return Finding(
        rule_id="pth-high",
        indicator="info",
        variant=variant,
        fields={
            "pth": num(pth.value) if pth else "",
            "multiple": f"{pth.value / s.pth_uln():.1f}" if pth else "",
            "stage": stage_label(s),
            "ca_text": calcium_text(cal) if cal else "",
            "values_md": bullets("values_heading", values),
            "advice_md": bullets("advice_heading", [Phrase.of("advice_pth")]),
        },
        evidence=([evidence("pth", pth)] if pth else []) + (calcium_evidence(cal) if cal and hyper else []),
        suggestions=_keep(consult(s, True)),
    )


# --- R07 ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mineral:
    """An R07 mineral abnormality: summary words, detail line and evidence."""

    words: Markdown
    line: Markdown
    evidence: list[dict[str, Any]]


def calciphylaxis_minerals(s: PatientState) -> list[Mineral]:
    """R07's mineral abnormalities within 90 days: Ca x P > 70, HYPERCALCEMIA, P > 5.5 mg/dL, PTH > 9 x ULN (<= 180 d).

    Shared with R24 (§8 C16), which asks for one of them in CKD G5/G5D.
    """
    minerals: list[Mineral] = []
    pair = usable_pair(s)
    if pair is not None and pair.exceeds(CAXP_SEED_THRESHOLD):
        caxp = caxp_text(pair)
        minerals.append(Mineral(Text.of("words_caxp", value=caxp), Phrase.of("mineral_caxp", value=caxp),
                                pair_evidence(pair)))
    cal = s.calcium
    if cal is not None and current_hypercalcemia(s, DOWNWEIGHT_DAYS):
        minerals.append(Mineral(Text.of("hypercalcemia"), Phrase.of("mineral_calcium", value=calcium_text(cal)),
                                calcium_evidence(cal)))
    p = s.phosphate
    if p is not None and s.fresh(p, DOWNWEIGHT_DAYS) and s.phosphate_above_g5_target():
        value = shown(p.value, PHOSPHATE_TARGET_G5_MG_DL)
        minerals.append(Mineral(Text.of("words_p_mg", value=value), Phrase.of("mineral_phosphate", value=value),
                                [evidence("phosphate", p)]))
    if s.pth is not None and s.fresh(s.pth, PTH_CURRENT_DAYS) and s.pth_marked():
        pth = num(s.pth.value)
        minerals.append(Mineral(Text.of("words_pth", value=pth), Phrase.of("mineral_pth", value=pth),
                                [evidence("pth", s.pth)]))
    return minerals


WARFARIN_COFACTOR = "co_warfarin"  # R07: warfarin alone suffices; otherwise two of the other co-factors


def calciphylaxis_cofactors(s: PatientState) -> list[tuple[Text, Markdown]]:
    """R07's co-factors present in ``s``: (summary words keyed by co-factor, detail line), warfarin first.

    One list for the rule and for the governance values the what-if simulator counts (issue 19 item 2).
    """
    cofactors: list[tuple[Text, Markdown]] = []
    if s.on_warfarin:
        cofactors.append((Text.of(WARFARIN_COFACTOR), Phrase.of("co_warfarin_detail")))
    if s.obese:
        cofactors.append((Text.of("co_obesity"), Phrase.of("co_obesity_detail")))
    if s.diabetes:
        cofactors.append((Text.of("co_diabetes"), Phrase.of("co_diabetes_detail")))
    if s.female:
        cofactors.append((Text.of("co_female"), Phrase.of("co_female_detail")))
    if s.hypoalbuminemia and s.albumin is not None:
        cofactors.append((Text.of("co_albumin"), Phrase.of("co_albumin_detail", value=num(s.albumin.value))))
    if s.facts.has_medication("med-oral-calcium") and s.facts.has_medication("med-active-vitamin-d"):
        cofactors.append((Text.of("co_binder_vitd"), Phrase.of("co_binder_vitd_detail")))
    return cofactors


@rule("calciphylaxis-risk", "R07", PV, fields={"renal", "mineral", "cofactors"}, version="0.2.0",
      silent_for_infants=True, folds=("pth-high",), fold_priority=1, hosts_r03=True)  # takes PTH before R01 does
def calciphylaxis_risk(ctx: RuleContext) -> Finding | None:
    """R07: (G5D/G5/kidney transplant) + mineral abnormality + (warfarin or >= 2 co-factors).

    Replaced by R20 only when calciphylaxis is documented (§8 C4: calcinosis cutis does not replace it).
    """
    s = ctx.state
    if s.calciphylaxis_dx or not (s.in_stage("G5", "G5D") or s.kidney_tx):
        return None
    minerals = calciphylaxis_minerals(s)
    if not minerals:
        return None
    cofactors = calciphylaxis_cofactors(s)
    others = [c for c in cofactors if c[0].key != WARFARIN_COFACTOR]
    if not (s.on_warfarin or len(others) >= 2):
        return None
    # §8 C5: "dialysis" only with dialysis evidence; an ESRD code alone reads "ESRD".
    renal = Text.of("renal_dialysis") if s.on_dialysis else (
        stage_label(s) if s.in_stage("G5", "G5D") else Text.of("renal_kidney_tx"))
    need = [] if s.latest("lab-pth", days=PTH_CURRENT_DAYS) else [PTH]
    if s.albumin is None or not s.fresh(s.albumin, CURRENT_DAYS):
        need.append(ALBUMIN)
    return Finding(
        rule_id="calciphylaxis-risk",
        indicator="warning",
        fields={
            "renal": renal,
            "mineral": minerals[0].words,
            "cofactors": joined(", ", (c[0] for c in cofactors)),
            "values_md": bullets("mineral_heading", [m.line for m in minerals]),
            "factors_md": Phrase.of("cofactor_line", items=joined("; ", (c[1] for c in cofactors))),
            "note_md": Phrase.of("calciphylaxis_note"),   # the warfarin-in-CTD note is on the rule page
            "advice_md": bullets("advice_heading", [Phrase.of("advice_calciphylaxis_binders"),
                                                         Phrase.of("advice_warfarin") if s.on_warfarin else "",
                                                         Phrase.of("advice_skin")]),
        },
        evidence=[e for m in minerals for e in m.evidence],
        suggestions=_keep(
            SuggestionSpec(kind="consult", label="consult", specialty="nephrology"),
            labs_suggestion("order_missing_labs", need),
        ),
    )


# --- R14 ------------------------------------------------------------------------------------------------


@rule("vitamin-d-excess", "R14", PV, fields={"vitd", "ca_text", "drawn"}, version="0.2.0", silent_for_infants=True)
def vitamin_d_excess(ctx: RuleContext) -> Finding | None:
    """R14: 25-OH D >= 150 ng/mL (warning), >= 80 with hypercalcemia (warning), >= 80 alone (info)."""
    s = ctx.state
    vitd = s.latest("lab-vitamin-d-25oh", days=VITAMIN_D_DAYS)
    if vitd is None or not vitd.exceeds(VITD_POSSIBLE_EXCESS, inclusive=True):
        return None
    hyper = current_hypercalcemia(s)
    indicator = "warning" if hyper or vitd.exceeds(VITD_TOXIC, inclusive=True) else "info"
    if s.in_stage("G5D") and not hyper:
        indicator = "info"  # Mayo: very high 25-OH D in kidney failure without toxicity (R14 caveat)
    cal = s.calcium
    meds = [m.name for m in s.facts.medications if m.classes & {"med-vitamin-d", "med-active-vitamin-d"}]
    granulomatous = s.facts.has_condition("cond-sarcoidosis")
    return Finding(
        rule_id="vitamin-d-excess",
        indicator=indicator,
        variant="with_calcium" if hyper and cal else "",
        fields={
            "vitd": num(vitd.value),
            "ca_text": calcium_text(cal) if cal else "",
            "drawn": drawn_text(s.now, vitd.time),
            "values_md": bullets(
                "values_heading", [value_line(vitd, s.now)] + (calcium_lines(cal, s.now) if cal and hyper else [])
            ),
            "factors_md": bullets("vitd_sources_heading", [Phrase.of("med_line", name=n) for n in meds]),
            "note_md": Phrase.of("vitd_ckd_caveat") if s.in_stage("G5D") else "",
        },
        evidence=[evidence("vitamin_d_25oh", vitd)] + (calcium_evidence(cal) if cal and hyper else []),
        suggestions=_keep(labs_suggestion("order_vitd125", [VITD125] if granulomatous else [])),
    )


# --- R15 ------------------------------------------------------------------------------------------------


@rule("tumor-lysis", "R15", PV, fields={"tls_basis"}, version="0.2.0")
def tumor_lysis(ctx: RuleContext) -> Finding | None:
    """R15: TLS_ACTIVE -> info (calcification risk context; the action happens at order time)."""
    s = ctx.state
    if not s.tls_active:
        return None
    need = [code for code, kinds in ((CALCIUM, ("lab-calcium-total",)), (PHOSPHATE, ("lab-phosphate",)),
                                      (POTASSIUM, ("lab-potassium",)))
            if s.latest(*kinds, days=TLS_LABS_DAYS) is None]
    recent = [r for r in (s.latest(k, days=TLS_LABS_DAYS) for k in (
        "lab-phosphate", "lab-calcium-total", "lab-urate", "lab-potassium")) if r is not None]
    return Finding(
        rule_id="tumor-lysis",
        indicator="info",
        fields={
            "tls_basis": Text.of("tls_dx") if "diagnosis" in s.tls_reason else Text.of("tls_labs"),
            "values_md": bullets("values_heading", [value_line(r, s.now) for r in recent]),
            "note_md": Phrase.of("tls_reason", reason=s.tls_reason),
        },
        evidence=[evidence(r.analyte, r) for r in recent],
        suggestions=_keep(labs_suggestion("order_tls_labs", need)),
    )


# --- R16 ------------------------------------------------------------------------------------------------

CTD_CARD_GROUPS = (
    ("cond-juvenile-dermatomyositis", "ctd_jdm"),
    ("cond-systemic-sclerosis", "ctd_ssc"),
    ("cond-dermatomyositis", "ctd_dm"),
)


@rule("connective-tissue-disease", "R16", PV, fields={"ctd"}, options={"ctd_info_card": False},
      switch="ctd_info_card", version="0.2.0")
def connective_tissue_disease(ctx: RuleContext) -> Finding | None:
    """R16 (only with ``ctd_info_card``): JDM, SSc/CREST or DM -> info suggesting rheumatology follow-up."""
    s = ctx.state
    for group, key in CTD_CARD_GROUPS:
        found = s.facts.conditions_in(group)
        if found:
            return Finding(
                rule_id="connective-tissue-disease",
                indicator="info",
                fields={
                    "ctd": Text.of(key),
                    "values_md": bullets("conditions_heading",
                                              [Phrase.of("condition_line", name=c.display or c.code, code=c.code)
                                               for c in found]),
                },
                evidence=[{"name": "condition", "value": c.code, "unit": "", "original_value": c.code,
                           "original_unit": "", "resource_id": f"Condition/{c.resource_id}",
                           "time": c.time.isoformat() if c.time else ""} for c in found],
                suggestions=[SuggestionSpec(kind="consult", label="consult", specialty="rheumatology")],
            )
    return None


# --- R17 ------------------------------------------------------------------------------------------------


@rule("milk-alkali", "R17", PV, fields={"ca_text"}, version="0.2.0")
def milk_alkali(ctx: RuleContext) -> Finding | None:
    """R17: hypercalcemia + calcium salt + (bicarbonate med or CO2 > 30) + (eGFR < 60 or AKI)."""
    s = ctx.state
    cal = s.calcium
    if cal is None or not current_hypercalcemia(s) or not s.facts.has_medication("med-oral-calcium"):
        return None
    bicarb = s.latest("lab-bicarbonate", days=CURRENT_DAYS)
    alkali = s.facts.has_medication("med-sodium-bicarbonate") or (
        bicarb is not None and bicarb.exceeds(BICARBONATE_HIGH))
    egfr = s.latest("lab-egfr", days=CURRENT_DAYS)
    renal = s.facts.has_condition("cond-aki") or (egfr is not None and egfr.below(EGFR_REDUCED))
    if not (alkali and renal):
        return None
    lines = calcium_lines(cal, s.now) + [value_line(r, s.now) for r in (bicarb, egfr) if r is not None]
    meds = [m.name for m in s.facts.medications if m.classes & {"med-oral-calcium", "med-sodium-bicarbonate"}]
    return Finding(
        rule_id="milk-alkali",
        indicator="info",
        fields={
            "ca_text": calcium_text(cal),
            "values_md": bullets("values_heading", lines),
            "factors_md": bullets("meds_heading", [Phrase.of("med_line", name=n) for n in meds]),
        },
        evidence=calcium_evidence(cal) + [evidence(r.analyte, r) for r in (bicarb, egfr) if r is not None],
    )


# --- R19 ------------------------------------------------------------------------------------------------


@rule("tumoral-calcinosis", "R19", PV, fields={"p"}, options={"tumoral_calcinosis_rule": False},
      switch="tumoral_calcinosis_rule", version="0.2.0")
def tumoral_calcinosis(ctx: RuleContext) -> Finding | None:
    """R19 (off by default): age 2-25, P above lab ULN on >= 2 results >= 30 days apart, eGFR >= 60."""
    s = ctx.state
    if s.age is None or not (R19_MIN_AGE <= s.age <= R19_MAX_AGE):
        return None
    egfr = s.latest("lab-egfr")
    if s.ckd_stage or (egfr is not None and egfr.below(EGFR_REDUCED)):
        return None
    high = [r for r in s.facts.results("lab-phosphate") if r.ref_high is not None and r.exceeds(r.ref_high)]
    if len(high) < 2 or (high[0].time - high[-1].time).days < R19_SPAN_DAYS:
        return None
    return Finding(
        rule_id="tumoral-calcinosis",
        indicator="info",
        fields={
            "p": num(high[0].value),
            "values_md": bullets("values_heading", [value_line(r, s.now) for r in high[:5]]),
        },
        evidence=[evidence("phosphate", r) for r in high[:5]],
        suggestions=[SuggestionSpec(kind="consult", label="consult", specialty="endocrinology")],
    )


# --- R20 ------------------------------------------------------------------------------------------------


@rule("documented-calcinosis", "R20", PV, fields={"dx", "abnormality"}, version="0.2.0", silent_for_infants=True)
def documented_calcinosis(ctx: RuleContext) -> Finding | None:
    """R20: documented calciphylaxis / calcinosis cutis + a current mineral abnormality -> warning."""
    s = ctx.state
    if not (s.calciphylaxis_dx or s.calcinosis_cutis_dx):
        return None
    found: list[tuple[Markdown, list[dict[str, Any]]]] = []
    pair = usable_pair(s, CURRENT_DAYS)
    if pair is not None and pair.exceeds(CAXP_KDOQI_TARGET):
        found.append((Text.of("words_caxp", value=caxp_text(pair)), pair_evidence(pair)))
    cal = s.calcium
    if cal is not None and current_hypercalcemia(s):
        found.append((Text.of("named_value", name=Text.of("hypercalcemia"), value=calcium_text(cal)),
                      calcium_evidence(cal)))
    p = s.phosphate
    if p is not None and s.fresh(p, CURRENT_DAYS) and s.phosphate_high():
        found.append((Text.of("named_value", name=Text.of("hyperphosphatemia"),
                              value=Text.of("words_p_mg", value=num(p.value))), [evidence("phosphate", p)]))
    if s.pth and s.in_stage("G5D") and s.fresh(s.pth, PTH_CURRENT_DAYS) and s.pth_marked():
        found.append((Text.of("words_pth", value=num(s.pth.value)), [evidence("pth", s.pth)]))
    if not found:
        return None
    # §8 C4: each diagnosis is named for what it is; calcinosis cutis is never called calciphylaxis.
    dx = joined(" and ", (Text.of(key) for key, present in (("dx_calciphylaxis", s.calciphylaxis_dx),
                                                        ("dx_calcinosis", s.calcinosis_cutis_dx)) if present))
    meds = [m.name for m in s.facts.medications
            if m.classes & {"med-oral-calcium", "med-vitamin-d", "med-active-vitamin-d", "med-iv-calcium"}]
    return Finding(
        rule_id="documented-calcinosis",
        indicator="warning",
        fields={
            "dx": dx,
            "abnormality": found[0][0],
            "values_md": bullets("mineral_heading", [f[0] for f in found]),
            "factors_md": bullets("meds_heading", [Phrase.of("med_line", name=n) for n in meds]),
        },
        evidence=[e for f in found for e in f[1]],
        suggestions=[
            SuggestionSpec(kind="consult", label="consult", specialty="nephrology"),
            SuggestionSpec(kind="consult", label="consult", specialty="dermatology"),
        ],
    )


# --- R22 ------------------------------------------------------------------------------------------------


@rule("hyperparathyroid-pattern", "R22", PV, fields={"ca_text", "p"}, version="0.2.0", silent_for_infants=True)
def hyperparathyroid_pattern(ctx: RuleContext) -> Finding | None:
    """R22: within 7 days Ca > 10.2 (total/corrected), ALP > lab ULN, P < LLN; no PTH in 30 days."""
    s = ctx.state
    cal = s.calcium
    if cal is None or cal.basis == "ionized" or not s.fresh(cal, R22_WINDOW_DAYS):
        return None
    if cal.value <= HYPERCALCEMIA_MG_DL or cal.result.is_upper_bound:
        return None
    alp = s.latest("lab-alp", days=R22_WINDOW_DAYS)
    p = s.latest("lab-phosphate", days=R22_WINDOW_DAYS)
    if alp is None or alp.ref_high is None or not alp.exceeds(alp.ref_high):
        return None
    if p is None or not p.below(p.ref_low if p.ref_low is not None else PHOSPHATE_LOW_DEFAULT):
        return None
    if s.latest("lab-pth", days=PTH_RECENT_DAYS) is not None:
        return None
    return Finding(
        rule_id="hyperparathyroid-pattern",
        indicator="info",
        fields={
            "ca_text": calcium_text(cal),
            "p": num(p.value),
            "values_md": bullets("values_heading", calcium_lines(cal, s.now)
                                      + [value_line(alp, s.now), value_line(p, s.now)]),
        },
        evidence=calcium_evidence(cal) + [evidence("alp", alp), evidence("phosphate", p)],
        suggestions=_keep(labs_suggestion("order_pth", [PTH])),
    )


# --- R23 ------------------------------------------------------------------------------------------------


@rule("albumin-needed", "R23", PV, fields={"ca_text", "direction"}, version="0.2.0", silent_for_infants=True)
def albumin_needed(ctx: RuleContext) -> Finding | None:
    """R23: latest total Ca (<= 30 d) outside the lab range (default 8.4-10.2) with no albumin or
    ionized calcium within 24 h -> info."""
    s = ctx.state
    ca = s.latest("lab-calcium-total", "lab-calcium-blood", days=CURRENT_DAYS)
    if ca is None:
        return None
    high = ca.ref_high if ca.ref_high is not None else HYPERCALCEMIA_MG_DL
    low = ca.ref_low if ca.ref_low is not None else HYPOCALCEMIA_MG_DL
    direction = "high" if ca.exceeds(high) else "low" if ca.below(low) else ""
    if not direction or albumin_near(s, ca) or ionized_near(s, ca):
        return None
    return Finding(
        rule_id="albumin-needed",
        indicator="info",
        fields={
            "ca_text": f"{num(ca.value)} mg/dL",
            "direction": Text.of("direction_" + direction),
            "values_md": bullets("values_heading", [value_line(ca, s.now)]),
        },
        evidence=[evidence("calcium", ca)],
        suggestions=_keep(labs_suggestion("order_albumin", [ALBUMIN, IONIZED])),
    )
