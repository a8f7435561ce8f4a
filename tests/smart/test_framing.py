"""Embedding the viewer in an EHR side panel: framing is off by default, opt-in per EHR origin."""

from pathlib import Path

import pytest
from flask.testing import FlaskClient

from cds_service.config import ConfigError
from tests.support.app import make_app
from tests.support.smart_auth_server import SmartAuthServer

EHR = "https://ehr.example.org"


def test_pages_are_not_frameable_by_default(client: FlaskClient) -> None:
    page = client.get("/rules/caxp-high")
    assert page.status_code == 200
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"


def test_configured_ehr_origin_may_frame_the_viewer(tmp_path: Path, auth_server: SmartAuthServer,
                                                     trend_pid: str) -> None:
    client = make_app(tmp_path, smart_frame_ancestors=(EHR,)).test_client()
    page = client.get("/rules/caxp-high")
    assert f"frame-ancestors {EHR}" in page.headers["Content-Security-Policy"]
    assert "X-Frame-Options" not in page.headers
    # The session cookie must reach a cross-site frame: SameSite=None, which browsers only accept with Secure.
    started = client.get(f"/smart/launch?iss={auth_server.fhir_base}&launch={auth_server.new_launch(trend_pid)}")
    cookie = started.headers["Set-Cookie"]
    assert "SameSite=None" in cookie
    assert "Secure" in cookie
    assert "HttpOnly" in cookie


def test_the_json_api_is_never_frameable_even_when_the_viewer_is(tmp_path: Path) -> None:
    client = make_app(tmp_path, smart_frame_ancestors=(EHR,)).test_client()
    discovery = client.get("/cds-services")
    assert "frame-ancestors 'none'" in discovery.headers["Content-Security-Policy"]
    assert discovery.headers["X-Frame-Options"] == "DENY"


@pytest.mark.parametrize("origin", ["ehr.example.org", "https://ehr.example.org/path", "http://ehr.example.org"])
def test_frame_ancestors_must_be_https_origins(tmp_path: Path, origin: str) -> None:
    with pytest.raises(ConfigError, match="CDS_SMART_FRAME_ANCESTORS"):
        make_app(tmp_path, dev=False, public_base_url="https://cds.example.org", smart_frame_ancestors=(origin,))
