"""Issue 19 acceptance: the governance dashboard in a real headless Chromium over a seeded PostgreSQL audit log.

The browser signs in through the login form (CSRF cookie + session cookie), then every number of the per-rule and
per-service tables is compared with an independent SQL count of the same period. At 1280 px and 800 px the page
must not scroll sideways and its main blocks (headings, forms, tables, charts) must not overlap. A screenshot is
kept as tests/artifacts/governance-dashboard.png; with CALCINOSIS_UPDATE_DOCS_SCREENSHOT=1 it also refreshes the
committed docs/governance-dashboard.png shown in the README (a test run does not dirty the tree otherwise).

Without chromium these tests FAIL; CALCINOSIS_SKIP_BROWSER=1 skips them (tests/support/browser.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from cds_service.audit import AuditLog
from tests.audit.conftest import TEST_CHAIN_KEY, Database
from tests.audit.factories import engine_for
from tests.governance.seed import END, START, seed_history
from tests.smart.conftest import LiveServer
from tests.support.app import make_app
from tests.support.browser import headless_chromium

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.postgres]

TOKEN = "governance-browser-admin-token-4567"
ROOT = Path(__file__).resolve().parents[2]
ARTIFACT = ROOT / "tests" / "artifacts" / "governance-dashboard.png"
DOCS_SCREENSHOT = ROOT / "docs" / "governance-dashboard.png"
QUERY = f"?start={START.date().isoformat()}&end={END.date().isoformat()}"
# The blocks that must never overlap: everything the page stacks, each chart on its own.
BLOCKS_JS = """
return Array.from(document.querySelectorAll(
    'body > h1, body > h2, body > form, body > table, body > p, body > svg, .charts > figure')).map(function (e) {
  var r = e.getBoundingClientRect();
  return {tag: e.tagName + (e.id ? '#' + e.id : ''), x: r.left + window.scrollX, y: r.top + window.scrollY,
          w: r.width, h: r.height};
});
"""


@pytest.fixture
def live(database: Database, audit: AuditLog, tmp_path: Path) -> Iterator[LiveServer]:
    """The real application over HTTP on the seeded database, with the dashboard switched on."""
    seed_history(audit)
    app = make_app(tmp_path / "app", database_url=database.url, audit_chain_key=TEST_CHAIN_KEY, admin_token=TOKEN)
    server = LiveServer(app)
    try:
        yield server
    finally:
        server.stop()


def _sql(database: Database, query: str, start: Any = START, end: Any = END) -> list[tuple[Any, ...]]:
    period = "c.received_at >= :s AND c.received_at < :e"  # the dashboard's half-open period
    with engine_for(database.url).connect() as connection:
        return [tuple(row) for row in connection.execute(text(query.replace("PERIOD", period)),
                                                         {"s": start, "e": end})]


def _per_rule(database: Database, condition: str, start: Any = START, end: Any = END) -> dict[str, int]:
    """Cards per rule in the period that satisfy ``condition`` (SQL over cards k, calls c)."""
    join = "FROM cards k JOIN calls c ON c.id = k.call_id"
    query = f"SELECT k.rule_id, COUNT(*) {join} WHERE PERIOD AND {condition} GROUP BY k.rule_id"  # noqa: S608
    rows = _sql(database, query, start, end)  # ``condition`` is always one of this module's literals
    return {str(rule): int(n) for rule, n in rows}


def _expected_rules(database: Database) -> dict[str, list[str]]:
    """The per-rule table recounted straight from the tables, formatted as the page shows it."""
    accepted_sql = "EXISTS (SELECT 1 FROM feedback f WHERE f.card_uuid = k.card_uuid AND f.outcome = 'accepted')"
    overridden_sql = "EXISTS (SELECT 1 FROM feedback f WHERE f.card_uuid = k.card_uuid AND f.outcome = 'overridden')"
    shown = _per_rule(database, "k.disposition = 'shown'")
    accepted = _per_rule(database, f"k.disposition = 'shown' AND {accepted_sql}")
    overridden = _per_rule(database, f"k.disposition = 'shown' AND {overridden_sql} AND NOT {accepted_sql}")
    silent_reply = _per_rule(database, f"k.disposition = 'shown' AND NOT {overridden_sql} AND NOT {accepted_sql}")
    suppressed = _per_rule(database, "k.disposition = 'suppressed'")
    silent = _per_rule(database, "k.disposition = 'silent'")
    previous = _per_rule(database, "k.disposition = 'shown'", START - (END - START), START)
    patients = {str(rule): int(n) for rule, n in _sql(
        database, "SELECT k.rule_id, COUNT(DISTINCT c.patient_id) FROM cards k JOIN calls c ON c.id = k.call_id "
                  "WHERE PERIOD AND k.disposition = 'shown' GROUP BY k.rule_id")}
    total = int(_sql(database, "SELECT COUNT(*) FROM calls c WHERE PERIOD")[0][0])
    rules = sorted(set(_per_rule(database, "TRUE")) | set(previous))
    return {rule: [rule, str(shown.get(rule, 0)), str(patients.get(rule, 0)),
                   str(round(100.0 * shown.get(rule, 0) / total, 1)), str(accepted.get(rule, 0)),
                   str(overridden.get(rule, 0)), str(silent_reply.get(rule, 0)), str(suppressed.get(rule, 0)),
                   str(silent.get(rule, 0)), f"{shown.get(rule, 0) - previous.get(rule, 0):+d}"]
            for rule in rules}


def _nearest_rank(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = 0
    while (index + 1) < len(ordered) and (index + 1) < fraction * len(ordered):
        index += 1
    return ordered[index]


def _expected_services(database: Database) -> dict[str, list[str]]:
    """The per-service table recounted from the raw call rows (latency, 412s, data sources)."""
    rows = _sql(database, "SELECT c.service_id, COALESCE(c.request_ms, c.duration_ms), c.http_status, "
                          "c.data_sources FROM calls c WHERE PERIOD")
    expected: dict[str, list[str]] = {}
    for service in sorted({str(row[0]) for row in rows}):
        mine = [row for row in rows if row[0] == service]
        sources = [value for row in mine
                   for value in (json.loads(row[3]) if isinstance(row[3], str) else (row[3] or {})).values()]
        latency = [float(row[1]) for row in mine]
        expected[service] = [service, str(len(mine)), str(round(_nearest_rank(latency, 0.5), 1)),
                             str(round(_nearest_rank(latency, 0.95), 1)),
                             str(round(100.0 * sum(1 for row in mine if row[2] == 412) / len(mine), 1)),
                             str(round(100.0 * sources.count("prefetch") / (len(sources) or 1), 1)),
                             str(round(100.0 * sources.count("fetched") / (len(sources) or 1), 1))]
    return expected


def _table(driver: Any, table_id: str) -> dict[str, list[str]]:
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.CSS_SELECTOR, f"table#{table_id} tbody tr")
    cells = [[cell.get_attribute("textContent").strip() for cell in row.find_elements(By.TAG_NAME, "td")]
             for row in rows]
    return {row[0]: row for row in cells}


def _sign_in(driver: Any, live: LiveServer) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{live.url}/admin/dashboard{QUERY}")
    driver.find_element(By.NAME, "token").send_keys(TOKEN)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    WebDriverWait(driver, 20).until(expected_conditions.presence_of_element_located((By.ID, "rules")))
    driver.get(f"{live.url}/admin/dashboard{QUERY}")  # the login lands on the default period; reopen ours


def _assert_layout(driver: Any, width: int) -> None:
    """No sideways scroll, every block inside the page width, and no two blocks overlapping."""
    scroll, client = driver.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert scroll <= client, f"horizontal scroll at {width} px: {scroll} > {client}"
    blocks = [b for b in driver.execute_script(BLOCKS_JS) if b["w"] > 0 and b["h"] > 0]
    assert sum(1 for b in blocks if b["tag"] == "FIGURE") >= 3  # one trend chart per rule: the check has work
    assert any(b["tag"] == "TABLE#rules" for b in blocks)
    for block in blocks:
        assert block["x"] >= 0
        assert block["x"] + block["w"] <= client + 0.5, f"{block['tag']} leaves the page at {width} px"
    for i, a in enumerate(blocks):
        for b in blocks[i + 1:]:
            overlap_x = min(a["x"] + a["w"], b["x"] + b["w"]) - max(a["x"], b["x"])
            overlap_y = min(a["y"] + a["h"], b["y"] + b["h"]) - max(a["y"], b["y"])
            assert overlap_x <= 0.5 or overlap_y <= 0.5, f"{a['tag']} overlaps {b['tag']} at {width} px"


@pytest.mark.parametrize("database", ["postgres"], indirect=True)
def test_dashboard_numbers_layout_and_screenshot(database: Database, live: LiveServer) -> None:
    expected_rules = _expected_rules(database)
    expected_services = _expected_services(database)
    assert sum(int(row[1]) for row in expected_rules.values()) > 0  # a seeded period: zeros would prove nothing
    hook_calls = int(_sql(database, "SELECT COUNT(*) FROM calls c WHERE PERIOD")[0][0])

    with headless_chromium((1280, 1000), why="the governance dashboard test") as driver:
        from selenium.webdriver.common.by import By

        _sign_in(driver, live)
        assert "token" not in driver.current_url
        cookies = {cookie["name"]: cookie for cookie in driver.get_cookies()}
        session = cookies["cds_governance_session"]
        assert session["httpOnly"] is True
        assert session["secure"] is True
        assert session["sameSite"] == "Strict"
        assert TOKEN not in driver.page_source

        assert driver.find_element(By.CSS_SELECTOR, '[data-num="hook_calls"]').text == str(hook_calls)
        assert _table(driver, "rules") == expected_rules
        assert _table(driver, "services") == expected_services

        _assert_layout(driver, 1280)
        ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
        height = int(driver.execute_script("return document.documentElement.scrollHeight"))
        if os.environ.get("CALCINOSIS_UPDATE_DOCS_SCREENSHOT") == "1":
            # The README picture: the top of the page (filters, rule table, override reasons) at 1280 px.
            assert driver.save_screenshot(str(DOCS_SCREENSHOT))
        driver.set_window_size(1280, max(1000, height))
        assert driver.save_screenshot(str(ARTIFACT))
        assert ARTIFACT.stat().st_size > 20_000  # a blank page compresses to a few kB

        driver.set_window_size(800, 1000)
        driver.get(f"{live.url}/admin/dashboard{QUERY}")
        assert _table(driver, "rules") == expected_rules
        _assert_layout(driver, 800)
