"""Issue 18: a hook body is decoded once, its prefetch straight into typed FHIR, with the answers of the untyped path.

``read_hook_body`` decodes with msgspec into ``fhir_mappings.wire`` Structs; a prefetch value that does not fit is
decoded into plain values by the same parser, and a body that is no JSON gets the answer of the plain decode.
These tests hold the two readings to the same 4xx answers, the same depth limit and the same cards, and show that
the typical body really takes the typed path, whatever charset it declares.
"""

from __future__ import annotations

import contextlib
import copy
import json
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any
from unittest import mock

import msgspec
import pytest
from flask.testing import FlaskClient
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

import cds_service.engine as engine_module
from cds_service import create_app
from cds_service.errors import ServiceError
from cds_service.evidence_fingerprint import resource_versions
from cds_service.http_json import MAX_JSON_DEPTH, read_hook_body, read_json_body
from fhir_mappings import wire
from synth import generate_patient

SERVICE = "/cds-services/calcinosis-patient-view"


def _request(data: bytes, content_type: str = "application/json") -> Request:
    return Request(EnvironBuilder(method="POST", data=data, content_type=content_type).get_environ())


def _error(reader: Any, data: bytes) -> str:
    with pytest.raises(ServiceError) as caught:
        reader(_request(data))
    assert caught.value.status == 400
    return str(caught.value)


def _searchset(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
            "entry": [{"fullUrl": f"{r['resourceType']}/{r['id']}", "resource": r} for r in resources]}


@pytest.fixture(scope="module")
def typical() -> dict[str, Any]:
    """A synthetic dialysis patient's prefetch, as benchmarks/run.py sends it (a year of labs)."""
    patient = generate_patient(3, "dialysis", years=1, seed=20250613)
    pid = patient.resources[0]["id"]
    return {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/p1", "patientId": pid},
            "prefetch": {"patient": patient.resources[0],
                         **{key: _searchset(patient.of_type(rtype)) for key, rtype in (
                             ("observations", "Observation"), ("conditions", "Condition"),
                             ("procedures", "Procedure"), ("medications", "MedicationRequest"))}}}


@pytest.fixture(scope="module")
def client() -> Iterator[FlaskClient]:
    with tempfile.TemporaryDirectory(prefix="calcinosis-typed-") as tmp:
        app = create_app(dev=True, data_dir=tmp, audit_enabled=False, log_level="WARNING")
        yield app.test_client()
        app.extensions["calcinosis"].close()


def test_the_typical_body_decodes_into_typed_fhir(typical: dict[str, Any]) -> None:
    body = read_hook_body(_request(json.dumps(typical).encode()))
    assert body["hookInstance"] == typical["hookInstance"]
    assert body["context"] == typical["context"]  # the envelope as the untyped reader gives it
    prefetch = body["prefetch"]
    assert isinstance(prefetch["patient"], wire.Patient)
    assert isinstance(prefetch["observations"], wire.Bundle)
    assert len(prefetch["observations"].entry) == len(typical["prefetch"]["observations"]["entry"])
    assert {type(e.resource) for e in prefetch["observations"].entry} == {wire.Observation}


def test_a_prefetch_value_that_does_not_fit_is_read_untyped_on_its_own(typical: dict[str, Any]) -> None:
    body = copy.deepcopy(typical)
    body["prefetch"]["extra"] = {"resourceType": "Encounter", "id": "e1"}  # no Struct for an Encounter
    body["prefetch"]["conditions"]["entry"][0]["resource"]["onsetDateTime"] = 2020  # a number for a dateTime
    read = read_hook_body(_request(json.dumps(body).encode()))["prefetch"]
    assert read["extra"] == body["prefetch"]["extra"]
    assert read["conditions"] == body["prefetch"]["conditions"]  # the misfit's value untyped, as JSON
    assert isinstance(read["observations"], wire.Bundle)  # the other values stay typed
    assert isinstance(read["patient"], wire.Patient)
    assert list(read) == list(body["prefetch"])


def test_a_prefetch_that_is_no_object_gets_the_untyped_answer(typical: dict[str, Any]) -> None:
    for prefetch in ([1], "x", {"observations": [1]}):
        body = json.dumps({**typical, "prefetch": prefetch}).encode()
        assert read_hook_body(_request(body)) == read_json_body(_request(body))


def _cards(client: FlaskClient, body: dict[str, Any], charset: str = "utf-8", *,
           plain: bool = False) -> tuple[list[Any], set[str]]:
    """The cards of ``body`` and the Python types extraction was given; ``plain`` makes every prefetch value
    miss the typed shape, so all of them are read as plain JSON values (the per-value fallback)."""
    seen: set[str] = set()
    real = engine_module.extract

    def spy(patient: Any, resources: Any, *args: Any, **kwargs: Any) -> Any:
        seen.update(type(r).__name__ for r in resources)
        return real(patient, resources, *args, **kwargs)

    misfit = msgspec.ValidationError("forced: does not fit")
    body = {**body, "hookInstance": str(uuid.uuid4())}
    with (mock.patch.object(engine_module, "extract", spy),
          mock.patch.object(wire, "decode_envelope", side_effect=misfit) if plain else contextlib.nullcontext(),
          mock.patch.object(wire, "decode_prefetch_value", side_effect=misfit) if plain
          else contextlib.nullcontext()):
        answer = client.post(SERVICE, data=json.dumps(body).encode(charset),
                             content_type=f"application/json; charset={charset}")
    assert answer.status_code == 200
    cards = answer.get_json()["cards"]
    for card in cards:
        card.pop("uuid")
        for suggestion in card.get("suggestions", []):
            suggestion.pop("uuid")
    return cards, seen


def test_typed_and_plain_readings_get_the_same_cards(client: FlaskClient, typical: dict[str, Any]) -> None:
    typed_cards, typed_types = _cards(client, typical)
    plain_cards, plain_types = _cards(client, typical, plain=True)
    assert typed_types == {"Observation", "Condition", "Procedure", "MedicationRequest"}
    assert plain_types == {"dict"}
    assert typed_cards
    assert typed_cards == plain_cards


def test_a_body_in_another_charset_takes_the_typed_path_too(client: FlaskClient, typical: dict[str, Any]) -> None:
    typed_cards, _types = _cards(client, typical)
    latin_cards, latin_types = _cards(client, typical, "latin-1")
    assert latin_types == {"Observation", "Condition", "Procedure", "MedicationRequest"}
    assert latin_cards == typed_cards


@pytest.mark.parametrize("data", [b"NaN", b"[Infinity]", b"1e400", b'"\\ud800"', b"{not json", b"\xef\xbb\xbf{}",
                                  b'{"prefetch": {"p": {"resourceType": "Patient", "id": "\\ud800"}}}',
                                  b'{"prefetch": {"p": {"resourceType": "Observation", "valueQuantity": '
                                  b'{"value": 1e400}}}}',
                                  b'{"hook": "patient-view", "context": {"n": NaN}}', b'{"a": 1} x'])
def test_invalid_json_gets_the_answer_of_the_untyped_reader(data: bytes) -> None:
    assert _error(read_hook_body, data) == _error(read_json_body, data)
    assert "not valid JSON" in _error(read_hook_body, data)


def test_the_depth_limit_holds_on_the_typed_path() -> None:
    def body(depth: int) -> bytes:
        # The nesting sits in a field no Struct reads: msgspec skips it, the byte-level check still counts it.
        nested = b"[" * depth + b"]" * depth
        return (b'{"hook": "patient-view", "prefetch": {"p": {"resourceType": "Observation", "id": "o", "x": '
                + nested + b"}}}")
    inside = MAX_JSON_DEPTH - 3  # the body, prefetch and the resource p are three levels
    assert isinstance(read_hook_body(_request(body(inside)))["prefetch"]["p"], wire.Observation)
    assert f"deeper than {MAX_JSON_DEPTH} levels" in _error(read_hook_body, body(inside + 1))
    assert f"deeper than {MAX_JSON_DEPTH} levels" in _error(read_hook_body, body(5000))


def test_evidence_versions_come_from_the_typed_meta() -> None:
    typed = wire.Observation(id="o1", meta=wire.Meta(versionId="3", lastUpdated="2025-06-01T00:00:00Z"))
    raw = {"resourceType": "Observation", "id": "o2", "meta": {"versionId": "7"}}
    versions = resource_versions([typed, raw, wire.Observation(id="o3")], {"Observation/o1", "Observation/o2",
                                                                           "Observation/o3"})
    assert versions == {"Observation/o1": ("3", "2025-06-01T00:00:00Z"), "Observation/o2": ("7", ""),
                        "Observation/o3": ("", "")}
