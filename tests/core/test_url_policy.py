"""URL normalisation and the allowlist (cds_service/url_policy.py), and query encoding (cds_service/fhir_query.py).

Issue 16 items 3 and 4. The dot-segment cases are the RFC 3986 section 5.2.4 and 5.4 examples.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest

from cds_service.config import load_settings
from cds_service.fhir_query import build_relative_url
from cds_service.url_policy import (
    FhirServerNotAllowed,
    UnsafeUrl,
    check_server_allowed,
    normalise,
    remove_dot_segments,
    within,
)

ALLOWED = "https://ehr.example.org/fhir"


@pytest.mark.parametrize(("path", "expected"), [
    ("/a/b/c/./../../g", "/a/g"),          # RFC 3986 5.2.4
    ("mid/content=5/../6", "mid/6"),       # RFC 3986 5.2.4
    ("/fhir/../admin", "/admin"),
    ("/fhir/./Patient", "/fhir/Patient"),
    ("/..", "/"),
    ("/fhir/Patient/p1", "/fhir/Patient/p1"),
    ("", ""),
])
def test_remove_dot_segments_follows_rfc_3986(path: str, expected: str) -> None:
    assert remove_dot_segments(path) == expected


@pytest.mark.parametrize("url", [
    f"{ALLOWED}/../admin", f"{ALLOWED}/%2e%2e/admin", f"{ALLOWED}/%2E%2E", f"{ALLOWED}/./Patient",
    f"{ALLOWED}//admin", f"{ALLOWED}/..;/admin", f"{ALLOWED}/..%2Fadmin", f"{ALLOWED}/a%5cb",
    f"{ALLOWED}/%252e%252e/admin", f"{ALLOWED}/..\\admin", "https://[::1", f"{ALLOWED}\n", f"{ALLOWED}\t/../admin",
    f"{ALLOWED}/Patient /p1",
])
def test_a_url_whose_path_changes_under_normalisation_is_refused(url: str) -> None:
    with pytest.raises(UnsafeUrl):
        normalise(url)
    assert not within(url, ALLOWED)


def test_normal_form_lowercases_host_drops_default_port_and_decodes_unreserved() -> None:
    assert normalise("HTTPS://EHR.Example.org:443/f%68ir/Patient?x=%2F") == "https://ehr.example.org/fhir/Patient?x=%2F"
    assert normalise("http://h:8080/fhir") == "http://h:8080/fhir"


@pytest.mark.parametrize(("url", "inside"), [
    (f"{ALLOWED}/Observation?page=2", True),
    (ALLOWED, True),
    ("https://EHR.example.org:443/fhir/Patient/p1", True),
    ("https://ehr.example.org/fhir2/Patient/p1", False),       # a prefix on a whole segment only
    ("https://ehr.example.org/admin", False),
    ("http://ehr.example.org/fhir/Patient/p1", False),         # another scheme
    ("https://ehr.example.org.evil.net/fhir/Patient", False),
    ("https://user@ehr.example.org/fhir/Patient", False),      # credentials never match
])
def test_within_compares_normal_forms(url: str, inside: bool) -> None:
    assert within(url, ALLOWED) is inside


def test_check_server_allowed_refuses_dot_segments_even_in_dev_without_an_allowlist() -> None:
    dev = load_settings({}, dev=True)
    check_server_allowed("http://localhost:8080/fhir", dev)
    with pytest.raises(FhirServerNotAllowed, match="dot segment"):
        check_server_allowed("http://localhost:8080/fhir/../admin", dev)


def test_build_relative_url_encodes_every_query_value_once() -> None:
    template = "Observation?patient={{context.patientId}}&code=http://loinc.org|2000-8,http://loinc.org%7C2777-1" \
               "&date=ge2024-01-01T00:00:00+00:00&_sort=-date"
    url = build_relative_url(template, lambda name: "p 1&x" if name == "context.patientId" else None)
    assert url == ("Observation?patient=p%201%26x&code=http%3A%2F%2Floinc.org%7C2000-8,http%3A%2F%2Floinc.org"
                   "%7C2777-1&date=ge2024-01-01T00%3A00%3A00%2B00%3A00&_sort=-date")
    assert dict(parse_qsl(url.split("?", 1)[1])) == {
        "patient": "p 1&x", "code": "http://loinc.org|2000-8,http://loinc.org|2777-1",
        "date": "ge2024-01-01T00:00:00+00:00", "_sort": "-date"}


def test_build_relative_url_fills_path_tokens_and_gives_none_for_a_missing_value() -> None:
    assert build_relative_url("Patient/{{context.patientId}}", lambda _name: "p1") == "Patient/p1"
    assert build_relative_url("Patient/{{context.patientId}}", lambda _name: "a/b") == "Patient/a%2Fb"
    assert build_relative_url("Encounter/{{context.encounterId}}", lambda _name: None) is None
    assert build_relative_url("Condition?code:not=x&patient={{ context.patientId }}", lambda _n: "p1") == \
        "Condition?code:not=x&patient=p1"
