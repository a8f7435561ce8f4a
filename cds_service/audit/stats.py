"""``audit stats``: the alert-burden report per rule, suppressions per rule and reason, unmatched feedback.

Issue 15 item 7. A suppressed card (disposition ``suppressed``) is not shown; why it was not shown is read back
from the log:

- a card with ``repeat_of`` repeats an alert already shown inside its window (§8 C7: parenteral nutrition at
  most once per 24 h per patient);
- any other suppressed card was held back by an earlier override of the same rule for the same patient, from the
  same client and tenant (``client_iss``/``client_tenant``/``tenant_key``): the reason is that override's (its
  display, code or comment).
  The override taken is the latest one recorded before the suppressed call, one given by the same user first,
  then one with a reason (only those suppress, issue 15 item 4).

Feedback the service could not tie to a card of the calling client is counted as unmatched: the column
``feedback.match`` ('matched'/'unmatched', migration 0003) where the schema has it, else feedback for an unknown
card (``card_known`` false).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, func, select

from cds_service.audit.queries import AuditFilter, rule_stats
from cds_service.audit.records import as_utc
from cds_service.audit.schema import calls, cards, feedback
from cds_service.tenant import same_client

REPEAT_REASON = "repeat of an alert already shown in its window (§8 C7)"
NO_REASON = "override without a reason"
_IN_BATCH = 500  # card uuids per IN (...) list
OVERRIDE_NOT_FOUND = "override no longer in the log"


@dataclass(frozen=True)
class _Override:
    recorded_at: datetime
    user_id: str | None
    reason: str  # "" when none was given


def _override_reason(code: str | None, display: str | None, comment: str | None) -> str:
    for value in (display, code, comment):
        if value and value.strip():
            return value.strip()
    return ""


# The columns that say whose alert state a call belongs to: the client, and since migration 0003 the tenant key
# (client + FHIR server, issue 15 item 1; NULL in older rows on both sides of the comparison).
_SCOPE_COLUMNS = [calls.c[name] for name in ("client_iss", "client_tenant", "tenant_key") if name in calls.c]


def _overrides(connection: Any, rule_ids: set[str]) -> dict[tuple[Any, ...], list[_Override]]:
    """Overrides of ``rule_ids`` keyed by (rule, patient, *scope columns), oldest first."""
    query = (
        select(cards.c.rule_id, calls.c.patient_id, *_SCOPE_COLUMNS, calls.c.user_id,
               feedback.c.recorded_at, feedback.c.override_code, feedback.c.override_display,
               feedback.c.override_comment)
        .select_from(feedback.join(cards, cards.c.card_uuid == feedback.c.card_uuid)
                     .join(calls, calls.c.id == cards.c.call_id))
        .where(and_(feedback.c.outcome == "overridden", cards.c.rule_id.in_(sorted(rule_ids))))
        .order_by(feedback.c.recorded_at, feedback.c.id)
    )
    found: dict[tuple[Any, ...], list[_Override]] = defaultdict(list)
    for row in connection.execute(query).mappings():
        key = _scope_key(row)
        reason = _override_reason(row["override_code"], row["override_display"], row["override_comment"])
        found[key].append(_Override(as_utc(row["recorded_at"]), row["user_id"], reason))
    return found


def _scope_key(row: Any) -> tuple[Any, ...]:
    return (row["rule_id"], row["patient_id"], *(row[column.name] for column in _SCOPE_COLUMNS))


def _suppression_reason(candidates: list[_Override], received_at: datetime, user_id: str | None) -> str:
    before = [item for item in candidates if item.recorded_at <= received_at]
    if not before:
        return OVERRIDE_NOT_FOUND
    # Latest first; among them prefer the same user's, then one with a reason (sorted() is stable).
    ranked = sorted(reversed(before), key=lambda item: (item.user_id != user_id, not item.reason))
    return ranked[0].reason or NO_REASON


def suppressions(engine: Engine, since: datetime | None = None) -> dict[str, Counter[str]]:
    """Suppressed cards per rule, counted by reason (see the module docstring)."""
    query = (
        select(cards.c.rule_id, cards.c.repeat_of, calls.c.patient_id, *_SCOPE_COLUMNS, calls.c.user_id,
               calls.c.received_at)
        .select_from(cards.join(calls, calls.c.id == cards.c.call_id))
        .where(and_(cards.c.disposition == "suppressed", *AuditFilter(since=since).call_conditions()))
    )
    per_rule: dict[str, Counter[str]] = defaultdict(Counter)
    with engine.connect() as connection:
        rows = connection.execute(query).mappings().all()
        overrides = _overrides(connection, {row["rule_id"] for row in rows if not row["repeat_of"]})
    for row in rows:
        if row["repeat_of"]:
            reason = REPEAT_REASON
        else:
            reason = _suppression_reason(overrides.get(_scope_key(row), []), as_utc(row["received_at"]),
                                         row["user_id"])
        per_rule[row["rule_id"]][reason] += 1
    return per_rule


def feedback_counts(engine: Engine, since: datetime | None = None) -> dict[str, int]:
    """Feedback items stored (since ``since``, by the server's receipt time): total and unmatched.

    An item stored as unmatched whose card has since arrived from the same client (a card that waited in another
    instance's spool) is matched now, as the alert policy's join sees it (issue 15 item 2).
    """
    status = feedback.c.get("match")
    flagged = status == "unmatched" if status is not None else feedback.c.card_known.is_(False)
    conditions = [] if since is None else [feedback.c.recorded_at >= as_utc(since)]
    client = [feedback.c[name] for name in ("client_iss", "client_tenant") if name in feedback.c]
    with engine.connect() as connection:
        total = connection.execute(select(func.count()).select_from(feedback).where(and_(True, *conditions)))
        total_count = int(total.scalar_one())
        candidates = connection.execute(
            select(feedback.c.card_uuid, *client).where(and_(flagged, *conditions))).mappings().all()
        card_clients = _card_clients(connection, {row["card_uuid"] for row in candidates})
    unmatched = 0
    for row in candidates:
        card_client = card_clients.get(row["card_uuid"])
        if card_client is None or not same_client(row.get("client_iss"), row.get("client_tenant"), *card_client):
            unmatched += 1
    return {"total": total_count, "unmatched": unmatched}


def _card_clients(connection: Any, card_uuids: set[str]) -> dict[str, tuple[str | None, str | None]]:
    """(client iss, tenant claim) of the call that produced each of ``card_uuids`` that is stored."""
    found: dict[str, tuple[str | None, str | None]] = {}
    uuids = sorted(card_uuids)
    for start in range(0, len(uuids), _IN_BATCH):
        query = (select(cards.c.card_uuid, calls.c.client_iss, calls.c.client_tenant)
                 .select_from(cards.join(calls, calls.c.id == cards.c.call_id))
                 .where(cards.c.card_uuid.in_(uuids[start:start + _IN_BATCH])))
        for row in connection.execute(query):
            found[row.card_uuid] = (row.client_iss, row.client_tenant)
    return found


def stats_report(engine: Engine, since: datetime | None = None) -> dict[str, Any]:
    """The whole ``audit stats`` report (CLI ``--json`` and ``/admin/audit/stats``).

    ``rules``: the alert burden per rule (:func:`rule_stats`), each with ``suppressed_by_reason``;
    ``suppressions_by_reason``: the same over all rules; ``feedback``: total and unmatched items.
    """
    rules = rule_stats(engine, since)
    per_rule = suppressions(engine, since)
    overall: Counter[str] = Counter()
    for row in rules:
        reasons = per_rule.get(row["rule_id"], Counter())
        row["suppressed_by_reason"] = _reason_list(reasons)
        overall.update(reasons)
    return {
        "rules": rules,
        "suppressions_by_reason": _reason_list(overall),
        "feedback": feedback_counts(engine, since),
    }


def _reason_list(reasons: Counter[str]) -> list[dict[str, Any]]:
    return [{"reason": reason, "count": count}
            for reason, count in sorted(reasons.items(), key=lambda item: (-item[1], item[0]))]
