"""No non-finite value or product reaches a rule or a card (issue 16 item 10; §8 C6 plausibility ranges).

A calcium of 1e308 once produced "Ca x P inf": the product overflowed. Values outside the plausibility ranges
are set aside before any rule runs, so neither a value nor a product on a card can be infinite or NaN.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from .builders import obs, patient, run

HUGE = st.one_of(st.sampled_from([1e308, 1.7976931348623157e308, 1e300, 1e154, 5e200, -1e308]),
                 st.floats(min_value=1e6, max_value=1e308), st.floats(max_value=-1e6, min_value=-1e308))


def _numbers(value: Any) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        return [n for item in value.values() for n in _numbers(item)]
    if isinstance(value, list):
        return [n for item in value for n in _numbers(item)]
    return []


@settings(max_examples=60, deadline=None)
@given(ca=HUGE, p=st.one_of(HUGE, st.just(7.2)))
def test_huge_values_never_reach_a_card_or_its_evidence(ca: float, p: float) -> None:
    resources = [obs("ca", ca, 1, specimen="s1"), obs("p", p, 1, specimen="s1"),
                 obs("ca", 10.4, 2, specimen="s2"), obs("p", 7.2, 2, specimen="s2")]
    result = run(patient(60), resources)
    assert ("caxp-high", "warning") in [(c.rule_id, c.indicator) for c in result.cards]   # the real pair still fires
    for c in result.cards:
        words = re.split(r"[^a-z0-9.]+", json.dumps(c.card).lower())
        assert not {"nan", "inf", "infinity", "-inf"} & set(words), c.card["summary"]
        assert all(math.isfinite(n) for n in _numbers(c.evidence)), c.evidence
    assert any("implausible" in s["reason"] or "finite" in s["reason"] for s in result.skipped), result.skipped
