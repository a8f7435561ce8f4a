"""Plain explanation of a rule for ``/rules/<rule-id>``, generated from the card templates and rule registry.

No text is duplicated here: the title, summary pattern, the "why this card" reasoning and the rule's ``about``
text (formula, sources, the KDIGO caveat, moved off the card to keep it short) are the reviewed wording of
``cards/templates.toml``; the spec id, version and hooks come from the rule registry. Placeholders that hold
patient values are shown as italic words from ``[placeholder_text]`` (never a raw ``[caxp]``); patient-specific
blocks are dropped. The disclaimer is shown once, by the page.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from markupsafe import Markup, escape

from cards.render import GLOBAL_FIELDS, about_text, templates
from cds_service.rules import RULES

_BLOCK_LINE = re.compile(r"^\s*\{[a-z0-9_]+_md\}\s*$")
_PLACEHOLDER = re.compile(r"\{([a-z0-9_]+)\}")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_LINK = re.compile(r"\[([^\]]+)\]\((https?://[^)\s]+)\)")
# Placeholder words travel through escaping as these markers (characters templates never contain).
_OPEN, _CLOSE = "\x02", "\x03"


@dataclass(frozen=True)
class RuleExplanation:
    """What the rule page shows."""

    rule_id: str
    title: str
    spec_id: str
    version: str
    hooks: list[str]
    summary_patterns: list[Markup]
    paragraphs: list[Markup]
    disclaimer: str


def _describe(text: str, meta: Mapping[str, object], words: Mapping[str, str]) -> str:
    """Fill global fields from [meta]; mark every patient placeholder with its descriptive words."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.endswith("_md"):
            return ""  # patient-specific blocks and the rule-page link (this page is its target)
        value = meta.get(name)
        if name in GLOBAL_FIELDS and isinstance(value, str):
            return value
        return f"{_OPEN}{words.get(name, name.replace('_', ' '))}{_CLOSE}"

    return _PLACEHOLDER.sub(replace, text)


def _inline(text: str) -> str:
    """Escape, then render the inline markdown the templates use: placeholders, ``**bold**``, http(s) links."""
    html = str(escape(text)).replace(_OPEN, "<em>").replace(_CLOSE, "</em>")
    html = _BOLD.sub(lambda m: f"<strong>{m.group(1)}</strong>", html)
    return _LINK.sub(lambda m: f'<a href="{m.group(2)}">{m.group(1)}</a>', html)


def _paragraph(text: str) -> Markup:
    """One block: a ``> quote``, a ``- `` list or a paragraph."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if lines and all(line.startswith("- ") for line in lines):
        items = "".join(f"<li>{_inline(line[2:])}</li>" for line in lines)
        return Markup(f"<ul>{items}</ul>")  # noqa: S704 - every piece escaped by _inline
    joined = " ".join(" ".join(lines).split())
    if joined.startswith(">"):
        return Markup(f"<blockquote>{_inline(joined.lstrip('> '))}</blockquote>")  # noqa: S704 - escaped
    return Markup(f"<p>{_inline(joined)}</p>")  # noqa: S704 - escaped by _inline


def _blocks(text: str) -> list[str]:
    return [block for block in re.split(r"\n\s*\n", text) if block.strip()]


def explain(rule_id: str) -> RuleExplanation | None:
    """The explanation of ``rule_id``, or None when no such rule exists."""
    tpl = templates()
    rule = tpl.rules.get(rule_id)
    definition = RULES.get(rule_id)
    if rule is None or definition is None:
        return None
    meta, words = tpl.meta, tpl.placeholder_text
    detail = "\n".join(line for line in str(rule.get("detail", "")).splitlines() if not _BLOCK_LINE.match(line))
    paragraphs = [_paragraph(_describe(block, meta, words)) for block in _blocks(detail)]
    paragraphs += [_paragraph(block) for block in _blocks(about_text(rule_id))]
    patterns = [str(rule.get("summary", ""))]
    variants = rule.get("variants")
    if isinstance(variants, dict):
        patterns += [str(v) for v in variants.values() if str(v) not in patterns]
    return RuleExplanation(
        rule_id=rule_id,
        title=str(rule.get("title", rule_id)),
        spec_id=definition.spec_id,
        version=definition.version,
        hooks=sorted(definition.hooks),
        summary_patterns=[Markup(_inline(_describe(p, meta, words))) for p in patterns if p],  # noqa: S704
        paragraphs=paragraphs,
        disclaimer=str(meta.get("disclaimer", "")),
    )
