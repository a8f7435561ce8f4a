"""Derived patient states (clinical-rules.md section 2.7, revision 2 in section 8) computed once per evaluation.

Only *established* conditions contribute: a possible diagnosis (provisional, differential, ...) never
raises a card on its own (section 2.1, D), so it is left out of every state here.

Before any state is derived, results drawn during or up to 6 h after an intermittent haemodialysis session are
set aside (§8.0, §8 C18): they are not comparable with pre-dialysis values and no rule may use them.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import NamedTuple

from fhir_mappings.facts import ConditionFact, LabResult, PatientFacts, ProcedureFact, SetAside, Skipped
from fhir_mappings.labs import ANALYTE_LABEL, KIND_LABEL
from fhir_mappings.pairing import CaPPair, best_pair

from .thresholds import (
    ADULT_AGE,
    ALBUMIN_PAIR_WINDOW,
    ALBUMIN_WINDOW,
    BMI_WINDOW,
    CRRT_ACTIVE_WINDOW,
    DIALYSIS_PROCEDURE_WINDOW,
    EGFR_G3,
    EGFR_G4,
    EGFR_G5,
    EGFR_SUSTAINED,
    EGFR_WINDOW,
    HYPERCALCEMIA_MG_DL,
    HYPOALBUMINEMIA_G_DL,
    HYPOCALCEMIA_MG_DL,
    IONIZED_HIGH_MG_DL,
    IONIZED_LOW_MG_DL,
    IONIZED_MODERATE_MG_DL,
    IONIZED_PAIR_WINDOW,
    IONIZED_SEVERE_MG_DL,
    MODERATE_HYPERCALCEMIA_MG_DL,
    OBESITY_BMI,
    PARATHYROIDECTOMY_WINDOW,
    PAYNE_FACTOR,
    PAYNE_NORMAL_ALBUMIN,
    PHOSPHATE_HIGH_MG_DL,
    PHOSPHATE_TARGET_G5_MG_DL,
    POST_DIALYSIS_WINDOW,
    PTH_DEFAULT_ULN,
    PTH_MARKED_MULTIPLE,
    SEVERE_HYPERCALCEMIA_MG_DL,
    TLS_CALCIUM_LOW,
    TLS_DX_WINDOW,
    TLS_LAB_RECENCY,
    TLS_LAB_WINDOW,
    TLS_PHOSPHATE_ADULT,
    TLS_PHOSPHATE_CHILD,
    TLS_POTASSIUM,
    TLS_URATE,
)

# §8 C5: true dialysis evidence (conditions); ESRD codes count only in the transplant comparison.
DIALYSIS_CONDITIONS = ("cond-ckd-stage-5-dialysis", "cond-dialysis-dependence")
ESRD_CONDITIONS = ("cond-esrd",)
# §8.0: peritoneal dialysis and CRRT samples are never post-dialysis; every other session is intermittent.
NON_INTERMITTENT = frozenset({"proc-dialysis-peritoneal", "proc-crrt"})
# Lab kinds that are not blood chemistry drawn around a session (a BMI is not "post-dialysis").
NOT_DRAWN = frozenset({"lab-bmi"})


@dataclass(frozen=True)
class CalciumStatus:
    """Hypercalcemia classification by the section 2.3 preference order, graded by §8 C10."""

    basis: str                      # "ionized" | "corrected (lab)" | "corrected" | "measured"
    value: float                    # mg/dL (ionized stays ionized, never converted to total)
    result: LabResult               # the calcium result the classification rests on
    albumin: LabResult | None
    high: bool
    grade: str                      # "" | "mild" | "moderate" | "severe" (§8 C10; only when high)
    low: bool
    high_limit: float = HYPERCALCEMIA_MG_DL   # the ULN that decided ``high`` (mg/dL)

    @property
    def time(self) -> datetime:
        """When the calcium was drawn."""
        return self.result.time

    @property
    def at_least_moderate(self) -> bool:
        """Total/corrected >= 12.0 mg/dL or ionized >= 1.6 mmol/L (R04 warning; R08/R09 threshold, §8 C10)."""
        return self.grade in ("moderate", "severe")


class DialysisSession(NamedTuple):
    """One dated dialysis Procedure (§8.0 procedure dates); a named tuple: built for every session of every call."""

    start: datetime
    end: datetime
    intermittent: bool
    crrt: bool


@dataclass(frozen=True)
class PatientState:
    """Derived states plus the key lab selections rules share."""

    facts: PatientFacts
    age: float | None
    female: bool
    ckd_stage: str | None           # "G5D" | "G5" | "G4" | "G3" | None
    ckd_source: str                 # words: what the stage rests on (display names, never raw codes)
    kidney_tx: bool
    other_tx: bool
    tls_active: bool
    tls_reason: str
    calciphylaxis_dx: bool          # §8 C4: calciphylaxis only (never L94.2)
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
    on_dialysis: bool = False       # §8 C5: dialysis evidence (not an ESRD code alone)
    calcinosis_cutis_dx: bool = False   # §8 C4: L94.2, its own state
    calciphylaxis_onset: datetime | None = None
    crrt_active: bool = False       # §8.0 C2/C7
    citrate_on_crrt: bool = False
    parathyroidectomy: ProcedureFact | None = None   # completed within 30 days (§8 C2)
    transplant_over_dialysis: bool = False           # §8 C5: stale dialysis evidence, transplant wins

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
        """HYPERPHOSPHATEMIA: adults > 4.5 mg/dL or > lab ULN.

        Under 18 only an age-banded lab range counts, or ``interpretation`` H/HH together with one (§8 C11:
        adolescent phosphate runs above the adult 4.5 mg/dL and labs often send adult ranges).
        """
        p = result or self.phosphate
        if p is None:
            return False
        if not self.adult:
            if not p.ref_age_banded:
                return False
            above_band = p.ref_high is not None and p.exceeds(p.ref_high)
            return above_band or (p.interpretation in ("H", "HH") and not p.is_upper_bound)
        above_lab = p.ref_high is not None and p.exceeds(p.ref_high)
        return p.exceeds(PHOSPHATE_HIGH_MG_DL) or above_lab

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


def _grade(value: float, moderate: float, severe: float) -> str:
    return "severe" if value >= severe else "moderate" if value >= moderate else "mild"


def calcium_status(facts: PatientFacts, age: float | None, use_ionized: bool = True) -> CalciumStatus | None:
    """Classify the newest calcium: ionized within 24 h, else corrected, else measured (section 2.3).

    ``use_ionized=False`` gives the corrected-or-total classification alone (the §8 C2 marker order falls back
    to it when no ionized calcium is recent).
    """
    total_list = facts.results("lab-calcium-total") or facts.results("lab-calcium-blood")
    ionized_list = facts.results("lab-calcium-ionized") if use_ionized else []
    total = total_list[0] if total_list else None
    ionized = ionized_list[0] if ionized_list else None
    if ionized is not None and (total is None or ionized.time >= total.time - IONIZED_PAIR_WINDOW):
        high_limit = ionized.ref_high if ionized.ref_high else IONIZED_HIGH_MG_DL
        low_limit = ionized.ref_low if ionized.ref_low else IONIZED_LOW_MG_DL
        high = ionized.exceeds(high_limit)
        return CalciumStatus(
            basis="ionized", value=ionized.value, result=ionized, albumin=None, high=high,
            grade=_grade(ionized.value, IONIZED_MODERATE_MG_DL, IONIZED_SEVERE_MG_DL) if high else "",
            low=ionized.below(low_limit), high_limit=high_limit,
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
    # Children: an age-banded lab range decides when there is one (§8 C11); adult cut-offs otherwise.
    child = age is not None and age < ADULT_AGE
    banded = child and total.ref_age_banded
    high_limit = total.ref_high if banded and total.ref_high else HYPERCALCEMIA_MG_DL
    low_limit = total.ref_low if banded and total.ref_low else HYPOCALCEMIA_MG_DL
    upper_bound, lower_bound = total.is_upper_bound, total.is_lower_bound
    high = not upper_bound and value > high_limit
    return CalciumStatus(
        basis=basis, value=value, result=total, albumin=albumin, high=high,
        grade=_grade(value, MODERATE_HYPERCALCEMIA_MG_DL, SEVERE_HYPERCALCEMIA_MG_DL) if high else "",
        low=not lower_bound and value < low_limit, high_limit=high_limit,
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


def dialysis_sessions(procedures: Iterable[ProcedureFact]) -> list[DialysisSession]:
    """Dated dialysis treatments (§8.0): intermittent unless peritoneal or CRRT; sorted by start."""
    sessions = [
        DialysisSession(p.start, p.end, intermittent=not (p.groups & NON_INTERMITTENT), crrt="proc-crrt" in p.groups)
        for p in procedures
        if "proc-dialysis" in p.groups and p.start is not None and p.end is not None
    ]
    sessions.sort(key=lambda s: s.start)
    return sessions


POST_DIALYSIS_REASON = "drawn during or within 6 h after a haemodialysis session"


def set_aside_post_dialysis(facts: PatientFacts, sessions: Sequence[DialysisSession] | None = None) -> PatientFacts:
    """Remove results drawn from the start of an intermittent session to 6 h after its end (§8.0, §8 C18).

    O((labs + sessions) log sessions): sessions sorted by start with a running maximum of their window ends, so
    each result is one bisection. The removed results are named in ``set_aside`` (cards) and ``skipped`` (audit).
    """
    if sessions is None:  # derive_states passes the sessions it has already built
        sessions = dialysis_sessions(facts.procedures)
    windows = [(s.start, s.end + POST_DIALYSIS_WINDOW) for s in sessions if s.intermittent]
    if not windows or not facts.labs:
        return facts
    starts = [w[0] for w in windows]
    reach: list[datetime] = []
    for _start, until in windows:
        reach.append(until if not reach or until > reach[-1] else reach[-1])
    kept: list[LabResult] = []
    aside: list[SetAside] = []
    skipped: list[Skipped] = []
    for lab in facts.labs:
        i = bisect_left(starts, lab.time)  # sessions [0, i) started strictly before the draw
        if lab.kind not in NOT_DRAWN and i > 0 and lab.time <= reach[i - 1]:
            aside.append(SetAside("Observation", lab.resource_id, _label(lab), _reported(lab), lab.time,
                                  POST_DIALYSIS_REASON))
            skipped.append(Skipped("Observation", lab.resource_id, "post-dialysis sample set aside"))
        else:
            kept.append(lab)
    if not aside:
        return facts
    unique = {(a.resource_id, a.label): a for a in aside}  # one result may be in two lab kinds
    return replace(facts, labs=tuple(kept), set_aside=facts.set_aside + tuple(unique.values()),
                   skipped=facts.skipped + tuple(dict.fromkeys(skipped)))


def _label(lab: LabResult) -> str:
    # A post-dialysis sample is named by its analyte ("Calcium" for a total, blood or corrected calcium), ionized
    # calcium by its kind; both names come from fhir_mappings/labs.toml (issue 17 item 4).
    if lab.kind == "lab-calcium-ionized":
        return KIND_LABEL[lab.kind]
    return ANALYTE_LABEL.get(lab.analyte, lab.analyte)


def _reported(lab: LabResult) -> str:
    return f"{lab.comparator}{lab.original_value:g} {lab.original_unit}".strip()


def _newest(times: Iterable[datetime | None]) -> tuple[bool, datetime | None]:
    """(any evidence, newest date); undated evidence is older than any dated evidence (§8.0)."""
    found = False
    newest: datetime | None = None
    for t in times:
        found = True
        if t is not None and (newest is None or t > newest):
            newest = t
    return found, newest


def _condition_words(cond: ConditionFact) -> str:
    """A condition as a clinician reads it: its display name (never a bare code, §13 item 3)."""
    return cond.display or GROUP_NAMES.get(next(iter(sorted(cond.groups)), ""), "a coded diagnosis")


GROUP_NAMES = {
    "cond-ckd-stage-5-dialysis": "CKD stage 5 on dialysis",
    "cond-dialysis-dependence": "dependence on renal dialysis",
    "cond-esrd": "end-stage renal disease",
    "cond-ckd-stage-5": "CKD stage 5",
    "cond-ckd-stage-4": "CKD stage 4",
    "cond-ckd-stage-3": "CKD stage 3",
}


def _stage_from_egfr(egfrs: Sequence[LabResult], now: datetime) -> tuple[str | None, str]:
    """§8 C5 details: the most recent eGFR within 365 days, one value sufficing."""
    latest = next((r for r in egfrs if now - r.time <= EGFR_WINDOW), None)
    if latest is None:
        return None, ""
    for stage, upper in (("G5", EGFR_G5), ("G4", EGFR_G4), ("G3", EGFR_G3)):
        if latest.below(upper):
            return stage, f"eGFR {latest.value:.0f} on {latest.time:%Y-%m-%d}, after kidney transplant"
    return None, ""


@dataclass(frozen=True)
class _Renal:
    stage: str | None
    source: str
    on_dialysis: bool
    kidney_tx: bool
    transplant_over_dialysis: bool


def _renal(facts: PatientFacts) -> _Renal:
    """CKD stage with §8 C5: dialysis means dialysis sessions; transplant wins over stale dialysis evidence."""
    now = facts.now
    dialysis_procs = [p for p in facts.procedures if "proc-dialysis" in p.groups]
    current_session = any(p.time is not None and now - p.time <= DIALYSIS_PROCEDURE_WINDOW for p in dialysis_procs)
    dialysis_conds = facts.conditions_in(*DIALYSIS_CONDITIONS)
    esrd_conds = facts.conditions_in(*ESRD_CONDITIONS)
    tx_conds = facts.conditions_in("cond-kidney-transplant")
    tx_procs = [p for p in facts.procedures if "proc-kidney-transplant" in p.groups]
    kidney_tx = bool(tx_conds or tx_procs)
    if kidney_tx and (dialysis_conds or esrd_conds or dialysis_procs) and not current_session \
            and not facts.has_condition("cond-kidney-graft-failure"):
        _, tx_time = _newest([c.time for c in tx_conds] + [p.time for p in tx_procs])
        _, dialysis_time = _newest([c.time for c in dialysis_conds + esrd_conds] + [p.time for p in dialysis_procs])
        # Undated counts as older than any dated evidence; on a tie dialysis wins (§8 C5 details).
        if tx_time is not None and (dialysis_time is None or tx_time > dialysis_time):
            stage, source = _stage_from_egfr(facts.results("lab-egfr"), now)
            return _Renal(stage, source, False, True, True)
    if dialysis_conds:
        return _Renal("G5D", _condition_words(dialysis_conds[0]), True, kidney_tx, False)
    if current_session:
        return _Renal("G5D", "dialysis session within 30 days", True, kidney_tx, False)
    if esrd_conds and not kidney_tx:  # an ESRD code alone is treated as G5D, worded "ESRD" (§8 C5)
        return _Renal("G5D", _condition_words(esrd_conds[0]), False, kidney_tx, False)
    egfrs = facts.results("lab-egfr")
    for stage, groups, upper in (
        ("G5", ("cond-ckd-stage-5",), EGFR_G5),
        ("G4", ("cond-ckd-stage-4",), EGFR_G4),
        ("G3", ("cond-ckd-stage-3",), EGFR_G3),
    ):
        found = facts.conditions_in(*groups)
        if found:
            return _Renal(stage, _condition_words(found[0]), False, kidney_tx, False)
        if _sustained_below(egfrs, upper, facts.now):
            return _Renal(stage, f"eGFR < {upper:g} for at least 90 days", False, kidney_tx, False)
    return _Renal(None, "", False, kidney_tx, False)


def _tls(facts: PatientFacts, adult: bool) -> tuple[bool, str]:
    now = facts.now
    for cond in facts.conditions_in("cond-tumor-lysis"):
        times = [t for t in (cond.time, cond.recorded) if t is not None]
        if not times or any(now - t <= TLS_DX_WINDOW for t in times):
            return True, f"tumor lysis syndrome diagnosis ({_condition_words(cond)})"
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


# §8.0: citrate anticoagulation is recognised by text on an active medication (D).
CITRATE_WORD = "citrate"


def _crrt(facts: PatientFacts, sessions: Sequence[DialysisSession]) -> tuple[bool, bool]:
    """(CRRT active, citrate anticoagulation on CRRT) per §8.0 C2/C7 data."""
    now = facts.now
    active = any(s.crrt and s.start <= now and now - s.end <= CRRT_ACTIVE_WINDOW for s in sessions) or any(
        "proc-crrt" in p.groups and p.status == "in-progress" for p in facts.procedures
    ) or any("proc-crrt" in r.groups and r.status == "active" for r in facts.service_requests)
    citrate = active and any(
        CITRATE_WORD in m.name.lower() and "med-oral-calcium" not in m.classes for m in facts.medications
    )
    return active, citrate


def _parathyroidectomy(facts: PatientFacts) -> ProcedureFact | None:
    """A completed parathyroidectomy within 30 days (§8.0 C2 data)."""
    for p in facts.procedures:
        if ("proc-parathyroidectomy" in p.groups and p.status == "completed" and p.time is not None
                and facts.now - p.time <= PARATHYROIDECTOMY_WINDOW):
            return p
    return None


def derive_states(facts: PatientFacts) -> PatientState:
    """Compute every section 2.7 / §8 state from ``facts`` (post-dialysis samples are set aside first)."""
    sessions = dialysis_sessions(facts.procedures)
    facts = set_aside_post_dialysis(facts, sessions)
    now = facts.now
    age = facts.age_years()
    renal = _renal(facts)
    adult = age is None or age >= ADULT_AGE
    tls, tls_reason = _tls(facts, adult)
    bmi = next(iter(facts.results("lab-bmi")), None)
    albumin = next(iter(facts.results("lab-albumin")), None)
    calcium = facts.results("lab-calcium-total") or facts.results("lab-calcium-blood")
    dialysis_times = tuple(s.start for s in sessions if s.intermittent)
    pair = best_pair(calcium, facts.results("lab-phosphate"), dialysis_times)
    ctd = tuple(
        _condition_words(c)
        for c in facts.conditions_in(
            "cond-dermatomyositis", "cond-juvenile-dermatomyositis", "cond-systemic-sclerosis", "cond-sle"
        )
    )
    calciphylaxis = facts.conditions_in("cond-calciphylaxis")
    onsets = [c.time for c in calciphylaxis if c.time is not None]
    crrt_active, citrate = _crrt(facts, sessions)
    return PatientState(
        facts=facts,
        age=age,
        female=facts.gender == "female",
        ckd_stage=renal.stage,
        ckd_source=renal.source,
        kidney_tx=renal.kidney_tx,
        other_tx=facts.has_condition("cond-other-transplant"),
        tls_active=tls,
        tls_reason=tls_reason,
        calciphylaxis_dx=bool(calciphylaxis),
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
        on_dialysis=renal.on_dialysis,
        calcinosis_cutis_dx=facts.has_condition("cond-calcinosis-cutis"),
        calciphylaxis_onset=min(onsets) if onsets else None,
        crrt_active=crrt_active,
        citrate_on_crrt=citrate,
        parathyroidectomy=_parathyroidectomy(facts),
        transplant_over_dialysis=renal.transplant_over_dialysis,
    )
