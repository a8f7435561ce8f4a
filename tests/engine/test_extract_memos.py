"""The extraction's per-record shortcuts (issue 18) answer exactly as the walk they replace.

``CodeIndex.text_sets_matching`` (one search for all text patterns of several value sets) must name the same sets,
in the same order, as asking each set; the reference-range memo (labs of one code repeat one range) must give each
result the range its own ``referenceRange`` gives, including a zero bound's sign.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_mappings.extract import extract
from fhir_mappings.valuesets import default_index

_NOW = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)
_LOINC = "http://loinc.org"
_INDEX = default_index()
_SETS = tuple(_INDEX.text_patterns)
# Words of the value sets' text patterns, mixed with others, so that matches and near misses are both drawn.
_WORDS = ["calciphylaxis", "calcific uremic arteriolopathy", "milk-alkali", "calcitriol", "paricalcitol",
          "aluminium hydroxide", "aluminum carbonate", "magnesium oxide", "dialysate", "lock solution", "warfarin",
          "sevelamer", "calcium", "carbonate", "sodium", "hydroxide", "tablet", "|", "1 g", "IV"]


@settings(max_examples=300, deadline=None)
@given(words=st.lists(st.sampled_from(_WORDS), max_size=6),
       sets=st.lists(st.sampled_from(_SETS), min_size=1, max_size=len(_SETS), unique=True))
def test_one_search_names_the_sets_each_search_names(words: list[str], sets: list[str]) -> None:
    text = " ".join(words)
    assert _INDEX.text_sets_matching(tuple(sets), text) == [vs for vs in sets if _INDEX.text_matches(vs, text)]


def _phosphate(oid: str, low: Any, high: float, days_ago: int) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"coding": [{"system": _LOINC, "code": "2777-1"}]},
            "effectiveDateTime": f"2025-06-{15 - days_ago:02d}T08:00:00Z",
            "valueQuantity": {"value": 5.0, "unit": "mg/dL", "system": "http://unitsofmeasure.org", "code": "mg/dL"},
            "referenceRange": [{"low": {"value": low, "unit": "mg/dL"}, "high": {"value": high, "unit": "mg/dL"}}]}


def _ranges(resources: list[dict[str, Any]]) -> dict[str, tuple[float | None, float | None]]:
    facts = extract({"resourceType": "Patient", "id": "p", "birthDate": "1960-01-01"}, resources, _NOW, _INDEX)
    return {lab.resource_id: (lab.ref_low, lab.ref_high) for lab in facts.labs}


def test_each_result_gets_its_own_range_when_ranges_repeat_and_change() -> None:
    resources = [_phosphate("a", 2.5, 4.5, 1), _phosphate("b", 2.5, 4.5, 2), _phosphate("c", 2.7, 4.6, 3),
                 _phosphate("d", 2.5, 4.5, 4)]
    assert _ranges(resources) == {"a": (2.5, 4.5), "b": (2.5, 4.5), "c": (2.7, 4.6), "d": (2.5, 4.5)}


def test_a_zero_bound_gets_the_sign_it_gets_alone() -> None:
    # -0.0 == 0.0, so equal-looking ranges may differ in a bound's sign: the memo must not carry one to the other.
    plus, minus = _phosphate("plus", 0.0, 4.5, 1), _phosphate("minus", -0.0, 4.5, 2)
    together = _ranges([plus, minus])
    alone = {**_ranges([plus]), **_ranges([minus])}
    def signs(ranges: dict[str, tuple[float | None, float | None]]) -> dict[str, float | None]:
        return {oid: None if low is None else math.copysign(1.0, low) for oid, (low, _high) in ranges.items()}

    assert set(together) == {"plus", "minus"}
    assert signs(together) == signs(alone)
