"""Issue 19 (scale): the dashboard's aggregates run in SQL on both backends and give the same numbers.

The latency percentiles are nearest-rank (PostgreSQL ``percentile_disc``; a ``row_number()`` pick on SQLite);
the expected values here are worked out by hand from known latencies, so a rank off by one on either backend
fails. The what-if thresholds are checked at their edges (strictly above / at or above).
"""

from __future__ import annotations

import random
from datetime import timedelta

from cds_service.audit import AuditLog
from cds_service.governance import queries
from cds_service.governance.period import Period
from cds_service.governance.values import FORMAT
from cds_service.governance.whatif import NEW, PARAMETERS, simulate
from tests.audit.factories import make_call, make_card
from tests.governance.seed import START

PERIOD = Period(START, START + timedelta(days=7))


def _write_latencies(audit: AuditLog, hook: str, latencies: list[float | None], durations: list[float]) -> None:
    order = list(range(len(latencies)))
    random.Random(5).shuffle(order)  # written out of order: the rank must come from the ORDER BY
    for index in order:
        audit.record_hook_call(make_call(f"pat-{index}", [], hook=hook, received_at=START + timedelta(hours=index),
                                         request_ms=latencies[index], duration_ms=durations[index],
                                         http_status=412 if index % 5 == 0 else 200,
                                         data_sources={"patient": "prefetch",
                                                       "labs": "fetched" if index % 4 == 0 else "prefetch"}))


def test_service_percentiles_are_nearest_rank_on_both_backends(audit: AuditLog) -> None:
    # patient-view: 20 calls with latencies 1..20 ms -> p50 = 10th value, p95 = 19th (ceil(20 x 0.95) = 19).
    _write_latencies(audit, "patient-view", [float(v) for v in range(1, 21)], [0.5] * 20)
    # order-select: 7 calls, two without request_ms (duration_ms then counts) -> ranks ceil(3.5) = 4, ceil(6.65) = 7.
    _write_latencies(audit, "order-select", [30.0, None, 10.0, 50.0, None, 20.0, 40.0],
                     [1.0, 35.0, 1.0, 1.0, 5.0, 1.0, 1.0])
    audit.record_hook_call(make_call("late", [], received_at=PERIOD.end, request_ms=999.0))  # outside the period
    rows = {row.service_id: row for row in queries.service_rows(audit.engine, PERIOD)}
    view, select_ = rows["calcinosis-patient-view"], rows["calcinosis-order-select"]
    assert (view.calls, view.p50_ms, view.p95_ms) == (20, 10.0, 19.0)
    # order-select ascending: 5, 10, 20, 30, 35, 40, 50
    assert (select_.calls, select_.p50_ms, select_.p95_ms) == (7, 30.0, 50.0)
    assert view.rate_412 == 20.0  # indexes 0, 5, 10, 15
    assert select_.rate_412 == round(100.0 * 2 / 7, 1)  # indexes 0, 5
    # 2 sources per call: "patient" always prefetched, "labs" fetched for indexes 0, 4, 8, 12, 16.
    assert (view.prefetch_share, view.fetched_share) == (round(100.0 * 35 / 40, 1), round(100.0 * 5 / 40, 1))
    assert (select_.prefetch_share, select_.fetched_share) == (round(100.0 * 12 / 14, 1), round(100.0 * 2 / 14, 1))


def test_what_if_thresholds_at_their_edges(audit: AuditLog) -> None:
    values = [  # (patient, recorded values, card of caxp-high?)
        ("p6", {"format": FORMAT - 1, "caxp": 90.0}, False),  # an earlier format (values.py FORMAT): not counted
        ("p1", {"format": FORMAT, "caxp": 70.0, "calcium": 10.2, "calcium_basis": "measured"}, False),
        ("p2", {"format": FORMAT, "caxp": 70.1, "calcium": 10.2, "calcium_basis": "ionized"}, True),
        ("p2", {"format": FORMAT, "caxp": 55.0, "calcium": 10.3, "calcium_basis": None}, False),
        ("p3", {"format": FORMAT, "caxp": None, "cofactors": 1, "warfarin": True, "r07_mineral": True}, False),
        ("p4", {"format": FORMAT, "cofactors": 2, "warfarin": False, "r07_mineral": False}, False),
        ("p5", {"format": FORMAT + 1, "caxp": 90.0}, False),  # a format the simulator does not know: not counted
    ]
    for index, (patient, recorded, fired) in enumerate(values):
        audit.record_hook_call(make_call(patient, [make_card("caxp-high")] if fired else [],
                                         received_at=START + timedelta(hours=index), governance_values=recorded))
    seed = simulate(audit.engine, PERIOD, PARAMETERS["caxp_seed"], 70.0)
    assert seed.calls_with_values == 5
    assert seed.values_since is not None
    # p1, an hour after p6: the first call of the current format
    assert seed.values_since.replace(tzinfo=None) == (START + timedelta(hours=1)).replace(tzinfo=None)
    assert (seed.actual.cards, seed.actual.patients, seed.actual.indicators) == (1, 1, {"warning": 1})
    assert (seed.at_candidate.cards, seed.at_candidate.indicators) == (1, {"warning": 1})  # 70.0 is not above
    lowered = simulate(audit.engine, PERIOD, PARAMETERS["caxp_seed"], 54.9)
    assert (lowered.at_candidate.cards, lowered.at_candidate.patients) == (3, 2)  # p2 twice
    assert lowered.at_candidate.indicators == {"warning": 1, NEW: 2}
    target = simulate(audit.engine, PERIOD, PARAMETERS["caxp_target"], 55.0)
    assert target.at_candidate.cards == 2  # 55.0 (at or above) and 70.0; 70.1 is above the seed threshold
    calcium = simulate(audit.engine, PERIOD, PARAMETERS["calcium"], 10.2)
    assert calcium.at_candidate.cards == 1  # 10.3 with no basis; ionized 10.2 never meets a total threshold
    cofactors = simulate(audit.engine, PERIOD, PARAMETERS["cofactors"], 3.0)
    assert cofactors.at_candidate.cards == 1  # p3: warfarin suffices; p4 has no mineral abnormality


def test_tenant_selector_lists_each_tenant_once(audit: AuditLog) -> None:
    assert queries.tenants(audit.engine) == []
    for index, tenant_key in enumerate(["b" * 64, "a" * 64, "b" * 64, None, "c" * 64, "a" * 64]):
        audit.record_hook_call(make_call(f"pat-{index}", [], tenant_key=tenant_key))
    assert queries.tenants(audit.engine) == ["a" * 64, "b" * 64, "c" * 64]
