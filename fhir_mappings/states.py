"""Derived patient states (clinical-rules.md section 2.7) computed once per evaluation from facts.

Only *established* conditions contribute: a possible diagnosis (provisional, differential, ...) never
raises a card on its own (section 2.1, D), so it is left out of every state here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from fhir_mappings.facts import LabResult, PatientFacts
from fhir_mappings.pairing import CaPPair, best_pair

# --- thresholds (each cites its source in clinical-rules.md) -------------------------------------------
CA_MG_PER_MMOL = 4.008
HYPERCALCEMIA_MG_DL = 10.2          # KDOQI 2003 guideline 6.3 (2.54 mmol/L); section 2.7
SEVERE_HYPERCALCEMIA_MG_DL = 12.0   # calcium gluconate labeling: symptoms at >= 12 mg/dL; section 2.7
HYPOCALCEMIA_MG_DL = 8.4            # section R23 default lower limit (D)
IONIZED_HIGH_MG_DL = 1.32 * CA_MG_PER_MMOL   # UnityPoint ionized Ca range 1.12-1.32 mmol/L; section 2.4
IONIZED_LOW_MG_DL = 1.12 * CA_MG_PER_MMOL
IONIZED_SEVERE_MG_DL = 1.6 * CA_MG_PER_MMOL  # ionized >= 1.6 mmol/L severe (D, R04/R08)
PAYNE_FACTOR = 0.8                  # Payne, BMJ 1973: Ca + 0.8 x (4.0 - albumin); section 2.3
PAYNE_NORMAL_ALBUMIN = 4.0
ALBUMIN_PAIR_WINDOW = timedelta(hours=24)   # section 2.3 (D)
IONIZED_PAIR_WINDOW = timedelta(hours=24)   # section 2.3 preference order
PHOSPHATE_HIGH_MG_DL = 4.5          # adults, 1.45 mmol/L; section 2.7 HYPERPHOSPHATEMIA
PHOSPHATE_TARGET_G5_MG_DL = 5.5     # KDOQI 2003 stage-5 target 3.5-5.5 mg/dL; section 2.7
PTH_DEFAULT_ULN = 65.0              # ARUP/Mayo intact PTH 15-65 pg/mL; section 2.7
PTH_MARKED_MULTIPLE = 9.0           # KDIGO 2017 G5D iPTH ~2-9 x ULN; section 2.7
HYPOALBUMINEMIA_G_DL = 3.5          # section 2.7 (D; calciphylaxis co-factor only)
OBESITY_BMI = 30.0                  # section 2.7 OBESE
BMI_WINDOW = timedelta(days=365)
DIALYSIS_PROCEDURE_WINDOW = timedelta(days=30)   # section 2.1 (D)
EGFR_WINDOW = timedelta(days=365)                # section 2.6
EGFR_SUSTAINED = timedelta(days=90)              # KDIGO 2012 chronicity; section 2.7
EGFR_G5, EGFR_G4, EGFR_G3 = 15.0, 30.0, 60.0     # KDIGO 2012 GFR categories
TLS_DX_WINDOW = timedelta(days=14)               # section 2.7 TLS_ACTIVE (D)
TLS_LAB_WINDOW = timedelta(hours=24)             # modified Cairo-Bishop: >= 2 within 24 h
TLS_LAB_RECENCY = timedelta(days=7)              # D: lab TLS only counts while current
TLS_PHOSPHATE_ADULT, TLS_PHOSPHATE_CHILD = 4.5, 6.5  # Cairo-Bishop (Howard et al., NEJM 2011)
TLS_CALCIUM_LOW = 7.0
TLS_URATE = 8.0
TLS_POTASSIUM = 6.0
ADULT_AGE = 18.0
ALBUMIN_WINDOW = timedelta(days=90)              # D: albumin co-factor must be current


@dataclass(frozen=True)
class CalciumStatus:
    """Hypercalcemia classification by the section 2.3 preference order."""

    basis: str                      # "ionized" | "corrected (lab)" | "corrected" | "measured"
    value: float                    # mg/dL (ionized stays ionized, never converted to total)
    result: LabResult               # the calcium result the classification rests on
    albumin: LabResult | None
    high: bool
    severe: bool
    low: bool

    @property
    def time(self) -> datetime:
        """When the calcium was drawn."""
        return self.result.time


@dataclass(frozen=True)
class PatientState:
    """Derived states plus the key lab selections rules share."""

    facts: PatientFacts
    age: float | None
    female: bool
    ckd_stage: str | None           # "G5D" | "G5" | "G4" | "G3" | None
    ckd_source: str
    kidney_tx: bool
    other_tx: bool
    tls_active: bool
    tls_reason: str
    calciphylaxis_dx: bool          # calciphylaxis or calcinosis cutis (L94.2) documented
    ctd: tuple[str, ...]
    obese: bool
    diabetes: bool
    on_warfarin: bool
    hypoalbuminemia: bool
    dialysis_times: tuple[datetime, ...]
    pair: CaPPair | None            # most recent eligible Ca x P pair, any age
    calcium: CalciumStatus | None
    phosphate: LabResult | None
    pth: LabResult | None
    albumin: LabResult | None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def now(self) -> datetime:
        """The injected invocation time."""
        return self.facts.now

    @property
    def adult(self) -> bool:
        """Age >= 18 (unknown age is treated as adult)."""
        return self.age is None or self.age >= ADULT_AGE

    def in_stage(self, *stages: str) -> bool:
        """True when the CKD stage is one of ``stages``."""
        return self.ckd_stage in stages

    def fresh(self, result: LabResult | CaPPair | CalciumStatus | None, days: float) -> bool:
        """Whether ``result`` exists and is at most ``days`` old."""
        if result is None:
            return False
        return self.now - result.time <= timedelta(days=days)

    def latest(self, *kinds: str, days: float | None = None) -> LabResult | None:
        """The newest result of ``kinds`` (optionally no older than ``days``)."""
        for r in self.facts.results(*kinds):
            if days is None or self.now - r.time <= timedelta(days=days):
                return r
        return None

    def pth_uln(self) -> float:
        """The PTH upper limit: lab reference high, else 65 pg/mL."""
        return self.pth.ref_high if self.pth and self.pth.ref_high else PTH_DEFAULT_ULN

    def phosphate_high(self, result: LabResult | None = None) -> bool:
        """HYPERPHOSPHATEMIA: adults > 4.5 mg/dL or > lab ULN; under 18 the lab range only."""
        p = result or self.phosphate
        if p is None:
            return False
        above_lab = p.ref_high is not None and p.exceeds(p.ref_high)
        return above_lab if not self.adult else (p.exceeds(PHOSPHATE_HIGH_MG_DL) or above_lab)

    def phosphate_above_g5_target(self, result: LabResult | None = None) -> bool:
        """P > 5.5 mg/dL (KDOQI stage-5 target)."""
        p = result or self.phosphate
        return p is not None and p.exceeds(PHOSPHATE_TARGET_G5_MG_DL)

    def pth_marked(self) -> bool:
        """PTH > 9 x ULN."""
        return self.pth is not None and self.pth.exceeds(PTH_MARKED_MULTIPLE * self.pth_uln())

    def pth_high(self) -> bool:
        """PTH > ULN."""
        return self.pth is not None and self.pth.exceeds(self.pth_uln())


def _nearest(results: Sequence[LabResult], anchor: LabResult, window: timedelta) -> LabResult | None:
    best: LabResult | None = None
    for r in results:
        same = bool(anchor.specimen) and r.specimen == anchor.specimen
        gap = abs(r.time - anchor.time)
        if same or gap <= window:
            if best is None or gap < abs(best.time - anchor.time):
                best = r
    return best


def calcium_status(facts: PatientFacts, age: float | None) -> CalciumStatus | None:
    """Classify the newest calcium: ionized within 24 h, else corrected, else measured (section 2.3)."""
    total_list = facts.results("lab-calcium-total") or facts.results("lab-calcium-blood")
    ionized_list = facts.results("lab-calcium-ionized")
    total = total_list[0] if total_list else None
    ionized = ionized_list[0] if ionized_list else None
    if ionized is not None and (total is None or ionized.time >= total.time - IONIZED_PAIR_WINDOW):
        high_limit = ionized.ref_high if ionized.ref_high else IONIZED_HIGH_MG_DL
        low_limit = ionized.ref_low if ionized.ref_low else IONIZED_LOW_MG_DL
        return CalciumStatus(
            basis="ionized", value=ionized.value, result=ionized, albumin=None,
            high=ionized.exceeds(high_limit), severe=ionized.exceeds(IONIZED_SEVERE_MG_DL, inclusive=True),
            low=ionized.below(low_limit),
        )
    if total is None:
        return None
    albumin = _nearest(facts.results("lab-albumin"), total, ALBUMIN_PAIR_WINDOW)
    lab_corrected = _nearest(facts.results("lab-calcium-corrected"), total, ALBUMIN_PAIR_WINDOW)
    value, basis = total.value, "measured"
    if lab_corrected is not None:
        value, basis = lab_corrected.value, "corrected (lab)"
    elif albumin is not None:
        value = total.value + PAYNE_FACTOR * (PAYNE_NORMAL_ALBUMIN - albumin.value)
        basis = "corrected"
    # Children: the lab's own (age-specific) range decides; adult cut-offs do not apply (D).
    child = age is not None and age < ADULT_AGE
    high_limit = total.ref_high if child and total.ref_high else HYPERCALCEMIA_MG_DL
    low_limit = total.ref_low if child and total.ref_low else HYPOCALCEMIA_MG_DL
    upper_bound, lower_bound = total.is_upper_bound, total.is_lower_bound
    return CalciumStatus(
        basis=basis, value=value, result=total, albumin=albumin,
        high=not upper_bound and value > high_limit,
        severe=not upper_bound and value >= SEVERE_HYPERCALCEMIA_MG_DL,
        low=not lower_bound and value < low_limit,
    )


def _sustained_below(egfrs: Sequence[LabResult], upper: float, now: datetime) -> bool:
    """Latest eGFR < upper and every value back to one >= 90 days earlier also < upper."""
    ordered = sorted(egfrs, key=lambda r: r.time, reverse=True)
    if not ordered or now - ordered[0].time > EGFR_WINDOW or not ordered[0].below(upper):
        return False
    latest = ordered[0].time
    for r in ordered[1:]:
        if not r.below(upper):
            return False
        if latest - r.time >= EGFR_SUSTAINED:
            return True
    return False


def _ckd_stage(facts: PatientFacts, kidney_tx: bool, dialysis_recent: bool) -> tuple[str | None, str]:
    def cond_source(*groups: str) -> str:
        found = facts.conditions_in(*groups)
        return f"Condition {found[0].code}" if found else ""

    dialysis_cond = cond_source("cond-ckd-stage-5-dialysis", "cond-dialysis-dependence")
    if dialysis_cond:
        return "G5D", dialysis_cond
    if dialysis_recent:
        return "G5D", "dialysis procedure within 30 days"
    esrd = cond_source("cond-esrd")
    if esrd and not kidney_tx:  # ESRD alone means dialysis unless transplant evidence exists
        return "G5D", esrd
    egfrs = facts.results("lab-egfr")
    for stage, groups, upper in (
        ("G5", ("cond-ckd-stage-5",), EGFR_G5),
        ("G4", ("cond-ckd-stage-4",), EGFR_G4),
        ("G3", ("cond-ckd-stage-3",), EGFR_G3),
    ):
        source = cond_source(*groups)
        if source:
            return stage, source
        if _sustained_below(egfrs, upper, facts.now):
            return stage, f"eGFR < {upper:g} for at least 90 days"
    return None, ""


def _tls(facts: PatientFacts, adult: bool) -> tuple[bool, str]:
    now = facts.now
    for cond in facts.conditions_in("cond-tumor-lysis"):
        times = [t for t in (cond.time, cond.recorded) if t is not None]
        if not times or any(now - t <= TLS_DX_WINDOW for t in times):
            return True, f"tumor lysis syndrome diagnosis ({cond.code})"
    if not facts.has_condition("cond-malignancy", "cond-multiple-myeloma", "cond-leukemia"):
        return False, ""
    latest = [r for r in (
        next(iter(facts.results("lab-phosphate")), None),
        next(iter(facts.results("lab-calcium-total")), None),
        next(iter(facts.results("lab-urate")), None),
        next(iter(facts.results("lab-potassium")), None),
    ) if r is not None and now - r.time <= TLS_LAB_RECENCY]
    if not latest:
        return False, ""
    anchor = max(r.time for r in latest)
    met = []
    for r in latest:
        if anchor - r.time > TLS_LAB_WINDOW:
            continue
        if r.kind == "lab-phosphate" and r.exceeds(TLS_PHOSPHATE_ADULT if adult else TLS_PHOSPHATE_CHILD, True):
            met.append("phosphate")
        elif r.kind == "lab-calcium-total" and r.below(TLS_CALCIUM_LOW, inclusive=True):
            met.append("calcium")
        elif r.kind == "lab-urate" and r.exceeds(TLS_URATE, inclusive=True):
            met.append("urate")
        elif r.kind == "lab-potassium" and r.exceeds(TLS_POTASSIUM, inclusive=True):
            met.append("potassium")
    if len(met) >= 2:
        return True, "laboratory tumor lysis (" + ", ".join(met) + ") with active malignancy"
    return False, ""


def derive_states(facts: PatientFacts) -> PatientState:
    """Compute every section 2.7 state from ``facts``."""
    now = facts.now
    age = facts.age_years()
    dialysis_times = tuple(
        p.time for p in facts.procedures if "proc-dialysis" in p.groups and p.time is not None
    )
    dialysis_recent = any(
        "proc-dialysis" in p.groups and (p.time is None or now - p.time <= DIALYSIS_PROCEDURE_WINDOW)
        for p in facts.procedures
    )
    kidney_tx = facts.has_condition("cond-kidney-transplant") or any(
        "proc-kidney-transplant" in p.groups for p in facts.procedures
    )
    stage, source = _ckd_stage(facts, kidney_tx, dialysis_recent)
    adult = age is None or age >= ADULT_AGE
    tls, tls_reason = _tls(facts, adult)
    bmi = next(iter(facts.results("lab-bmi")), None)
    albumin = next(iter(facts.results("lab-albumin")), None)
    calcium = facts.results("lab-calcium-total") or facts.results("lab-calcium-blood")
    pair = best_pair(calcium, facts.results("lab-phosphate"), dialysis_times)
    ctd = tuple(
        c.display or c.code
        for c in facts.conditions_in(
            "cond-dermatomyositis", "cond-juvenile-dermatomyositis", "cond-systemic-sclerosis", "cond-sle"
        )
    )
    return PatientState(
        facts=facts,
        age=age,
        female=facts.gender == "female",
        ckd_stage=stage,
        ckd_source=source,
        kidney_tx=kidney_tx,
        other_tx=facts.has_condition("cond-other-transplant"),
        tls_active=tls,
        tls_reason=tls_reason,
        calciphylaxis_dx=facts.has_condition("cond-calciphylaxis", "cond-calcinosis-cutis"),
        ctd=ctd,
        obese=facts.has_condition("cond-obesity")
        or (bmi is not None and now - bmi.time <= BMI_WINDOW and bmi.exceeds(OBESITY_BMI, inclusive=True)),
        diabetes=facts.has_condition("cond-diabetes"),
        on_warfarin=facts.has_medication("med-warfarin"),
        hypoalbuminemia=albumin is not None
        and now - albumin.time <= ALBUMIN_WINDOW
        and albumin.below(HYPOALBUMINEMIA_G_DL),
        dialysis_times=dialysis_times,
        pair=pair,
        calcium=calcium_status(facts, age),
        phosphate=next(iter(facts.results("lab-phosphate")), None),
        pth=next(iter(facts.results("lab-pth")), None),
        albumin=albumin,
    )
