"""Prefetch resolution: every case of CDS Hooks 2.0 'Providing FHIR Resources to a CDS Service'."""

import json
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses

from cds_service.config import load_settings
from cds_service.errors import InvalidRequest, PrefetchUnavailable
from cds_service.fhir_client import build_session
from cds_service.hook_models import parse_hook_request
from cds_service.prefetch import render_template, resolve_prefetch
from cds_service.services import find_service

FHIR = "https://ehr.example.org/fhir"
SERVICE = find_service("calcinosis-patient-view")
KEYS = [p.key for p in SERVICE.prefetch]


def _bundle(*resources, next_url=None):
    bundle = {"resourceType": "Bundle", "type": "searchset",
              "entry": [{"resource": r} for r in resources]}
    if next_url:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return bundle


PATIENT = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1960-01-01"}
CA = {"resourceType": "Observation", "id": "ca1", "status": "final"}
COND = {"resourceType": "Condition", "id": "c1"}


def _request(prefetch=None, *, fhir_server=FHIR, token="tok-123"):
    body = {"hook": "patient-view", "hookInstance": "hi-1",
            "context": {"patientId": "p1", "userId": "Practitioner/u1"}}
    if fhir_server:
        body["fhirServer"] = fhir_server
        if token:
            body["fhirAuthorization"] = {"access_token": token, "token_type": "Bearer", "expires_in": 300,
                                         "scope": "patient/*.read", "subject": "cds", "patient": "p1"}
    if prefetch is not None:
        body["prefetch"] = prefetch
    return parse_hook_request(body, "patient-view")


def _complete_prefetch():
    """Every advertised key (discovery may split a search into several keys): CA and COND, the rest empty."""
    prefetch = {key: _bundle() for key in KEYS}
    prefetch.update({"patient": PATIENT, "observations": _bundle(CA), "conditions": _bundle(COND)})
    return prefetch


@pytest.fixture
def settings():
    return load_settings({}, fhir_total_timeout_s=1.0, fhir_read_timeout_s=0.5, fhir_retries=0,
                         allowed_fhir_servers=(FHIR,))


@pytest.fixture
def executor():
    with ThreadPoolExecutor(max_workers=8) as pool:
        yield pool


def _resolve(request, settings, executor):
    return resolve_prefetch(SERVICE, request, settings, build_session(settings), executor)


def _serve_all(rsps, *, status=200):
    """Answer every template query like a FHIR server would; returns nothing, records calls."""
    def callback(req):
        resource_type = urlsplit(req.url).path.rsplit("/", 2)[-2:]
        if resource_type[0] == "Patient":
            return status, {}, json.dumps(PATIENT)
        body = {"Observation": _bundle(CA), "Condition": _bundle(COND)}.get(resource_type[1].split("?")[0], _bundle())
        return status, {}, json.dumps(body)
    rsps.add_callback(responses.GET, __import__("re").compile(FHIR + "/.*"), callback=callback)


def test_complete_prefetch_is_used_and_nothing_is_fetched(settings, executor):
    with responses.RequestsMock() as rsps:  # any request would fail: none registered
        data = _resolve(_request(_complete_prefetch()), settings, executor)
        assert len(rsps.calls) == 0
    assert data.sources == {k: "prefetch" for k in KEYS}
    assert data.resources["observations"] == [CA]
    assert data.resources["patient"] == [PATIENT]


def test_null_key_means_no_data_and_is_not_fetched(settings, executor):
    prefetch = _complete_prefetch()
    prefetch["observations"] = None
    with responses.RequestsMock() as rsps:
        data = _resolve(_request(prefetch), settings, executor)
        assert len(rsps.calls) == 0
    assert data.sources["observations"] == "null"
    assert data.resources["observations"] == []


def test_absent_key_is_fetched_with_the_token(settings, executor):
    prefetch = _complete_prefetch()
    del prefetch["observations"]
    with responses.RequestsMock() as rsps:
        _serve_all(rsps)
        data = _resolve(_request(prefetch), settings, executor)
        assert len(rsps.calls) == 1
        call = rsps.calls[0].request
        assert call.headers["Authorization"] == "Bearer tok-123"
        query = parse_qs(urlsplit(call.url).query)
        assert query["patient"] == ["p1"]
        assert query["_sort"] == ["-date"]
        assert "http://loinc.org|17861-6" in query["code"][0].split(",")
    assert data.sources["observations"] == "fetched"
    assert data.resources["observations"] == [CA]


def test_operation_outcome_value_is_treated_as_missing_and_fetched(settings, executor):
    prefetch = _complete_prefetch()
    prefetch["conditions"] = {"resourceType": "OperationOutcome",
                              "issue": [{"severity": "error", "code": "timeout"}]}
    with responses.RequestsMock() as rsps:
        _serve_all(rsps)
        data = _resolve(_request(prefetch), settings, executor)
        assert len(rsps.calls) == 1
    assert data.sources["conditions"] == "fetched"
    assert data.resources["conditions"] == [COND]


def test_no_prefetch_at_all_fetches_every_key_concurrently(settings, executor):
    with responses.RequestsMock() as rsps:
        calls_in_flight, peak = [0], [0]

        def slow(req):
            calls_in_flight[0] += 1
            peak[0] = max(peak[0], calls_in_flight[0])
            time.sleep(0.1)
            calls_in_flight[0] -= 1
            body = PATIENT if "/Patient/" in req.url else _bundle()
            return 200, {}, json.dumps(body)
        rsps.add_callback(responses.GET, __import__("re").compile(FHIR + "/.*"), callback=slow)
        started = time.perf_counter()
        data = _resolve(_request(None), settings, executor)
        elapsed = time.perf_counter() - started
    assert data.sources == {k: "fetched" for k in KEYS}
    assert peak[0] >= 3, "independent queries must run concurrently"
    assert elapsed < 0.1 * len(KEYS)


def test_paged_search_follows_next_links_up_to_the_cap(executor):
    settings = load_settings({}, allowed_fhir_servers=(FHIR,), fhir_max_pages=3, fhir_retries=0)
    prefetch = _complete_prefetch()
    del prefetch["observations"]
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        pages = {i: _bundle({**CA, "id": f"ca{i}"}, next_url=f"{FHIR}/Observation?page={i + 1}") for i in range(1, 6)}
        rsps.add(responses.GET, __import__("re").compile(FHIR + r"/Observation\?patient=.*"), json=pages[1])
        for i in range(2, 6):
            rsps.add(responses.GET, f"{FHIR}/Observation?page={i}", json=pages[i])
        data = _resolve(_request(prefetch), settings, executor)
        assert len(rsps.calls) == 3
    assert [r["id"] for r in data.resources["observations"]] == ["ca1", "ca2", "ca3"]
    assert data.sources["observations"] == "partial"


def test_paged_prefetch_bundle_is_completed_from_the_server(settings, executor):
    prefetch = _complete_prefetch()
    prefetch["observations"] = _bundle(CA, next_url=f"{FHIR}/Observation?page=2")
    with responses.RequestsMock() as rsps:
        rsps.add(responses.GET, f"{FHIR}/Observation?page=2", json=_bundle({**CA, "id": "ca2"}))
        data = _resolve(_request(prefetch), settings, executor)
        assert rsps.calls[0].request.headers["Authorization"] == "Bearer tok-123"
    assert [r["id"] for r in data.resources["observations"]] == ["ca1", "ca2"]
    assert data.sources["observations"] == "prefetch"


def test_next_link_to_another_host_is_not_followed(settings, executor):
    prefetch = _complete_prefetch()
    del prefetch["observations"]
    with responses.RequestsMock() as rsps:
        rsps.add(responses.GET, __import__("re").compile(FHIR + r"/Observation\?.*"),
                 json=_bundle(CA, next_url="https://attacker.example.net/fhir/Observation?page=2"))
        data = _resolve(_request(prefetch), settings, executor)
        assert len(rsps.calls) == 1  # the other host never saw the token
    assert data.resources["observations"] == [CA]
    assert data.sources["observations"] == "partial"


def test_redirects_are_not_followed(settings, executor):
    prefetch = _complete_prefetch()
    del prefetch["observations"]
    with responses.RequestsMock() as rsps:
        rsps.add(responses.GET, __import__("re").compile(FHIR + r"/Observation\?.*"), status=302,
                 headers={"Location": "https://attacker.example.net/steal"})
        with pytest.raises(PrefetchUnavailable):
            _resolve(_request(prefetch), settings, executor)
        assert len(rsps.calls) == 1


def test_missing_required_data_and_no_fhir_server_gives_412(settings, executor):
    prefetch = _complete_prefetch()
    del prefetch["observations"]
    with pytest.raises(PrefetchUnavailable, match="observations") as info:
        _resolve(_request(prefetch, fhir_server=None), settings, executor)
    assert info.value.status == 412
    assert "no fhirServer" in info.value.message


def test_missing_optional_data_is_recorded_not_fatal(settings, executor):
    prefetch = _complete_prefetch()
    del prefetch["medications"]
    data = _resolve(_request(prefetch, fhir_server=None), settings, executor)
    assert data.sources["medications"] == "failed"
    assert data.sources["observations"] == "prefetch"


def test_fhir_server_down_gives_412(settings, executor):
    with responses.RequestsMock() as rsps:
        rsps.add(responses.GET, __import__("re").compile(FHIR + "/.*"),
                 body=requests.ConnectionError("refused"))
        with pytest.raises(PrefetchUnavailable):
            _resolve(_request(None), settings, executor)


def test_fhir_server_error_status_gives_412(settings, executor):
    with responses.RequestsMock() as rsps:
        _serve_all(rsps, status=500)
        with pytest.raises(PrefetchUnavailable):
            _resolve(_request(None), settings, executor)


def test_slow_fhir_server_gives_412_within_the_deadline_never_a_hang(settings, executor):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        def hang(req):
            time.sleep(3)
            return 200, {}, json.dumps(_bundle())
        rsps.add_callback(responses.GET, __import__("re").compile(FHIR + "/.*"), callback=hang)
        started = time.perf_counter()
        with pytest.raises(PrefetchUnavailable):
            _resolve(_request(None), settings, executor)
        assert time.perf_counter() - started < settings.fhir_total_timeout_s + 0.5


def test_http_fhir_server_is_refused_in_production_before_any_request(executor):
    settings = load_settings({}, allowed_fhir_servers=(FHIR,))
    with responses.RequestsMock() as rsps:
        with pytest.raises(InvalidRequest, match="not https") as info:
            _resolve(_request(None, fhir_server="http://ehr.example.org/fhir"), settings, executor)
        assert len(rsps.calls) == 0
    assert info.value.status == 400


def test_server_outside_the_allowlist_is_refused_before_any_request(settings, executor):
    with responses.RequestsMock() as rsps:
        with pytest.raises(InvalidRequest, match="CDS_ALLOWED_FHIR_SERVERS"):
            _resolve(_request(None, fhir_server="https://other-ehr.example.org/fhir"), settings, executor)
        assert len(rsps.calls) == 0


def test_allowlist_prefix_matches_on_path_segments(executor):
    settings = load_settings({}, allowed_fhir_servers=("https://ehr.example.org/fhir",))
    with pytest.raises(InvalidRequest):
        _resolve(_request(None, fhir_server="https://ehr.example.org/fhir-evil"), settings, executor)


def test_dev_mode_allows_any_server_unless_an_allowlist_is_set(executor):
    settings = load_settings({}, dev=True, fhir_retries=0)
    with responses.RequestsMock() as rsps:
        _serve_all_at = "http://127.0.0.1:9/fhir"
        rsps.add_callback(responses.GET, __import__("re").compile(_serve_all_at + "/.*"),
                          callback=lambda r: (200, {}, json.dumps(PATIENT if "/Patient/" in r.url else _bundle())))
        data = _resolve(_request(None, fhir_server=_serve_all_at, token=None), settings, executor)
        assert all("Authorization" not in c.request.headers for c in rsps.calls)
    assert set(data.sources.values()) == {"fetched"}


def test_template_tokens_are_root_level_context_only():
    request = _request(None)
    assert render_template("Patient/{{context.patientId}}", request) == "Patient/p1"
    assert render_template("Encounter/{{context.encounterId}}", request) is None
    assert render_template("X/{{context.draftOrders.id}}", request) is None


def test_malformed_entries_reach_the_engine_to_be_recorded_and_outcomes_do_not(settings, executor):
    prefetch = _complete_prefetch()
    prefetch["observations"] = _bundle(CA, {"id": "no-type"}, {"resourceType": "OperationOutcome", "issue": []})
    data = _resolve(_request(prefetch), settings, executor)
    assert data.resources["observations"] == [CA, {"id": "no-type"}]


def _med(rid, rtype="MedicationRequest", status="active"):
    return {"resourceType": rtype, "id": rid, "status": status, "medicationCodeableConcept": {"text": "warfarin"}}


def test_keys_of_one_resource_type_are_merged_once_in_discovery_order(settings, executor):
    """The active medications and the warfarin history both return an active warfarin order: it is kept once,
    whether it came in prefetch or was fetched, and the keys come back in discovery order."""
    active, stopped = _med("w-active"), _med("w-stopped", status="stopped")
    prefetch = _complete_prefetch()
    prefetch["warfarinRequests"] = _bundle(active, stopped, {"resourceType": "MedicationRequest"})
    del prefetch["medications"]
    with responses.RequestsMock() as rsps:
        rsps.add(responses.GET, __import__("re").compile(FHIR + r"/MedicationRequest\?.*status=active.*"),
                 json=_bundle(active))
        data = _resolve(_request(prefetch), settings, executor)
        assert len(rsps.calls) == 1
    assert data.sources["medications"] == "fetched"
    assert list(data.resources) == KEYS
    assert data.resources["medications"] == [active]
    # The copy in the later key is dropped; a resource without an id cannot be matched and is kept.
    assert data.resources["warfarinRequests"] == [stopped, {"resourceType": "MedicationRequest"}]


def test_same_id_in_keys_of_different_types_is_not_a_duplicate(settings, executor):
    prefetch = _complete_prefetch()
    prefetch["medications"] = _bundle(_med("x1"))
    prefetch["medicationStatements"] = _bundle(_med("x1", rtype="MedicationStatement"))
    data = _resolve(_request(prefetch), settings, executor)
    assert [r["id"] for r in data.resources["medications"]] == ["x1"]
    assert [r["id"] for r in data.resources["medicationStatements"]] == ["x1"]
