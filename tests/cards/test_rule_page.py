"""The rule page (/rules/<id>) every card links to (issue 13 item 3): real text, no raw placeholders, the text
the card moved off (formula, KDIGO caveat, sources) and the disclaimer exactly once."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from cards.render import about_text, templates
from cds_service.rules import RULES
from tests.support.app import make_app

pytestmark = pytest.mark.integration


class _Text(HTMLParser):
    """The visible text of the page's article."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "article" or self._depth:
            self._depth += 1

    def handle_endtag(self, tag: str) -> None:
        if self._depth:
            self._depth -= 1

    def handle_data(self, data: str) -> None:
        if self._depth:
            self.parts.append(data)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> FlaskClient:
    return make_app(Path(tmp_path_factory.mktemp("rule-page"))).test_client()


def _page_text(client: FlaskClient, rule_id: str) -> str:
    response = client.get(f"/rules/{rule_id}")
    assert response.status_code == 200
    parser = _Text()
    parser.feed(response.get_data(as_text=True))
    return " ".join(" ".join(parser.parts).split())


@pytest.mark.parametrize("rule_id", sorted(set(templates().rules) & set(RULES)))
def test_rule_page_shows_real_text(client: FlaskClient, rule_id: str) -> None:
    text = _page_text(client, rule_id)
    assert not re.search(r"\[[a-z_ ]+\]", text), "raw [placeholder] on the page"
    assert "{" not in text
    assert "}" not in text
    assert text.count(templates().meta["disclaimer"]) == 1
    about = about_text(rule_id)
    if about:
        # What the card moved off is on the page (first words of each block, markup stripped).
        for block in re.split(r"\n\s*\n", about):
            words = " ".join(re.sub(r"[*>]", "", block).split())[:60]
            assert words in text


def test_placeholders_are_described() -> None:
    """Every placeholder a summary or detail uses has rule-page words in [placeholder_text]."""
    tpl = templates()
    names = set()
    for rule in tpl.rules.values():
        texts = [str(rule.get("summary", "")), str(rule.get("detail", ""))]
        variants = rule.get("variants")
        if isinstance(variants, dict):
            texts += [str(v) for v in variants.values()]
        for text in texts:
            names |= set(re.findall(r"\{([a-z0-9_]+)\}", text))
    undescribed = {n for n in names if not n.endswith("_md") and n != "kdigo_caveat"} - set(tpl.placeholder_text)
    assert undescribed == set()


def test_caxp_page_carries_formula_caveat_and_sources(client: FlaskClient) -> None:
    text = _page_text(client, "caxp-high")
    assert "Ca x P = total calcium (mg/dL) x phosphate (mg/dL)" in text
    assert "KDIGO 2009/2017 suggests judging serum calcium and phosphate individually" in text
    assert "Nunley" in text
    assert "Ca x P product mg²/dL² exceeds 70" in text  # summary pattern in words, not "[caxp]"
