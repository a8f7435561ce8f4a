"""§8 C6 fail-safe: implausible or malformed data never breaks the evaluation, and a rule that raises is reported.

- property-based: records with future, ancient and malformed dates and implausible values or wrong types mixed
  into a firing patient (TP31-like) never raise, are recorded as skipped, and the real R01 card still fires;
- a rule that raises (simulated by replacing one registered rule function) yields the `evaluation-incomplete`
  info card naming that rule plus an audit entry with its id, and the other cards still appear;
- the same through the HTTP app: never a 5xx, never an empty card list caused by an exception.

Hypothesis example counts are bounded so the module runs in well under 30 s.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, select

from cards.render import templates
from cds_service.audit.schema import calls
from cds_service.rules.base import ORDER_HOOKS, PATIENT_VIEW, RULES
from cds_service.runtime import get_runtime
from tests.support import fhir_builders as fb
from tests.support.app import make_app

from .builders import LAB_CODES, NOW, outcome, run
from .patients import tp06, tp10, tp14, tp31

INCOMPLETE = "evaluation-incomplete"
# Plausibility ranges of §8 C6 in the builders' default units (LAB_CODES), and a plausible value of each.
RANGES = {"ca": (2.0, 25.0), "p": (0.1, 30.0), "ica": (0.3, 5.0), "alb": (0.5, 8.0), "pth": (0.0, 10000.0),
          "k": (1.0, 12.0), "mg": (0.2, 20.0), "vitd": (0.0, 1000.0)}
PLAUSIBLE = {"ca": 9.1, "p": 3.9, "ica": 1.2, "alb": 4.0, "pth": 50.0, "k": 4.2, "mg": 2.0, "vitd": 30.0}
WRONG_TYPES: list[Any] = ["NaN", "Infinity", "1e999", "", "10.4", "ten", None, True, False, [], [9.1], {},
                          {"value": 9.1}]
MALFORMED_DATES: list[Any] = ["2025-13-45", "yesterday", "", "2025-06-14T25:61:00Z", "2025-02-30", "not-a-date",
                              20250614, None, [], {"start": "2025-06-14"}]
ANCIENT_DATES = ["1899-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "1066-10-14T09:00:00Z"]


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _implausible(kind: str) -> st.SearchStrategy[float]:
    low, high = RANGES[kind]
    above = st.floats(min_value=high * 1.01 + 0.01, max_value=1e308, allow_nan=False, allow_infinity=False)
    below = st.floats(min_value=-1e308, max_value=low * 0.99 - 0.01, allow_nan=False, allow_infinity=False)
    return st.one_of(above, below, st.sampled_from([1e308, -1e308, -1.0]))


def _bad_date(now: datetime) -> st.SearchStrategy[Any]:
    future = st.integers(min_value=25, max_value=24 * 365 * 100).map(lambda h: _iso(now + timedelta(hours=h)))
    return st.one_of(future, st.just("9999-12-31T00:00:00Z"), st.sampled_from(ANCIENT_DATES),
                     st.sampled_from(MALFORMED_DATES))


@st.composite
def junk_observation(draw: st.DrawFn, now: datetime = NOW, pid: str = "pt1") -> dict[str, Any]:
    """An Observation that must be skipped: implausible value, wrong value type, or an unusable date."""
    kind = draw(st.sampled_from(sorted(RANGES)))
    recent = _iso(now - timedelta(days=1))
    flavour = draw(st.sampled_from(["implausible", "wrong-type", "bad-date"]))
    value: Any
    if flavour == "implausible":
        value, date = draw(_implausible(kind)), draw(st.one_of(st.just(recent), _bad_date(now)))
    elif flavour == "wrong-type":
        value, date = draw(st.sampled_from(WRONG_TYPES)), draw(st.one_of(st.just(recent), _bad_date(now)))
    else:
        value, date = PLAUSIBLE[kind], draw(_bad_date(now))
    code, unit = LAB_CODES[kind]
    res: dict[str, Any] = {
        "resourceType": "Observation", "id": f"junk-{uuid.uuid4().hex[:10]}", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": date,
        "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
    }
    if draw(st.booleans()):
        res["specimen"] = {"reference": "Specimen/s1"}   # the real pair's specimen
    return res


def _raising(rule_id: str) -> Callable[[Any], Any]:
    def fail(_ctx: Any) -> Any:
        raise RuntimeError(f"simulated failure of {rule_id}")

    return fail


def _break(mp: pytest.MonkeyPatch, *rule_ids: str) -> None:
    """Replace registered rule functions by ones that raise (the registry entry is a frozen RuleDef)."""
    for rule_id in rule_ids:
        mp.setitem(RULES, rule_id, dataclasses.replace(RULES[rule_id], fn=_raising(rule_id)))


def _names(rule_id: str) -> tuple[str, ...]:
    """Ways a card may name a rule: its id (topic code), its spec id (R01...) or its card title."""
    title = templates().rules.get(rule_id, {}).get("title", rule_id)
    return (rule_id, RULES[rule_id].spec_id, str(title))


def _incomplete_cards(cards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in cards if c["source"]["topic"]["code"] == INCOMPLETE]


def _assert_names(card_json: dict[str, Any], rule_id: str) -> None:
    text = card_json["summary"] + "\n" + card_json["detail"]
    assert any(name in text for name in _names(rule_id)), (rule_id, text)


def _run(case: dict[str, Any]) -> Any:
    return run(case["patient"], case["resources"], case.get("hook", "patient-view"), case.get("drafts"))


PATIENT_VIEW_RULES = sorted(r for r, d in RULES.items() if PATIENT_VIEW in d.hooks and r != INCOMPLETE
                            and d.switch is None)
ORDER_RULES = sorted(r for r, d in RULES.items() if d.hooks & ORDER_HOOKS and r != INCOMPLETE)


# --- a rule that raises ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rule_id", PATIENT_VIEW_RULES)
def test_a_raising_patient_view_rule_yields_the_incomplete_card(rule_id: str) -> None:
    """§8 C6: the failure is isolated, reported on an `info` card naming the rule, audited, others still shown."""
    baseline = {r for r, _ind in outcome(_run(tp14()))}
    with pytest.MonkeyPatch.context() as mp:
        _break(mp, rule_id)
        result = _run(tp14())
    got = {r for r, _ind in outcome(result)}
    incomplete = _incomplete_cards([c.card for c in result.cards])
    assert len(incomplete) == 1, outcome(result)
    assert incomplete[0]["indicator"] == "info"
    _assert_names(incomplete[0], rule_id)
    assert baseline - {rule_id} <= got, (baseline, got)
    assert any(s.get("id") == rule_id for s in result.skipped), result.skipped   # the audit record
    assert not [s for s in result.skipped if s.get("resource_type") == "engine"]


@pytest.mark.parametrize("rule_id", ORDER_RULES)
def test_a_raising_order_rule_yields_the_incomplete_card(rule_id: str) -> None:
    """§8 C6 on order-select: TP10's critical R08 stays unless R08 itself failed; the failure is reported."""
    with pytest.MonkeyPatch.context() as mp:
        _break(mp, rule_id)
        result = _run(tp10())
    got = outcome(result)
    assert (INCOMPLETE, "info") in got
    _assert_names(_incomplete_cards([c.card for c in result.cards])[0], rule_id)
    if rule_id != "iv-calcium-order":
        assert ("iv-calcium-order", "critical") in got


def test_a_raising_rule_on_a_patient_without_cards_is_not_silently_empty() -> None:
    """§8 C6: TP06 has no cards; when a rule raises, the response is the incomplete card, not an empty list."""
    assert outcome(_run(tp06())) == []
    with pytest.MonkeyPatch.context() as mp:
        _break(mp, "caxp-high")
        assert outcome(_run(tp06())) == [(INCOMPLETE, "info")]


def test_two_raising_rules_are_named_on_one_incomplete_card() -> None:
    """§8 C6 / §2.9 one card per rule id: both failed rules are named on a single incomplete card."""
    with pytest.MonkeyPatch.context() as mp:
        _break(mp, "caxp-high", "calciphylaxis-risk")
        result = _run(tp14())
    incomplete = _incomplete_cards([c.card for c in result.cards])
    assert len(incomplete) == 1
    _assert_names(incomplete[0], "caxp-high")
    _assert_names(incomplete[0], "calciphylaxis-risk")


# --- property-based: junk records mixed into TP31 ----------------------------------------------------------


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(junk=st.lists(junk_observation(), min_size=1, max_size=6))
def test_junk_records_never_break_the_real_r01_card(junk: list[dict[str, Any]]) -> None:
    """§8 C6: implausible values, wrong types, future (> 24 h), pre-1900 and malformed dates are skipped and
    recorded, never fatal; TP31's real R01 card still fires."""
    case = tp31()
    result = run(case["patient"], case["resources"] + junk)
    assert ("caxp-high", "warning") in outcome(result)
    assert not [s for s in result.skipped if s.get("resource_type") in ("engine", "rule")], result.skipped
    recorded = {s.get("id") for s in result.skipped}
    assert {j["id"] for j in junk} <= recorded, (junk, result.skipped)
    for c in result.cards:   # issue 13 acceptance: the values set aside are named, never the same line twice
        lines = [line for line in c.card["detail"].splitlines() if line.strip()]
        assert len(lines) == len(set(lines)), c.card["detail"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(junk=st.lists(junk_observation(), max_size=4), broken=st.sampled_from(PATIENT_VIEW_RULES))
def test_junk_plus_a_raising_rule_still_answers_with_the_incomplete_card(junk: list[dict[str, Any]],
                                                                         broken: str) -> None:
    """§8 C6: with junk data and one raising rule there is always the incomplete card naming it, and R01 unless
    R01 itself raised."""
    case = tp31()
    with pytest.MonkeyPatch.context() as mp:
        _break(mp, broken)
        result = run(case["patient"], case["resources"] + junk)
    got = outcome(result)
    assert (INCOMPLETE, "info") in got
    _assert_names(_incomplete_cards([c.card for c in result.cards])[0], broken)
    if broken != "caxp-high":
        assert ("caxp-high", "warning") in got


# --- through the HTTP app ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def http_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Flask, Path]]:
    """The real app (dev mode, SQLite audit log in a temporary directory), shared by this module's HTTP tests."""
    data_dir = tmp_path_factory.mktemp("never-empty")
    app = make_app(data_dir)
    yield app, data_dir
    get_runtime(app).close()


def _prefetch(app: Flask, service_id: str, resources: list[dict[str, Any]]) -> dict[str, Any]:
    """Every advertised prefetch key, filled from ``resources`` by the resource type of its query."""
    services = app.test_client().get("/cds-services").get_json()["services"]
    templates_by_key = next(s for s in services if s["id"] == service_id)["prefetch"]
    by_type: dict[str, list[dict[str, Any]]] = {}
    for r in resources:
        by_type.setdefault(r["resourceType"], []).append(r)
    prefetch: dict[str, Any] = {}
    used: set[str] = set()
    for key, template in templates_by_key.items():
        rtype = template.split("?")[0].split("/")[0]
        if rtype == "Patient":
            prefetch[key] = by_type["Patient"][0]
            continue
        # All resources of a type go into the first key of that type (no duplicates across split keys).
        prefetch[key] = fb.searchset([] if rtype in used else by_type.get(rtype, []))
        used.add(rtype)
    return prefetch


def _tp31_http(pid: str) -> list[dict[str, Any]]:
    """TP31 dated relative to the real clock (the HTTP layer evaluates at the current time)."""
    return [
        fb.patient(pid, age_years=47),
        fb.lab(pid, f"{pid}-egfr", "33914-3", 95, "mL/min/{1.73_m2}", days_ago=1),
        fb.lab(pid, f"{pid}-ca", "17861-6", 10.4, "mg/dL", days_ago=1, specimen="s1"),
        fb.lab(pid, f"{pid}-p", "2777-1", 7.2, "mg/dL", days_ago=1, specimen="s1"),
        fb.lab(pid, f"{pid}-alb", "1751-7", 4.0, "g/dL", days_ago=1, specimen="s1"),
        fb.lab(pid, f"{pid}-future", "17861-6", 9.1, "mg/dL", days_ago=0)
        | {"effectiveDateTime": "9999-12-31T00:00:00Z"},
    ]


def _post(app: Flask, pid: str, resources: list[dict[str, Any]]) -> tuple[int, dict[str, Any], str]:
    service = "calcinosis-patient-view"
    body = fb.hook_request("patient-view", pid, prefetch=_prefetch(app, service, resources))
    response = app.test_client().post(f"/cds-services/{service}", json=body)
    return response.status_code, response.get_json(silent=True) or {}, body["hookInstance"]


def _codes(payload: dict[str, Any]) -> list[str]:
    return [c["source"]["topic"]["code"] for c in payload.get("cards", [])]


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_http_junk_records_never_5xx_and_r01_still_fires(http_app: tuple[Flask, Path], data: st.DataObject) -> None:
    """§8 C6 through HTTP: junk never gives a 5xx or an empty card list; TP31's R01 is returned."""
    app, _ = http_app
    pid = f"pt-{uuid.uuid4().hex[:10]}"
    now = datetime.now(UTC)
    junk = data.draw(st.lists(junk_observation(now=now, pid=pid), min_size=1, max_size=5))
    status, payload, _ = _post(app, pid, _tp31_http(pid) + junk)
    assert status == 200, payload
    assert "caxp-high" in _codes(payload)


def test_http_raising_rule_answers_with_incomplete_card_and_audits_the_rule(http_app: tuple[Flask, Path]) -> None:
    """§8 C6 through HTTP: a raising rule -> 200, the incomplete card plus the other cards, and the audit
    record of the call names the rule."""
    app, data_dir = http_app
    pid = f"pt-{uuid.uuid4().hex[:10]}"
    with pytest.MonkeyPatch.context() as mp:
        _break(mp, "hypercalcemia")
        service = "calcinosis-patient-view"
        body = fb.hook_request("patient-view", pid, prefetch=_prefetch(app, service, _tp31_http(pid)))
        response = app.test_client().post(f"/cds-services/{service}", json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    codes = _codes(response.get_json())
    assert INCOMPLETE in codes
    assert "caxp-high" in codes
    engine = create_engine(f"sqlite:///{data_dir / 'audit.sqlite3'}")
    try:
        with engine.connect() as connection:
            query = select(calls).where(calls.c.hook_instance == body["hookInstance"])
            row = connection.execute(query).mappings().one()
    finally:
        engine.dispose()
    assert "hypercalcemia" in json.dumps(row["skipped_resources"]), row["skipped_resources"]


def test_http_optional_data_unreadable_answers_with_incomplete_card(http_app: tuple[Flask, Path]) -> None:
    """§8 C6: when required data could not be read but the call is still answered (an optional prefetch key
    missing and no FHIR server to fetch it), the incomplete card appears next to the cards that fired."""
    app, _ = http_app
    pid = f"pt-{uuid.uuid4().hex[:10]}"
    service = "calcinosis-patient-view"
    prefetch = _prefetch(app, service, _tp31_http(pid))
    optional = next(k for k in prefetch if k.startswith("serviceRequests"))
    del prefetch[optional]
    response = app.test_client().post(f"/cds-services/{service}",
                                      json=fb.hook_request("patient-view", pid, prefetch=prefetch))
    assert response.status_code == 200, response.get_data(as_text=True)
    codes = _codes(response.get_json())
    assert "caxp-high" in codes
    assert INCOMPLETE in codes
