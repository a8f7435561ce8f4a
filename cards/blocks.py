"""Turn a finding's structured text (``findings.Phrase`` / ``Text`` / ``Bullets`` ...) into the markdown of its card.

The rules say *which* reviewed lines a card carries (by phrase key, with their values); the words, the headings and
the markdown around them live here and in ``templates.toml``. A rule template may list phrase keys under
``hide_lines``: those lines are left out of its cards (a clinician can drop an advice line without a code change).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

from fhir_mappings.labs import KIND_NAME
from findings import Age, Bullets, LabName, Phrase, Text, Unit

from .ages import age_text
from .render import bullet_block, phrase, templates, text

# A finding's parts that cards word; rendered first wherever they appear (issue 17 item 1: rules hold no wording).
STRUCTURED = (Phrase, Text, Age, Unit, LabName, Bullets, tuple)

UCUM_ANNOTATION = re.compile(r"\{[^}]*\}")
UNIT_WORDS = {"mL/min/{1.73_m2}": "mL/min/1.73 m²"}   # eGFR: UCUM's annotation as clinicians write it


def unit_display(unit: str) -> str:
    """A UCUM unit as a clinician reads it: no ``{...}`` annotations (issue 13 item 3)."""
    return UNIT_WORDS.get(unit) or UCUM_ANNOTATION.sub("", unit).strip() or unit


def lab_name(kind: str) -> str:
    """The display name of a lab kind (``fhir_mappings/labs.toml``; the kind itself when it has none)."""
    return KIND_NAME.get(kind, kind)


def to_markdown(value: Any, hidden: Collection[str] = ()) -> str:
    """The escaped markdown of ``value`` (a string is already markdown; ``hidden`` phrase keys give '')."""
    if isinstance(value, str):
        return value
    if isinstance(value, Phrase):
        if value.key in hidden:
            return ""
        # A phrase inside a value is rendered first and escaped again as a value, as it always was.
        return phrase(value.key, **_values(value.values, hidden))
    if isinstance(value, Text):
        return "" if value.key in hidden else text(value.key, **_values(value.values, hidden))
    if isinstance(value, Age):
        return age_text(value.now, value.when)
    if isinstance(value, Unit):
        return unit_display(value.code)
    if isinstance(value, LabName):
        return lab_name(value.kind)
    if isinstance(value, Bullets):
        return bullet_block(value.heading, [to_markdown(line, hidden) for line in value.lines])
    if isinstance(value, tuple):
        return "".join(to_markdown(part, hidden) for part in value)
    return str(value)


def _values(values: Mapping[str, object], hidden: Collection[str]) -> dict[str, object]:
    # A fragment inside a value is rendered first, then filled in (and, in a phrase, escaped) as a value.
    return {k: to_markdown(v, hidden) if isinstance(v, STRUCTURED) else v for k, v in values.items()}


def hidden_lines(rule_id: str) -> frozenset[str]:
    """The phrase keys the rule's template hides (``hide_lines``)."""
    rule = templates().rules.get(rule_id, {})
    return frozenset(str(k) for k in rule.get("hide_lines", ()))


def resolve_fields(rule_id: str, fields: Mapping[str, Any]) -> dict[str, str]:
    """Template fields as strings: structured blocks rendered, the rule's hidden lines left out."""
    hidden = hidden_lines(rule_id)
    return {name: to_markdown(value, hidden) for name, value in fields.items()}


def folded_names(rule_ids: Collection[str]) -> str:
    """``Also: <title>; <title>``-ready names of the rules folded into a card (section 2.9), each once."""
    rules = templates().rules
    return "; ".join(dict.fromkeys(str(rules.get(r, {}).get("title", r)) for r in rule_ids))
