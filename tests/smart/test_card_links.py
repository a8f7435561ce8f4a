"""Cards of caxp-high, calciphylaxis-risk, iv-calcium-order and mineral-labs-due link to the viewer and rule page."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cards.render import check_templates, parse_templates, templates
from cds_service.engine import EngineOptions, PatientRecord, assess
from cds_service.rules import declared_fields
from tests.support.app import make_app
from tests.support.fhir_builders import esrd_with_high_caxp, hook_request, prefetch_for

LINKED_RULES = {"caxp-high", "calciphylaxis-risk", "iv-calcium-order", "mineral-labs-due"}


def _cards(base_url: str | None, tmp_path: Path) -> list[dict[str, object]]:
    overrides = {"public_base_url": base_url} if base_url else {}
    client = make_app(tmp_path, **overrides).test_client()
    resources = esrd_with_high_caxp("links-1")
    answer = client.post("/cds-services/calcinosis-patient-view",
                         json=hook_request("patient-view", "links-1", prefetch=prefetch_for(resources)))
    assert answer.status_code == 200
    cards: list[dict[str, object]] = answer.get_json()["cards"]
    return cards


@pytest.mark.parametrize(("base_url", "expected_base"), [
    (None, "http://localhost"),                            # --dev without CDS_PUBLIC_BASE_URL: the request host
    ("https://cds.example.org", "https://cds.example.org"),  # configured public URL wins
])
def test_caxp_card_links_to_viewer_and_rule_page(tmp_path: Path, base_url: str | None, expected_base: str) -> None:
    cards = _cards(base_url, tmp_path)
    card = next(c for c in cards if c["source"]["topic"]["code"] == "caxp-high")  # type: ignore[index]
    links = {link["type"]: link for link in card["links"]}  # type: ignore[attr-defined]
    assert links["smart"]["url"] == f"{expected_base}/smart/launch"
    assert json.loads(links["smart"]["appContext"]) == {"rule": "caxp-high"}
    assert links["absolute"]["url"] == f"{expected_base}/rules/caxp-high"
    assert "appContext" not in links["absolute"]  # contract cds-resp-3
    assert all(link["label"] for link in links.values())


def test_rule_link_target_exists(tmp_path: Path) -> None:
    client = make_app(tmp_path).test_client()
    for rule_id in LINKED_RULES:
        assert client.get(f"/rules/{rule_id}").status_code == 200


def test_only_the_four_rules_opt_in() -> None:
    linked = {rule_id for rule_id, rule in templates().rules.items() if rule.get("links")}
    assert linked == LINKED_RULES


def test_no_links_without_a_base_url() -> None:
    record = PatientRecord(patient=esrd_with_high_caxp("links-2")[0], resources=esrd_with_high_caxp("links-2")[1:])
    assessment = assess(record, "patient-view", datetime.now(UTC), EngineOptions())
    assert assessment.cards
    assert all("links" not in c.card for c in assessment.cards)


def test_content_check_rejects_unknown_link_kind() -> None:
    source = Path(__file__).resolve().parents[2] / "cards" / "templates.toml"
    broken = source.read_text(encoding="utf-8").replace('links = ["smart", "rule"]', 'links = ["smart", "web"]', 1)
    problems = check_templates(declared_fields(), parse_templates(broken))
    assert any("unknown link kind" in p for p in problems)
    assert check_templates(declared_fields()) == []
