"""The length budget of a card (issue 13 item 3): every card detail the test patients produce, rendered the way
CDS clients render it (CommonMark via markdown-it-py) with the committed stylesheet ``card.css`` (Liberation Sans
14 px, line height 1.4, 600 px wide), stays under 450 px in the real headless Chromium.

Without chromium this test FAILS (so CI cannot pass silently); CALCINOSIS_SKIP_BROWSER=1 skips it.
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt

from tests.cards.card_cases import all_cards
from tests.support.browser import headless_chromium

FONT = "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf"
STYLESHEET = Path(__file__).with_name("card.css")
BUDGET_PX = 450
WIDTH_PX = 600

pytestmark = [pytest.mark.browser, pytest.mark.integration]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium at device scale 1 with the card font installed."""
    with headless_chromium((800, 1000), needs=(FONT,), flags=("--force-device-scale-factor=1",),
                           why="card height test") as driver:
        yield driver


def _page(details: list[str]) -> str:
    """One HTML page, each card detail in its own 600 px box rendered as CommonMark (raw HTML on, like the
    CDS Hooks sandbox)."""
    md = MarkdownIt("commonmark")
    boxes = "\n".join(f'<div class="card" id="detail" data-i="{i}">{md.render(d)}</div>'
                      for i, d in enumerate(details))
    return (f"<!doctype html><html><head><meta charset='utf-8'><style>{STYLESHEET.read_text()}"
            f"\n.card {{ margin-bottom: 40px; }}</style></head><body>{boxes}</body></html>")


def measure(driver: Any, details: list[str], tmp_dir: Path) -> list[float]:
    """Rendered height in px of each detail."""
    page = tmp_dir / "cards.html"
    page.write_text(_page(details), encoding="utf-8")
    driver.get(page.as_uri())
    driver.execute_script("return document.fonts.ready")
    heights = driver.execute_script(
        "return Array.from(document.querySelectorAll('.card')).map(e => e.getBoundingClientRect().height)")
    widths = driver.execute_script(
        "return Array.from(document.querySelectorAll('.card')).map(e => e.getBoundingClientRect().width)")
    assert all(abs(w - WIDTH_PX) < 1 for w in widths), widths
    font = driver.execute_script("return getComputedStyle(document.querySelector('.card')).fontFamily")
    assert "Liberation Sans" in font
    assert driver.execute_script("return document.fonts.check('14px \"Liberation Sans\"')")
    return [float(h) for h in heights]


def test_the_measure_is_real(browser: Any, tmp_path: Path) -> None:
    """The ruler itself: one line is 14 x 1.4 px tall and ten paragraphs are much taller than one."""
    one, ten = measure(browser, ["A line.", "\n\n".join(["A paragraph of text."] * 10)], tmp_path)
    assert one == pytest.approx(14 * 1.4, abs=1)
    assert ten > 9 * one


def test_every_card_detail_fits_the_budget(browser: Any, tmp_path: Path) -> None:
    cards = all_cards()
    assert len(cards) >= 15
    heights = measure(browser, [c["detail"] for _case, c in cards], tmp_path)
    ranked = sorted(zip(heights, cards, strict=True), key=lambda x: -x[0])
    print("\ntallest card details (px, case, rule):")
    for height, (case_id, card) in ranked[:8]:
        print(f"  {height:6.0f}  {case_id:10s} {card['source']['topic']['code']}")
    too_tall = [f"{case_id} {card['source']['topic']['code']}: {height:.0f} px"
                for height, (case_id, card) in ranked if height >= BUDGET_PX]
    assert not too_tall, f"card details over the {BUDGET_PX} px budget: " + "; ".join(too_tall)


def test_escaped_text_stays_text(browser: Any, tmp_path: Path) -> None:
    """The renderer really renders markdown: a bullet list is taller than the same words in one line."""
    items = ["- one", "- two", "- three"]
    listed, inline = measure(browser, ["\n".join(items), html.escape(" ".join(items))], tmp_path)
    assert listed > inline
