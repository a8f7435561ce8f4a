"""Each fact once per response: a card whose values an earlier shown card already gives says so in one line.

Post-pass over the cards that are actually returned (after silent mode and suppression, issue 13 item 3): when
two cards fire together, the second gives the shared values in one line (value, unit, date) instead of
repeating the evidence block. A card that is not shown never counts as "above", so when the first card is
silent or suppressed the second keeps its full evidence. Order cards are never collapsed: their evidence block
also carries the order as parsed, which no other card shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class SharedForm(Protocol):
    """What the post-pass needs of a rendered card (``cards.render.RenderedCard``, the engine's card)."""

    @property
    def card(self) -> dict[str, Any]: ...
    @property
    def fact_keys(self) -> frozenset[str]: ...
    def shared_detail(self) -> str: ...
    @property
    def order_key(self) -> str | None: ...


def share_evidence(shown: Sequence[dict[str, Any]], rendered: Sequence[SharedForm]) -> list[dict[str, Any]]:
    """``shown`` (card JSON in response order) with each later card's evidence block collapsed to its shared
    line when every value it shows is already shown by an earlier card of ``shown``. Cards are matched to
    ``rendered`` by uuid; input dicts are not modified."""
    forms = {str(r.card.get("uuid")): r for r in rendered}
    seen: set[str] = set()
    result: list[dict[str, Any]] = []
    for card in shown:
        form = forms.get(str(card.get("uuid")))
        if form is None or not form.fact_keys:
            result.append(card)
            continue
        if form.order_key is None and form.fact_keys <= seen:
            shared = form.shared_detail()
            if shared:
                card = {**card, "detail": shared}
        seen |= form.fact_keys
        result.append(card)
    return result
