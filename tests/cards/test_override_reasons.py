"""Override reasons belong to the order class (issue 13 item 3): data in cards/override_reasons.toml, one list
per rule named in its template; the content check rejects an unknown list."""

from __future__ import annotations

from importlib import resources

import pytest

from cards.render import (
    CardRequest,
    check_templates,
    override_reasons_for,
    parse_override_reasons,
    parse_templates,
    render_card,
    templates,
)

SYSTEM = "https://calcinosis-cds.org/fhir/CodeSystem/override-reason"
IV_ONLY = {"hyperkalemia", "symptomatic-hypocalcemia"}


def _codes(rule_id: str) -> list[str]:
    return [r["code"] for r in override_reasons_for(rule_id)]


def test_iv_calcium_keeps_its_indications() -> None:
    assert IV_ONLY <= set(_codes("iv-calcium-order"))


@pytest.mark.parametrize("rule_id", sorted(set(templates().rules) - {"iv-calcium-order"}))
def test_other_cards_never_offer_the_iv_calcium_reasons(rule_id: str) -> None:
    assert not IV_ONLY & set(_codes(rule_id))


@pytest.mark.parametrize(("rule_id", "expected"), [
    ("iv-phosphate-order", "symptomatic-hypophosphatemia"),
    ("oral-calcium-order", "no-alternative-binder"),
    ("vitamin-d-order", "vitamin-d-deficiency"),
    ("calcium-heparin-order", "anticoagulant-reviewed"),
    ("al-mg-binder-order", "treating-hypomagnesemia"),
    ("caxp-high", "known-managed"),
    ("hypercalcemia", "not-relevant"),
])
def test_each_order_class_has_its_own_list(rule_id: str, expected: str) -> None:
    assert expected in _codes(rule_id)


def test_warfarin_list_exists_for_r24() -> None:
    tpl = templates()
    assert "no-alternative-anticoagulant" in [r["code"] for r in tpl.override_reasons["warfarin"]]
    if "warfarin-calciphylaxis-risk" in tpl.rules:
        assert tpl.rules["warfarin-calciphylaxis-risk"].get("override_reasons") == "warfarin"


# Cards with nothing a clinician could override: the "check incomplete" card (§8 C6) only reports a failure.
NO_REASONS = {"evaluation-incomplete"}


def test_every_rule_names_a_known_list() -> None:
    tpl = templates()
    for rule_id, rule in tpl.rules.items():
        if rule_id in NO_REASONS:
            assert "override_reasons" not in rule, rule_id
        else:
            assert rule.get("override_reasons") in tpl.override_reasons, rule_id


def test_codings_have_system_code_and_display() -> None:
    for name, codings in templates().override_reasons.items():
        for coding in codings:
            assert coding["system"] == SYSTEM, name
            assert coding["code"], name
            assert coding["display"].strip(), name


def test_rendered_card_offers_the_rules_list() -> None:
    card = render_card(CardRequest(rule_id="oral-calcium-order", indicator="info", fields={})).card
    assert [r["code"] for r in card["overrideReasons"]] == _codes("oral-calcium-order")
    assert not IV_ONLY & {r["code"] for r in card["overrideReasons"]}
    silent = render_card(CardRequest(rule_id="oral-calcium-order", indicator="info", fields={},
                                     override_reasons=False)).card
    assert "overrideReasons" not in silent


def _reasons_text() -> str:
    return resources.files("cards").joinpath("override_reasons.toml").read_text(encoding="utf-8")


def test_content_check_rejects_an_unknown_list() -> None:
    text = '[rules.a]\ntitle = "T"\nsummary = "S"\ndetail = "D"\noverride_reasons = "no-such-list"\n'
    problems = check_templates({"a": set()}, parse_templates(text, _reasons_text()))
    assert any("override_reasons names unknown list 'no-such-list'" in p for p in problems)
    ok = check_templates({"a": set()}, parse_templates(text.replace("no-such-list", "iv-calcium"), _reasons_text()))
    assert not any("override_reasons" in p for p in ok)


@pytest.mark.parametrize(("broken", "message"), [
    ('system = "x"\n[codes]\na = "A"\n[lists]\nl = ["a"]\n', "absolute URI"),
    ('system = "https://x"\n[codes]\na = "A"\n[lists]\nl = ["b"]\n', "no display"),
    ('system = "https://x"\n[codes]\na = ""\n[lists]\nl = ["a"]\n', "no display"),
    ('system = "https://x"\n[codes]\na = "A"\n[lists]\nl = []\n', "at least one code"),
])
def test_malformed_reason_data_is_rejected(broken: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_override_reasons(broken)
