"""What a rule says, as data: the ``Finding`` and the pieces of card text it refers to by key (issue 17 item 1).

A leaf package: the rules build these, ``cards`` turns them into CDS Hooks cards from the reviewed templates.
Neither side needs the other, and this package imports nothing of the project.

Card text is never written here: a ``Phrase`` names a reviewed fragment of ``cards/templates.toml`` [phrases] and
the values to fill in (escaped by ``cards``); a ``Text`` is the same as plain text (summaries); ``Age``, ``Unit`` and
``LabName`` are values ``cards`` words (how old, a UCUM unit, a lab's name); ``Bullets`` is a headed list of lines;
a tuple of them is their concatenation. A template can hide a line by its phrase key (``hide_lines``), so which
advice lines a card shows is content, not code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, Union


@dataclass(frozen=True)
class Phrase:
    """A reviewed text fragment by its ``[phrases]`` key, with the values to fill in."""

    key: str
    values: Mapping[str, object] = field(default_factory=dict)

    @classmethod
    def of(cls, key: str, **values: object) -> Phrase:
        """``Phrase.of("factor_ckd", stage="CKD G5D")``."""
        return cls(key, values)


@dataclass(frozen=True)
class Text:
    """A reviewed plain-text fragment (summaries, values inside a phrase) by its ``[phrases]`` key."""

    key: str
    values: Mapping[str, object] = field(default_factory=dict)

    @classmethod
    def of(cls, key: str, **values: object) -> Text:
        """``Text.of("renal_dialysis")``."""
        return cls(key, values)


@dataclass(frozen=True)
class Age:
    """How old a value drawn at ``when`` is at ``now``; ``cards`` words it ("22 h ago", clinical-rules.md §8 C13)."""

    now: datetime
    when: datetime


@dataclass(frozen=True)
class Unit:
    """A UCUM unit (``mL/min/{1.73_m2}``); ``cards`` shows it as a clinician reads it (issue 13 item 3)."""

    code: str


@dataclass(frozen=True)
class LabName:
    """A lab kind (value-set id, ``lab-phosphate``); ``cards`` shows its display name (``Phosphate``)."""

    kind: str


@dataclass(frozen=True)
class Bullets:
    """A ``**Heading**`` (a phrase key) over ``- line`` items; nothing at all when no line has text."""

    heading: str
    lines: tuple[Markdown, ...]


def joined(separator: str, parts: Iterable[Markdown]) -> tuple[Markdown, ...]:
    """``separator.join(parts)`` for markdown pieces (a concatenation rendered by ``cards``)."""
    out: list[Markdown] = []
    for part in parts:
        if out:
            out.append(separator)
        out.append(part)
    return tuple(out)


def bullets(heading: str, lines: Iterable[Markdown]) -> Bullets:
    """``Bullets`` over ``lines`` (empty lines are dropped when rendered)."""
    return Bullets(heading, tuple(lines))


# A detail block: literal markdown (already escaped), a phrase, a bullet list, or a concatenation of them.
Markdown = Union[str, Phrase, Text, Age, Unit, LabName, Bullets, tuple["Markdown", ...]]  # noqa: UP007  (a recursive alias needs Union)


@dataclass(frozen=True)
class SuggestionSpec:
    """An abstract suggestion a rule asks for; ``cards`` renders it into FHIR actions."""

    kind: str                      # "labs" | "delete" | "replace-gluconate" | "consult"
    label: str                     # key in [suggestions]
    labs: tuple[str, ...] = ()     # LOINC codes for "labs"
    order_ref: str = ""            # "MedicationRequest/<id>" for delete / replace
    specialty: str = ""            # key in [consults]
    label_values: Mapping[str, str] = field(default_factory=dict)


class OrderRef(Protocol):
    """The draft order a finding is about (``fhir_mappings.facts.DraftOrder`` satisfies it)."""

    @property
    def reference(self) -> str:
        """``MedicationRequest/<id>``."""
        ...


@dataclass
class Finding:
    """A rule's verdict: indicator, template fields, audit evidence and suggestions.

    ``fields`` fills the template's placeholders: plain values for the summary, ``Markdown`` for ``*_md`` blocks.
    ``folded`` holds the ids of the rules consolidated into this card (section 2.9); ``cards`` names them.
    """

    rule_id: str
    indicator: str
    fields: dict[str, Any]
    evidence: list[dict[str, Any]]
    suggestions: list[SuggestionSpec] = field(default_factory=list)
    variant: str = ""
    order: OrderRef | None = None   # the draft order (``DraftOrder``) the card is about
    selection_behavior: str = "any"
    override_reasons: bool = False
    folded: list[str] = field(default_factory=list)
