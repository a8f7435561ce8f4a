"""cards/blocks.py: a finding's structured text becomes the card's markdown; templates hide lines by key."""

from __future__ import annotations

import ast
from pathlib import Path

from cards.blocks import folded_names, resolve_fields, to_markdown
from cards.render import bullet_block, check_templates, phrase, templates, text
from cds_service.rules import declared_fields
from findings import Bullets, Phrase, Text, bullets, joined

ROOT = Path(__file__).resolve().parents[2]


def test_phrase_and_bullets_render_as_the_markdown_helpers_did() -> None:
    line = Phrase.of("factor_pth", value="700.0", uln="65.0")
    assert to_markdown(line) == phrase("factor_pth", value="700.0", uln="65.0")
    block = bullets("factors_heading", [line, "", Phrase.of("factor_kidney_tx")])
    assert to_markdown(block) == bullet_block("factors_heading", [phrase("factor_pth", value="700.0", uln="65.0"),
                                                                    phrase("factor_kidney_tx")])
    assert to_markdown(Bullets("factors_heading", ())) == ""
    assert to_markdown(joined("\n\n", [line, "x"])) == phrase("factor_pth", value="700.0", uln="65.0") + "\n\nx"


def test_values_are_escaped_and_nested_fragments_rendered_first() -> None:
    assert to_markdown(Phrase.of("factor_ctd", name="*bold* <b>")) == phrase("factor_ctd", name="*bold* <b>")
    assert "\\*bold\\*" in to_markdown(Phrase.of("factor_ctd", name="*bold* <b>"))
    nested = Phrase.of("factor_ctd", name=Text.of("renal_dialysis"))
    assert to_markdown(nested) == phrase("factor_ctd", name=text("renal_dialysis"))


def test_a_template_hides_a_line_by_key() -> None:
    fields = {"advice_md": bullets("advice_heading", [Phrase.of("advice_binders"), Phrase.of("advice_skin")])}
    rule = templates().rules["caxp-high"]
    saved = rule.get("hide_lines")
    rule["hide_lines"] = ["advice_skin"]
    try:
        shown = resolve_fields("caxp-high", fields)["advice_md"]
        assert shown == bullet_block("advice_heading", [phrase("advice_binders")])
        assert check_templates(declared_fields()) == []
        rule["hide_lines"] = ["no_such_phrase"]
        assert "rule caxp-high: hide_lines must list [phrases] keys" in check_templates(declared_fields())
    finally:
        if saved is None:
            rule.pop("hide_lines")
        else:
            rule["hide_lines"] = saved
    assert phrase("advice_skin") in resolve_fields("caxp-high", fields)["advice_md"]


def test_folded_rules_are_named_by_their_titles_once() -> None:
    title = templates().rules["pth-high"]["title"]
    assert folded_names(["pth-high", "pth-high"]) == title


def test_findings_is_a_leaf_package() -> None:
    """``findings`` imports nothing of the project, so both rules and cards can depend on it."""
    ours = {"cds_service", "cards", "fhir_mappings", "findings", "synth"}
    for path in (ROOT / "findings").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert node.module.split(".")[0] not in ours, (path, node.module)
            if isinstance(node, ast.Import):
                assert not {a.name.split(".")[0] for a in node.names} & ours, path
