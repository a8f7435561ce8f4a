"""The one entry point the HTTP layer calls: ``assess(record, hook, now, options)``.

Raw FHIR JSON in, CDS Hooks 2.0 cards out, in four steps: extract facts (tolerant, per resource),
derive states, evaluate + consolidate the rules, render cards from the templates. ``now`` is always
injected. Nothing here raises for bad input: malformed resources are skipped and reported in
``Assessment.skipped``. Clinical values are never logged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any

from cards.blocks import folded_names, resolve_fields
from cards.render import CardRequest, RenderedCard, bullet_block, check_templates, phrase, render_card, text
from cds_service.governance.values import governance_values
from cds_service.rules import INCOMPLETE, RULES, declared_fields, evaluate, incomplete_finding
from cds_service.rules.base import ORDER_HOOKS, PATIENT_VIEW, Finding
from cds_service.rules.states import PatientState, derive_states
from fhir_mappings import wire
from fhir_mappings.extract import extract
from fhir_mappings.facts import DraftOrder, PatientFacts, SetAside, Skipped
from fhir_mappings.orders import parse_draft_orders
from fhir_mappings.units import unit_table
from fhir_mappings.valuesets import default_index

log = logging.getLogger(__name__)

HOOKS = frozenset({PATIENT_VIEW}) | ORDER_HOOKS
# Issue 18 item 2: a resource that did not fit the typed shape is read with the misfit values left out, used, and
# recorded as such in the call's audit record, naming the fields left out (never their values).
TOLERANT_READ = "read with values of the wrong type left out"


@dataclass(frozen=True)
class EngineOptions:
    """Clinical content switches (clinical-rules.md section 3: R16 and R19 off by default)."""

    include_preliminary: bool = False
    ctd_info_card: bool = False
    tumoral_calcinosis_rule: bool = False
    # Public base URL of the service for card links (issue #6); "" = cards carry no links.
    links_base_url: str = ""


@dataclass(frozen=True)
class PatientRecord:
    """Everything known about the patient for one hook call: FHIR R4 as typed Structs (``fhir_mappings.wire``,
    decoded at the edge) or raw JSON dicts (fetched from a FHIR server, tests)."""

    patient: dict[str, Any] | wire.Patient | None
    resources: Sequence[Any]
    draft_orders: Sequence[dict[str, Any]] = ()
    selections: Sequence[str] = ()
    # Data that could not be read although the call is answered (failed / partial fetch): §8 C6 card.
    unreadable: Sequence[str] = ()


@dataclass(frozen=True)
class AssessedCard:
    """A rendered card plus what the audit log needs about it."""

    card: dict[str, Any]
    rule_id: str
    rule_version: str
    indicator: str
    evidence: list[dict[str, Any]]
    suggestion_uuids: list[str]
    order_key: str | None
    fact_keys: frozenset[str] = frozenset()
    rendered: RenderedCard | None = None

    def shared_detail(self) -> str:
        """The detail with the values block as one "values as in the card above" line (issue 13 item 3)."""
        return self.rendered.shared_detail() if self.rendered is not None else ""


@dataclass(frozen=True)
class Assessment:
    """The result of one evaluation."""

    cards: list[AssessedCard]
    rules_evaluated: list[tuple[str, str]]
    skipped: list[dict[str, str]]
    # Issue 18 item 2: resources read in tolerant mode and used, in the skipped list's shape; the call's audit
    # record lists them after the skipped ones (``cds_service.hook_handler``).
    tolerant_reads: list[dict[str, Any]] = field(default_factory=list)
    # Issue 19: the numeric values a patient-view call computed, fired or not (cds_service.governance.values).
    governance_values: dict[str, Any] | None = None


def _as_utc(now: datetime) -> datetime:
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


def _as_list(value: object) -> list[Any]:
    """Any sequence of items as a list; a lone string/dict/None (wrong shape) as an empty list."""
    if value is None or isinstance(value, (str, bytes, dict)):
        return []
    if not isinstance(value, Iterable):
        return []
    return list(value)


def set_aside_block(set_aside: Sequence[SetAside]) -> str:
    """§8 C6/C18: the values set aside, named in the detail of every card that fires ('' when none)."""
    counts: dict[str, int] = {}
    for a in set_aside:  # identical results (same value, date and reason) are one line with a count
        line = phrase("set_aside_line", label=a.label, value=a.value_text or "no value",
                      date=a.time.strftime("%Y-%m-%d %H:%M UTC") if a.time is not None else "undated",
                      reason=a.reason)
        counts[line] = counts.get(line, 0) + 1
    lines = [line if n == 1 else line + phrase("set_aside_count", count=n)
             for line, n in list(counts.items())[:SET_ASIDE_SHOWN]]
    if len(counts) > SET_ASIDE_SHOWN:
        lines.append(phrase("set_aside_more", count=sum(list(counts.values())[SET_ASIDE_SHOWN:])))
    return bullet_block("set_aside_heading", lines)


SET_ASIDE_SHOWN = 5  # a long list would push the facts off the card; the audit record has every one


def _to_card(finding: Finding, patient_id: str, links_base_url: str = "", ignored_md: str = "") -> AssessedCard:
    fields = resolve_fields(finding.rule_id, finding.fields)
    fields["ignored_md"] = ignored_md
    if finding.folded:
        fields["folded_md"] = phrase("folded_line", names=folded_names(finding.folded))
    rendered = render_card(
        CardRequest(
            rule_id=finding.rule_id,
            indicator=finding.indicator,
            fields=fields,
            variant=finding.variant,
            suggestions=finding.suggestions,
            selection_behavior=finding.selection_behavior,
            # Issue 15 item 4: patient-view cards offer their template's list too, so a clinician can give the
            # reason an override needs to suppress anything ("Known – managed by nephrology", ...).
            override_reasons=finding.override_reasons or finding.order is None,
            patient_id=patient_id,
            links_base_url=links_base_url,
            evidence=finding.evidence,
        )
    )
    return AssessedCard(
        card=rendered.card,
        rule_id=finding.rule_id,
        rule_version=RULES[finding.rule_id].version,
        indicator=rendered.card["indicator"],
        evidence=finding.evidence,
        suggestion_uuids=rendered.suggestion_uuids,
        order_key=_order_key(finding),
        fact_keys=rendered.fact_keys,
        rendered=rendered,
    )


# §8 C7: a parenteral-nutrition card is shown at most once per 24 h per patient, whichever PN draft raised it,
# so its dedup key is the patient-level "PN" rather than the draft's reference.
PN_ORDER_KEY = "parenteral-nutrition"


def _order_key(finding: Finding) -> str | None:
    if finding.order is None:
        return None
    if finding.variant == "pn":
        return PN_ORDER_KEY
    return finding.order.reference


def _patient_id(record: PatientRecord, facts_patient_id: str) -> str:
    if facts_patient_id:
        return facts_patient_id
    for res in record.resources:
        ref = wire.subject_reference(res)
        if ref is not None and ref.startswith("Patient/"):
            return ref.split("/", 1)[1]
    return ""


def assess(record: PatientRecord, hook: str, now: datetime, options: EngineOptions) -> Assessment:
    """Evaluate the rules for ``hook`` over ``record`` at time ``now``; never raises for bad data."""
    now = _as_utc(now)
    skipped: list[Skipped] = []
    evaluated: list[tuple[str, str]] = []
    cards: list[AssessedCard] = []
    if hook not in HOOKS:
        return Assessment(cards=[], rules_evaluated=[], skipped=[])
    patient_id = _patient_id(record, "")
    ignored_md = ""
    values: dict[str, Any] | None = None
    tolerant: list[Skipped] = []
    try:
        index = default_index()
        resources = _as_list(record.resources)
        patient = record.patient if isinstance(record.patient, dict | wire.Patient) else None
        facts = extract(patient, resources, now, index, include_preliminary=options.include_preliminary)
        skipped.extend(facts.skipped)
        tolerant = tolerant_read_entries(facts)
        orders: tuple[DraftOrder, ...] = ()
        if hook in ORDER_HOOKS:
            drafts = _as_list(record.draft_orders)
            # §8.0: on order-sign every draft is a trigger (there are no selections to honour).
            selections = [] if hook == "order-sign" else [
                s for s in _as_list(record.selections) if isinstance(s, str)]
            parsed, order_skips = parse_draft_orders(drafts, selections, index)
            skipped.extend(order_skips)
            orders = tuple(parsed)
            facts = replace(facts, orders=orders)
        state = derive_states(facts)
        skipped.extend(state.facts.skipped[len(facts.skipped):])  # post-dialysis samples set aside (§8 C18)
        ignored_md = set_aside_block(state.facts.set_aside)
        if hook == PATIENT_VIEW:
            values = _governance_values(state)
        result = evaluate(
            state, hook, orders, options=asdict(options),
            unreadable=[str(u) for u in _as_list(record.unreadable)],
        )
        evaluated = result.evaluated
        skipped.extend(Skipped("rule", rule_id, "rule raised an exception; reported on an incomplete card")
                       for rule_id in result.failed)
        patient_id = _patient_id(record, facts.patient_id)
        findings = result.findings
    except Exception:  # last line of defence (§8 C6): say so on a card rather than answer "nothing found"
        log.exception("assessment failed for hook %s", hook)
        skipped.append(Skipped("engine", "", "internal error during evaluation; incomplete card returned"))
        findings = [incomplete_finding([text("incomplete_engine")], [])]
    for finding in findings:
        try:
            cards.append(_to_card(finding, patient_id, options.links_base_url, ignored_md))
        except Exception:  # a template problem must not lose the other cards; say so (§8 C6)
            log.exception("rendering card for rule %s failed", finding.rule_id)
            skipped.append(Skipped("card", finding.rule_id, "card could not be rendered"))
            if finding.rule_id != INCOMPLETE:
                try:
                    cards.append(_to_card(incomplete_finding([finding.rule_id], []), patient_id,
                                          options.links_base_url))
                except Exception:
                    log.exception("rendering the incomplete card failed")
    return Assessment(cards=cards, rules_evaluated=evaluated, skipped=summarise_skipped(skipped),
                      tolerant_reads=summarise_skipped(tolerant), governance_values=values)


def tolerant_read_entries(facts: PatientFacts) -> list[Skipped]:
    """The audit entries of the resources read in tolerant mode and used (issue 18 item 2), naming the fields
    left out. A resource the extraction skipped is named by its skip reason already, and was not used."""
    reads = facts.tolerant_reads()
    if not reads:
        return []
    unused = {(item.resource_type, item.id) for item in facts.skipped}
    return [Skipped(read.resource_type, read.id, f"{TOLERANT_READ}: {', '.join(read.fields)}")
            for read in reads if (read.resource_type, read.id) not in unused]


def _governance_values(state: PatientState) -> dict[str, Any] | None:
    """Issue 19: the values for the what-if simulator; a failure here never changes the cards (None)."""
    try:
        return governance_values(state)
    except Exception:
        log.exception("computing the governance values failed")
        return None


SKIPPED_LISTED = 10   # per (resource type, reason): more than this become one entry with a count (issue 16 item 1)


def summarise_skipped(skipped: Sequence[Skipped]) -> list[dict[str, Any]]:
    """The audit's skipped-resource list: each one while few, else one entry per (type, reason) with a count.

    A hostile record of 10,000 broken Conditions must not become 10,000 audit rows; the first ids are kept.
    """
    groups: dict[tuple[str, str], list[Skipped]] = {}
    for item in skipped:
        groups.setdefault((item.resource_type, item.reason), []).append(item)
    summary: list[dict[str, Any]] = []
    for (resource_type, reason), items in groups.items():
        if len(items) <= SKIPPED_LISTED:
            summary.extend(item.as_dict() for item in items)
        else:
            summary.append({"resource_type": resource_type, "id": "", "reason": reason, "count": len(items),
                            "first_ids": [item.id for item in items[:SKIPPED_LISTED]]})
    return summary


def check_rule_options() -> list[str]:
    """Every option a rule declares is an ``EngineOptions`` field of the declared default's type (start-up check:
    a misspelt option would otherwise leave a rule silently off). Empty list = OK."""
    known = {f.name: f.default for f in fields(EngineOptions)}
    problems: list[str] = []
    for rule_id, definition in RULES.items():
        for name, default in definition.options.items():
            if name not in known:
                problems.append(f"rule {rule_id}: option {name} is not an engine option")
            elif type(default) is not type(known[name]):
                problems.append(f"rule {rule_id}: option {name} default {default!r} is not a "
                                f"{type(known[name]).__name__}")
    return problems


def check_content() -> list[str]:
    """Start-up content check: value sets, unit table, card templates and the FHIR resources they build.
    Empty list = OK."""
    problems: list[str] = []
    problems.extend(default_index().problems)
    try:
        unit_table()
    except (OSError, ValueError) as exc:
        problems.append(f"fhir_mappings/units.toml: {exc}")
    problems.extend(check_templates(declared_fields()))
    problems.extend(check_rule_options())
    # The FHIR resources card suggestions carry, built from the templates and validated as R4B (issue #14).
    from cds_service.fhir_validation import check_template_resources

    problems.extend(check_template_resources())
    return problems
