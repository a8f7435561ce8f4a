"""The issue #7 speed-ups of the engine hot path give exactly the answers of the general code they short-cut."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_mappings.datetimes import _general, parse_datetime
from fhir_mappings.units import UnknownUnitError, convert
from fhir_mappings.valuesets import ICD10CM, LOINC, CodeIndex, _add_valueset, default_index

_TEMPLATES = ["2024-05-01", "2024-05-01T08:00:00Z", "2024-05-01T08:00:00+02:00", "2024-05-01T23:30:00-05:30"]


@st.composite
def _near_iso(draw: st.DrawFn) -> str:
    """A common FHIR timestamp shape with up to three characters replaced (digits, separators, junk)."""
    chars = list(draw(st.sampled_from(_TEMPLATES)))
    for _ in range(draw(st.integers(0, 3))):
        chars[draw(st.integers(0, len(chars) - 1))] = draw(st.sampled_from("0123456789-:TZ+ .x"))
    return "".join(chars)


@settings(max_examples=3000, deadline=None)
@given(_near_iso())
def test_the_fast_path_agrees_with_the_general_parser(value: str) -> None:
    # parse_datetime short-cuts the common shapes with datetime.fromisoformat; _general is the reference answer.
    parsed = parse_datetime(value)
    assert parsed == _general(value)
    if parsed is not None:
        assert parsed.tzinfo is UTC
        assert parsed.isoformat() == str(_general(value).isoformat())  # type: ignore[union-attr]


@pytest.mark.parametrize("value", [
    "2024-05-01", "2024-05-01T08:00:00Z", "2024-05-01T08:00:00+02:00", "2024-02-30", "2024-05-01T24:00:00Z",
    "2024-05-01T08:00:00+24:00", "2024-05-01T08:00:00+99:99", "2024-05-01 08:00:00Z", "2024",
    "2024-05-01T08:00:00.5Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-14:00", " 2024-05 ",
])
def test_fast_shapes_and_edge_cases_match_the_general_parser(value: str) -> None:
    assert parse_datetime(value) == _general(value)


def test_values_that_are_not_strings_are_not_timestamps() -> None:
    assert [parse_datetime(value) for value in (None, 5, 2024.5, b"2024-05-01", ["2024"])] == [None] * 5


def test_the_common_shapes_give_utc_instants() -> None:
    assert parse_datetime("2024-05-01T08:00:00+02:00") == datetime(2024, 5, 1, 6, tzinfo=UTC)
    assert parse_datetime("2024-05-01") == datetime(2024, 5, 1, tzinfo=UTC)
    assert parse_datetime("2024-05") == datetime(2024, 5, 1, tzinfo=UTC)


def test_memoised_lookups_equal_fresh_lookups() -> None:
    index = default_index()
    samples = [(LOINC, "17861-6"), (LOINC, "2777-1"), (ICD10CM, "N18.6"), (ICD10CM, "n186"),
               ("urn:oid:2.16.840.1.113883.6.90", "E11.9"), (LOINC, "no-such-code"), ("", ""), (None, 5)]
    for system, code in samples:
        first = index.members(system, code)
        assert index.members(system, code) is first  # memoised
        assert first == index._lookup(system, code)
        assert index.valuesets_for(system, code) == set(first)


def test_valuesets_for_returns_a_set_the_caller_may_change() -> None:
    index = default_index()
    found = index.valuesets_for(ICD10CM, "N18.6")
    assert found
    found.add("changed-by-caller")
    assert "changed-by-caller" not in index.valuesets_for(ICD10CM, "N18.6")


def test_adding_a_value_set_forgets_memoised_lookups() -> None:
    index = CodeIndex()
    assert index.members(LOINC, "1-1") == frozenset()
    _add_valueset(index, "vs-new", {"compose": {"include": [{"system": LOINC, "concept": [{"code": "1-1"}]}]}})
    assert index.members(LOINC, "1-1") == frozenset({"vs-new"})


def test_unhashable_input_is_answered_without_memoising() -> None:
    index = default_index()
    assert index.members({"not": "hashable"}, "17861-6") == frozenset()


def test_memo_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import fhir_mappings.valuesets as valuesets

    monkeypatch.setattr(valuesets, "_MEMO_LIMIT", 10)
    index = CodeIndex()
    for number in range(25):
        index.members(LOINC, f"code-{number}")
    assert len(index._memo) <= 10


@pytest.mark.parametrize(("code", "unit"), [("mmol/L", None), (None, "MMOL/L"), (" mmol/l ", None),
                                             ("bogus", "mg/dL")])
def test_cached_unit_rules_convert_like_the_table(code: str | None, unit: str | None) -> None:
    expected = 10.02 if (code or "").strip().lower() == "mmol/l" or (unit or "").lower() == "mmol/l" else 10.0
    for _ in range(2):  # the second call is served from the cache
        assert convert("calcium", 2.5 if expected == 10.02 else 10.0, code, unit) == pytest.approx(expected)


def test_unknown_units_and_analytes_still_raise() -> None:
    with pytest.raises(UnknownUnitError, match="not accepted"):
        convert("calcium", 1.0, "furlongs", None)
    with pytest.raises(UnknownUnitError, match="no unit table"):
        convert("unobtainium", 1.0, "mg/dL", None)
