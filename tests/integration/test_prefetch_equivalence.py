"""Revision-2 test patients answered WITHOUT prefetch, from the real FHIR server, give the prefetch cards.

clinical-rules.md §8.4 TP22 (potassium), TP25 (calcinosis cutis Condition), TP27 (PTH in pmol/L, 14866-8) and
TP30 (CKD 3b, eGFR) depend on codes the discovery queries must fetch (issue 13 item 2); TP29 with a stopped
warfarin order or a completed warfarin statement depends on the any-status warfarin searches (§8.0 C16).
Each patient is loaded into the Medplum test server; the service is then called twice over HTTP: once with
the whole record as prefetch, once with no prefetch and ``fhirServer`` only, so it runs its own
(value-set-built) queries. The cards must be the same, and must be the ones §8.4 expects.

The builders (tests/engine/patients.py) date everything relative to the engine tests' fixed NOW; the service
uses the real clock, so every date is moved by (real now - NOW) before loading, and every id is made unique to
the test because the session's server is shared.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from cds_service.services import find_service, resource_type_of
from tests.engine import patients
from tests.engine.builders import NOW, med
from tests.support.fhir_builders import hook_request, searchset

pytestmark = pytest.mark.integration

Resource = dict[str, Any]
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

# §8.4 expectations that do not depend on card wording: (topic code, indicator) of every card.
EXPECTED = {
    "TP22": [("iv-calcium-order", "info")],
    "TP25": [("iv-calcium-order", "info")],
    "TP27": [],
    "TP30": [("al-mg-binder-order", "info")],
    # TP29 and two variants for the warfarin history queries (§8.0 C16): a stopped order or a completed
    # statement within 90 days is recent exposure, so R24 must not fire; it is only seen if the any-status
    # warfarin searches fetched it.
    "TP29": [("warfarin-calciphylaxis-risk", "warning")],
    "TP29-stopped-request": [],
    "TP29-completed-statement": [],
}
_WARFARIN = ("Warfarin Sodium 5 MG Oral Tablet", "855332")


def _case(case_id: str) -> dict[str, Any]:
    """The §8.4 builder of ``case_id`` from tests/engine/patients.py, with the variants' extra history."""
    build = _builder(case_id.split("-", 1)[0].lower())
    if case_id == "TP29-stopped-request":
        return build(history=[med(*_WARFARIN, status="stopped", authored_days=20)])
    if case_id == "TP29-completed-statement":
        return build(history=[med(*_WARFARIN, status="completed", rtype="MedicationStatement",
                                  effective_days=40)])
    return build()


@pytest.fixture
def app_settings():
    return {"fhir_retries": 0, "fhir_read_timeout_s": 2.0, "fhir_total_timeout_s": 5.0}


def _shift(value: Any, delta: timedelta) -> Any:
    """Move every date and dateTime in a JSON value by ``delta`` (dates by whole days)."""
    if isinstance(value, dict):
        return {k: _shift(v, delta) for k, v in value.items()}
    if isinstance(value, list):
        return [_shift(v, delta) for v in value]
    if isinstance(value, str) and _DATETIME.match(value):
        moved = datetime.fromisoformat(value.replace("Z", "+00:00")) + delta
        return moved.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, str) and _DATE.match(value):
        return (date.fromisoformat(value) + timedelta(days=delta.days)).isoformat()
    return value


def _rename(resources: list[Resource], drafts: list[Resource], tag: str) -> tuple[list[Resource], list[Resource]]:
    """Give every resource a test-unique id and point every ``Type/id`` reference at the new ids."""
    new_ids = {(r["resourceType"], r["id"]): f"{tag}-{r['id']}"[:64] for r in [*resources, *drafts]}

    def fix(value: Any) -> Any:
        if isinstance(value, dict):
            out = {k: fix(v) for k, v in value.items()}
            ref = out.get("reference")
            if isinstance(ref, str) and ref.count("/") == 1:
                kind, rid = ref.split("/")
                out["reference"] = f"{kind}/{new_ids.get((kind, rid), rid)}"
            return out
        if isinstance(value, list):
            return [fix(v) for v in value]
        return value

    def renamed(items: list[Resource]) -> list[Resource]:
        out = []
        for r in items:
            moved = fix(r)
            moved["id"] = new_ids[(r["resourceType"], r["id"])]
            out.append(moved)
        return out

    return renamed(resources), renamed(drafts)


def _prepare(case: dict[str, Any]) -> tuple[str, list[Resource], list[Resource]]:
    """(patient id, record, drafts) of a §8.4 case, re-dated to the real clock and with unique ids."""
    delta = datetime.now(UTC) - NOW
    tag = f"eq{uuid.uuid4().hex[:8]}"
    record = _shift(copy.deepcopy([case["patient"], *case["resources"]]), delta)
    drafts = _shift(copy.deepcopy(case.get("drafts") or []), delta)
    record, drafts = _rename(record, drafts, tag)
    return record[0]["id"], record, drafts


def _whole_record_prefetch(hook_service: str, record: list[Resource]) -> dict[str, Any]:
    """Every advertised key, the first key of each resource type holding ALL that patient's resources of the
    type (the reference the queries are measured against), any further key of the type an empty searchset."""
    service = find_service(hook_service)
    assert service is not None
    prefetch: dict[str, Any] = {}
    filled: set[str] = set()
    for spec in service.prefetch:
        kind = resource_type_of(spec.template)
        if spec.key == "patient":
            prefetch[spec.key] = record[0]
        elif kind in filled:
            prefetch[spec.key] = searchset([])
        else:
            filled.add(kind)
            prefetch[spec.key] = searchset([r for r in record if r["resourceType"] == kind])
    return prefetch


def _without_uuids(value: Any) -> Any:
    """The value with every ``uuid`` (new for each card and suggestion of each call) left out."""
    if isinstance(value, dict):
        return {k: _without_uuids(v) for k, v in value.items() if k != "uuid"}
    if isinstance(value, list):
        return [_without_uuids(v) for v in value]
    return value


def _comparable(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.get_data(as_text=True)
    cards: list[dict[str, Any]] = _without_uuids(response.get_json()["cards"])
    return sorted(cards, key=lambda c: (c["source"].get("topic", {}).get("code", ""), c["summary"]))


def _differences(fetched: list[dict[str, Any]], prefetched: list[dict[str, Any]]) -> str:
    """The fields that differ, card by card, as short lines (pytest's diff of long cards is truncated)."""
    lines = [f"{len(fetched)} fetched card(s), {len(prefetched)} prefetched"]
    for a, b in zip(fetched, prefetched, strict=False):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                lines.append(f"{key}: fetched {json.dumps(a.get(key))[:600]} | prefetch {json.dumps(b.get(key))[:600]}")
    return "\n".join(lines)


def _builder(name: str) -> Callable[..., dict[str, Any]]:
    build = getattr(patients, name, None)
    if build is None:
        pytest.fail(f"tests/engine/patients.py has no {name}() yet (clinical-rules.md §8.4)")
    return build  # type: ignore[no-any-return]


@pytest.mark.parametrize("case_id", sorted(EXPECTED))
def test_no_prefetch_gives_the_prefetch_cards(case_id, app, fhir_server, fhir_patient_loader):
    """Same cards with and without prefetch, and the §8.4 ones."""
    case = _case(case_id)
    hook = case.get("hook", "patient-view")
    service_id = f"calcinosis-{hook}"
    pid, record, drafts = _prepare(case)
    fhir_patient_loader(record)
    client = app.test_client()

    fhir_server.clear_requests()
    fetched = client.post(f"/cds-services/{service_id}",
                          json=hook_request(hook, pid, fhir_server=fhir_server.base_url, drafts=drafts))
    sent = [r["url"] for r in fhir_server.requests()]
    prefetched = client.post(f"/cds-services/{service_id}",
                             json=hook_request(hook, pid, drafts=drafts,
                                               prefetch=_whole_record_prefetch(service_id, record)))

    # Without prefetch the service ran every advertised query itself, and nothing failed.
    service = find_service(service_id)
    assert service is not None
    assert len(sent) == len(service.prefetch), sent
    assert all(f"patient={pid}" in u or u.endswith(f"/Patient/{pid}") for u in sent)
    assert all(r["status"] == 200 for r in fhir_server.requests())

    fetched_cards, prefetched_cards = _comparable(fetched), _comparable(prefetched)
    assert fetched_cards == prefetched_cards, _differences(fetched_cards, prefetched_cards)
    # And they are the cards §8.4 expects (these follow the rules of revision 2).
    got = [(c["source"]["topic"]["code"], c["indicator"]) for c in fetched_cards]
    assert got == EXPECTED[case_id]
    for card in fetched_cards:
        deletes = [a for s in card.get("suggestions", []) for a in s.get("actions", []) if a["type"] == "delete"]
        assert deletes == [], (case_id, card["summary"])
    if case_id == "TP25":
        assert "calciphylaxis" not in str(fetched_cards).lower()


def test_the_comparison_notices_a_code_left_out_of_the_queries(app, fhir_server, fhir_patient_loader, monkeypatch):
    """Negative control: with PTH in pmol/L (14866-8) dropped from the Observation query, TP27 fetched from the
    server lacks its PTH and the cards differ from the whole-record prefetch run (R03 asks for a PTH)."""
    import dataclasses

    from cds_service import api

    real = find_service("calcinosis-patient-view")
    assert real is not None
    token = "http://loinc.org|14866-8"
    keys = tuple(
        dataclasses.replace(k, template=k.template.replace(f",{token}", "").replace(f"{token},", ""))
        for k in real.prefetch
    )
    assert sum(token in k.template for k in keys) == 0 < sum(token in k.template for k in real.prefetch)
    crippled = dataclasses.replace(real, prefetch=keys)
    monkeypatch.setattr(api, "find_service", lambda sid: crippled if sid == real.id else find_service(sid))

    pid, record, _drafts = _prepare(_builder("tp27")())
    fhir_patient_loader(record)
    client = app.test_client()
    fetched = _comparable(client.post("/cds-services/calcinosis-patient-view",
                                      json=hook_request("patient-view", pid, fhir_server=fhir_server.base_url)))
    prefetched = _comparable(client.post(
        "/cds-services/calcinosis-patient-view",
        json=hook_request("patient-view", pid, prefetch=_whole_record_prefetch(real.id, record))))
    assert prefetched == []
    assert fetched != prefetched
    assert "PTH" in str(fetched)
