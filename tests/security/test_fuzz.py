"""Property-based fuzzing of every endpoint through the Flask test client (issue #5 "Fuzzing").

Properties, for every generated request: never a 5xx; every error is a 4xx whose body is a FHIR
OperationOutcome; no stack trace or internal path in any response; each
request completes within MAX_REQUEST_SECONDS. The app runs in --dev without a token so the bodies reach
validation, with the audit log on (SQLite) and every outbound HTTP request failing fast (responses), so a
fuzzed fhirServer is never contacted. The request count is printed in the pytest summary (conftest.py).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import pytest
import responses
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cds_service
from cds_service import create_app
from cds_service.runtime import get_runtime
from tests.security.fuzzing import (
    ALLOWED_FHIR,
    SERVICE_IDS,
    STATS,
    arbitrary_json,
    encode,
    feedback_bodies,
    fhir_resources,
    fhir_server_urls,
    hook_bodies,
    hostile_urls,
    nested,
    outbound_hook_bodies,
)
from tests.security.tokens import settings_for

# A hook call normally answers in well under a second; 10 s leaves room for a loaded 2-core CI machine while
# still catching a hang or quadratic blow-up.
MAX_REQUEST_SECONDS = 10.0
_INTERNAL_PATH = str(Path(cds_service.__file__).resolve().parent.parent)

# CDS_FUZZ_SCALE multiplies every example budget (e.g. 10 for a nightly run); 1 keeps CI around a minute.
_SCALE = float(os.environ.get("CDS_FUZZ_SCALE", "1"))


def budget(examples: int) -> int:
    """The example count for one property, scaled by CDS_FUZZ_SCALE."""
    return max(1, int(examples * _SCALE))


FUZZ = settings(
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

CONTENT_TYPES = st.one_of(
    st.sampled_from([
        "application/json", "application/fhir+json", "application/json; charset=utf-8",
        "application/json; charset=latin-1", "application/json; charset=utf-16",
        "application/json; charset=utf-32", "application/json; charset=undefined",
        "application/json; charset=rot13", "application/json; charset=",
        "application/json; charset=idna", "text/plain", "text/html", "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=xyz", "application/xml", "application/json-patch+json", "*/*", "",
    ]),
    # Any printable Latin-1 text: what a raw HTTP header can carry (the test client refuses CR/LF itself).
    st.text(st.characters(min_codepoint=32, max_codepoint=255, blacklist_characters="\x7f"), max_size=40),
)
ENDPOINTS = st.sampled_from([
    ("POST", f"/cds-services/{sid}") for sid in SERVICE_IDS
] + [
    ("POST", f"/cds-services/{sid}/feedback") for sid in SERVICE_IDS
] + [("GET", "/cds-services"), ("POST", "/cds-services"), ("POST", "/cds-services/no-such-service"),
     ("POST", "/cds-services/no-such-service/feedback")])


# Endpoints behind authentication (routing answers 404/405 before authentication elsewhere).
AUTHENTICATED_ENDPOINTS = st.sampled_from([
    ("GET", "/cds-services"), ("POST", "/cds-services/no-such-service"),
    *[("POST", f"/cds-services/{sid}") for sid in SERVICE_IDS],
    *[("POST", f"/cds-services/{sid}/feedback") for sid in SERVICE_IDS],
])


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlaskClient]:
    """A --dev app with the audit log on; any outbound HTTP fails fast instead of leaving the machine."""
    data_dir = tmp_path_factory.mktemp("fuzz-data")
    app = create_app(settings_for(None, dev=True, data_dir=str(data_dir)))
    with responses.RequestsMock(assert_all_requests_are_fired=False):
        yield app.test_client()
    get_runtime(app).close()


def send(client: FlaskClient, method: str, path: str, *, data: bytes | None = None,
         content_type: str | None = None, headers: dict[str, str] | None = None) -> Any:
    """Make one request and check the fuzz properties; the failure message shows the request shape."""
    started = time.perf_counter()
    response = client.open(path, method=method, data=data, content_type=content_type, headers=headers)
    elapsed = time.perf_counter() - started
    STATS.record(response.status_code, elapsed)
    shape = (f"{method} {path[:120]!r} content-type={content_type!r} headers={headers!r} "
             f"body[:300]={(data or b'')[:300]!r} ({len(data or b'')} bytes)")
    text = response.get_data(as_text=True)
    assert response.status_code < 500, f"{response.status_code} for {shape}\nresponse: {text[:500]}"
    assert elapsed < MAX_REQUEST_SECONDS, f"took {elapsed:.1f}s: {shape}"
    assert "Traceback (most recent call last)" not in text, shape
    assert _INTERNAL_PATH not in text, f"internal path leaked for {shape}"
    if response.status_code >= 400:
        try:
            body = json.loads(text)
        except ValueError:
            pytest.fail(f"{response.status_code} without a JSON body for {shape}: {text[:200]!r}")
        assert isinstance(body, dict), shape
        assert body.get("resourceType") == "OperationOutcome", f"{shape}\nbody: {text[:300]}"
        issues = body.get("issue")
        assert isinstance(issues, list), shape
        assert issues, shape
    return response


# ---------------------------------------------------------------------------------------------------------


@settings(FUZZ, max_examples=budget(800))
@given(service_id=st.sampled_from(SERVICE_IDS), body=st.data())
def test_hook_calls_with_hostile_envelopes_and_random_fhir(
    client: FlaskClient, service_id: str, body: st.DataObject
) -> None:
    payload = body.draw(hook_bodies(service_id))
    response = send(client, "POST", f"/cds-services/{service_id}", data=encode(payload),
                    content_type="application/json")
    if response.status_code == 200:
        assert isinstance(response.get_json().get("cards"), list)


@settings(FUZZ, max_examples=budget(700))
@given(service_id=st.sampled_from(SERVICE_IDS), payload=st.one_of(feedback_bodies, arbitrary_json))
def test_feedback_with_hostile_bodies(client: FlaskClient, service_id: str, payload: Any) -> None:
    send(client, "POST", f"/cds-services/{service_id}/feedback", data=encode(payload),
         content_type="application/json")


@settings(FUZZ, max_examples=budget(1000))
@given(endpoint=ENDPOINTS, payload=st.one_of(arbitrary_json, fhir_resources()), content_type=CONTENT_TYPES)
def test_arbitrary_json_and_content_types_at_every_endpoint(
    client: FlaskClient, endpoint: tuple[str, str], payload: Any, content_type: str
) -> None:
    method, path = endpoint
    send(client, method, path, data=encode(payload), content_type=content_type)


@settings(FUZZ, max_examples=budget(900))
@given(endpoint=ENDPOINTS, garbage=st.binary(max_size=2048),
       content_type=st.sampled_from(["application/json", "application/fhir+json",
                                     "application/json; charset=utf-16", "application/octet-stream"]))
def test_garbage_bytes_at_every_endpoint(
    client: FlaskClient, endpoint: tuple[str, str], garbage: bytes, content_type: str
) -> None:
    method, path = endpoint
    send(client, method, path, data=garbage, content_type=content_type)


@settings(FUZZ, max_examples=budget(150))
@given(endpoint=ENDPOINTS, depth=st.one_of(st.integers(1, 200), st.integers(200, 10_000), st.just(10_000)),
       kind=st.sampled_from(["list", "object"]),
       where=st.sampled_from(["top", "prefetch", "context", "draftOrders", "feedback"]))
def test_deep_nesting(
    client: FlaskClient, endpoint: tuple[str, str], depth: int, kind: str, where: str
) -> None:
    inner = nested(depth, kind)
    envelope = {
        "top": "{}",
        "prefetch": '{"hook":"patient-view","hookInstance":"x","context":{"patientId":"p1",'
                    '"userId":"Practitioner/1"},"prefetch":{"patient":{"resourceType":"Patient","x":{}}}}',
        "context": '{"hook":"patient-view","hookInstance":"x","context":{"patientId":"p1",'
                   '"userId":"Practitioner/1","x":{}}}',
        "draftOrders": '{"hook":"order-sign","hookInstance":"x","context":{"patientId":"p1",'
                       '"userId":"Practitioner/1","draftOrders":{"resourceType":"Bundle","entry":[{}]}}}',
        "feedback": '{"feedback":[{}]}',
    }[where]
    text = inner if where == "top" else envelope.replace("{}", inner, 1)
    method, path = endpoint
    send(client, method, path, data=text.encode(), content_type="application/json")


@settings(FUZZ, max_examples=budget(30))
@given(endpoint=ENDPOINTS, size=st.one_of(st.integers(10_000, 200_000), st.integers(4_000_000, 6_000_000)),
       field=st.sampled_from(["hookInstance", "patientId", "code", "comment", "key"]))
def test_huge_strings(client: FlaskClient, endpoint: tuple[str, str], size: int, field: str) -> None:
    huge = "x" * size
    bodies: dict[str, Any] = {
        "hookInstance": {"hook": "patient-view", "hookInstance": huge,
                         "context": {"patientId": "p1", "userId": "Practitioner/1"}},
        "patientId": {"hook": "patient-view", "hookInstance": "h",
                      "context": {"patientId": huge, "userId": "Practitioner/1"}},
        "code": {"hook": "patient-view", "hookInstance": "h",
                 "context": {"patientId": "p1", "userId": "Practitioner/1"},
                 "prefetch": {"observations": {"resourceType": "Bundle", "entry": [{"resource": {
                     "resourceType": "Observation", "status": "final",
                     "code": {"coding": [{"system": "http://loinc.org", "code": huge}]}}}]}}},
        "comment": {"feedback": [{"card": "c", "outcome": "overridden",
                                  "outcomeTimestamp": "2024-01-01T00:00:00Z",
                                  "overrideReason": {"userComment": huge}}]},
        "key": {huge: 1},
    }
    body = bodies[field]
    method, path = endpoint
    send(client, method, path, data=encode(body), content_type="application/json")


_SEGMENT = st.one_of(st.sampled_from(SERVICE_IDS + ("feedback", "..", ".", "%2e%2e", "cds-services", "")),
                     st.text(max_size=30).map(lambda s: quote(s, safe="")))


@settings(FUZZ, max_examples=budget(700))
# HEAD is left out: its responses have no body by definition, which the contract plugin
# (tests/contract/plugin.py) reports as a violation on 405.
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"]),
       segments=st.lists(_SEGMENT, max_size=4), prefix=st.sampled_from(["/cds-services", "", "/admin", "/x"]),
       body=st.one_of(st.none(), st.binary(max_size=64)))
def test_methods_and_paths(
    client: FlaskClient, method: str, segments: list[str], prefix: str, body: bytes | None
) -> None:
    path = prefix + "/" + "/".join(segments) if segments else prefix or "/"
    # "//host..." would be parsed as a network-path reference by the test client, not sent as a path.
    path = "/" + path.lstrip("/")
    send(client, method, path, data=body, content_type="application/json")


@settings(FUZZ, max_examples=budget(500))
@given(endpoint=AUTHENTICATED_ENDPOINTS, authorization=st.one_of(
    st.text(max_size=100).filter(lambda s: "\n" not in s and "\r" not in s),
    st.builds(lambda a, b, c: f"Bearer {a}.{b}.{c}",
              *[st.from_regex(r"[A-Za-z0-9_-]{0,40}", fullmatch=True)] * 3),
))
def test_arbitrary_authorization_headers(
    client: FlaskClient, endpoint: tuple[str, str], authorization: str
) -> None:
    # In --dev a present token is still verified: anything but a valid JWT is a bare 401 OperationOutcome.
    method, path = endpoint
    response = send(client, method, path, data=b"{}", content_type="application/json",
                    headers={"Authorization": authorization})
    assert response.status_code == 401


# -- outbound calls: cookies and dot segments (issue 16 items 2, 3 and 9) ------------------------------------------


class FakeEhr:
    """The fake FHIR + SMART server behind `responses`: sets a cookie on every answer, links ``next`` to the URL a
    test chose, and records each outbound request's URL and Cookie header."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []
        self.next_link: str | None = None
        self.serial = 0

    def answer(self, request: Any) -> tuple[int, dict[str, str], str]:
        """A `responses` callback for every GET."""
        self.serial += 1
        self.seen.append((request.url, request.headers.get("Cookie")))
        path = urlsplit(request.url).path
        if path.endswith("/.well-known/smart-configuration"):
            body: dict[str, Any] = {"authorization_endpoint": "https://auth.example.org/authorize",
                                    "token_endpoint": "https://auth.example.org/token",
                                    "capabilities": ["permission-v2"]}
        elif "/Patient/" in path:
            body = {"resourceType": "Patient", "id": path.rsplit("/", 1)[-1]}
        else:
            body = {"resourceType": "Bundle", "type": "searchset", "entry": []}
            if self.next_link and "page=2" not in request.url:
                body["link"] = [{"relation": "next", "url": self.next_link}]
        headers = {"Set-Cookie": f"ehr-session={self.serial}; Path=/", "Content-Type": "application/fhir+json"}
        return 200, headers, json.dumps(body)

    def check(self, shape: str) -> None:
        """No cookie ever sent; nothing requested outside the allowed base's path."""
        for url, cookie in self.seen:
            assert cookie is None, f"cookie {cookie!r} sent to {url} for {shape}"
            parts = urlsplit(url)
            assert parts.hostname == "fhir.example.org", f"{url} for {shape}"
            assert parts.port in (None, 443), f"{url} for {shape}"
            assert parts.path == "/fhir" or parts.path.startswith("/fhir/"), f"{url} left the base for {shape}"
            segments = unquote(parts.path).split("/")
            assert ".." not in segments, f"{url} for {shape}"
            assert "admin" not in segments, f"{url} for {shape}"


@pytest.fixture(scope="module")
def outbound(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FlaskClient, FakeEhr]]:
    """A --dev app whose only allowed FHIR server is ALLOWED_FHIR, answered by a cookie-setting FakeEhr."""
    ehr = FakeEhr()
    app = create_app(settings_for(None, dev=True, data_dir=str(tmp_path_factory.mktemp("fuzz-outbound")),
                                  audit_enabled=False, allowed_fhir_servers=(ALLOWED_FHIR,), fhir_retries=0))
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_callback(responses.GET, re.compile(r"https?://.*"), callback=ehr.answer)
        yield app.test_client(), ehr
    get_runtime(app).close()


@settings(FUZZ, max_examples=budget(150))
@given(service_id=st.sampled_from(SERVICE_IDS), body=st.data(),
       next_link=st.one_of(st.none(), st.just(ALLOWED_FHIR + "/Observation?page=2"), hostile_urls))
def test_outbound_calls_send_no_cookie_and_never_leave_the_allowed_base(
    outbound: tuple[FlaskClient, FakeEhr], service_id: str, body: st.DataObject, next_link: str | None
) -> None:
    client, ehr = outbound
    payload = body.draw(outbound_hook_bodies(service_id))
    ehr.seen.clear()
    ehr.next_link = next_link
    send(client, "POST", f"/cds-services/{service_id}", data=encode(payload), content_type="application/json")
    ehr.check(f"fhirServer={payload['fhirServer']!r} next={next_link!r}")


@settings(FUZZ, max_examples=budget(100))
@given(iss=fhir_server_urls, launch=st.sampled_from(["", "l-1"]))
def test_smart_launch_iss_with_dot_segments(outbound: tuple[FlaskClient, FakeEhr], iss: str, launch: str) -> None:
    """A hostile ``iss`` gets an error page (never a 5xx) and no request outside the allowed base."""
    client, ehr = outbound
    ehr.seen.clear()
    started = time.perf_counter()
    response = client.get("/smart/launch", query_string={"iss": iss, "launch": launch})
    STATS.record(response.status_code, time.perf_counter() - started)
    assert response.status_code < 500, (iss, response.status_code)
    assert response.status_code in (302, 400, 403), (iss, response.status_code)
    if response.status_code == 302:
        assert urlsplit(response.headers["Location"]).netloc == "auth.example.org"
    ehr.check(f"iss={iss!r}")
