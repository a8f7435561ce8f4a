"""Order-select / order-sign rules R08, R09, R11, R12, R13, R21, R24 (clinical-rules.md sections 3 and 8).

Triggers are the *selected* draft MedicationRequests (section 2.1). Values count when <= 7 days old
(ionized calcium <= 72 h; section 2.6); older Ca x P pairs are shown as history only. Cards never block:
IV calcium is life-saving in hyperkalemia and symptomatic hypocalcemia (section 2.9).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fhir_mappings.facts import DraftOrder, LabResult
from fhir_mappings.orders import IV_CALCIUM, IV_PHOSPHATE, ORAL_CALCIUM
from fhir_mappings.pairing import CaPPair
from findings import Markdown, Phrase, SuggestionSpec, Text, bullets, joined

from .base import (
    ORDER_HOOKS,
    Finding,
    RuleContext,
    calcium_evidence,
    calcium_kind,
    calcium_lines,
    calcium_text,
    caxp_text,
    evidence,
    num,
    pair_evidence,
    pair_lines,
    rule,
    shown,
    stage_label,
    value_line,
)
from .patient_view import (
    ALBUMIN,
    CALCIUM,
    PHOSPHATE,
    VITD25,
    VITD125,
    calciphylaxis_minerals,
    current_hypercalcemia,
    usable_pair,
)
from .states import PatientState, calcium_status
from .thresholds import (
    AKI_RECENT_DAYS,
    CA_MG_PER_MMOL,
    CAXP_KDOQI_TARGET,
    CAXP_SEED_THRESHOLD,
    CRITICAL_PAIR_HOURS,
    CURRENT_DAYS,
    HYPOPHOSPHATEMIA_DAYS,
    HYPOPHOSPHATEMIA_MG_DL,
    INDICATION_POTASSIUM,
    LOW_CALCIUM_MARKER_MG_DL,
    LOW_IONIZED_MARKER_MG_DL,
    MAGNESIUM_DAYS,
    MAGNESIUM_LLN_MG_DL,
    MAGNESIUM_ULN_MG_DL,
    MARKER_IONIZED_DAYS,
    MARKER_POTASSIUM_DAYS,
    ORDER_DAYS,
    ORDER_IONIZED_DAYS,
    PHOSPHATE_HIGH_MG_DL,
    SEVERE_HYPOPHOSPHATEMIA_MG_DL,
    VITAMIN_D_DAYS,
    VITD_POSSIBLE_EXCESS,
    WARFARIN_HISTORY_DAYS,
)


def selected(ctx: RuleContext, med_class: str) -> list[DraftOrder]:
    """Selected draft orders in ``med_class`` (after route logic)."""
    return [o for o in ctx.orders if o.selected and med_class in o.classes]


def order_pair(state: PatientState) -> CaPPair | None:
    """The latest pair if <= 7 days old (section 2.6 order-select column)."""
    return usable_pair(state, ORDER_DAYS)


def order_hypercalcemia(state: PatientState) -> tuple[bool, bool]:
    """(hypercalcemia, >= 12.0 mg/dL or ionized >= 1.6 mmol/L) on a calcium <= 7 days old (ionized <= 72 h)."""
    cal = state.calcium
    if cal is None:
        return False, False
    fresh = state.fresh(cal, ORDER_IONIZED_DAYS if cal.basis == "ionized" else ORDER_DAYS)
    return fresh and cal.high, fresh and cal.at_least_moderate


def order_phosphate_high(state: PatientState) -> bool:
    """HYPERPHOSPHATEMIA (adult > 4.5 mg/dL or > ULN) on a phosphate <= 7 days old."""
    return state.fresh(state.phosphate, ORDER_DAYS) and state.phosphate_high()


def context_label(state: PatientState) -> Text:
    """``dialysis patient`` (dialysis evidence only, §8 C5) / ``ESRD patient`` / ``CKD G5 patient`` / ``this
    patient``."""
    if state.on_dialysis:
        return Text.of("ctx_dialysis")
    if state.ckd_stage:
        return Text.of("ctx_ckd", stage=stage_label(state))
    return Text.of("ctx_patient")


def order_block(order: DraftOrder) -> Markdown:
    """The order as parsed: drug (escaped), dose, route and whether the route was inferred."""
    lines: list[Markdown] = [Phrase.of("order_drug", name=order.name or Phrase.of("unnamed_drug"))]
    if order.dose_text:
        lines.append(Phrase.of("order_dose", dose=order.dose_text))
    if order.route_inferred:
        lines.append(Phrase.of("route_inferred"))
    else:
        route = order.route_text or Text.of("route_" + order.route.replace("-", "_"))
        lines.append(Phrase.of("order_route", route=route))
    return bullets("order_heading", lines)


def order_values(state: PatientState) -> tuple[list[Markdown], list[dict[str, Any]]]:
    """Current Ca, P, Ca x P, ionized Ca, albumin and K for order-card details (history if older)."""
    lines: list[Markdown] = []
    ev: list[dict[str, Any]] = []
    pair = state.pair
    if pair is not None:
        lines += pair_lines(pair, state.now)
        if not state.fresh(pair, ORDER_DAYS):
            lines.append(Phrase.of("pair_history"))
        else:
            ev += pair_evidence(pair)
    elif state.phosphate is not None:
        lines.append(value_line(state.phosphate, state.now))
    cal = state.calcium
    if cal is not None and (pair is None or cal.result is not pair.calcium or cal.basis != "measured"):
        lines += calcium_lines(cal, state.now) if pair is None else calcium_lines(cal, state.now)[1:]
        ev += calcium_evidence(cal)
    for kind in ("lab-calcium-ionized", "lab-potassium"):
        r = state.latest(kind, days=ORDER_DAYS)
        if r is not None and (cal is None or r is not cal.result):
            lines.append(value_line(r, state.now))
    if not lines:
        lines.append(Phrase.of("no_recent_values"))
    return lines, ev


def _stale_labs(state: PatientState) -> list[str]:
    codes = []
    if state.latest("lab-calcium-total", "lab-calcium-blood", days=ORDER_DAYS) is None:
        codes.append(CALCIUM)
    if state.latest("lab-phosphate", days=ORDER_DAYS) is None:
        codes.append(PHOSPHATE)
    if state.latest("lab-albumin", days=ORDER_DAYS) is None:
        codes.append(ALBUMIN)
    return codes


def _labs(codes: list[str]) -> list[SuggestionSpec]:
    return [SuggestionSpec(kind="labs", label="order_mineral_labs", labs=tuple(codes))] if codes else []


def _nephrology(state: PatientState) -> list[SuggestionSpec]:
    if state.ckd_stage or state.kidney_tx:
        return [SuggestionSpec(kind="consult", label="consult", specialty="nephrology")]
    return []


# --- R08 / R09 shared: critical conditions (§8.0), indication and low-calcium markers (§8 C2/C3) --------


@dataclass(frozen=True)
class Marker:
    """A §8 C2 marker: the words that lead the summary, the detail line, and its evidence."""

    kind: str                   # "indication" | "low-calcium"
    words: Markdown             # e.g. "K 7.1 mmol/L" (plain text, worded by cards where it is a phrase)
    line: Markdown
    evidence: list[dict[str, Any]]


def critical_reason(state: PatientState, iv_phosphate: bool = False) -> Markdown:
    """§8.0 ``critical`` on IV orders: the words of the first condition that holds, '' when none.

    Ca x P > 70 from a pair drawn <= 24 h apart whose later draw is <= 48 h old; total/corrected Ca >= 12.0 mg/dL
    or ionized >= 1.6 mmol/L within 72 h; CALCIPHYLAXIS_DX; for R09 also current (<= 7 d) HYPERPHOSPHATEMIA.
    Calcinosis cutis (L94.2) never makes a card critical.
    """
    pair = state.pair
    if (pair is not None and not pair.is_fallback and pair.exceeds(CAXP_SEED_THRESHOLD)
            and state.now - pair.time <= timedelta(hours=CRITICAL_PAIR_HOURS)):
        return Text.of("trigger_caxp", value=caxp_text(pair))
    cal = state.calcium
    if cal is not None and cal.at_least_moderate and state.fresh(cal, ORDER_IONIZED_DAYS):
        return Text.of("trigger_severe_ca", value=calcium_text(cal), grade=Text.of("hypercalcemia_" + cal.grade))
    if state.calciphylaxis_dx:
        return Text.of("trigger_calciphylaxis")
    if iv_phosphate and order_phosphate_high(state) and state.phosphate is not None:
        return Text.of("reason_phosphate", value=shown(state.phosphate.value, PHOSPHATE_HIGH_MG_DL))
    return ""


def indication_marker(state: PatientState) -> Marker | None:
    """§8 C2 indication markers (IV calcium is likely needed): K >= 6.0 mmol/L within 24 h, parathyroidectomy
    within 30 days (hungry bone), CRRT active (with or without citrate anticoagulation)."""
    k = state.latest("lab-potassium", days=MARKER_POTASSIUM_DAYS)
    if k is not None and k.exceeds(INDICATION_POTASSIUM, inclusive=True):
        words: Markdown = Text.of("words_potassium", value=num(k.value))
        return Marker("indication", words, value_line(k, state.now), [evidence("potassium", k)])
    if state.parathyroidectomy is not None:
        words = Text.of("marker_parathyroidectomy")
        return Marker("indication", words, Phrase.of("marker_line", what=words), [])
    if state.crrt_active:
        words = Text.of("marker_citrate") if state.citrate_on_crrt else Text.of("marker_crrt")
        return Marker("indication", words, Phrase.of("marker_line", what=words), [])
    return None


def low_calcium_marker(state: PatientState) -> Marker | None:
    """§8 C2 low-calcium marker, judged on the first available of ionized Ca <= 24 h, corrected Ca <= 72 h and
    total Ca <= 72 h: a marker only when that value is below its cut-off (ionized < 1.0 mmol/L, else < 7.5 mg/dL)."""
    ionized = state.latest("lab-calcium-ionized", days=MARKER_IONIZED_DAYS)
    if ionized is not None:
        if not ionized.below(LOW_IONIZED_MARKER_MG_DL):
            return None
        words = Text.of("words_ionized_ca", value=f"{ionized.value / CA_MG_PER_MMOL:.2f}")
        return Marker("low-calcium", words, value_line(ionized, state.now), [evidence("calcium_ionized", ionized)])
    cal = calcium_status(state.facts, state.age, use_ionized=False)
    if cal is not None and state.fresh(cal, ORDER_IONIZED_DAYS):
        value, low = cal.value, cal.value < LOW_CALCIUM_MARKER_MG_DL and not cal.result.is_lower_bound
        if not low:
            return None
        words = Text.of("words_calcium_mg", kind=calcium_kind(cal), value=shown(value, LOW_CALCIUM_MARKER_MG_DL))
        return Marker("low-calcium", words, value_line(cal.result, state.now), calcium_evidence(cal))
    return None


def _labs_then_consult(state: PatientState) -> list[SuggestionSpec]:
    return _labs(_stale_labs(state)) + _nephrology(state)


def _chloride_replaceable(order: DraftOrder) -> bool:
    return order.is_calcium_chloride and not order.central_line


# --- R08 ------------------------------------------------------------------------------------------------


@rule("iv-calcium-order", "R08", ORDER_HOOKS,
      fields={"trigger", "context", "salt", "t2_reason", "p", "marker"}, version="0.2.0")
def iv_calcium_order(ctx: RuleContext) -> Finding | None:
    """R08 (revision 2): IV calcium draft in an at-risk patient; the §8 C2 markers and C7 may lower the card.

    Tiers: critical (§8.0), warning (T2), info (T3; documented calcinosis cutis alone, §8 C4). An indication
    marker, or a low-calcium marker without TLS/hyperphosphatemia, makes it info with no "Remove"; a low-calcium
    marker with TLS or hyperphosphatemia keeps a warning (never critical). Suggestions: replace chloride, labs,
    consult, and "Remove" last (never with "Replace", never with a marker except the TLS removal).
    """
    orders = selected(ctx, IV_CALCIUM)
    if not orders:
        return None
    s = ctx.state
    order = next((o for o in orders if o.is_calcium_chloride), orders[0])
    pair = order_pair(s)
    hyper, _ = order_hypercalcemia(s)
    phos_high = order_phosphate_high(s)
    p = s.phosphate
    critical = critical_reason(s)
    reasons: list[Markdown] = []
    if s.in_stage("G5", "G5D"):
        detail: list[Markdown] = [Text.of("words_caxp", value=caxp_text(pair))] if pair is not None else []
        if p is not None and s.fresh(p, ORDER_DAYS):
            detail.append(Text.of("words_p", value=num(p.value)))
        reasons.append(Text.of("stage_values", stage=stage_label(s), values=joined(", ", detail)) if detail
                       else stage_label(s))
    stage_reason = bool(reasons)  # the stage item already names the pair and P
    if phos_high and p is not None and not stage_reason:
        reasons.append(Text.of("reason_phosphate", value=shown(p.value, PHOSPHATE_HIGH_MG_DL)))
    if hyper and s.calcium is not None:
        reasons.append(Text.of("reason_hypercalcemia", value=calcium_text(s.calcium)))
    if pair is not None and pair.exceeds(CAXP_KDOQI_TARGET, inclusive=True) and not stage_reason:
        reasons.append(Text.of("words_caxp", value=caxp_text(pair)))
    if critical:
        tier, indicator, variant = "T1", "critical", "t1"
    elif reasons or s.tls_active:
        tier, indicator = "T2", "warning"
        variant = "t2_tls" if s.tls_active else "t2"
    elif s.in_stage("G4") and ({CALCIUM, PHOSPHATE} & set(_stale_labs(s))):
        tier, indicator, variant = "T3", "info", "t3"
    elif s.calcinosis_cutis_dx:
        tier, indicator, variant = "CC", "info", "calcinosis"   # §8 C4: monitor the infusion site
    else:
        return None  # includes IV calcium in a patient without risk factors (TP09)
    marker = indication_marker(s) or low_calcium_marker(s)
    offer_remove = tier in ("T1", "T2")
    remove_label = "remove_iv_calcium_tls" if s.tls_active else "remove_iv_calcium"
    notes = [Phrase.of("tier_" + tier.lower(), why=critical or joined("; ", reasons) or s.tls_reason)]
    if marker is not None and (marker.kind == "indication" or not (s.tls_active or phos_high)):
        indicator, variant, offer_remove = "info", "indicated", False  # §8 C2: likely indicated, no "Remove"
        notes = [Phrase.of("risk_noted", why=critical or joined("; ", reasons) or s.tls_reason or Text.of("reason_cc")),
                 Phrase.of("marker_note", what=marker.words)]
    elif marker is not None:
        indicator = "warning"  # §8 C2: low calcium with TLS/hyperphosphatemia: never critical
        variant = "low_ca_tls" if s.tls_active else "low_ca_phosphate"
        offer_remove = s.tls_active
        remove_label = "remove_iv_calcium_tls"
        notes.append(Phrase.of("marker_note", what=marker.words))
    if order.is_parenteral_nutrition and not critical:
        indicator, variant = "info", "pn"   # §8 C7: a PN admixture is at most info unless critical
        notes[0] = Phrase.of("risk_noted", why=joined("; ", reasons) or s.tls_reason or Text.of("reason_cc"))
    values, ev = order_values(s)
    if marker is not None:
        values = [marker.line] + [v for v in values if v != marker.line]
        ev = marker.evidence + ev
    suggestions: list[SuggestionSpec] = []
    replace_chloride = _chloride_replaceable(order) and tier != "CC"
    if replace_chloride:
        suggestions.append(SuggestionSpec(kind="replace-gluconate", label="replace_gluconate",
                                          order_ref=order.reference))
    suggestions += _labs(_stale_labs(s))
    if tier in ("T1", "T2"):
        suggestions += _nephrology(s)
    if offer_remove and not replace_chloride:  # §8 C14: never both Remove and Replace; Remove is last
        suggestions.append(SuggestionSpec(kind="delete", label=remove_label, order_ref=order.reference))
    return Finding(
        rule_id="iv-calcium-order",
        indicator=indicator,
        variant=variant,
        order=order,
        selection_behavior="any",   # §8 C14
        override_reasons=True,
        fields={
            "trigger": critical,
            "context": context_label(s),
            "salt": Text.of("salt_chloride") if order.is_calcium_chloride else "",
            "t2_reason": joined("; ", reasons) if reasons else Text.of("reason_tls"),
            "p": num(p.value) if p is not None else "",
            "marker": marker.words if marker is not None else "",
            "values_md": (order_block(order), "\n\n", bullets("values_heading", values)),
            "note_md": joined("\n\n", notes),
            "factors_md": Phrase.of("tls_advice") if s.tls_active else "",
            "advice_md": Phrase.of("chloride_advice") if order.is_calcium_chloride else "",
        },
        evidence=ev,
        suggestions=suggestions,
    )


# --- R09 ------------------------------------------------------------------------------------------------


def hypophosphatemia(state: PatientState) -> LabResult | None:
    """§8 C3: the latest phosphate within 72 h when it is < 2.5 mg/dL (post-dialysis samples are already gone)."""
    p = state.latest("lab-phosphate", days=HYPOPHOSPHATEMIA_DAYS)
    return p if p is not None and p.below(HYPOPHOSPHATEMIA_MG_DL) else None


@rule("iv-phosphate-order", "R09", ORDER_HOOKS, fields={"trigger", "t2_reason", "p"}, version="0.2.0")
def iv_phosphate_order(ctx: RuleContext) -> Finding | None:
    """R09 (revision 2): IV phosphate draft in an at-risk patient; §8 C3 hypophosphatemia makes it info.

    With P < 2.5 mg/dL (<= 72 h) and no hypercalcemia, no ionized Ca < 1.0 mmol/L and no calciphylaxis the card
    is at most info with no "Remove"; otherwise the tiers apply unchanged (critical per §8.0).
    """
    orders = selected(ctx, IV_PHOSPHATE)
    if not orders:
        return None
    s = ctx.state
    order = orders[0]
    hyper, _ = order_hypercalcemia(s)
    critical = critical_reason(s, iv_phosphate=True)
    parts: list[Markdown] = []
    if hyper and s.calcium is not None:
        parts.append(Text.of("with_hypercalcemia", value=calcium_text(s.calcium)))
    if s.in_stage("G4", "G5", "G5D"):
        parts.append(Text.of("in_context", context=context_label(s)))
    elif s.tls_active:
        parts.append(Text.of("in_tls"))
    if critical:
        tier, indicator, variant = "T1", "critical", "t1"
    elif parts:
        tier, indicator, variant = "T2", "warning", "t2"
    elif s.calcinosis_cutis_dx:
        tier, indicator, variant = "CC", "info", "calcinosis"
    else:
        return None
    reason = joined(" ", parts)
    low_p = hypophosphatemia(s)
    ionized = s.latest("lab-calcium-ionized", days=MARKER_IONIZED_DAYS)
    ionized_low = ionized is not None and ionized.below(LOW_IONIZED_MARKER_MG_DL)
    notes = [Phrase.of("tier_" + tier.lower(), why=critical or reason)]
    offer_remove = tier in ("T1", "T2")
    if low_p is not None and not hyper and not ionized_low and not s.calciphylaxis_dx:
        indicator, offer_remove = "info", False
        variant = "hypo_severe" if low_p.below(SEVERE_HYPOPHOSPHATEMIA_MG_DL) else "hypo"
        notes = [Phrase.of("hypophosphatemia_advice")]
    if order.is_parenteral_nutrition and not critical:
        indicator, variant = "info", "pn"   # §8 C7
        notes[0] = Phrase.of("risk_noted", why=reason or Text.of("reason_cc"))
    values, ev = order_values(s)
    suggestions = _labs_then_consult(s) if tier in ("T1", "T2") else _labs(_stale_labs(s))
    if offer_remove:
        suggestions.append(SuggestionSpec(kind="delete", label="remove_iv_phosphate", order_ref=order.reference))
    p = s.phosphate
    return Finding(
        rule_id="iv-phosphate-order",
        indicator=indicator,
        variant=variant,
        order=order,
        selection_behavior="any",   # §8 C14
        override_reasons=True,
        fields={
            "trigger": critical,
            "t2_reason": reason,
            "p": shown(low_p.value, SEVERE_HYPOPHOSPHATEMIA_MG_DL, HYPOPHOSPHATEMIA_MG_DL) if low_p is not None
            else (num(p.value) if p is not None else ""),
            "values_md": (order_block(order), "\n\n", bullets("values_heading", values)),
            "note_md": joined("\n\n", notes),
        },
        evidence=ev,
        suggestions=suggestions,
    )


# --- R11 ------------------------------------------------------------------------------------------------


@rule("oral-calcium-order", "R11", ORDER_HOOKS, fields={"trigger", "stage"}, version="0.2.0")
def oral_calcium_order(ctx: RuleContext) -> Finding | None:
    """R11: oral calcium / calcium binder in CKD G4-G5D with Ca x P > 70 or hypercalcemia (<= 30 d)."""
    orders = [o for o in selected(ctx, ORAL_CALCIUM) if IV_CALCIUM not in o.classes]
    s = ctx.state
    if not orders or not s.in_stage("G4", "G5", "G5D"):
        return None
    pair = usable_pair(s, CURRENT_DAYS)
    trigger: Markdown
    if pair is not None and pair.exceeds(CAXP_SEED_THRESHOLD):
        trigger, ev = Text.of("words_caxp", value=caxp_text(pair)), pair_evidence(pair)
    elif current_hypercalcemia(s) and s.calcium is not None:
        trigger, ev = Text.of("reason_hypercalcemia", value=calcium_text(s.calcium)), calcium_evidence(s.calcium)
    else:
        return None
    values, _ = order_values(s)
    return Finding(
        rule_id="oral-calcium-order",
        indicator="info",
        order=orders[0],
        selection_behavior="any",
        override_reasons=True,
        fields={
            "trigger": trigger,
            "stage": s.ckd_stage or "",
            "values_md": (order_block(orders[0]), "\n\n", bullets("values_heading", values)),
            "advice_md": Phrase.of("advice_non_calcium_binder"),
        },
        evidence=ev,
        suggestions=_nephrology(s),
    )


# --- R12 ------------------------------------------------------------------------------------------------


@rule("calcium-heparin-order", "R12", ORDER_HOOKS, fields={"trigger"}, version="0.2.0")
def calcium_heparin_order(ctx: RuleContext) -> Finding | None:
    """R12: nadroparin calcium (any route) with G5/G5D, Ca x P > 70 or hypercalcemia -> info."""
    orders = selected(ctx, "med-nadroparin")
    if not orders:
        return None
    s = ctx.state
    pair = usable_pair(s, CURRENT_DAYS)
    trigger: Markdown
    if s.in_stage("G5", "G5D"):
        trigger = stage_label(s)
    elif pair is not None and pair.exceeds(CAXP_SEED_THRESHOLD):
        trigger = Text.of("words_caxp", value=caxp_text(pair))
    elif current_hypercalcemia(s) and s.calcium is not None:
        trigger = Text.of("reason_hypercalcemia", value=calcium_text(s.calcium))
    else:
        return None
    values, ev = order_values(s)
    return Finding(
        rule_id="calcium-heparin-order",
        indicator="info",
        order=orders[0],
        override_reasons=True,
        fields={
            "trigger": trigger,
            "values_md": (order_block(orders[0]), "\n\n", bullets("values_heading", values)),
        },
        evidence=ev,
    )


# --- R13 ------------------------------------------------------------------------------------------------


@rule("vitamin-d-order", "R13", ORDER_HOOKS, fields={"trigger", "vitd"}, version="0.2.0")
def vitamin_d_order(ctx: RuleContext) -> Finding | None:
    """R13: vitamin D draft with hypercalcemia or Ca x P > 70 (<= 30 d) -> warning; 25-OH D >= 80 -> info."""
    orders = selected(ctx, "med-vitamin-d") + selected(ctx, "med-active-vitamin-d")
    if not orders:
        return None
    s = ctx.state
    order = orders[0]
    pair = usable_pair(s, CURRENT_DAYS)
    vitd = s.latest("lab-vitamin-d-25oh", days=VITAMIN_D_DAYS)
    trigger: Markdown = ""
    indicator, variant = "warning", ""
    if current_hypercalcemia(s) and s.calcium is not None:
        trigger = Text.of("reason_hypercalcemia", value=calcium_text(s.calcium))
    elif pair is not None and pair.exceeds(CAXP_SEED_THRESHOLD):
        trigger = Text.of("words_caxp", value=caxp_text(pair))
    elif vitd is not None and vitd.exceeds(VITD_POSSIBLE_EXCESS, inclusive=True):
        indicator, variant = "info", "vitd"
    else:
        return None
    values, ev = order_values(s)
    if vitd is not None:
        values.append(value_line(vitd, s.now))
        ev.append({"name": "vitamin_d_25oh", "value": round(vitd.value, 4), "unit": vitd.unit,
                   "original_value": vitd.original_value, "original_unit": vitd.original_unit,
                   "resource_id": vitd.reference, "time": vitd.time.isoformat()})
    missing = [] if vitd else [VITD25]
    if s.facts.has_condition("cond-sarcoidosis") and not s.latest("lab-vitamin-d-125", days=VITAMIN_D_DAYS):
        missing.append(VITD125)
    suggestions = [SuggestionSpec(kind="labs", label="order_vitd_labs", labs=tuple(missing))] if missing else []
    suggestions.append(SuggestionSpec(kind="delete", label="remove_vitamin_d", order_ref=order.reference))
    return Finding(
        rule_id="vitamin-d-order",
        indicator=indicator,
        variant=variant,
        order=order,
        selection_behavior="any",   # §8 C14: labs and removal do not exclude each other
        override_reasons=True,
        fields={
            "trigger": trigger,
            "vitd": num(vitd.value) if vitd else "",
            "values_md": (order_block(order), "\n\n", bullets("values_heading", values)),
        },
        evidence=ev,
        suggestions=suggestions,
    )


# --- R21 ------------------------------------------------------------------------------------------------


def _aki_recent(state: PatientState) -> bool:
    """AKI (N17.x) with onset within 30 days (§8 C17)."""
    return any(c.time is not None and state.now - c.time <= timedelta(days=AKI_RECENT_DAYS)
               for c in state.facts.conditions_in("cond-aki"))


@rule("al-mg-binder-order", "R21", ORDER_HOOKS, fields={"stage", "metal"}, version="0.2.0")
def al_mg_binder_order(ctx: RuleContext) -> Finding | None:
    """R21 (§8 C17): aluminium binder in CKD G3a+ or recent AKI -> info, G5/G5D -> warning; magnesium binder or
    supplement in CKD G4+ or with Mg > ULN -> info, never when the latest Mg (<= 30 d) is below the LLN."""
    s = ctx.state
    orders = selected(ctx, "med-al-mg-binder")
    if not orders:
        return None
    aluminium = [o for o in orders if "med-aluminium-binder" in o.classes
                 or "med-magnesium-binder" not in o.classes]
    magnesium = [o for o in orders if "med-magnesium-binder" in o.classes]
    found: list[tuple[str, DraftOrder, Markdown]] = []   # (indicator, order, reason line)
    if aluminium:
        if s.in_stage("G5", "G5D"):
            found.append(("warning", aluminium[0], Phrase.of("al_reason", why=stage_label(s))))
        elif s.in_stage("G3", "G4") or _aki_recent(s):
            why = stage_label(s) if s.ckd_stage else Text.of("aki_recent")
            found.append(("info", aluminium[0], Phrase.of("al_reason", why=why)))
    mg = s.latest("lab-magnesium", days=MAGNESIUM_DAYS)
    mg_low = mg is not None and mg.below(mg.ref_low if mg.ref_low is not None else MAGNESIUM_LLN_MG_DL)
    if magnesium and not mg_low:   # magnesium oxide is a common supplement for hypomagnesemia (§8 C17)
        mg_high = mg is not None and mg.exceeds(mg.ref_high if mg.ref_high is not None else MAGNESIUM_ULN_MG_DL)
        if s.in_stage("G4", "G5", "G5D") or mg_high:
            why = stage_label(s) if s.in_stage("G4", "G5", "G5D") else Text.of("mg_above_uln")
            found.append(("info", magnesium[0], Phrase.of("mg_reason", why=why)))
    if not found:
        return None
    found.sort(key=lambda f: f[0] != "warning")
    indicator, order, _ = found[0]
    metal = "aluminium_magnesium" if aluminium and magnesium and len(found) > 1 else (
        "aluminium" if order in aluminium and order not in magnesium else "magnesium")
    values = [value_line(mg, s.now)] if mg is not None else []
    return Finding(
        rule_id="al-mg-binder-order",
        indicator=indicator,
        variant=metal,
        order=order,
        selection_behavior="any",
        override_reasons=True,
        fields={
            "stage": stage_label(s),
            "metal": Text.of("metal_" + metal),
            "values_md": (order_block(order), ("\n\n", bullets("values_heading", values)) if values else ""),
            "factors_md": bullets("factors_heading", [f[2] for f in found]),
        },
        evidence=[evidence("magnesium", mg)] if mg is not None else [],
        suggestions=_nephrology(s),
    )


# --- R24 ------------------------------------------------------------------------------------------------


def warfarin_recent(state: PatientState, drafts: Sequence[DraftOrder]) -> bool:
    """§8.0 C16: warfarin of any status (except entered-in-error) within 90 days, or an active one of any date.

    The drafts being ordered (and any draft MedicationRequest) are not history: inpatient warfarin is re-ordered
    daily, and the order under review must not count as its own history.
    """
    draft_ids = {o.resource_id for o in drafts}
    for med in state.facts.medication_history:
        if "med-warfarin" not in med.classes or med.status == "draft" or med.resource_id in draft_ids:
            continue
        if med.time is None:
            if med.status in ("active", "on-hold", "intended"):
                return True
        elif state.now - med.time <= timedelta(days=WARFARIN_HISTORY_DAYS):
            return True
    return state.on_warfarin


@rule("warfarin-calciphylaxis-risk", "R24", ORDER_HOOKS, fields={"reason"}, version="0.2.0")
def warfarin_calciphylaxis_risk(ctx: RuleContext) -> Finding | None:
    """R24 (§8 C16): warfarin started in a patient at calciphylaxis risk -> warning; consult, never a deletion.

    At risk: CALCIPHYLAXIS_DX in any renal state, or CKD G5D/G5 with an R07 mineral abnormality within 90 days
    (kidney transplant alone does not trigger it).
    """
    orders = selected(ctx, "med-warfarin")
    s = ctx.state
    if not orders or warfarin_recent(s, ctx.orders):
        return None
    minerals = calciphylaxis_minerals(s) if s.in_stage("G5", "G5D") else []
    if s.calciphylaxis_dx:
        reason = Text.of("r24_calciphylaxis")
    elif minerals:
        reason = Text.of("r24_renal", renal=Text.of("renal_dialysis") if s.on_dialysis else stage_label(s),  # §8 C5
                      mineral=minerals[0].words)
    else:
        return None
    values, ev = order_values(s)
    return Finding(
        rule_id="warfarin-calciphylaxis-risk",
        indicator="warning",
        order=orders[0],
        selection_behavior="any",
        override_reasons=True,
        fields={
            "reason": reason,
            "values_md": (order_block(orders[0]), "\n\n", bullets(
                "values_heading", [m.line for m in minerals] or values)),
        },
        evidence=[e for m in minerals for e in m.evidence] or ev,
        suggestions=[SuggestionSpec(kind="consult", label="consult_warfarin", specialty="nephrology")],
    )
