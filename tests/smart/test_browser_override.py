"""The viewer never hides a finding (issue 15 item 5), in a real headless Chromium after a real SMART EHR launch.

A clinician overrides the caxp-high card with a reason; the next patient-view call for that user suppresses it,
but the viewer still lists the finding, marked "overridden by <user> on <date>: <reason>", and its alert history
shows the override. Without chromium this FAILS; set CALCINOSIS_SKIP_BROWSER=1 to skip it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from tests.smart.conftest import LiveServer
from tests.support.app import make_app
from tests.support.browser import headless_chromium
from tests.support.fhir_builders import hook_request
from tests.support.smart_auth_server import SmartAuthServer

pytestmark = [pytest.mark.browser, pytest.mark.integration]


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium sized like an EHR side panel."""
    with headless_chromium((380, 1400)) as driver:
        yield driver


@pytest.fixture
def live(tmp_path: Path, live_server_factory: Callable[[Flask], LiveServer]) -> LiveServer:
    """The app over HTTP (dev mode: no JWT on hooks, so feedback is matched by card uuid)."""
    return live_server_factory(make_app(tmp_path))


def _patient_view(live: LiveServer, auth_server: SmartAuthServer, pid: str, token: str) -> list[dict[str, Any]]:
    assert requests.get(f"{live.url}/cds-services", timeout=10).status_code == 200
    body = hook_request("patient-view", pid, fhir_server=auth_server.fhir_base, token=token)
    answer = requests.post(f"{live.url}/cds-services/calcinosis-patient-view", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    cards: list[dict[str, Any]] = answer.json()["cards"]
    return cards


def test_overridden_finding_is_still_listed_and_marked(browser: Any, live: LiveServer,
                                                       auth_server: SmartAuthServer, trend_pid: str,
                                                       fhir_token: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    card = next(c for c in _patient_view(live, auth_server, trend_pid, fhir_token)
                if c["source"]["topic"]["code"] == "caxp-high")
    reason = card["overrideReasons"][0]
    feedback = {"feedback": [{"card": card["uuid"], "outcome": "overridden", "overrideReason": {"reason": reason},
                              "outcomeTimestamp": datetime.now(UTC).isoformat()}]}
    answer = requests.post(f"{live.url}/cds-services/calcinosis-patient-view/feedback", json=feedback, timeout=30)
    assert answer.status_code == 200
    # The hook now suppresses it for that user (so the viewer below is the only place it can still be seen).
    assert "caxp-high" not in {c["source"]["topic"]["code"]
                               for c in _patient_view(live, auth_server, trend_pid, fhir_token)}

    auth_server.redirect_uris.append(f"{live.url}/smart/callback")
    browser.get(f"{live.url}/smart/launch?iss={auth_server.fhir_base}&launch={auth_server.new_launch(trend_pid)}")
    WebDriverWait(browser, 30).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, '[data-testid="findings"]')))
    assert auth_server.errors == []

    finding = browser.find_element(By.CSS_SELECTOR, '[data-testid="findings"] li[data-rule-id="caxp-high"]')
    assert finding.is_displayed()
    assert "Ca x P" in finding.find_element(By.CSS_SELECTOR, ".summary").text
    mark = finding.find_element(By.CSS_SELECTOR, '[data-testid="override-mark"]')
    assert mark.is_displayed()
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert mark.text.startswith(f"overridden by Practitioner/pr-1 on {today}")
    assert mark.text.endswith(f": {reason['display']}")
    assert "Not re-alerted" not in browser.page_source
    history = [item.text for item in
               browser.find_elements(By.CSS_SELECTOR, '[data-testid="history"] li[data-rule-id="caxp-high"]')]
    assert any("suppressed" in text for text in history)  # the second hook call
    assert any(f"overridden ({reason['display']})" in text for text in history)  # the first, with its outcome
