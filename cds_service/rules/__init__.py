"""The calcinosis rules R01-R24: registry, evaluation per hook, and consolidation (section 2.9).

``evaluate(state, hook, orders, options)`` runs every registered rule for the hook (rules behind an
option run only when it is on) and returns the consolidated findings plus ``(rule_id, version)`` of
every rule that ran. A rule that raises is isolated (§8 C6): the other rules still run, the failure is
logged (no clinical values) and returned, and an ``evaluation-incomplete`` info card names it, so a broken
rule never passes for "nothing fired".
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from fhir_mappings.facts import DraftOrder
from findings import SuggestionSpec

from . import order_rules, patient_view  # noqa: F401  (modules register their rules on import)
from .base import (
    INCOMPLETE,
    ORDER_HOOKS,
    PATIENT_VIEW,
    RULES,
    RULES_VERSION,
    Finding,
    RuleContext,
    RuleDef,
    incomplete_finding,
    register,
    rule,
    unregister,
)
from .states import PatientState
from .thresholds import INFANT_AGE_YEARS

__all__ = ["RULES", "RULES_VERSION", "Finding", "RuleDef", "evaluate", "consolidate", "declared_fields",
           "incomplete_finding", "INCOMPLETE", "order_rule_ids", "fold_hosts", "r03_hosts", "register", "unregister",
           "rule"]

log = logging.getLogger(__name__)



def order_rule_ids() -> frozenset[str]:
    """The rules registered for the order hooks only, read from the registry (no hand-kept list to forget)."""
    return frozenset(r.rule_id for r in RULES.values() if r.hooks <= ORDER_HOOKS)


R03 = "mineral-labs-due"   # section 2.9: not shown beside a card that hosts it (RuleDef.hosts_r03)
SEVERITY = {"critical": 0, "warning": 1, "info": 2}


def fold_hosts() -> list[RuleDef]:
    """The rules whose cards absorb others (section 2.9), in the order they fold: descending ``fold_priority``,
    then registry order. Read from the registry at every call, so a rule registered later takes part."""
    hosts = [d for d in RULES.values() if d.folds]
    return sorted(hosts, key=lambda d: -d.fold_priority)   # stable: registry order among equal priorities


def r03_hosts() -> list[str]:
    """The rules whose card takes R03's lab suggestions, in registry order (section 2.9)."""
    return [d.rule_id for d in RULES.values() if d.hosts_r03]


def declared_fields() -> dict[str, frozenset[str]]:
    """Rule id -> the template fields the rule fills (for the content check)."""
    return {rule_id: definition.fields for rule_id, definition in RULES.items()}


def _enabled(definition: RuleDef, hook: str, options: Mapping[str, object]) -> bool:
    if hook not in definition.hooks:
        return False
    return definition.switch is None or definition.option_values(options)[definition.switch] is True


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
    # The folded rule's id (cards names it by its title), not its summary: its values are already in the host's
    # values block (each fact once per card, issue 13 item 3); what it adds (labs, consults) joins the suggestions.
    host.folded.append(folded.rule_id)
    host.folded.extend(folded.folded)
    seen = {(e.get("name"), e.get("resource_id")) for e in host.evidence}
    host.evidence.extend(e for e in folded.evidence if (e.get("name"), e.get("resource_id")) not in seen)
    _merge_suggestions(host, folded.suggestions)


def consolidate(findings: Sequence[Finding], hook: str) -> list[Finding]:
    """Apply section 2.9: one card per rule, folds, R03 placement, hook scoping, severity order."""
    by_id: dict[str, Finding] = {}
    for f in findings:
        by_id.setdefault(f.rule_id, f)  # one card per rule id per call
    order_only = order_rule_ids()
    if hook in ORDER_HOOKS:
        by_id = {k: v for k, v in by_id.items() if k in order_only or k == INCOMPLETE}
    else:
        by_id = {k: v for k, v in by_id.items() if k not in order_only}
        for definition in fold_hosts():
            host = by_id.get(definition.rule_id)
            if host is None:
                continue
            for folded_id in definition.folds:
                folded = by_id.pop(folded_id, None)
                if folded is not None:
                    _fold(host, folded)
        r03 = by_id.get(R03)
        r03_host = next((by_id[h] for h in r03_hosts() if h in by_id), None)
        if r03 is not None and r03_host is not None:
            del by_id[R03]
            _merge_suggestions(r03_host, r03.suggestions)
        for f in by_id.values():
            if f.indicator == "critical":  # section 2.9: patient-view cards are never critical
                f.indicator = "warning"
    order = list(RULES)
    return sorted(by_id.values(), key=lambda f: (SEVERITY.get(f.indicator, 3), order.index(f.rule_id)))


@dataclass
class Evaluation:
    """What ``evaluate`` returns: consolidated findings, the rules that ran, and the rules that raised."""

    findings: list[Finding]
    evaluated: list[tuple[str, str]]
    failed: list[str] = field(default_factory=list)


def evaluate(
    state: PatientState,
    hook: str,
    orders: Sequence[DraftOrder] = (),
    options: Mapping[str, object] | None = None,
    unreadable: Sequence[str] = (),
) -> Evaluation:
    """Run the hook's rules over ``state``; consolidated findings, the rules evaluated and those that failed.

    ``options``: the engine options by name (``EngineOptions`` as a dict); each rule sees only the ones it
    declares, with its declared default for any not given.

    ``unreadable`` names data that could not be read although the call is answered (a failed or partial
    fetch); it, and any rule that raised, yields the §8 C6 ``evaluation-incomplete`` card.
    """
    given: Mapping[str, object] = options or {}
    result = Evaluation([], [])
    if hook != PATIENT_VIEW and hook not in ORDER_HOOKS:
        return result
    infant = hook == PATIENT_VIEW and state.age is not None and state.age < INFANT_AGE_YEARS
    for definition in RULES.values():
        if definition.rule_id == INCOMPLETE or not _enabled(definition, hook, given):
            continue
        if infant and definition.silent_for_infants:
            continue
        result.evaluated.append((definition.rule_id, definition.version))
        try:
            finding = definition.fn(RuleContext(state=state, hook=hook, orders=tuple(orders),
                                                options=definition.option_values(given)))
        except Exception:  # §8 C6: a broken rule must not take down the other rules or pass for "no finding"
            log.exception("rule %s failed; reported on an evaluation-incomplete card", definition.rule_id)
            result.failed.append(definition.rule_id)
            continue
        if finding is not None:
            result.findings.append(finding)
    if result.failed or unreadable:
        result.findings.append(incomplete_finding(
            [f"{RULES[r].spec_id} ({r})" for r in result.failed], list(unreadable)))
    result.findings = consolidate(result.findings, hook)
    return result
