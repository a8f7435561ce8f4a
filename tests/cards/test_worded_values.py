"""Issue 17 item 1: rules hand cards values to word (``Text``, ``Age``, ``Unit``, ``LabName``); cards word them.

The golden card test proves the words did not change for the test patients; these tests pin each kind of value on
its own, in a summary field as in a detail block, and that no rule module looks up wording itself.
"""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cards.ages import age_text
from cards.blocks import resolve_fields, to_markdown
from cards.render import phrase, render_detail, render_summary, text
from findings import Age, LabName, Phrase, Text, Unit, joined

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)


def test_each_value_is_worded_by_cards() -> None:
    assert to_markdown(Age(NOW, NOW - timedelta(hours=22))) == age_text(NOW, NOW - timedelta(hours=22)) == "22 h ago"
    assert to_markdown(Unit("mL/min/{1.73_m2}")) == "mL/min/1.73 m²"   # eGFR as clinicians write it
    assert to_markdown(Unit("mg/dL")) == "mg/dL"
    assert to_markdown(Unit("{ratio}")) == "{ratio}"                   # nothing but an annotation: kept as sent
    assert to_markdown(Unit("ng/mL{FEU}")) == "ng/mL"                  # annotations dropped (issue 13 item 3)
    assert to_markdown(LabName("lab-pth")) == "PTH (intact)"
    assert to_markdown(LabName("lab-unknown")) == "lab-unknown"       # never blank


def test_values_inside_a_phrase_are_worded_then_escaped() -> None:
    line = Phrase.of("value_line", name=LabName("lab-phosphate"), value="7.5", unit=Unit("mg/dL"))
    assert to_markdown(line) == phrase("value_line", name="Phosphate", value="7.5", unit="mg/dL")
    drawn = Text.of("drawn_age", age=Age(NOW, NOW - timedelta(days=3, hours=1)))
    assert to_markdown(drawn) == text("drawn_age", age="3 days ago") == "drawn 3 days ago"


def test_a_text_in_a_summary_field_reads_as_the_looked_up_string() -> None:
    """Summary and plain detail fields go through ``resolve_fields`` too: a ``Text`` (or a joined run of them)
    renders exactly as the string the rules used to look up."""
    structured = {"renal": Text.of("renal_dialysis"), "mineral": Text.of("hypercalcemia"),
                  "cofactors": joined(", ", [Text.of("co_warfarin"), Text.of("co_diabetes")])}
    looked_up = {"renal": text("renal_dialysis"), "mineral": text("hypercalcemia"),
                 "cofactors": text("co_warfarin") + ", " + text("co_diabetes")}
    fields = resolve_fields("calciphylaxis-risk", structured)
    assert fields == looked_up
    assert render_summary("calciphylaxis-risk", fields) == render_summary("calciphylaxis-risk", looked_up)
    assert render_detail("calciphylaxis-risk", fields) == render_detail("calciphylaxis-risk", looked_up)
    assert looked_up["cofactors"] in render_summary("calciphylaxis-risk", fields)


def test_no_rule_module_words_or_imports_cards() -> None:
    """The rules name wording by key; a ``text(...)`` look-up or a ``cards`` import would be a second way back."""
    for path in (ROOT / "cds_service" / "rules").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("cards"), path
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("cards") for a in node.names), path
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in {"text", "age_text", "unit_display"}, f"{path}: {node.func.id}(...)"


def test_every_key_the_rules_name_is_a_reviewed_phrase() -> None:
    """A key the rules name literally (``Text.of("words_caxp", ...)``) must exist in [phrases]: a missing one would
    render as '' on a card."""
    from cards.render import templates

    phrases = templates().phrases
    missing = []
    for path in (ROOT / "cds_service" / "rules").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "of"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id in {"Text", "Phrase"}
                    and node.args and isinstance(node.args[0], ast.Constant)):
                key = node.args[0].value
                if key not in phrases:
                    missing.append(f"{path.name}:{node.lineno} {key}")
    assert missing == []
