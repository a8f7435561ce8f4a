"""The full SMART EHR launch in a real headless Chromium (Debian chromium + chromedriver, driven by Selenium).

launch URL -> test authorization server (PKCE, auto-approve) -> /smart/callback -> /smart/app, with the FHIR
server demanding the issued token. Then the chart must have the right points per series, axes and both threshold
lines, and the findings must be exactly the rule ids of the cards the patient-view hook returns for the patient.
A screenshot is saved to tests/artifacts/smart-viewer.png.

Without chromium these tests FAIL (so CI cannot pass silently); set CALCINOSIS_SKIP_BROWSER=1 to skip them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from tests.smart.conftest import LiveServer, expected_counts
from tests.support.app import make_app
from tests.support.browser import headless_chromium
from tests.support.fhir_builders import hook_request
from tests.support.smart_auth_server import SmartAuthServer

pytestmark = [pytest.mark.browser, pytest.mark.integration]

ARTIFACT = Path(__file__).resolve().parents[1] / "artifacts" / "smart-viewer.png"
PANEL_WIDTH = 380  # an EHR side panel


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium sized like an EHR side panel."""
    with headless_chromium((PANEL_WIDTH, 1400)) as driver:
        yield driver


@pytest.fixture
def live(tmp_path: Path, live_server_factory: Callable[[Flask], LiveServer]) -> LiveServer:
    """The app over HTTP (dev mode: redirect_uri from the request host, no JWT needed on hooks)."""
    return live_server_factory(make_app(tmp_path))


def _hook_rule_ids(live: LiveServer, auth_server: SmartAuthServer, pid: str, token: str) -> list[str]:
    # Discovery first: cds_service/metrics.py builds its collectors lazily and (at the time of writing) races when
    # the first request of a process runs several fallback fetches at once (DuplicateTimeseries); reported.
    assert requests.get(f"{live.url}/cds-services", timeout=10).status_code == 200
    body = hook_request("patient-view", pid, fhir_server=auth_server.fhir_base, token=token)
    answer = requests.post(f"{live.url}/cds-services/calcinosis-patient-view", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    return [card["source"]["topic"]["code"] for card in answer.json()["cards"]]


def test_full_ehr_launch_renders_chart_and_findings(browser: Any, live: LiveServer, auth_server: SmartAuthServer,
                                                    trend_pid: str, fhir_token: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    card_rules = _hook_rule_ids(live, auth_server, trend_pid, fhir_token)
    assert "caxp-high" in card_rules  # the patient is built to fire it; an empty comparison would prove nothing

    auth_server.redirect_uris.append(f"{live.url}/smart/callback")
    launch = auth_server.new_launch(trend_pid, app_context='{"rule":"caxp-high"}')
    browser.get(f"{live.url}/smart/launch?iss={auth_server.fhir_base}&launch={launch}")
    WebDriverWait(browser, 30).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, 'svg[data-testid="trend-chart"]')))
    assert auth_server.errors == []
    assert browser.current_url == f"{live.url}/smart/app"  # no code, state or token left in the URL

    chart = browser.find_element(By.CSS_SELECTOR, 'svg[data-testid="trend-chart"]')
    counts = {series: len(chart.find_elements(By.CSS_SELECTOR, f'circle[data-series="{series}"]'))
              for series in ("calcium", "phosphate", "caxp")}
    assert counts == expected_counts()
    assert chart.find_elements(By.CSS_SELECTOR, '[data-axis="x"]')
    assert chart.find_elements(By.CSS_SELECTOR, '[data-axis="y"]')
    for threshold in ("70", "55"):
        line = chart.find_element(By.CSS_SELECTOR, f'line[data-threshold="{threshold}"]')
        assert line.is_displayed()

    # Readable: the chart fills the panel width and every point is drawn inside it with a visible colour.
    box = chart.rect
    assert box["width"] >= PANEL_WIDTH * 0.7
    assert box["height"] >= 200
    for point in chart.find_elements(By.CSS_SELECTOR, "circle[data-series]"):
        rect = point.rect
        assert rect["width"] > 3
        assert rect["height"] > 3
        assert box["x"] <= rect["x"] <= box["x"] + box["width"]
        assert box["y"] <= rect["y"] <= box["y"] + box["height"]
        assert point.value_of_css_property("fill") not in ("none", "rgba(0, 0, 0, 0)")
    tooltip = chart.find_element(By.CSS_SELECTOR, 'circle[data-series="caxp"] title')
    assert "Observation/" in tooltip.get_attribute("textContent")

    findings = [item.get_attribute("data-rule-id")
                for item in browser.find_elements(By.CSS_SELECTOR, '[data-testid="findings"] li[data-rule-id]')]
    assert findings == card_rules
    history = [item.get_attribute("data-rule-id")
               for item in browser.find_elements(By.CSS_SELECTOR, '[data-testid="history"] li[data-rule-id]')]
    assert set(card_rules) <= set(history)  # the hook call above is in the local audit log
    assert fhir_token not in browser.page_source

    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    browser.set_window_size(PANEL_WIDTH, max(1400, int(browser.execute_script(
        "return document.documentElement.scrollHeight"))))
    assert browser.save_screenshot(str(ARTIFACT))
    assert ARTIFACT.stat().st_size > 20_000  # a blank page compresses to a few kB


@pytest.mark.parametrize("failure", ["deny", "state", "expired", "fhir-error"])
def test_failures_show_a_clear_page_in_the_browser(browser: Any, live: LiveServer, auth_server: SmartAuthServer,
                                                   trend_pid: str, failure: str) -> None:
    from selenium.webdriver.common.by import By

    auth_server.redirect_uris.append(f"{live.url}/smart/callback")
    if failure == "deny":
        auth_server.behaviour.deny = True
    if failure == "expired":
        auth_server.behaviour.issue_token = "expired-token"
    if failure == "fhir-error":
        auth_server.behaviour.fhir_status = 500
    if failure == "state":
        browser.get(f"{live.url}/smart/callback?code=x&state=forged-state-value-from-an-attacker")
    else:
        browser.get(f"{live.url}/smart/launch?iss={auth_server.fhir_base}&launch={auth_server.new_launch(trend_pid)}")
    page = browser.find_element(By.CSS_SELECTOR, '[data-testid="error-page"]')
    expected = {"deny": "403", "state": "400", "expired": "401", "fhir-error": "502"}[failure]
    assert page.get_attribute("data-status") == expected
    assert page.find_element(By.TAG_NAME, "h1").text
    assert "Traceback" not in browser.page_source
