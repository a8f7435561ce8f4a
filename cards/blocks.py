"""Turn a finding's structured text (``findings.Phrase`` / ``Bullets``) into the escaped markdown of its card.

The rules say *which* reviewed lines a card carries (by phrase key, with their values); the words, the headings and
the markdown around them live here and in ``templates.toml``. A rule template may list phrase keys under
``hide_lines``: those lines are left out of its cards (a clinician can drop an advice line without a code change).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from findings import Bullets, Phrase, Text

from .render import bullet_block, phrase, templates, text


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
    if isinstance(value, Bullets):
        return bullet_block(value.heading, [to_markdown(line, hidden) for line in value.lines])
    if isinstance(value, tuple):
        return "".join(to_markdown(part, hidden) for part in value)
    return str(value)


def _values(values: Mapping[str, object], hidden: Collection[str]) -> dict[str, object]:
    # A fragment inside a value is rendered first, then filled in (and, in a phrase, escaped) as a value.
    return {k: to_markdown(v, hidden) if isinstance(v, (Phrase, Text, Bullets, tuple)) else v
            for k, v in values.items()}


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
