"""Render CDS Hooks 2.0 cards from ``templates.toml`` (card text as clinician-reviewable data).

Placeholders are named (``{caxp}``) and filled only from the values a rule supplies. Values are
escaped for HTML and markdown (the CDS Hooks sandbox renders ``detail`` with raw HTML enabled), except
``*_md`` blocks, which are built here from escaped pieces. Summary placeholder values are cut to the
width declared in ``[widths]``, so a summary can never exceed the 140-character limit; the content
check proves that with maximum-width values. Every card and suggestion gets a fresh uuid4, and no
optional field is ever emitted empty or null.

Override reasons are data too (``override_reasons.toml``): each rule names the list that fits its order class.
A rule's ``about`` text (formula, sources, the KDIGO caveat) lives on its rule page; the card detail links to it
in one line, which keeps the detail within the length budget (issue 13 item 3, tests/cards/test_card_height.py).
"""

from __future__ import annotations

import html
import json
import re
import string
import tomllib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from fhir_mappings.labs import ORDERS
from findings import SuggestionSpec as SuggestionSpec  # the suggestion a rule asks for (leaf package)

SUMMARY_LIMIT = 140  # CDS Hooks 2.0 Card.summary: "<140 characters"
GLOBAL_FIELDS = frozenset({"kdigo_caveat"})
MORE_BLOCK = "more_md"  # where the rule-page line goes (filled by the renderer; appended when a detail omits it)
BLOCK_SUFFIX = "_md"
INDICATORS = ("info", "warning", "critical")
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
VALUES_BLOCK = "values_md"  # the evidence block a second card may give as one shared line (issue 13 item 3)

# Characters that can open inline markdown syntax (emphasis, code, links, strikethrough, table cells).
# "<", ">" and "&" are handled by HTML escaping; parentheses, "#", "+", "-" and "." are inert inside a
# single line once "[" and "]" are escaped (values never start a line and newlines are collapsed).
_MD_SPECIAL = re.compile(r"([\\`*_\[\]~|])")


# Anything escape_text would change: a markdown or HTML special, whitespace other than a single inner space.
_NEEDS_ESCAPING = re.compile(r"[\\`*_\[\]~|&<>\"']|[^\S ]|  |^ | $")


def escape_text(value: object) -> str:
    """Make untrusted text inert in markdown rendered with raw HTML: one line, no markup."""
    text = value if type(value) is str else str(value)
    if _NEEDS_ESCAPING.search(text) is None:
        # Nothing to collapse or escape (numbers, dates, most ids): one search instead of split, join, sub and
        # html.escape, ~1 us less per value, ~30 values per card (issue #7). test_render_fast_paths.py checks
        # that this gives what _escape_always gives.
        return text
    return _escape_always(text)


def _escape_always(text: str) -> str:
    text = " ".join(text.split())
    return html.escape(_MD_SPECIAL.sub(r"\\\1", text), quote=True)


def placeholders(template: str) -> list[str]:
    """Named placeholders of a ``str.format`` template, in order of appearance."""
    return list(_placeholders(template))


@lru_cache(maxsize=1024)
def _placeholders(template: str) -> tuple[str, ...]:
    # Memoised: the templates are fixed content and every card fills two or three of them.
    return tuple(name for _lit, name, _spec, _conv in string.Formatter().parse(template) if name)


@dataclass(frozen=True)
class Templates:
    """The parsed ``templates.toml``."""

    meta: dict[str, Any]
    widths: dict[str, int]
    labs: dict[str, str]                # LOINC -> display of the labs a card can order (fhir_mappings/labs.toml)
    consults: dict[str, str]
    override_reasons: dict[str, list[dict[str, str]]]  # list name -> Codings (override_reasons.toml)
    suggestions: dict[str, str]
    phrases: dict[str, str]
    rules: dict[str, dict[str, Any]]
    placeholder_text: dict[str, str] = field(default_factory=dict)  # rule page wording of each placeholder
    evidence_names: dict[str, str] = field(default_factory=dict)    # shared-line names of evidence items
    lab_short: dict[str, str] = field(default_factory=dict)         # LOINC -> name in a label (labs.toml)


def parse_override_reasons(text: str) -> dict[str, list[dict[str, str]]]:
    """Parse ``override_reasons.toml`` into list name -> Codings (raises ValueError on an undefined code,
    a code without display, or a missing system: CDS Hooks 2.0 requires system, code and display)."""
    data = tomllib.loads(text)
    system = data.get("system")
    codes = data.get("codes", {})
    lists = data.get("lists", {})
    if not isinstance(system, str) or not system.startswith("http"):
        raise ValueError("override reasons: 'system' must be an absolute URI")
    if not isinstance(codes, dict) or not isinstance(lists, dict):
        raise ValueError("override reasons: [codes] and [lists] must be tables")
    parsed: dict[str, list[dict[str, str]]] = {}
    for name, members in lists.items():
        if not isinstance(members, list) or not members:
            raise ValueError(f"override reasons: list {name} must name at least one code")
        codings = []
        for code in members:
            display = codes.get(code)
            if not isinstance(display, str) or not display.strip():
                raise ValueError(f"override reasons: list {name} names {code!r}, which has no display in [codes]")
            codings.append({"system": system, "code": str(code), "display": display})
        parsed[str(name)] = codings
    return parsed


def parse_templates(text: str, override_text: str = "") -> Templates:
    """Parse template TOML text and, when given, the override-reason lists (raises ValueError/TOMLDecodeError
    on malformed structure)."""
    data = tomllib.loads(text)
    rules = data.get("rules", {})
    if not isinstance(rules, dict):
        raise ValueError("templates: [rules] must be a table")
    if "labs" in data or "lab_short" in data.get("meta", {}):
        # Issue 17 item 4: a lab's codes and names have one source; a second table here would drift from it.
        raise ValueError("templates: lab codes and names live in fhir_mappings/labs.toml, "
                         "not in [labs] or [meta.lab_short]")
    return Templates(
        meta=dict(data.get("meta", {})),
        widths={k: int(v) for k, v in data.get("widths", {}).items()},
        labs={code: order.display for code, order in ORDERS.items()},
        lab_short={code: order.short for code, order in ORDERS.items()},
        consults=dict(data.get("consults", {})),
        override_reasons=parse_override_reasons(override_text) if override_text else {},
        suggestions=dict(data.get("suggestions", {})),
        phrases=dict(data.get("phrases", {})),
        rules={k: dict(v) for k, v in rules.items()},
        placeholder_text={k: str(v) for k, v in data.get("placeholder_text", {}).items()},
        evidence_names={k: str(v) for k, v in data.get("evidence_names", {}).items()},
    )


@lru_cache(maxsize=1)
def templates() -> Templates:
    """The packaged card templates and override-reason lists (read once per process)."""
    package = resources.files("cards")
    text = package.joinpath("templates.toml").read_text(encoding="utf-8")
    return parse_templates(text, package.joinpath("override_reasons.toml").read_text(encoding="utf-8"))


def add_rule_template(rule_id: str, template: Mapping[str, Any]) -> None:
    """Add a card template for ``rule_id`` to the loaded templates (a rule shipped outside ``templates.toml``,
    e.g. a test's own rule); ValueError when the rule already has one. ``check_templates`` checks it as any."""
    rules = templates().rules
    if rule_id in rules:
        raise ValueError(f"rule {rule_id} already has a card template")
    rules[rule_id] = dict(template)


def remove_rule_template(rule_id: str) -> None:
    """Remove a template added with ``add_rule_template``."""
    templates().rules.pop(rule_id, None)


def _summaries(rule: Mapping[str, Any]) -> dict[str, str]:
    found = {"": str(rule.get("summary", ""))}
    variants = rule.get("variants", {})
    if isinstance(variants, dict):
        found.update({k: str(v) for k, v in variants.items()})
    return found


def check_templates(declared: Mapping[str, Iterable[str]], tpl: Templates | None = None) -> list[str]:
    """Problems with the card content (empty list = OK).

    ``declared`` maps each rule id to the evidence fields the rule fills. Checks: every rule has a
    template with title, summary and detail; every placeholder is a declared field (or a global or
    ``*_md`` block the rule declares); every summary placeholder has a width; and every summary,
    filled with maximum-width values, stays under 140 characters.
    """
    problems: list[str] = []
    try:
        tpl = tpl or templates()
    except (OSError, ValueError) as exc:
        return [f"cards/templates.toml cannot be read: {exc}"]
    for key in ("source_label", "topic_system", "disclaimer", "kdigo_caveat"):
        if not tpl.meta.get(key):
            problems.append(f"templates: [meta] {key} is missing")
    for rule_id, fields in sorted(declared.items()):
        allowed = set(fields) | GLOBAL_FIELDS | {MORE_BLOCK}
        rule = tpl.rules.get(rule_id)
        if rule is None:
            problems.append(f"rule {rule_id}: no card template in cards/templates.toml")
            continue
        for key in ("title", "summary", "detail"):
            if not isinstance(rule.get(key), str) or not rule[key].strip():
                problems.append(f"rule {rule_id}: template has no {key}")
        for variant, summary in _summaries(rule).items():
            where = f"rule {rule_id} summary{'.' + variant if variant else ''}"
            width = 0
            for name in placeholders(summary):
                if name not in allowed:
                    problems.append(f"{where}: placeholder {{{name}}} has no evidence field")
                if name.endswith(BLOCK_SUFFIX):
                    problems.append(f"{where}: markdown block {{{name}}} is not allowed in a summary")
                if name not in tpl.widths:
                    problems.append(f"{where}: placeholder {{{name}}} has no maximum width in [widths]")
                width += tpl.widths.get(name, SUMMARY_LIMIT)
            literal = len(summary) - sum(len(n) + 2 for n in placeholders(summary))
            if literal + width >= SUMMARY_LIMIT:
                problems.append(
                    f"{where}: can reach {literal + width} characters with maximum-width values "
                    f"(limit < {SUMMARY_LIMIT})"
                )
        hide = rule.get("hide_lines", [])
        if not isinstance(hide, list) or any(not isinstance(k, str) or k not in tpl.phrases for k in hide):
            problems.append(f"rule {rule_id}: hide_lines must list [phrases] keys")
        unknown_links = set(rule.get("links", [])) - LINK_KINDS
        if unknown_links:
            problems.append(f"rule {rule_id}: unknown link kind(s) {sorted(unknown_links)} (use smart, rule)")
        for kind in set(rule.get("links", [])) & LINK_KINDS:
            if not tpl.phrases.get(f"link_{kind}"):
                problems.append(f"rule {rule_id}: link {kind} needs [phrases] link_{kind}")
        for name in placeholders(str(rule.get("detail", ""))):
            if name not in allowed:
                problems.append(f"rule {rule_id} detail: placeholder {{{name}}} has no evidence field")
        problems += _check_rule_page_parts(rule_id, rule, tpl)
    for rule_id in sorted(set(tpl.rules) - set(declared)):
        problems.append(f"templates: [rules.{rule_id}] matches no registered rule")
    return problems


def _check_rule_page_parts(rule_id: str, rule: Mapping[str, Any], tpl: Templates) -> list[str]:
    """The override-reason list a rule names exists; its ``about`` text holds no patient placeholder."""
    problems: list[str] = []
    reasons = rule.get("override_reasons")
    if reasons is not None and (not isinstance(reasons, str) or reasons not in tpl.override_reasons):
        problems.append(f"rule {rule_id}: override_reasons names unknown list {reasons!r} "
                        "(lists are defined in cards/override_reasons.toml)")
    about = rule.get("about")
    if about is not None:
        if not isinstance(about, str) or not about.strip():
            problems.append(f"rule {rule_id}: about must be non-empty markdown text")
        else:
            # The rule page is the same for every patient: only reviewed global text may be filled in.
            for name in set(placeholders(about)) - GLOBAL_FIELDS:
                problems.append(f"rule {rule_id} about: placeholder {{{name}}} is patient-specific")
            if not tpl.phrases.get("more_link") or not tpl.phrases.get("more_link_caveat"):
                problems.append(f"rule {rule_id}: about needs [phrases] more_link and more_link_caveat")
    return problems


class _Missing(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""


def _fit(value: str, width: int) -> str:
    return value if len(value) <= width else value[: max(width - 1, 0)] + "…"


def render_summary(rule_id: str, fields: Mapping[str, str], variant: str = "") -> str:
    """The filled summary of ``rule_id`` (values cut to their declared widths; plain text)."""
    tpl = templates()
    rule = tpl.rules[rule_id]
    summary = _summaries(rule).get(variant) or str(rule["summary"])
    values = _Missing(
        {name: _fit(re.sub(r"\s+", " ", str(fields.get(name, ""))), tpl.widths.get(name, 20))
         for name in placeholders(summary)}
    )
    text = summary.format_map(values)
    return _fit(text, SUMMARY_LIMIT - 1)


def rule_page_url(rule_id: str, base_url: str) -> str:
    """The absolute URL of the rule's explanation page, or '' without a configured public base URL."""
    return f"{base_url.rstrip('/')}/rules/{rule_id}" if base_url else ""


def about_text(rule_id: str) -> str:
    """The rule's ``about`` markdown (formula, sources, caveats) with global fields filled; '' if none."""
    tpl = templates()
    about = tpl.rules[rule_id].get("about")
    if not isinstance(about, str) or not about.strip():
        return ""
    values = _Missing({name: str(tpl.meta.get(name, "")) for name in placeholders(about) if name in GLOBAL_FIELDS})
    return about.format_map(values).strip()


def _more(rule_id: str, base_url: str) -> tuple[str, str]:
    """(inline line, trailing text) for the rule's ``about`` text. With a base URL: one sentence linking to the
    rule page, placed at ``{more_md}`` (e.g. after "Why this card") or else at the end. Without one there is no
    page to link to (evaluate CLI, offline use), so the text itself ends the detail and nothing is lost."""
    about = about_text(rule_id)
    if not about:
        return "", ""
    if not base_url:
        return "", about
    key = "more_link_caveat" if "{kdigo_caveat}" in str(templates().rules[rule_id].get("about", "")) else "more_link"
    line = text(key, url=rule_page_url(rule_id, base_url))
    return (line, "") if MORE_BLOCK in placeholders(str(templates().rules[rule_id]["detail"])) else ("", line)


def render_detail(rule_id: str, fields: Mapping[str, str], base_url: str = "") -> str:
    """The filled markdown detail, the rule-page line (or the ``about`` text without a base URL) and the
    disclaimer appended, blank runs collapsed."""
    tpl = templates()
    detail = str(tpl.rules[rule_id]["detail"])
    values = _Missing()
    inline_more, trailing_more = _more(rule_id, base_url)
    for name in placeholders(detail):
        if name == MORE_BLOCK:
            values[name] = inline_more
        elif name in GLOBAL_FIELDS:
            values[name] = str(tpl.meta.get(name, ""))  # reviewed content, not EHR text
        elif name.endswith(BLOCK_SUFFIX):
            values[name] = str(fields.get(name, ""))
        else:
            values[name] = escape_text(fields.get(name, ""))
    body = re.sub(r"[ \t]+\n", "\n", detail.format_map(values)).strip()
    if trailing_more:
        body = f"{body}\n\n{trailing_more}"
    body = re.sub(r"\n{3,}", "\n\n", body)
    return f"{body}\n\n*{tpl.meta['disclaimer']}*"


def phrase(key: str, **values: object) -> str:
    """A short text fragment from ``[phrases]`` with escaped values (markdown-safe)."""
    tpl = templates().phrases.get(key)
    if tpl is None:
        MISSING_PHRASES.add(key)
        return ""
    return tpl.format_map(_Missing({k: escape_text(v) for k, v in values.items()}))


MISSING_PHRASES: set[str] = set()


def text(key: str, **values: object) -> str:
    """A plain-text fragment from ``[phrases]`` (for summaries; values are our own numbers/labels)."""
    tpl = templates().phrases.get(key)
    if tpl is None:
        MISSING_PHRASES.add(key)
        return ""
    return tpl.format_map(_Missing({k: str(v) for k, v in values.items()}))


def bullet_block(heading_key: str, lines: Sequence[str]) -> str:
    """``**Heading**`` followed by ``- line`` items; '' when there are no lines."""
    items = [line for line in lines if line]
    if not items:
        return ""
    return phrase(heading_key) + "\n" + "\n".join(f"- {line}" for line in items)


@dataclass(frozen=True)
class CardRequest:
    """Everything needed to render one card."""

    rule_id: str
    indicator: str
    fields: Mapping[str, str]
    variant: str = ""
    suggestions: Sequence[SuggestionSpec] = ()
    selection_behavior: str = "any"
    override_reasons: bool = True  # offer the list the rule's template names (False: offer none)
    patient_id: str = ""
    links_base_url: str = ""       # public base URL of this service; "" = no links (e.g. the evaluate CLI)
    evidence: Sequence[Mapping[str, Any]] = ()  # the audit evidence behind values_md (for the shared line)


@dataclass(frozen=True)
class RenderedCard:
    """The card JSON plus the uuids of its suggestions (for the audit log).

    ``fact_keys`` identify the values the card's evidence block shows; ``shared_detail()`` is the same detail with
    that block given as one line (value, unit, date), for when an earlier card already shows those values (see
    ``cards.shared.share_evidence``); '' when the card has no evidence block to collapse. It is built only when
    asked for: most responses never need it, and rendering a detail twice would double the hot path's cost.
    """

    card: dict[str, Any]
    suggestion_uuids: list[str]
    fact_keys: frozenset[str] = frozenset()
    request: CardRequest | None = field(default=None, repr=False, compare=False)

    def shared_detail(self) -> str:
        """The detail with the evidence block as one shared line ('' when there is none to collapse)."""
        if self.request is None or not self.fact_keys:
            return ""
        line = shared_line(self.request.evidence)
        if not line:
            return ""
        fields = {**self.request.fields, VALUES_BLOCK: line}
        return render_detail(self.request.rule_id, fields, self.request.links_base_url)


def _subject(patient_id: str) -> dict[str, Any]:
    return {"subject": {"reference": f"Patient/{patient_id}"}} if patient_id else {}


def _lab_request(code: str, patient_id: str) -> dict[str, Any]:
    display = templates().labs.get(code, "")
    coding: dict[str, str] = {"system": LOINC, "code": code}
    concept: dict[str, Any] = {"coding": [coding]}
    if display:
        coding["display"] = display
        concept["text"] = display
    return {"resourceType": "ServiceRequest", "status": "draft", "intent": "order", "code": concept,
            **_subject(patient_id)}


def _actions(spec: SuggestionSpec, patient_id: str) -> list[dict[str, Any]]:
    tpl = templates()
    actions: list[dict[str, Any]] = []
    if spec.kind in ("delete", "replace-gluconate") and spec.order_ref:
        actions.append({
            "type": "delete",
            "description": text("action_delete", order=spec.order_ref) or f"Remove {spec.order_ref}",
            "resourceId": [spec.order_ref],
        })
    if spec.kind == "replace-gluconate":
        note = tpl.meta.get("replacement_note", "dose to be confirmed by pharmacy")
        actions.append({
            "type": "create",
            "description": text("action_create_gluconate") or "Create a calcium gluconate draft",
            "resource": {
                "resourceType": "MedicationRequest", "status": "draft", "intent": "order",
                "medicationCodeableConcept": {"text": tpl.meta.get("gluconate_text", "Calcium gluconate injection")},
                **_subject(patient_id),
                # D: the service never calculates an equivalent dose (section R08, suggestion 2).
                "dosageInstruction": [{
                    "text": note,
                    "route": {"coding": [{"system": SNOMED, "code": "47625008", "display": "Intravenous route"}]},
                }],
                "note": [{"text": note}],
            },
        })
    if spec.kind == "labs":
        for code in spec.labs:
            actions.append({
                "type": "create",
                "description": text("action_order_lab", lab=tpl.labs.get(code, code)) or f"Order {code}",
                "resource": _lab_request(code, patient_id),
            })
    if spec.kind == "consult":
        consult_text = tpl.consults.get(spec.specialty, spec.specialty)
        actions.append({
            "type": "create",
            "description": text("action_consult", consult=consult_text) or consult_text,
            "resource": {"resourceType": "ServiceRequest", "status": "draft", "intent": "order",
                         "code": {"text": consult_text}, **_subject(patient_id)},
        })
    return actions


def _label(spec: SuggestionSpec) -> str:
    tpl = templates()
    label = tpl.suggestions.get(spec.label, spec.label)
    values = dict(spec.label_values)
    if spec.kind == "labs" and "labs" not in values:
        # Display names, never a bare LOINC code: the short name, else the LOINC display (issue 13 item 3).
        values["labs"] = ", ".join(tpl.lab_short.get(c) or tpl.labs.get(c, c) for c in spec.labs)
    if spec.kind == "consult" and "consult" not in values:
        values["consult"] = tpl.consults.get(spec.specialty, spec.specialty)
    return label.format_map(_Missing(values))


LINK_KINDS = frozenset({"smart", "rule"})


def _links(rule_id: str, rule: Mapping[str, Any], base_url: str) -> list[dict[str, Any]]:
    """The card's CDS Hooks 2.0 links (issue #6): ``smart`` to the viewer's launch URL with the rule as
    appContext, ``absolute`` to the rule's explanation page. appContext only on smart links (cds-resp-3)."""
    if not base_url:
        return []
    base = base_url.rstrip("/")
    links: list[dict[str, Any]] = []
    for kind in rule.get("links", []):
        if kind == "smart":
            links.append({"label": text("link_smart"), "url": f"{base}/smart/launch", "type": "smart",
                          "appContext": json.dumps({"rule": rule_id}, separators=(",", ":"))})
        elif kind == "rule":
            links.append({"label": text("link_rule"), "url": f"{base}/rules/{rule_id}", "type": "absolute"})
    return links


def override_reasons_for(rule_id: str) -> list[dict[str, str]]:
    """The override-reason Codings of the list ``rule_id``'s template names ([] when it names none)."""
    tpl = templates()
    name = tpl.rules[rule_id].get("override_reasons")
    return [dict(r) for r in tpl.override_reasons.get(name, [])] if isinstance(name, str) else []


def render_card(request: CardRequest) -> RenderedCard:
    """Build the CDS Hooks 2.0 card JSON for one finding."""
    tpl = templates()
    rule = tpl.rules[request.rule_id]
    source: dict[str, Any] = {"label": tpl.meta["source_label"]}
    url = rule_page_url(request.rule_id, request.links_base_url)
    if url:
        # CDS Hooks 2.0 Source.url is an absolute URL; without a public base URL it is omitted, never relative.
        source["url"] = url
    source["topic"] = {"system": tpl.meta["topic_system"], "code": request.rule_id, "display": rule["title"]}
    card: dict[str, Any] = {
        "uuid": str(uuid.uuid4()),
        "summary": render_summary(request.rule_id, request.fields, request.variant),
        "detail": render_detail(request.rule_id, request.fields, request.links_base_url),
        "indicator": request.indicator if request.indicator in INDICATORS else "info",
        "source": source,
    }
    suggestions: list[dict[str, Any]] = []
    for spec in request.suggestions:
        actions = _actions(spec, request.patient_id)
        if not actions:
            continue
        suggestions.append({"label": _label(spec), "uuid": str(uuid.uuid4()), "actions": actions})
    if suggestions:
        card["selectionBehavior"] = request.selection_behavior
        card["suggestions"] = suggestions
    links = _links(request.rule_id, rule, request.links_base_url)
    if links:
        card["links"] = links
    reasons = override_reasons_for(request.rule_id) if request.override_reasons else []
    if reasons:
        card["overrideReasons"] = reasons
    return RenderedCard(card=card, suggestion_uuids=[s["uuid"] for s in suggestions], fact_keys=_fact_keys(request),
                        request=request)


def fact_key(item: Mapping[str, Any]) -> str:
    """Identity of one evidence value: what it is and which resource it came from (its time as a tiebreak)."""
    return f"{item.get('name', '')}|{item.get('resource_id', '')}|{item.get('time', '')}"


def _number(value: float) -> str:
    """One decimal, or two when one would round the value onto a threshold it does not reach (§8 C13)."""
    one = f"{value:.1f}"
    return one if abs(float(one) - value) < 1e-9 else f"{value:.2f}"


def shared_line(evidence: Sequence[Mapping[str, Any]]) -> str:
    """``Values as in the card above: Calcium 10.0 mg/dL, Phosphate 7.5 mg/dL (2025-06-13)`` – value, unit
    and date of each evidence item in one line; '' without evidence."""
    tpl = templates()
    parts: list[str] = []
    dates: list[str] = []
    for item in evidence:
        name = str(item.get("name", ""))
        value, unit = item.get("value"), str(item.get("unit", ""))
        if "ionized" in name and isinstance(item.get("original_value"), (int, float)):
            value, unit = item["original_value"], str(item.get("original_unit", unit))  # labs report mmol/L
        if not isinstance(value, (int, float)):
            continue
        label = tpl.evidence_names.get(name, name.replace("_", " ").capitalize())
        unit = tpl.evidence_names.get(f"unit:{unit}", unit)
        parts.append(f"{label} {_number(float(value))} {unit}".strip())
        dates.append(str(item.get("time", ""))[:10])
    if not parts:
        return ""
    if len(set(dates)) == 1:
        values = ", ".join(parts) + (f" ({dates[0]})" if dates[0] else "")
    else:
        values = ", ".join(f"{p} ({d})" if d else p for p, d in zip(parts, dates, strict=True))
    return phrase("shared_values", values=values)


def _fact_keys(request: CardRequest) -> frozenset[str]:
    """The values behind the card's evidence block (empty when its template has no block to collapse)."""
    if not request.evidence or VALUES_BLOCK not in placeholders(str(templates().rules[request.rule_id]["detail"])):
        return frozenset()
    return frozenset(fact_key(item) for item in request.evidence)
