"""Order-select / order-sign rules R08, R09, R11, R12, R13, R21 (clinical-rules.md section 3).

Triggers are the *selected* draft MedicationRequests (section 2.1). Values count when <= 7 days old
(ionized calcium <= 72 h; section 2.6); older Ca x P pairs are shown as history only. Cards never block:
IV calcium is life-saving in hyperkalemia and symptomatic hypocalcemia (section 2.9).
"""

from __future__ import annotations

from typing import Any

from cards.render import SuggestionSpec, bullet_block, phrase, text
from fhir_mappings.facts import DraftOrder
from fhir_mappings.orders import IV_CALCIUM, IV_PHOSPHATE, ORAL_CALCIUM
from fhir_mappings.pairing import CaPPair
from fhir_mappings.states import PatientState

from .base import (
    ORDER_HOOKS,
    Finding,
    RuleContext,
    calcium_evidence,
    calcium_lines,
    calcium_text,
    caxp_text,
    num,
    pair_evidence,
    pair_lines,
    rule,
    stage_label,
    value_line,
)
from .patient_view import ALBUMIN, CALCIUM, PHOSPHATE, VITD25, VITD125, current_hypercalcemia, usable_pair
from .thresholds import (
    CAXP_KDOQI_TARGET,
    CAXP_SEED_THRESHOLD,
    CURRENT_DAYS,
    ORDER_DAYS,
    ORDER_IONIZED_DAYS,
    VITAMIN_D_DAYS,
    VITD_POSSIBLE_EXCESS,
)


def selected(ctx: RuleContext, med_class: str) -> list[DraftOrder]:
    """Selected draft orders in ``med_class`` (after route logic)."""
    return [o for o in ctx.orders if o.selected and med_class in o.classes]


def order_pair(state: PatientState) -> CaPPair | None:
    """The latest pair if <= 7 days old (section 2.6 order-select column)."""
    return usable_pair(state, ORDER_DAYS)


def order_hypercalcemia(state: PatientState) -> tuple[bool, bool]:
    """(hypercalcemia, severe) on a calcium <= 7 days old (ionized <= 72 h)."""
    cal = state.calcium
    if cal is None:
        return False, False
    fresh = state.fresh(cal, ORDER_IONIZED_DAYS if cal.basis == "ionized" else ORDER_DAYS)
    return fresh and cal.high, fresh and cal.severe


def order_phosphate_high(state: PatientState) -> bool:
    """HYPERPHOSPHATEMIA (adult > 4.5 mg/dL or > ULN) on a phosphate <= 7 days old."""
    return state.fresh(state.phosphate, ORDER_DAYS) and state.phosphate_high()


def context_label(state: PatientState) -> str:
    """``dialysis patient`` / ``CKD G5 patient`` / ``this patient``."""
    if state.in_stage("G5D"):
        return text("ctx_dialysis")
    if state.ckd_stage:
        return text("ctx_ckd", stage=stage_label(state))
    return text("ctx_patient")


def order_block(order: DraftOrder) -> str:
    """The order as parsed: drug (escaped), dose, route and whether the route was inferred."""
    lines = [phrase("order_drug", name=order.name or phrase("unnamed_drug"))]
    if order.dose_text:
        lines.append(phrase("order_dose", dose=order.dose_text))
    if order.route_inferred:
        lines.append(phrase("route_inferred"))
    else:
        lines.append(phrase("order_route", route=order.route_text or order.route))
    return bullet_block("order_heading", lines)


def order_values(state: PatientState) -> tuple[list[str], list[dict[str, Any]]]:
    """Current Ca, P, Ca x P, ionized Ca, albumin and K for order-card details (history if older)."""
    lines: list[str] = []
    ev: list[dict[str, Any]] = []
    pair = state.pair
    if pair is not None:
        lines += pair_lines(pair, state.now)
        if not state.fresh(pair, ORDER_DAYS):
            lines.append(phrase("pair_history"))
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
        lines.append(phrase("no_recent_values"))
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


# --- R08 ------------------------------------------------------------------------------------------------


@rule("iv-calcium-order", "R08", ORDER_HOOKS, fields={"trigger", "context", "salt", "t2_reason", "p"})
def iv_calcium_order(ctx: RuleContext) -> Finding | None:
    """R08: selected IV calcium draft in an at-risk patient -> critical (T1) / warning (T2) / info (T3)."""
    orders = selected(ctx, IV_CALCIUM)
    if not orders:
        return None
    s = ctx.state
    order = next((o for o in orders if o.is_calcium_chloride), orders[0])
    pair = order_pair(s)
    hyper, severe = order_hypercalcemia(s)
    phos_high = order_phosphate_high(s)
    trigger = ""
    if pair is not None and not pair.is_fallback and pair.exceeds(CAXP_SEED_THRESHOLD):
        trigger = text("trigger_caxp", value=caxp_text(pair))
    elif s.calciphylaxis_dx:
        trigger = text("trigger_calciphylaxis") if s.facts.has_condition("cond-calciphylaxis") else phrase(
            "trigger_calcinosis")
    elif severe and s.calcium is not None:
        trigger = text("trigger_severe_ca", value=calcium_text(s.calcium))
    reasons: list[str] = []
    p = s.phosphate
    if s.in_stage("G5", "G5D"):
        detail = [f"Ca x P {caxp_text(pair)}"] if pair is not None else []
        if p is not None and s.fresh(p, ORDER_DAYS):
            detail.append(f"P {num(p.value)}")
        reasons.append(stage_label(s) + (f" ({', '.join(detail)})" if detail else ""))
    stage_reason = bool(reasons)  # the stage item already names the pair and P
    if phos_high and p is not None and not stage_reason:
        reasons.append(text("reason_phosphate", value=num(p.value)))
    if hyper and s.calcium is not None:
        reasons.append(text("reason_hypercalcemia", value=calcium_text(s.calcium)))
    if pair is not None and pair.exceeds(CAXP_KDOQI_TARGET, inclusive=True) and not stage_reason:
        reasons.append(f"Ca x P {caxp_text(pair)}")
    if trigger:
        tier, indicator, variant = "T1", "critical", "t1"
    elif reasons or s.tls_active:
        tier, indicator = "T2", "warning"
        variant = "t2_tls" if s.tls_active else "t2"
    elif s.in_stage("G4") and ({CALCIUM, PHOSPHATE} & set(_stale_labs(s))):
        tier, indicator, variant = "T3", "info", "t3"
    else:
        return None  # includes IV calcium in a patient without risk factors (TP09)
    values, ev = order_values(s)
    suggestions: list[SuggestionSpec] = []
    if tier in ("T1", "T2"):
        label = "remove_iv_calcium_tls" if s.tls_active and tier == "T2" else "remove_iv_calcium"
        suggestions.append(SuggestionSpec(kind="delete", label=label, order_ref=order.reference))
        if order.is_calcium_chloride and not order.central_line:
            suggestions.append(SuggestionSpec(kind="replace-gluconate", label="replace_gluconate",
                                              order_ref=order.reference))
    suggestions += _labs(_stale_labs(s))
    if tier in ("T1", "T2"):
        suggestions += _nephrology(s)
    return Finding(
        rule_id="iv-calcium-order",
        indicator=indicator,
        variant=variant,
        order=order,
        selection_behavior="at-most-one",
        override_reasons=True,
        fields={
            "trigger": trigger,
            "context": context_label(s),
            "salt": text("salt_chloride") if order.is_calcium_chloride else "",
            "t2_reason": "; ".join(reasons) if reasons else text("reason_tls"),
            "p": num(p.value) if p is not None else "?",
            "values_md": order_block(order) + "\n\n" + bullet_block("values_heading", values),
            "note_md": phrase("tier_" + tier.lower(), why=trigger or "; ".join(reasons) or s.tls_reason),
            "factors_md": phrase("tls_advice") if s.tls_active else "",
            "advice_md": phrase("chloride_advice") if order.is_calcium_chloride else "",
        },
        evidence=ev,
        suggestions=suggestions,
    )


# --- R09 ------------------------------------------------------------------------------------------------


@rule("iv-phosphate-order", "R09", ORDER_HOOKS, fields={"trigger", "t2_reason"})
def iv_phosphate_order(ctx: RuleContext) -> Finding | None:
    """R09: selected IV phosphate draft in an at-risk patient -> critical (T1) / warning (T2)."""
    orders = selected(ctx, IV_PHOSPHATE)
    if not orders:
        return None
    s = ctx.state
    order = orders[0]
    pair = order_pair(s)
    hyper, severe = order_hypercalcemia(s)
    p = s.phosphate
    trigger = ""
    if pair is not None and not pair.is_fallback and pair.exceeds(CAXP_SEED_THRESHOLD):
        trigger = text("trigger_caxp", value=caxp_text(pair))
    elif order_phosphate_high(s) and p is not None:
        trigger = text("reason_phosphate", value=num(p.value))
    elif severe and s.calcium is not None:
        trigger = text("trigger_severe_ca", value=calcium_text(s.calcium))
    elif s.calciphylaxis_dx:
        trigger = text("trigger_calciphylaxis")
    if trigger:
        tier, indicator, variant, reason = "T1", "critical", "t1", ""
    else:
        parts = []
        if hyper and s.calcium is not None:
            parts.append(text("with_hypercalcemia", value=calcium_text(s.calcium)))
        if s.in_stage("G4", "G5", "G5D"):
            parts.append(text("in_context", context=context_label(s)))
        elif s.tls_active:
            parts.append(text("in_tls"))
        if not parts:
            return None
        tier, indicator, variant, reason = "T2", "warning", "t2", " ".join(parts)
    values, ev = order_values(s)
    return Finding(
        rule_id="iv-phosphate-order",
        indicator=indicator,
        variant=variant,
        order=order,
        selection_behavior="at-most-one",
        override_reasons=True,
        fields={
            "trigger": trigger,
            "t2_reason": reason,
            "values_md": order_block(order) + "\n\n" + bullet_block("values_heading", values),
            "note_md": phrase("tier_" + tier.lower(), why=trigger or reason),
        },
        evidence=ev,
        suggestions=[SuggestionSpec(kind="delete", label="remove_iv_phosphate", order_ref=order.reference)]
        + _labs(_stale_labs(s)) + _nephrology(s),
    )


# --- R11 ------------------------------------------------------------------------------------------------


@rule("oral-calcium-order", "R11", ORDER_HOOKS, fields={"trigger", "stage"})
def oral_calcium_order(ctx: RuleContext) -> Finding | None:
    """R11: oral calcium / calcium binder in CKD G4-G5D with Ca x P > 70 or hypercalcemia (<= 30 d)."""
    orders = [o for o in selected(ctx, ORAL_CALCIUM) if IV_CALCIUM not in o.classes]
    s = ctx.state
    if not orders or not s.in_stage("G4", "G5", "G5D"):
        return None
    pair = usable_pair(s, CURRENT_DAYS)
    if pair is not None and pair.exceeds(CAXP_SEED_THRESHOLD):
        trigger, ev = f"Ca x P {caxp_text(pair)}", pair_evidence(pair)
    elif current_hypercalcemia(s) and s.calcium is not None:
        trigger, ev = text("reason_hypercalcemia", value=calcium_text(s.calcium)), calcium_evidence(s.calcium)
    else:
        return None
    values, _ = order_values(s)
    return Finding(
        rule_id="oral-calcium-order",
        indicator="info",
        order=orders[0],
        selection_behavior="at-most-one",
        override_reasons=True,
        fields={
            "trigger": trigger,
            "stage": s.ckd_stage or "",
            "values_md": order_block(orders[0]) + "\n\n" + bullet_block("values_heading", values),
            "advice_md": phrase("advice_non_calcium_binder"),
        },
        evidence=ev,
        suggestions=_nephrology(s),
    )


# --- R12 ------------------------------------------------------------------------------------------------


@rule("calcium-heparin-order", "R12", ORDER_HOOKS, fields={"trigger"})
def calcium_heparin_order(ctx: RuleContext) -> Finding | None:
    """R12: nadroparin calcium (any route) with G5/G5D, Ca x P > 70 or hypercalcemia -> info."""
    orders = selected(ctx, "med-nadroparin")
    if not orders:
        return None
    s = ctx.state
    pair = usable_pair(s, CURRENT_DAYS)
    if s.in_stage("G5", "G5D"):
        trigger = stage_label(s)
    elif pair is not None and pair.exceeds(CAXP_SEED_THRESHOLD):
        trigger = f"Ca x P {caxp_text(pair)}"
    elif current_hypercalcemia(s) and s.calcium is not None:
        trigger = text("reason_hypercalcemia", value=calcium_text(s.calcium))
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
            "values_md": order_block(orders[0]) + "\n\n" + bullet_block("values_heading", values),
        },
        evidence=ev,
    )


# --- R13 ------------------------------------------------------------------------------------------------


@rule("vitamin-d-order", "R13", ORDER_HOOKS, fields={"trigger", "vitd"})
def vitamin_d_order(ctx: RuleContext) -> Finding | None:
    """R13: vitamin D draft with hypercalcemia or Ca x P > 70 (<= 30 d) -> warning; 25-OH D >= 80 -> info."""
    orders = selected(ctx, "med-vitamin-d") + selected(ctx, "med-active-vitamin-d")
    if not orders:
        return None
    s = ctx.state
    order = orders[0]
    pair = usable_pair(s, CURRENT_DAYS)
    vitd = s.latest("lab-vitamin-d-25oh", days=VITAMIN_D_DAYS)
    trigger, indicator, variant = "", "warning", ""
    if current_hypercalcemia(s) and s.calcium is not None:
        trigger = text("reason_hypercalcemia", value=calcium_text(s.calcium))
    elif pair is not None and pair.exceeds(CAXP_SEED_THRESHOLD):
        trigger = f"Ca x P {caxp_text(pair)}"
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
    suggestions = [SuggestionSpec(kind="delete", label="remove_vitamin_d", order_ref=order.reference)]
    if missing:
        suggestions.append(SuggestionSpec(kind="labs", label="order_vitd_labs", labs=tuple(missing)))
    return Finding(
        rule_id="vitamin-d-order",
        indicator=indicator,
        variant=variant,
        order=order,
        selection_behavior="at-most-one",
        override_reasons=True,
        fields={
            "trigger": trigger,
            "vitd": num(vitd.value) if vitd else "",
            "values_md": order_block(order) + "\n\n" + bullet_block("values_heading", values),
        },
        evidence=ev,
        suggestions=suggestions,
    )


# --- R21 ------------------------------------------------------------------------------------------------


@rule("al-mg-binder-order", "R21", ORDER_HOOKS, fields={"stage"})
def al_mg_binder_order(ctx: RuleContext) -> Finding | None:
    """R21: aluminum- or magnesium-containing binder in CKD G4-G5D -> info (seed 000: toxicity)."""
    orders = selected(ctx, "med-al-mg-binder")
    s = ctx.state
    if not orders or not s.in_stage("G4", "G5", "G5D"):
        return None
    return Finding(
        rule_id="al-mg-binder-order",
        indicator="info",
        order=orders[0],
        selection_behavior="at-most-one",
        override_reasons=True,
        fields={
            "stage": s.ckd_stage or "",
            "values_md": order_block(orders[0]),
            "factors_md": bullet_block("factors_heading", [phrase("factor_ckd", stage=stage_label(s),
                                                                  source=s.ckd_source)]),
        },
        evidence=[],
        suggestions=_nephrology(s),
    )
