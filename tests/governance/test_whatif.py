"""Issue 19 item 2: the what-if counts equal a direct recount from the stored values and cards."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import text

from cds_service.audit import AuditLog
from cds_service.governance.period import Period
from cds_service.governance.whatif import NEW, PARAMETERS, simulate
from tests.audit.conftest import Database
from tests.audit.factories import engine_for
from tests.governance.seed import END, START, seed_history


def _recount(database: Database, rule_id: str, key: str, above: float) -> tuple[int, int, dict[str, int]]:
    """Calls in [START, END) whose stored ``key`` is above ``above``, their patients, and the indicator of the
    rule's card in each (or "new"): plain SQL and a loop, independent of the simulator."""
    with engine_for(database.url).connect() as connection:
        rows = connection.execute(text(
            "SELECT id, patient_id, governance_values FROM calls WHERE received_at >= :s AND received_at < :e"),
            {"s": START if database.backend == "postgres" else START.replace(tzinfo=None).isoformat(" "),
             "e": END if database.backend == "postgres" else END.replace(tzinfo=None).isoformat(" ")}).all()
        card_rows = connection.execute(text("SELECT call_id, indicator FROM cards WHERE rule_id = :r"),
                                       {"r": rule_id}).all()
    indicator = {call_id: ind for call_id, ind in card_rows}
    count, patients, indicators = 0, set(), {}
    for call_id, patient, raw in rows:
        if raw is None:
            continue
        values: dict[str, Any] = json.loads(raw) if isinstance(raw, str) else raw
        if values.get(key) is not None and values[key] > above:
            count += 1
            patients.add(patient)
            name = indicator.get(call_id, NEW)
            indicators[name] = indicators.get(name, 0) + 1
    return count, len(patients), indicators


@pytest.mark.parametrize("candidate", [65.0, 70.0, 75.0])
def test_caxp_what_if_equals_a_direct_recount(database: Database, audit: AuditLog, candidate: float) -> None:
    seed_history(audit)
    result = simulate(audit.engine, Period(START, END), PARAMETERS["caxp_seed"], candidate)
    cards, patients, indicators = _recount(database, "caxp-high", "caxp", candidate)
    assert result.at_candidate.cards == cards
    assert result.at_candidate.patients == patients
    assert result.at_candidate.indicators == indicators
    assert result.values_since is not None
    assert result.values_since < START  # the previous-period calls recorded values too


def test_actual_numbers_and_current_threshold_agree_with_the_cards(database: Database, audit: AuditLog) -> None:
    written = seed_history(audit)
    result = simulate(audit.engine, Period(START, END), PARAMETERS["caxp_seed"], 70.0)
    in_period = [w for w in written if START <= w["call"].received_at < END]
    fired = [w for w in in_period for c in w["cards"] if c.rule_id == "caxp-high"]
    assert result.actual.cards == len(fired)
    assert result.actual.patients == len({w["call"].patient_id for w in fired})
    assert result.calls_with_values == len(in_period)
    # The seed fires caxp-high exactly when Ca x P > 70: the model at today's threshold matches the rule.
    assert result.at_current.cards == result.actual.cards
    assert NEW not in result.at_current.indicators
    lowered = simulate(audit.engine, Period(START, END), PARAMETERS["caxp_seed"], 60.0)
    assert lowered.at_candidate.cards > result.actual.cards
    assert lowered.at_candidate.indicators[NEW] == lowered.at_candidate.cards - result.actual.cards


def test_tenant_filter_and_empty_period(audit: AuditLog) -> None:
    seed_history(audit)
    other = simulate(audit.engine, Period(START, END, tenant_key="another-tenant"), PARAMETERS["caxp_seed"], 70.0)
    assert other.calls_with_values == 0
    assert other.values_since is None
    assert other.at_candidate.cards == 0
