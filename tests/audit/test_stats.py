"""`audit stats`: suppressions per rule and per reason, and unmatched feedback (issue 15 item 7)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from click.testing import CliRunner, Result

from cds_service.audit import AuditLog
from cds_service.audit.stats import NO_REASON, OVERRIDE_NOT_FOUND, REPEAT_REASON
from cds_service.cli import main
from tests.audit.conftest import Database
from tests.audit.factories import make_call, make_card, make_feedback

RULE_A = "caxp-high"
RULE_PN = "parenteral-nutrition"
CHAIN_KEY = "fedcba9876543210" * 4  # test-only chain key


def _cli(database: Database, *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env={
        "CDS_DATABASE_URL": database.url, "CDS_DATA_DIR": str(database.data_dir), "CDS_AUDIT_CHAIN_KEY": CHAIN_KEY})


def _later() -> datetime:
    """A receipt time after everything stored so far (suppressed calls follow the override that caused them)."""
    return datetime.now(UTC) + timedelta(seconds=1)


def test_suppressions_per_rule_and_reason_and_unmatched_feedback(database: Database, audit: AuditLog) -> None:
    with_reason, without_reason = make_card(RULE_A), make_card(RULE_A)
    audit.record_hook_call(make_call("pat-1", [with_reason]))
    audit.record_hook_call(make_call("pat-2", [without_reason]))
    audit.record_feedback([
        make_feedback(with_reason.card_uuid, code="not-relevant"),  # display "Not relevant for this patient"
        make_feedback(without_reason.card_uuid, code=None),  # a reason-less dismissal
        make_feedback("no-such-card-uuid"),  # feedback for a card this service never issued: unmatched
    ])
    pn_first = make_card(RULE_PN, order_key="parenteral-nutrition")
    audit.record_hook_call(make_call("pat-3", [pn_first]))
    later = _later()
    audit.record_hook_call(make_call("pat-1", [make_card(RULE_A, disposition="suppressed")], received_at=later))
    audit.record_hook_call(make_call("pat-1", [make_card(RULE_A, disposition="suppressed")], received_at=later))
    audit.record_hook_call(make_call("pat-2", [make_card(RULE_A, disposition="suppressed")], received_at=later))
    audit.record_hook_call(make_call("pat-4", [make_card(RULE_A, disposition="suppressed")], received_at=later))
    audit.record_hook_call(make_call("pat-3", [make_card(RULE_PN, disposition="suppressed",
                                                         order_key="parenteral-nutrition",
                                                         repeat_of=pn_first.card_uuid)], received_at=later))

    result = _cli(database, "audit", "stats", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    rules = {row["rule_id"]: row for row in report["rules"]}
    assert rules[RULE_A]["suppressed"] == 4
    assert rules[RULE_A]["suppressed_by_reason"] == [  # most frequent first, then by name
        {"reason": "Not relevant for this patient", "count": 2},
        {"reason": OVERRIDE_NOT_FOUND, "count": 1},  # pat-4: no override of it in the log
        {"reason": NO_REASON, "count": 1},
    ]
    assert rules[RULE_PN]["suppressed_by_reason"] == [{"reason": REPEAT_REASON, "count": 1}]
    assert {item["reason"]: item["count"] for item in report["suppressions_by_reason"]} == {
        "Not relevant for this patient": 2, NO_REASON: 1, OVERRIDE_NOT_FOUND: 1, REPEAT_REASON: 1}
    assert report["feedback"] == {"total": 3, "unmatched": 1}

    table = _cli(database, "audit", "stats")
    assert table.exit_code == 0, table.output
    assert "suppressed: Not relevant for this patient x2" in table.output
    assert f"suppressed: {REPEAT_REASON} x1" in table.output
    assert "feedback: 3 item(s), 1 unmatched" in table.output

    # --since counts only what was received since then.
    recent = json.loads(_cli(database, "audit", "stats", "--json", "--since", later.isoformat()).stdout)
    assert {row["rule_id"]: row["suppressed"] for row in recent["rules"]} == {RULE_A: 4, RULE_PN: 1}
    assert recent["feedback"]["total"] == 0


def test_an_override_from_another_client_is_not_taken_as_the_reason(database: Database, audit: AuditLog) -> None:
    """Suppression is per client (issue 15 item 1): another EHR's override of the same patient id is not the
    reason a card was suppressed for this one."""
    other = make_card(RULE_A)
    audit.record_hook_call(make_call("pat-1", [other], client_iss="https://other-ehr.example.org"))
    audit.record_feedback([make_feedback(other.card_uuid, code="not-relevant")])
    audit.record_hook_call(make_call("pat-1", [make_card(RULE_A, disposition="suppressed")], received_at=_later()))
    report = json.loads(_cli(database, "audit", "stats", "--json").stdout)
    rule = next(row for row in report["rules"] if row["rule_id"] == RULE_A)
    assert rule["suppressed_by_reason"] == [{"reason": OVERRIDE_NOT_FOUND, "count": 1}]


def test_unmatched_feedback_is_another_clients_or_an_unknown_card(database: Database, audit: AuditLog) -> None:
    """Issue 15 item 2: feedback counts as unmatched when no card of its own client has that uuid — counted as the
    alert policy sees it now, so a card that arrived after its feedback (spool replay) makes it matched."""
    own, late = make_card(RULE_A), make_card(RULE_A)
    audit.record_hook_call(make_call("pat-1", [own]))
    audit.record_feedback([
        make_feedback(own.card_uuid, code="not-relevant"),  # matched
        make_feedback(own.card_uuid, code="already-treated", client_iss="https://other-ehr.example.org"),
        make_feedback(late.card_uuid, code="not-relevant"),  # its card is not stored yet
    ])
    before = json.loads(_cli(database, "audit", "stats", "--json").stdout)["feedback"]
    assert before == {"total": 3, "unmatched": 2}
    audit.record_hook_call(make_call("pat-2", [late]))  # e.g. replayed from another instance's spool
    after = json.loads(_cli(database, "audit", "stats", "--json").stdout)["feedback"]
    assert after == {"total": 3, "unmatched": 1}
