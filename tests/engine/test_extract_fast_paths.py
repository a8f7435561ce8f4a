"""One typed extraction (issue 18): the typed reading, the tolerant reading and the lenient answers agree.

``test_extract_equivalence.py`` pins whole answers against the lenient dict reading before issue 18 on every golden
case. Here every golden case is read twice more: with every resource forced through tolerant mode (a misfit the
rules never read is planted in each, so ``wire.read`` takes its removal loop) and with every resource decoded from
JSON bytes straight into the typed Structs, as the edge does; both must give exactly the facts of the dict reading.
The rest of the file pins the issue #7 constructors, memos and lookups the extraction relies on.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds_service.engine import _as_list
from fhir_mappings import wire
from fhir_mappings.extract import extract
from fhir_mappings.facts import (
    ConditionFact,
    LabResult,
    PatientFacts,
    ProcedureFact,
    new_condition_fact,
    new_lab_result,
    new_procedure_fact,
)
from fhir_mappings.valuesets import LAB_VALUESETS, LOINC, CodeIndex, _add_valueset, _text_matcher, default_index

from .builders import NOW, cond, obs, patient, proc, when
from .golden_cases import GoldenCase, golden_cases
from .test_extract_equivalence import plain

_CASES = golden_cases()


def _facts(case: GoldenCase, resources: list[Any]) -> Any:
    patient = case.patient if isinstance(case.patient, dict) else None
    options = case.options.get("include_preliminary", False)
    return extract(patient, resources, case.now, default_index(), include_preliminary=options)


def _with_misfit(resource: Any) -> Any:
    """The resource with ``meta`` of the wrong type: no rule reads it, so only the reading mode changes."""
    if isinstance(resource, dict) and resource.get("resourceType") in wire.RESOURCE_TYPES:
        return {**resource, "meta": "not an object"}
    return resource


@pytest.mark.parametrize("case", _CASES, ids=[c.case_id for c in _CASES])
def test_tolerant_reading_gives_the_facts_of_the_typed_reading(case: GoldenCase) -> None:
    resources = _as_list(case.resources)
    expected = _facts(case, copy.deepcopy(resources))
    forced = _facts(case, [_with_misfit(r) for r in copy.deepcopy(resources)])
    assert plain(forced) == plain(expected)
    readable = [r for r in resources if isinstance(r, dict) and r.get("resourceType") in wire.RESOURCE_TYPES]
    unreadable = [s for s in forced.skipped if s.reason == "malformed (does not fit the FHIR shape)"]
    assert len(forced.tolerant_reads()) == len(readable) - len(unreadable)  # each one recorded as such

def _decoded(resource: Any) -> Any:
    """The resource decoded from JSON bytes into its Struct as the edge does; as a dict when it does not fit."""
    try:
        return msgspec.json.decode(json.dumps(resource).encode(), type=wire.AnyResource)
    except (msgspec.ValidationError, TypeError, ValueError):
        return resource


@pytest.mark.parametrize("case", _CASES, ids=[c.case_id for c in _CASES])
def test_structs_decoded_from_bytes_give_the_facts_of_the_dicts(case: GoldenCase) -> None:
    resources = _as_list(case.resources)
    expected = _facts(case, copy.deepcopy(resources))
    typed = [_decoded(r) for r in resources]
    assert plain(_facts(case, typed)) == plain(expected)


def test_the_typical_shapes_fit_the_typed_reading() -> None:
    """The section 5 and synthetic records never need the tolerant mode: it is for misfits only."""
    typical = [c for c in _CASES if c.case_id.startswith(("synth", "TP"))]
    assert len(typical) > 20
    for case in typical:
        assert _facts(case, copy.deepcopy(_as_list(case.resources))).tolerant_reads() == (), case.case_id


def test_tolerant_mode_removes_only_the_misfits_and_says_what_was_found() -> None:
    obs = {"resourceType": "Observation", "id": "o", "status": "final", "valueQuantity": {"value": "9.4"},
           "code": {"coding": [None, 5, {"system": LOINC, "code": "17861-6"}]}, "referenceRange": [{"low": 10 ** 400}]}
    before = copy.deepcopy(obs)
    typed, misfits = wire.read(wire.Observation, obs)
    assert obs == before  # the caller's data is not changed
    assert misfits == {"$.valueQuantity.value": "str", "$.code.coding[1]": "int", "$.referenceRange[0].low": "int"}
    assert typed.code == wire.CodeableConcept(coding=[None, None, wire.Coding(LOINC, "17861-6")])
    assert typed.status == "final"
    assert typed.id == "o"
    with pytest.raises(wire.Unreadable):
        wire.read(wire.Observation, {"resourceType": "Condition"})
    with pytest.raises(wire.Unreadable):
        wire.read(wire.Observation, "not an object")


# --- random damage to typical resources ---------------------------------------------------------------------

_VALUES: st.SearchStrategy[Any] = st.sampled_from([
    None, True, False, 0, 9, 9.4, -1.0, 10 ** 30, "", " ", "x", "final", "amended", "preliminary", "completed",
    "mg/dL", "MG/DL", "mmol/L", "g/L", "pg/mL", "furlongs", ">", "<=", "17861-6", "2777-1", "302497006", LOINC,
    "http://snomed.info/sct", "2025-06-13", "2025-06-13T08:00:00Z", "2025-06-13T08:00:00+02:00", "2025-02-30",
    "2025-06-13T08:00:00", "2025", [], {}, [{}], ["x"], {"value": 9.4},
    {"value": 8.6, "unit": "mg/dL", "code": "mg/dL"}, {"value": 2.15, "code": "mmol/L"}, {"reference": "Specimen/s2"},
    {"low": {"value": 0}}, [{"text": "women"}],
    {"coding": [{"system": LOINC, "code": "17861-6"}]}, {"start": "2025-06-10T08:00:00Z"},
])


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key / index path inside a resource."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            found.append((*prefix, key))
            found.extend(_paths(item, (*prefix, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.append((*prefix, index))
            found.extend(_paths(item, (*prefix, index)))
    return found


_EXTRA_KEYS = ["status", "dataAbsentReason", "comparator", "age", "appliesTo", "effectivePeriod", "effectiveInstant",
               "issued", "specimen", "referenceRange", "id", "code", "coding", "system", "text", "display",
               "performedPeriod", "performedDateTime", "low", "high", "value", "unit"]


@st.composite
def _damaged(draw: st.DrawFn, template: dict[str, Any]) -> dict[str, Any]:
    resource = copy.deepcopy(template)
    for _ in range(draw(st.integers(0, 4))):
        paths = _paths(resource)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = resource
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["delete", "replace", "add"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "replace":
            parent[path[-1]] = copy.deepcopy(draw(_VALUES))
        elif isinstance(parent[path[-1]], dict):
            parent[path[-1]][draw(st.sampled_from(_EXTRA_KEYS))] = copy.deepcopy(draw(_VALUES))
    return resource


def _templates() -> list[dict[str, Any]]:
    ca = obs("ca", 9.4, 2, specimen="s1", ref=(8.6, 10.2), oid="ca1")
    ca["referenceRange"][0]["low"]["system"] = "http://unitsofmeasure.org"
    p_si = obs("p_si", 1.6, 2, specimen="s1", ref=(0.81, 1.45), oid="p1")
    ica = obs("ica", 1.2, 2, oid="ica1")
    two = obs("ca", 9.9, 3, oid="two")
    two["code"]["coding"].append({"system": LOINC, "code": "49765-1", "display": "Calcium blood"})
    hd = proc("302497006", 3)
    hd["code"]["coding"].append({"system": "http://www.ama-assn.org/go/cpt", "code": "90935", "display": "HD"})
    hd["code"]["text"] = "Hemodialysis"
    hd2 = copy.deepcopy(hd)
    hd2["id"] = "hd2"
    del hd2["performedDateTime"]
    hd2["performedPeriod"] = {"start": when(5), "end": when(4.9)}
    return [ca, p_si, ica, two, hd, hd2, cond("N18.6"), cond("E11.9", text="Diabetes")]


_TEMPLATES = _templates()


def _bytes_typed(resource: dict[str, Any]) -> Any:
    """The resource as the edge hands it over: decoded from JSON into its Struct, or the JSON dict if it does not
    fit (extraction then reads the dict through the tolerant mode)."""
    data = json.dumps(resource).encode()
    try:
        return msgspec.json.decode(data, type=wire.AnyResource)
    except msgspec.ValidationError:
        return json.loads(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(*[_damaged(t) for t in _TEMPLATES]), min_size=1, max_size=6), st.booleans())
def test_damaged_resources_read_alike_from_bytes_and_from_dicts(resources: list[dict[str, Any]],
                                                               preliminary: bool) -> None:
    """Decoding JSON into the Structs and converting a dict into them (tolerant mode for misfits) read every
    damaged shape alike: the edge's typed reading and the dict reading give the same facts."""
    resources = resources + copy.deepcopy(resources[:2])  # repeats: the procedure reuse and the memos
    from_dicts = extract(patient(60), copy.deepcopy(resources), NOW, default_index(),
                         include_preliminary=preliminary)
    from_bytes = extract(patient(60), [_bytes_typed(r) for r in resources], NOW, default_index(),
                         include_preliminary=preliminary)
    assert plain(from_bytes) == plain(from_dicts)


# --- fast constructors -------------------------------------------------------------------------------------------

def test_fast_constructors_build_the_same_objects() -> None:
    t = datetime(2025, 6, 1, tzinfo=UTC)
    lab_args = ("calcium", "lab-calcium-total", 10.02, "mg/dL", 2.5, "mmol/L", t, "Observation", "o1", "2000-8",
                ">", True, "Specimen/s", 8.6, 10.2, "amended")
    fast = new_lab_result(*lab_args)
    slow = LabResult(*lab_args[:13], frozenset(), *lab_args[13:])
    cond_args = (frozenset({"cond-esrd"}), "N18.6", "icd", "ESRD", True, t, "c1", None)
    proc_args = (frozenset({"proc-dialysis"}), "302497006", "HD", t, "p1")
    pairs: list[tuple[Any, Any]] = [(fast, slow), (new_condition_fact(*cond_args), ConditionFact(*cond_args)),
                                    (new_procedure_fact(*proc_args), ProcedureFact(*proc_args))]
    for made, built in pairs:
        assert made == built
        assert hash(made) == hash(built)
        assert repr(made) == repr(built)
        assert list(vars(made)) == [f.name for f in fields(built)]  # every field, in order
        assert vars(made) == vars(built)
        with pytest.raises(AttributeError):
            made.code = "changed"  # still frozen


# --- memoised results --------------------------------------------------------------------------------------------

def test_results_memo_equals_the_plain_filter_and_hands_out_copies() -> None:
    kinds = ["lab-calcium-total", "lab-phosphate", "lab-calcium-blood"]
    t = [datetime(2025, 6, d, tzinfo=UTC) for d in (1, 3, 3, 2)]
    labs = tuple(new_lab_result("x", kinds[i % 3], float(i), "u", float(i), "u", t[i % 4], "Observation", f"o{i}",
                                "c", "", False, "", None, None, "final") for i in range(12))
    facts = PatientFacts(now=NOW, patient_id="p", birth_date=None, gender="", labs=labs)
    for ask in [("lab-calcium-total",), ("lab-phosphate",), ("lab-albumin",),
                ("lab-calcium-total", "lab-calcium-blood"), ("lab-calcium-blood", "lab-calcium-total"),
                ("lab-phosphate", "lab-phosphate")]:
        expected = sorted((r for r in labs if r.kind in ask), key=lambda r: r.time, reverse=True)
        first = facts.results(*ask)
        assert first == expected
        assert [r.resource_id for r in first] == [r.resource_id for r in expected]
        first.clear()  # the caller's list: the memo keeps its own
        assert facts.results(*ask) == expected
    assert facts == PatientFacts(now=NOW, patient_id="p", birth_date=None, gender="", labs=labs)  # memo is no field


# --- value set lookups -------------------------------------------------------------------------------------------

def test_members_within_is_the_sorted_restricted_membership() -> None:
    index = default_index()
    within = frozenset(LAB_VALUESETS)
    for system, code in [(LOINC, "17861-6"), (LOINC, "2000-8"), (LOINC, "8867-4"), ("urn:oid:2.16.840.1.113883.6.1",
                                                                                 " 2777-1 "), (None, 5), ("", "")]:
        assert index.members_within(system, code, within) == tuple(sorted(index.members(system, code) & within))
    assert index.members_within({"unhashable": 1}, "17861-6", within) == ()


def test_members_within_forgets_with_the_index() -> None:
    index = CodeIndex()
    within = frozenset({"vs-new"})
    assert index.members_within(LOINC, "1-1", within) == ()
    _add_valueset(index, "vs-new", {"compose": {"include": [{"system": LOINC, "concept": [{"code": "1-1"}]}]}})
    assert index.members_within(LOINC, "1-1", within) == ("vs-new",)


_TEXTS = st.lists(st.sampled_from(list("abcdilmnoprstuv ()-.,|IV") + [
    "calcium ", "gluconate", "chloride", "aluminum hydroxide", "dialysate", "sodium phosphate", "iv push", "oral",
    "calciphylaxis", "milk-alkali", "warfarin", "calcitriol", "thiosulfate"]), max_size=12).map("".join)


@settings(max_examples=400, deadline=None)
@given(_TEXTS)
def test_joined_text_patterns_match_like_each_pattern(text: str) -> None:
    index = default_index()
    for vs_id, patterns in index.text_patterns.items():
        assert index.text_matches(vs_id, text) is any(p.search(text) for p in patterns), vs_id


def test_patterns_with_group_references_are_not_joined() -> None:
    patterns = [re.compile(r"(a)\1", re.IGNORECASE), re.compile(r"(b)\1", re.IGNORECASE)]
    matcher = _text_matcher(patterns)
    assert matcher("xbb")
    assert matcher("AA")
    assert not matcher("ab")
    mixed = _text_matcher([re.compile("x"), re.compile("y", re.IGNORECASE)])  # different flags: one by one
    assert mixed("Y")
    assert not mixed("X")
    assert not _text_matcher([])("anything")


def test_text_matcher_follows_added_patterns() -> None:
    index = CodeIndex()
    assert not index.text_matches("vs", "warfarin")
    index.text_patterns["vs"] = [re.compile("warfarin", re.IGNORECASE)]
    assert index.text_matches("vs", "Warfarin")


