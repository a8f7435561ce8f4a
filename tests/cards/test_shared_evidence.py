"""Each fact once per response (issue 13 item 3): a later card whose values an earlier shown card gives says
so in one line (value, unit, date); when the earlier card is not shown, the later one keeps its evidence."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cards.render import CardRequest, RenderedCard, render_card
from cards.shared import share_evidence

CALCIUM = {"name": "calcium", "value": 10.4, "unit": "mg/dL", "original_value": 10.4, "original_unit": "mg/dL",
           "resource_id": "Observation/ca", "time": "2025-06-14T12:00:00+00:00"}
PHOSPHATE = {"name": "phosphate", "value": 7.2, "unit": "mg/dL", "original_value": 2.32,
             "original_unit": "mmol/L", "resource_id": "Observation/p", "time": "2025-06-14T12:00:00+00:00"}
PRODUCT = {"name": "ca_x_p", "value": 74.88, "unit": "mg2/dL2", "original_value": 74.88,
           "original_unit": "mg2/dL2", "resource_id": "Observation/ca,Observation/p",
           "time": "2025-06-14T12:00:00+00:00"}
BLOCK = "**Values used**\n- Calcium: **10.4 mg/dL** – 24 h ago\n- Phosphate: **7.2 mg/dL** – 24 h ago"


@dataclass
class _Assessed:
    rendered: RenderedCard
    order_key: str | None = None

    @property
    def card(self) -> dict[str, Any]:
        return self.rendered.card

    @property
    def fact_keys(self) -> frozenset[str]:
        return self.rendered.fact_keys

    def shared_detail(self) -> str:
        return self.rendered.shared_detail()


def _render(rule_id: str, evidence: list[dict[str, Any]], order_key: str | None = None) -> _Assessed:
    request = CardRequest(rule_id=rule_id, indicator="warning", fields={"values_md": BLOCK}, evidence=evidence)
    return _Assessed(render_card(request), order_key)


def test_second_card_gives_the_shared_values_in_one_line() -> None:
    first = _render("caxp-high", [CALCIUM, PHOSPHATE, PRODUCT])
    second = _render("hyperphosphatemia", [PHOSPHATE])
    shown = share_evidence([first.card, second.card], [first, second])
    assert shown[0]["detail"] == first.card["detail"]
    assert BLOCK not in shown[1]["detail"]
    assert "Values as in the card above: Phosphate 7.2 mg/dL (2025-06-14)" in shown[1]["detail"]
    assert second.card["detail"].count("Phosphate: **7.2 mg/dL**") == 1  # input untouched


def test_shared_line_names_value_unit_and_date_of_each_item() -> None:
    card = _render("calciphylaxis-risk", [CALCIUM, PHOSPHATE, PRODUCT])
    assert ("Values as in the card above: Calcium 10.4 mg/dL, Phosphate 7.2 mg/dL, Ca x P 74.88 mg²/dL² "
            "(2025-06-14)") in card.shared_detail()


def test_card_keeps_its_evidence_when_the_first_card_is_not_shown() -> None:
    first = _render("caxp-high", [CALCIUM, PHOSPHATE, PRODUCT])
    second = _render("hyperphosphatemia", [PHOSPHATE])
    shown = share_evidence([second.card], [first, second])  # first was silent or suppressed
    assert BLOCK in shown[0]["detail"]


def test_card_keeps_its_evidence_when_it_shows_a_new_value() -> None:
    first = _render("hyperphosphatemia", [PHOSPHATE])
    second = _render("caxp-high", [CALCIUM, PHOSPHATE, PRODUCT])
    shown = share_evidence([first.card, second.card], [first, second])
    assert BLOCK in shown[1]["detail"]


def test_order_cards_are_never_collapsed() -> None:
    first = _render("caxp-high", [CALCIUM, PHOSPHATE, PRODUCT])
    second = _render("iv-calcium-order", [CALCIUM, PHOSPHATE, PRODUCT], order_key="MedicationRequest/1")
    shown = share_evidence([first.card, second.card], [first, second])
    assert BLOCK in shown[1]["detail"]


def test_card_without_evidence_has_no_shared_form() -> None:
    card = _render("caxp-high", [])
    assert card.shared_detail() == ""
    assert card.fact_keys == frozenset()
