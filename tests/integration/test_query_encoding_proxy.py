"""Queries that survive real proxies (issue 16 item 4), through a `//`-collapsing proxy to the real FHIR server.

The SMART launcher's proxy (and others) rewrite ``//`` to ``/`` in the request line. A search sent as
``code=http://loinc.org|17861-6`` then arrives as ``code=http:/loinc.org|17861-6``, matches nothing, and the
service concluded "no labs". Every query value is now percent-encoded, so the proxy has no ``//`` to collapse:
the no-prefetch call through the proxy gives the same cards as the prefetch call, and the SMART viewer's reads
through it return the same record as direct reads.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from cds_service.runtime import get_runtime
from cds_service.smart.patient_data import load_patient_data
from tests.support.fhir_builders import esrd_with_high_caxp, hook_request, prefetch_for
from tests.support.fhir_server import FhirTestServer
from tests.support.outbound_servers import CollapsingProxy

pytestmark = pytest.mark.integration


@pytest.fixture
def proxy(fhir_server: FhirTestServer) -> Iterator[CollapsingProxy]:
    with CollapsingProxy(fhir_server.origin) as running:
        yield running  # type: ignore[misc]


@pytest.fixture
def app_settings() -> dict[str, Any]:
    return {"fhir_retries": 0, "fhir_read_timeout_s": 5.0, "fhir_total_timeout_s": 10.0, "audit_enabled": False}


def _cards(response: Any) -> dict[str, tuple[str, str]]:
    assert response.status_code == 200, response.get_data(as_text=True)
    return {card["source"]["topic"]["code"]: (card["indicator"], card["summary"])
            for card in response.get_json()["cards"]}


def test_a_collapsing_proxy_really_collapses(fhir_server: FhirTestServer, proxy: CollapsingProxy) -> None:
    """The proxy does what the real ones do, so the test below can fail: a raw ``//`` loses the search."""
    import requests

    pid = f"pt-{uuid.uuid4().hex[:12]}"
    fhir_server.load(esrd_with_high_caxp(pid))
    try:
        raw = f"/fhir/Observation?patient={pid}&code=http://loinc.org|17861-6"
        direct = requests.get(f"{fhir_server.origin}{raw}", timeout=10).json()
        proxied = requests.get(f"{proxy.origin}{raw}", timeout=10).json()
        assert len(direct.get("entry", [])) == 1
        assert proxied.get("entry", []) == []
        assert proxy.rewrites[-1][1].endswith("code=http:/loinc.org%7C17861-6")  # requests encodes only the "|"
    finally:
        for resource in esrd_with_high_caxp(pid):
            fhir_server.delete(resource["resourceType"], resource["id"])


def test_no_prefetch_through_a_collapsing_proxy_gives_the_prefetch_cards(
        app: Flask, fhir_server: FhirTestServer, fhir_patient_loader: Any, proxy: CollapsingProxy) -> None:
    pid = f"pt-{uuid.uuid4().hex[:12]}"
    resources = fhir_patient_loader(esrd_with_high_caxp(pid))
    client = app.test_client()
    with_prefetch = _cards(client.post("/cds-services/calcinosis-patient-view",
                                       json=hook_request("patient-view", pid, prefetch=prefetch_for(resources))))
    assert with_prefetch["caxp-high"][0] == "warning"  # the Ca x P card depends on the coded Observation search
    through_proxy = _cards(client.post("/cds-services/calcinosis-patient-view",
                                       json=hook_request("patient-view", pid, fhir_server=f"{proxy.origin}/fhir")))
    assert through_proxy == with_prefetch
    searches = [received for received, _ in proxy.rewrites if "code=" in received]
    assert searches, "no coded search went through the proxy"
    assert all(received == forwarded for received, forwarded in proxy.rewrites if "?" in received)


def test_viewer_reads_through_a_collapsing_proxy_return_the_whole_record(
        app: Flask, fhir_server: FhirTestServer, fhir_patient_loader: Any, proxy: CollapsingProxy) -> None:
    pid = f"pt-{uuid.uuid4().hex[:12]}"
    fhir_patient_loader(esrd_with_high_caxp(pid))
    runtime = get_runtime(app)
    direct = load_patient_data(runtime, fhir_server.base_url, "unused-token", pid)
    proxied = load_patient_data(runtime, f"{proxy.origin}/fhir", "unused-token", pid)
    ids = sorted((r["resourceType"], r["id"]) for r in direct.resources)
    assert ("Observation", f"{pid}-ca") in ids  # the coded Observation search found the calcium
    assert sorted((r["resourceType"], r["id"]) for r in proxied.resources) == ids
    assert proxied.unavailable == []
    assert proxied.patient.get("id") == pid
