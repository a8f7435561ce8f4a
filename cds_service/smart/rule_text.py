"""Plain explanation of a rule for ``/rules/<rule-id>``, generated from the card templates and rule registry.

No text is duplicated here: the title, summary pattern and "why this card" reasoning (thresholds, formula,
sources) are the reviewed wording of ``cards/templates.toml``; the spec id, version and hooks come from the rule
registry. Placeholders that hold patient values are shown as ``[name]``; patient-specific blocks are dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from markupsafe import Markup, escape

from cards.render import templates
from cds_service.rules import RULES

_BLOCK_LINE = re.compile(r"^\s*\{[a-z0-9_]+_md\}\s*$")
_PLACEHOLDER = re.compile(r"\{([a-z0-9_]+)\}")
_BOLD = re.compile(r"\*\*(.+?)\*\*")


@dataclass(frozen=True)
class RuleExplanation:
    """What the rule page shows."""

    rule_id: str
    title: str
    spec_id: str
    version: str
    hooks: list[str]
    summary_patterns: list[str]
    paragraphs: list[Markup]
    disclaimer: str


def _fill(text: str, meta: dict[str, object]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        value = meta.get(name)
        return str(value) if isinstance(value, str) else f"[{name.replace('_', ' ')}]"

    return _PLACEHOLDER.sub(replace, text)


def _paragraph(text: str) -> Markup:
    """Escape, then render the two markdown features the templates use: ``**bold**`` and ``> quote``."""
    quote = text.startswith(">")
    body = escape(text.lstrip("> ").strip())
    html = _BOLD.sub(lambda m: f"<strong>{m.group(1)}</strong>", str(body))
    return Markup(f"<blockquote>{html}</blockquote>" if quote else f"<p>{html}</p>")  # noqa: S704 - escaped above


def explain(rule_id: str) -> RuleExplanation | None:
    """The explanation of ``rule_id``, or None when no such rule exists."""
    tpl = templates()
    rule = tpl.rules.get(rule_id)
    definition = RULES.get(rule_id)
    if rule is None or definition is None:
        return None
    meta = tpl.meta
    detail = "\n".join(line for line in str(rule.get("detail", "")).splitlines() if not _BLOCK_LINE.match(line))
    paragraphs = [_paragraph(" ".join(_fill(block, meta).split()))
                  for block in re.split(r"\n\s*\n", detail) if block.strip()]
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
        summary_patterns=[_fill(p, meta) for p in patterns if p],
        paragraphs=paragraphs,
        disclaimer=str(meta.get("disclaimer", "")),
    )
