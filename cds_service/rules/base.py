"""Rule registry, the ``Finding`` type and small formatting helpers shared by the rule modules."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fhir_mappings.facts import DraftOrder, LabResult
from fhir_mappings.pairing import CaPPair
from findings import Age, LabName, Markdown, Phrase, Text, Unit, bullets
from findings import Finding as Finding
from findings import SuggestionSpec as SuggestionSpec

from .states import CalciumStatus, PatientState
from .thresholds import (
    CA_MG_PER_MMOL,
    CAXP_KDOQI_TARGET,
    CAXP_SEED_THRESHOLD,
    HYPERCALCEMIA_MG_DL,
    MODERATE_HYPERCALCEMIA_MG_DL,
)

RULES_VERSION = "0.2"
PATIENT_VIEW = "patient-view"
ORDER_HOOKS = frozenset({"order-select", "order-sign"})
ALL_HOOKS = frozenset({PATIENT_VIEW}) | ORDER_HOOKS

# Markdown blocks every rule may fill (built from escaped phrases; see cards.render).
COMMON_BLOCKS = frozenset({"values_md", "factors_md", "missing_md", "folded_md", "advice_md", "note_md", "ignored_md"})


@dataclass(frozen=True)
class RuleContext:
    """What a rule function receives."""

    state: PatientState
    hook: str
    orders: tuple[DraftOrder, ...] = ()
    options: Mapping[str, object] = field(default_factory=dict)   # the rule's declared options (RuleDef.options)


RuleFn = Callable[[RuleContext], Finding | None]


@dataclass(frozen=True)
class RuleDef:
    """A registered rule: what it is, when it runs, what it reads and how its card is versioned.

    ``options`` maps each engine option the rule reads (an ``EngineOptions`` field, checked at start-up by
    ``engine.check_content``) to its default; ``switch`` names the bool option that must be on for the rule to
    run at all (R16, R19: clinical-rules.md section 3), or None.

    How its card meets the others is declared here too, so that adding a rule edits no list elsewhere
    (``rules.evaluate`` and ``rules.consolidate`` read these from the registry):

    - ``silent_for_infants``: not run on patient-view under 1 year (§8 C11: no mineral card fires there);
    - ``folds``: the rules whose findings this rule's card absorbs when both fire (section 2.9), in the order their
      facts join it; ``fold_priority``: hosts fold in descending priority, then in registry order, so a rule two
      hosts may absorb goes to the higher one;
    - ``hosts_r03``: when this rule fires, R03 (mineral labs due) is not shown; its lab suggestions join the first
      such card in registry order (section 2.9).
    """

    rule_id: str
    spec_id: str
    version: str
    hooks: frozenset[str]
    fields: frozenset[str]
    fn: RuleFn
    options: Mapping[str, object] = field(default_factory=dict)
    switch: str | None = None
    silent_for_infants: bool = False
    folds: tuple[str, ...] = ()
    fold_priority: int = 0
    hosts_r03: bool = False

    def option_values(self, given: Mapping[str, object]) -> dict[str, object]:
        """The rule's declared options: the value in ``given`` where present, else the declared default."""
        return {name: given.get(name, default) for name, default in self.options.items()}


RULES: dict[str, RuleDef] = {}


def register(definition: RuleDef) -> RuleDef:
    """Add ``definition`` to the registry (ValueError for a duplicate id or an undeclared switch)."""
    if definition.rule_id in RULES:
        raise ValueError(f"rule {definition.rule_id} registered twice")
    if definition.switch is not None and not isinstance(definition.options.get(definition.switch), bool):
        raise ValueError(f"rule {definition.rule_id}: switch {definition.switch} must be a declared bool option")
    if definition.rule_id in definition.folds:
        raise ValueError(f"rule {definition.rule_id} cannot fold into itself")
    RULES[definition.rule_id] = definition
    return definition


def unregister(rule_id: str) -> None:
    """Remove a rule from the registry (tests that register a rule of their own clean up with this)."""
    RULES.pop(rule_id, None)


def rule(
    rule_id: str, spec_id: str, hooks: Iterable[str], fields: Iterable[str], *, version: str,
    options: Mapping[str, object] | None = None, switch: str | None = None, silent_for_infants: bool = False,
    folds: Iterable[str] = (), fold_priority: int = 0, hosts_r03: bool = False,
) -> Callable[[RuleFn], RuleFn]:
    """Register ``fn`` as rule ``rule_id`` (topic code) implementing spec rule ``spec_id`` at ``version``.

    ``fields``: the template placeholders the rule fills; ``options``: the engine options it reads with their
    defaults; ``switch``: the bool option among them that turns the rule on; ``silent_for_infants``, ``folds``,
    ``fold_priority`` and ``hosts_r03``: how its card meets the others (see ``RuleDef``).
    """

    def decorate(fn: RuleFn) -> RuleFn:
        register(RuleDef(rule_id, spec_id, version, frozenset(hooks), frozenset(fields) | COMMON_BLOCKS, fn,
                         dict(options or {}), switch, silent_for_infants, tuple(folds), fold_priority, hosts_r03))
        return fn

    return decorate


# --- formatting helpers (display only; arithmetic keeps full precision) ---------------------------------


def num(value: float) -> str:
    """One decimal (section 0: round only for display)."""
    return f"{value:.1f}"


def shown(value: float, *thresholds: float) -> str:
    """``value`` with enough decimals to stay on its true side of every threshold it is shown against.

    §8 C13: 70.04 shown as "70.0" next to "> 70" would contradict the rule. One decimal when that is
    unambiguous, up to three, else "> 70" / "< 70" (or "70" when the value is the threshold exactly).
    """
    for decimals in (1, 2, 3):
        text_value = f"{value:.{decimals}f}"
        rounded = float(text_value)
        if all((rounded > t) == (value > t) and (rounded < t) == (value < t) for t in thresholds):
            return text_value
    crossed = next((t for t in thresholds if round(value, 3) == t and value != t), None)
    if crossed is None:
        return f"{value:.3f}"
    return f"> {crossed:g}" if value > crossed else f"< {crossed:g}"


def caxp_text(pair: CaPPair) -> str:
    """The product as shown (true side of 55 and 70, §8 C13), with ``≥`` when it is a lower bound."""
    return ("≥" if pair.is_lower_bound else "") + shown(pair.product, CAXP_KDOQI_TARGET, CAXP_SEED_THRESHOLD)


def days_ago(now: datetime, when: datetime) -> int:
    """Whole days between ``when`` and ``now`` (0 for today or the future)."""
    return max((now - when).days, 0)


def drawn_text(now: datetime, when: datetime) -> Text:
    """``drawn 22 h ago`` / ``drawn 3 days ago``: the one age wording of cards and viewer (§8 C13), worded by cards."""
    return Text.of("drawn_age", age=Age(now, when))


def calcium_text(status: CalciumStatus) -> str:
    """``12.4 mg/dL``; ionized calcium is shown in mmol/L as labs report it (true side of its ULN, §8 C13)."""
    if status.basis == "ionized":
        mmol = status.value / CA_MG_PER_MMOL
        limit = status.high_limit / CA_MG_PER_MMOL
        value = f"{mmol:.2f}" if (round(mmol, 2) > limit) == (mmol > limit) else f"{mmol:.3f}"
        return f"{value} mmol/L"
    return f"{shown(status.value, HYPERCALCEMIA_MG_DL, MODERATE_HYPERCALCEMIA_MG_DL)} mg/dL"


def _calcium_basis(status: CalciumStatus) -> str:
    return status.basis if status.basis in ("ionized", "measured") else "corrected"   # lab-corrected reads corrected


def calcium_label(status: CalciumStatus) -> Text:
    """``Calcium`` / ``Corrected calcium`` / ``Ionized calcium`` (as a label)."""
    return Text.of("calcium_label_" + _calcium_basis(status))


def calcium_kind(status: CalciumStatus) -> Text:
    """``calcium`` / ``corrected calcium`` / ``ionized calcium`` (inside a sentence)."""
    return Text.of("calcium_kind_" + _calcium_basis(status))


def stage_label(state: PatientState) -> Markdown:
    """``CKD G5D`` etc., or '' without CKD; ``ESRD`` when an ESRD code is the only evidence (§8 C5)."""
    if state.ckd_stage == "G5D" and not state.on_dialysis:
        return Text.of("stage_esrd")
    return Text.of("stage_ckd", stage=state.ckd_stage) if state.ckd_stage else ""


def evidence(name: str, result: LabResult) -> dict[str, Any]:
    """Audit evidence for one lab value."""
    return {
        "name": name,
        "value": round(result.value, 4),
        "unit": result.unit,
        "original_value": result.original_value,
        "original_unit": result.original_unit,
        "resource_id": result.reference,
        "time": result.time.isoformat(),
    }


def pair_evidence(pair: CaPPair) -> list[dict[str, Any]]:
    """Evidence for both halves of a Ca x P pair plus the product."""
    return [
        evidence("calcium", pair.calcium),
        evidence("phosphate", pair.phosphate),
        {
            "name": "ca_x_p",
            "value": round(pair.product, 4),
            "unit": "mg2/dL2",
            "original_value": round(pair.product, 4),
            "original_unit": "mg2/dL2",
            "resource_id": f"{pair.calcium.reference},{pair.phosphate.reference}",
            "time": pair.time.isoformat(),
        },
    ]


def calcium_evidence(status: CalciumStatus) -> list[dict[str, Any]]:
    """Evidence for the calcium classification (and the albumin used to correct it)."""
    items = [evidence(f"calcium_{status.basis.split()[0]}", status.result)]
    if status.albumin is not None:
        items.append(evidence("albumin", status.albumin))
    return items


def value_line(result: LabResult, now: datetime) -> Markdown:
    """``Phosphate: 7.5 mg/dL (reported 2.42 mmol/L) – 2025-06-13 (2 days ago)``, escaped."""
    shown = f"{result.comparator}{num(result.value)}"
    reported: Markdown = ""
    if result.original_unit.lower() != result.unit.lower():
        reported = Phrase.of("reported", value=f"{result.original_value:g}", unit=Unit(result.original_unit))
    head = Phrase.of("value_line", name=LabName(result.kind), value=shown, unit=Unit(result.unit))
    when = Phrase.of(
        "value_when", date=result.time.strftime("%Y-%m-%d %H:%M UTC"), days=days_ago(now, result.time),
        age=Age(now, result.time), ref=result.reference,
    )
    return (head, reported, when, Phrase.of("time_uncertain") if result.time_uncertain else "")


def pair_lines(pair: CaPPair, now: datetime) -> list[Markdown]:
    """Markdown lines describing a pair: both values, the product, the pairing and any bound."""
    lines: list[Markdown] = [value_line(pair.calcium, now), value_line(pair.phosphate, now)]
    if pair.same_specimen:
        pairing = Phrase.of("pair_same")
    elif pair.is_fallback:
        pairing = Phrase.of("pair_fallback", hours=round(pair.gap_hours))
    else:
        pairing = Phrase.of("pair_gap", hours=round(pair.gap_hours))
    lines.append(
        (Phrase.of("pair_line", ca=num(pair.calcium.value), p=num(pair.phosphate.value), product=caxp_text(pair)),
         " ", pairing)
    )
    for result, name in ((pair.phosphate, "phosphate"), (pair.calcium, "calcium")):
        if result.is_lower_bound:
            lines.append(
                Phrase.of("lower_bound", name=name, limit=f"{result.comparator}{num(result.original_value)}",
                          product=num(pair.product))
            )
    return lines


def calcium_lines(status: CalciumStatus, now: datetime) -> list[Markdown]:
    """How the calcium classification was made (ionized / corrected / measured)."""
    lines: list[Markdown] = [value_line(status.result, now)]
    if status.albumin is not None:
        lines.append(value_line(status.albumin, now))
    if status.basis == "corrected" and status.albumin is not None:
        lines.append(Phrase.of("corrected_line", ca=num(status.result.value), alb=num(status.albumin.value),
                               corrected=num(status.value)))
    elif status.basis == "measured":
        lines.append(Phrase.of("albumin_missing"))
    return lines


def labs_suggestion(label: str, codes: Iterable[str]) -> SuggestionSpec | None:
    """One "order labs" suggestion creating a draft ServiceRequest per LOINC (None if no codes)."""
    unique = tuple(dict.fromkeys(codes))
    return SuggestionSpec(kind="labs", label=label, labs=unique) if unique else None


# --- §8 C6: the "evaluation incomplete" card ------------------------------------------------------------

INCOMPLETE = "evaluation-incomplete"


@rule(INCOMPLETE, "C6", ALL_HOOKS, fields={"what"}, version="0.2.0")
def _never_fires(_ctx: RuleContext) -> Finding | None:
    """Registered for its template and version only; ``rules.evaluate`` builds the card (never run as a rule)."""
    return None


def incomplete_finding(failed_rules: Iterable[str], unreadable: Iterable[str]) -> Finding:
    """The §8 C6 info card: which rules could not be evaluated and which data could not be read."""
    failed, missing = list(failed_rules), list(unreadable)
    what: Markdown = ", ".join(failed) if failed else Text.of("incomplete_data")
    lines = [Phrase.of("incomplete_rule", rule=r) for r in failed] + [Phrase.of("incomplete_source", name=n)
                                                                   for n in missing]
    return Finding(
        rule_id=INCOMPLETE,
        indicator="info",
        fields={"what": what, "values_md": bullets("incomplete_heading", lines)},
        evidence=[{"name": "rule_failed", "value": r} for r in failed]
        + [{"name": "data_unreadable", "value": n} for n in missing],
    )
