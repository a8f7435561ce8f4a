"""The one entry point the HTTP layer calls: ``assess(record, hook, now, options)``.

Raw FHIR JSON in, CDS Hooks 2.0 cards out, in four steps: extract facts (tolerant, per resource),
derive states, evaluate + consolidate the rules, render cards from the templates. ``now`` is always
injected. Nothing here raises for bad input: malformed resources are skipped and reported in
``Assessment.skipped``. Clinical values are never logged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from cards.render import CardRequest, bullet_block, check_templates, render_card
from cds_service.rules import RULES, declared_fields, evaluate
from cds_service.rules.base import ORDER_HOOKS, PATIENT_VIEW, Finding
from fhir_mappings.extract import extract
from fhir_mappings.facts import DraftOrder, Skipped
from fhir_mappings.orders import parse_draft_orders
from fhir_mappings.states import derive_states
from fhir_mappings.units import unit_table
from fhir_mappings.valuesets import default_index

log = logging.getLogger(__name__)

HOOKS = frozenset({PATIENT_VIEW}) | ORDER_HOOKS


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
    """Everything known about the patient for one hook call, as raw FHIR R4 JSON."""

    patient: dict[str, Any] | None
    resources: Sequence[dict[str, Any]]
    draft_orders: Sequence[dict[str, Any]] = ()
    selections: Sequence[str] = ()


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


@dataclass(frozen=True)
class Assessment:
    """The result of one evaluation."""

    cards: list[AssessedCard]
    rules_evaluated: list[tuple[str, str]]
    skipped: list[dict[str, str]]


def _as_utc(now: datetime) -> datetime:
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


def _as_list(value: object) -> list[Any]:
    """Any sequence of items as a list; a lone string/dict/None (wrong shape) as an empty list."""
    if value is None or isinstance(value, (str, bytes, dict)):
        return []
    if not isinstance(value, Iterable):
        return []
    return list(value)


def _to_card(finding: Finding, patient_id: str, links_base_url: str = "") -> AssessedCard:
    fields = dict(finding.fields)
    if finding.folded:
        fields["folded_md"] = bullet_block("folded_heading", finding.folded)
    rendered = render_card(
        CardRequest(
            rule_id=finding.rule_id,
            indicator=finding.indicator,
            fields=fields,
            variant=finding.variant,
            suggestions=finding.suggestions,
            selection_behavior=finding.selection_behavior,
            override_reasons=finding.override_reasons,
            patient_id=patient_id,
            links_base_url=links_base_url,
        )
    )
    return AssessedCard(
        card=rendered.card,
        rule_id=finding.rule_id,
        rule_version=RULES[finding.rule_id].version,
        indicator=rendered.card["indicator"],
        evidence=finding.evidence,
        suggestion_uuids=rendered.suggestion_uuids,
        order_key=finding.order.reference if finding.order is not None else None,
    )


def _patient_id(record: PatientRecord, facts_patient_id: str) -> str:
    if facts_patient_id:
        return facts_patient_id
    for res in record.resources:
        subject = res.get("subject") if isinstance(res, dict) else None
        ref = subject.get("reference") if isinstance(subject, dict) else None
        if isinstance(ref, str) and ref.startswith("Patient/"):
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
    try:
        index = default_index()
        resources = _as_list(record.resources)
        patient = record.patient if isinstance(record.patient, dict) else None
        facts = extract(patient, resources, now, index, include_preliminary=options.include_preliminary)
        skipped.extend(facts.skipped)
        orders: tuple[DraftOrder, ...] = ()
        if hook in ORDER_HOOKS:
            drafts = _as_list(record.draft_orders)
            selections = [s for s in _as_list(record.selections) if isinstance(s, str)]
            parsed, order_skips = parse_draft_orders(drafts, selections, index)
            skipped.extend(order_skips)
            orders = tuple(parsed)
            facts = replace(facts, orders=orders)
        state = derive_states(facts)
        findings, evaluated = evaluate(
            state, hook, orders, is_option_on=lambda name: bool(getattr(options, name, False))
        )
        patient_id = _patient_id(record, facts.patient_id)
        for finding in findings:
            try:
                cards.append(_to_card(finding, patient_id, options.links_base_url))
            except Exception:  # a template problem must not lose the other cards
                log.exception("rendering card for rule %s failed", finding.rule_id)
    except Exception:  # last line of defence: decision support must never crash the hook call
        log.exception("assessment failed for hook %s", hook)
        skipped.append(Skipped("engine", "", "internal error during evaluation; no cards"))
    return Assessment(cards=cards, rules_evaluated=evaluated, skipped=[s.as_dict() for s in skipped])


def check_content() -> list[str]:
    """Start-up content check: value sets, unit table and card templates. Empty list = OK."""
    problems: list[str] = []
    problems.extend(default_index().problems)
    try:
        unit_table()
    except (OSError, ValueError) as exc:
        problems.append(f"fhir_mappings/units.toml: {exc}")
    problems.extend(check_templates(declared_fields()))
    return problems
