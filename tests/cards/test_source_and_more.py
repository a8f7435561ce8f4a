"""Every card names its rule page as ``source.url`` and links the rule page for the text it moved off
(issue 13 item 3); without a public base URL there is nothing absolute to link to (CDS Hooks 2.0 Source.url is
absolute), so the URL is omitted and the detail carries the text itself."""

from __future__ import annotations

from cards.render import CardRequest, about_text, render_card, templates
from tests.cards.card_cases import BASE_URL, all_cards


def test_every_test_patient_card_links_its_rule_page() -> None:
    cards = all_cards()
    assert cards
    for case_id, card in cards:
        rule_id = card["source"]["topic"]["code"]
        assert card["source"]["url"] == f"{BASE_URL}/rules/{rule_id}", case_id
        if about_text(rule_id):
            assert f"[rule page]({BASE_URL}/rules/{rule_id})" in card["detail"], case_id
            assert templates().meta["kdigo_caveat"] not in card["detail"], case_id


def test_without_a_base_url_there_is_no_source_url_and_nothing_is_lost() -> None:
    for case_id, card in all_cards(base_url=""):
        rule_id = card["source"]["topic"]["code"]
        assert "url" not in card["source"], case_id
        assert "rule page" not in card["detail"], case_id
        about = about_text(rule_id)
        if about:
            assert about.splitlines()[0] in card["detail"], case_id


def test_caxp_detail_puts_the_link_after_the_reason_and_the_disclaimer_last() -> None:
    card = render_card(CardRequest(rule_id="caxp-high", indicator="warning", fields={"values_md": "- v"},
                                   links_base_url=BASE_URL + "/")).card
    detail = card["detail"]
    assert f"Formula, KDIGO caveat and sources: [rule page]({BASE_URL}/rules/caxp-high)." in detail
    assert "**Why this card:**" in detail.split("[rule page]")[0]
    assert detail.endswith(f"*{templates().meta['disclaimer']}*")
    assert detail.count(templates().meta["disclaimer"]) == 1
    assert "Ca x P = total calcium" not in detail  # the formula lives on the rule page
