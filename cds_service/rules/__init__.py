"""The calcinosis rules R01-R23: registry, evaluation per hook, and consolidation (section 2.9).

``evaluate(state, hook, orders, options)`` runs every registered rule for the hook (rules behind an
option run only when it is on) and returns the consolidated findings plus ``(rule_id, version)`` of
every rule that ran. A rule that raises is logged (no clinical values) and treated as not firing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from cards.render import SuggestionSpec, render_summary
from fhir_mappings.facts import DraftOrder
from fhir_mappings.states import PatientState

from . import order_rules, patient_view  # noqa: F401  (modules register their rules on import)
from .base import ORDER_HOOKS, PATIENT_VIEW, RULES, RULES_VERSION, Finding, RuleContext, RuleDef

__all__ = ["RULES", "RULES_VERSION", "Finding", "RuleDef", "evaluate", "consolidate", "declared_fields"]

log = logging.getLogger(__name__)

ORDER_RULES = frozenset(
    {"iv-calcium-order", "iv-phosphate-order", "oral-calcium-order", "calcium-heparin-order",
     "vitamin-d-order", "al-mg-binder-order"}
)
# Section 2.9 consolidation: host rule <- rules folded into it (their facts go into the host detail).
FOLDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("calciphylaxis-risk", ("pth-high",)),
    ("caxp-high", ("caxp-above-target", "hyperphosphatemia", "hyperparathyroid-pattern", "hypercalcemia",
                   "albumin-needed", "pth-high")),
    ("caxp-above-target", ("hyperphosphatemia",)),
    ("hypercalcemia", ("albumin-needed",)),
)
# R03 is not emitted when R01, R02 or R07 fires; its lab suggestions go to the first of these.
R03_HOSTS = ("caxp-high", "caxp-above-target", "calciphylaxis-risk")
SEVERITY = {"critical": 0, "warning": 1, "info": 2}


def declared_fields() -> dict[str, frozenset[str]]:
    """Rule id -> the template fields the rule fills (for the content check)."""
    return {rule_id: definition.fields for rule_id, definition in RULES.items()}


def _enabled(definition: RuleDef, hook: str, is_option_on: Callable[[str], bool]) -> bool:
    if hook not in definition.hooks:
        return False
    return definition.option is None or is_option_on(definition.option)


def _merge_suggestions(host: Finding, extra: Sequence[SuggestionSpec]) -> None:
    have_labs = {code for s in host.suggestions for code in s.labs}
    have_consults = {s.specialty for s in host.suggestions if s.kind == "consult"}
    for spec in extra:
        if spec.kind == "labs":
            codes = tuple(c for c in spec.labs if c not in have_labs)
            if codes:
                host.suggestions.append(SuggestionSpec(kind="labs", label=spec.label, labs=codes))
                have_labs.update(codes)
        elif spec.kind == "consult" and spec.specialty not in have_consults:
            host.suggestions.append(spec)
            have_consults.add(spec.specialty)


def _fold(host: Finding, folded: Finding) -> None:
    host.folded.append(render_summary(folded.rule_id, folded.fields, folded.variant))
    host.folded.extend(folded.folded)
    seen = {(e.get("name"), e.get("resource_id")) for e in host.evidence}
    host.evidence.extend(e for e in folded.evidence if (e.get("name"), e.get("resource_id")) not in seen)
    _merge_suggestions(host, folded.suggestions)


def consolidate(findings: Sequence[Finding], hook: str) -> list[Finding]:
    """Apply section 2.9: one card per rule, folds, R03 placement, hook scoping, severity order."""
    by_id: dict[str, Finding] = {}
    for f in findings:
        by_id.setdefault(f.rule_id, f)  # one card per rule id per call
    if hook in ORDER_HOOKS:
        by_id = {k: v for k, v in by_id.items() if k in ORDER_RULES}
    else:
        by_id = {k: v for k, v in by_id.items() if k not in ORDER_RULES}
        for host_id, folded_ids in FOLDS:
            host = by_id.get(host_id)
            if host is None:
                continue
            for folded_id in folded_ids:
                folded = by_id.pop(folded_id, None)
                if folded is not None:
                    _fold(host, folded)
        r03 = by_id.get("mineral-labs-due")
        r03_host = next((by_id[h] for h in R03_HOSTS if h in by_id), None)
        if r03 is not None and r03_host is not None:
            del by_id["mineral-labs-due"]
            _merge_suggestions(r03_host, r03.suggestions)
        for f in by_id.values():
            if f.indicator == "critical":  # section 2.9: patient-view cards are never critical
                f.indicator = "warning"
    order = list(RULES)
    return sorted(by_id.values(), key=lambda f: (SEVERITY.get(f.indicator, 3), order.index(f.rule_id)))


def evaluate(
    state: PatientState,
    hook: str,
    orders: Sequence[DraftOrder] = (),
    is_option_on: Callable[[str], bool] = lambda _name: False,
) -> tuple[list[Finding], list[tuple[str, str]]]:
    """Run the hook's rules over ``state``; return consolidated findings and the rules evaluated."""
    ctx = RuleContext(state=state, hook=hook, orders=tuple(orders))
    findings: list[Finding] = []
    evaluated: list[tuple[str, str]] = []
    if hook != PATIENT_VIEW and hook not in ORDER_HOOKS:
        return findings, evaluated
    for definition in RULES.values():
        if not _enabled(definition, hook, is_option_on):
            continue
        evaluated.append((definition.rule_id, definition.version))
        try:
            result = definition.fn(ctx)
        except Exception:  # a broken rule must not take down the other rules or the hook call
            log.exception("rule %s failed; treated as not firing", definition.rule_id)
            continue
        if result is not None:
            findings.append(result)
    return consolidate(findings, hook), evaluated
