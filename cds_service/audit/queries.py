"""Read-side queries over the audit log, shared by the CLI and the admin HTTP API (issue #4 item 4)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Select, and_, func, or_, select

from cds_service.audit.chain import canonical_time
from cds_service.audit.records import as_utc
from cds_service.audit.schema import calls, cards, feedback

_BATCH = 500
TOP_OVERRIDE_REASONS = 5


@dataclass(frozen=True)
class AuditFilter:
    """Which records a query covers; every field is optional. Times compare with the call's receipt time."""

    since: datetime | None = None
    until: datetime | None = None
    patient_id: str | None = None
    rule_id: str | None = None

    def call_conditions(self) -> list[Any]:
        """SQL conditions on the calls table."""
        conditions: list[Any] = []
        if self.since is not None:
            conditions.append(calls.c.received_at >= as_utc(self.since))
        if self.until is not None:
            conditions.append(calls.c.received_at < as_utc(self.until))
        if self.patient_id is not None:
            conditions.append(calls.c.patient_id == self.patient_id)
        return conditions


def _time(value: datetime | None) -> str | None:
    return None if value is None else canonical_time(value)


def _card_query(audit_filter: AuditFilter) -> Select[Any]:
    conditions = audit_filter.call_conditions()
    if audit_filter.rule_id is not None:
        conditions.append(cards.c.rule_id == audit_filter.rule_id)
    return (
        select(
            cards.c.id, cards.c.card_uuid, cards.c.rule_id, cards.c.rule_version, cards.c.indicator,
            cards.c.summary, cards.c.evidence, cards.c.suggestion_uuids, cards.c.disposition,
            cards.c.order_key, cards.c.repeat_of, cards.c.call_id,
            calls.c.hook_instance, calls.c.service_id, calls.c.hook, calls.c.patient_id, calls.c.user_id,
            calls.c.encounter_id, calls.c.client_iss, calls.c.client_tenant, calls.c.received_at,
            calls.c.http_status, calls.c.error, calls.c.data_sources,
        )
        .select_from(cards.join(calls, calls.c.id == cards.c.call_id))
        .where(and_(True, *conditions))
        .order_by(calls.c.received_at, cards.c.id)
    )


def _feedback_for(engine: Engine, card_uuids: list[str]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if not card_uuids:
        return found
    with engine.connect() as connection:
        rows = connection.execute(
            select(feedback).where(feedback.c.card_uuid.in_(card_uuids)).order_by(feedback.c.id)
        ).mappings()
        for row in rows:
            reason = None
            if row["override_code"] is not None or row["override_display"] is not None:
                reason = {"code": row["override_code"], "system": row["override_system"],
                          "display": row["override_display"]}
            found[row["card_uuid"]].append({
                "outcome": row["outcome"],
                "outcome_timestamp": _time(row["outcome_timestamp"]),
                "accepted_suggestions": row["accepted_suggestions"],
                "override_reason": reason,
                "override_comment": row["override_comment"],
                "recorded_at": _time(row["recorded_at"]),
            })
    return found


def iter_cards(engine: Engine, audit_filter: AuditFilter, *, limit: int | None = None,
               offset: int = 0) -> Iterator[dict[str, Any]]:
    """One dict per card (with its hook call's fields and its feedback), oldest first."""
    query = _card_query(audit_filter).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    with engine.connect() as connection:
        rows = [dict(row) for row in connection.execute(query).mappings()]
    for start in range(0, len(rows), _BATCH):
        batch = rows[start:start + _BATCH]
        outcomes = _feedback_for(engine, [row["card_uuid"] for row in batch])
        for row in batch:
            yield {
                "audit_id": row["id"],
                "card_uuid": row["card_uuid"],
                "hook_instance": row["hook_instance"],
                "service_id": row["service_id"],
                "hook": row["hook"],
                "rule_id": row["rule_id"],
                "rule_version": row["rule_version"],
                "indicator": row["indicator"],
                "summary": row["summary"],
                "disposition": row["disposition"],
                "repeat_of": row["repeat_of"],
                "order_key": row["order_key"],
                "patient_id": row["patient_id"],
                "user_id": row["user_id"],
                "encounter_id": row["encounter_id"],
                "client_iss": row["client_iss"],
                "client_tenant": row["client_tenant"],
                "issued_at": _time(row["received_at"]),
                "http_status": row["http_status"],
                "call_id": row["call_id"],
                "data_sources": row["data_sources"],
                "evidence": row["evidence"],
                "suggestion_uuids": row["suggestion_uuids"],
                "feedback": outcomes.get(row["card_uuid"], []),
            }


def list_calls(engine: Engine, audit_filter: AuditFilter, *, limit: int = 100,
               offset: int = 0) -> list[dict[str, Any]]:
    """Hook calls, newest first, with how many cards each produced (the rule filter selects calls with
    a card of that rule)."""
    card_count = (
        select(func.count()).select_from(cards).where(cards.c.call_id == calls.c.id).scalar_subquery()
    )
    conditions = audit_filter.call_conditions()
    if audit_filter.rule_id is not None:
        with_rule = select(cards.c.call_id).where(cards.c.rule_id == audit_filter.rule_id)
        conditions.append(calls.c.id.in_(with_rule))
    query = (
        select(calls, card_count.label("card_count"))
        .where(and_(True, *conditions))
        .order_by(calls.c.received_at.desc(), calls.c.id.desc())
        .limit(limit)
        .offset(offset)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).mappings().all()
    result = []
    for row in rows:
        item = {key: value for key, value in row.items() if key not in ("record_hash",)}
        item["received_at"] = _time(row["received_at"])
        item["recorded_at"] = _time(row["recorded_at"])
        result.append(item)
    return result


# The columns of one exported call: every column of ``calls`` but its hash (columns added by later migrations
# are exported without a code change here).
CALL_EXPORT_COLUMNS = tuple(column.name for column in calls.columns if column.name != "record_hash")
_CALL_TIME_COLUMNS = ("received_at", "recorded_at")


def _calls_page(audit_filter: AuditFilter, after: tuple[datetime, int] | None, size: int) -> Select[Any]:
    """Up to ``size`` calls in (received_at, id) order, starting after ``after`` (keyset paging)."""
    conditions = audit_filter.call_conditions()
    if audit_filter.rule_id is not None:
        conditions.append(calls.c.id.in_(select(cards.c.call_id).where(cards.c.rule_id == audit_filter.rule_id)))
    if after is not None:
        received_at, call_id = after
        conditions.append(or_(calls.c.received_at > received_at,
                              and_(calls.c.received_at == received_at, calls.c.id > call_id)))
    columns = [calls.c[name] for name in CALL_EXPORT_COLUMNS]
    return (select(*columns).where(and_(True, *conditions))
            .order_by(calls.c.received_at, calls.c.id).limit(size))


def _cards_of(connection: Any, call_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    found: dict[int, list[dict[str, Any]]] = defaultdict(list)
    if not call_ids:
        return found
    query = (select(cards.c.call_id, cards.c.card_uuid, cards.c.rule_id, cards.c.rule_version, cards.c.indicator,
                    cards.c.disposition, cards.c.repeat_of, cards.c.order_key)
             .where(cards.c.call_id.in_(call_ids)).order_by(cards.c.id))
    for row in connection.execute(query).mappings():
        item = dict(row)
        found[int(item.pop("call_id"))].append(item)
    return found


def iter_calls(engine: Engine, audit_filter: AuditFilter, *, batch: int = _BATCH) -> Iterator[dict[str, Any]]:
    """Every hook call matching ``audit_filter``, oldest first, whatever its outcome (issue 15 item 7).

    That includes calls with no card, 4xx/412 answers and engine failures, each with its data sources, skipped
    resources, ``duration_ms`` (evaluation) and ``request_ms`` (whole request), and a short list of its cards.
    Read in pages of ``batch`` calls, so the export's memory does not grow with the log. The rule filter
    selects the calls that produced a card of that rule.
    """
    after: tuple[datetime, int] | None = None
    while True:
        with engine.connect() as connection:
            rows = [dict(row) for row in connection.execute(_calls_page(audit_filter, after, batch)).mappings()]
            card_lists = _cards_of(connection, [int(row["id"]) for row in rows])
        for row in rows:
            call_id = int(row["id"])
            item: dict[str, Any] = {"audit_id": call_id}
            for name in CALL_EXPORT_COLUMNS:
                if name != "id":
                    item[name] = _time(row[name]) if name in _CALL_TIME_COLUMNS else row[name]
            item["cards"] = card_lists.get(call_id, [])
            yield item
        if len(rows) < batch:
            return
        after = (rows[-1]["received_at"], int(rows[-1]["id"]))


def rule_stats(engine: Engine, since: datetime | None = None) -> list[dict[str, Any]]:
    """The alert-burden report per rule.

    ``cards_issued`` counts each alert once: a repeat of the same order alert (``repeat_of``) is counted under
    ``repeats`` and its feedback goes to the original; silent (rule on trial) and suppressed cards are counted
    separately. ``accepted``/``overridden``/``no_response`` count issued alerts by the feedback they got.
    """
    audit_filter = AuditFilter(since=since)
    query = (
        select(cards.c.card_uuid, cards.c.rule_id, cards.c.disposition, cards.c.repeat_of, calls.c.patient_id)
        .select_from(cards.join(calls, calls.c.id == cards.c.call_id))
        .where(and_(True, *audit_filter.call_conditions()))
    )
    per_rule: dict[str, dict[str, Any]] = {}
    root_of: dict[str, str] = {}
    with engine.connect() as connection:
        for row in connection.execute(query):
            stats = per_rule.setdefault(row.rule_id, {
                "rule_id": row.rule_id, "cards_issued": 0, "patients": set(), "repeats": 0, "silent": 0,
                "suppressed": 0, "groups": {},
            })
            if row.disposition == "silent":
                stats["silent"] += 1
            elif row.disposition == "suppressed":
                stats["suppressed"] += 1
            elif row.repeat_of:
                stats["repeats"] += 1
                root_of[row.card_uuid] = row.repeat_of
            else:
                stats["cards_issued"] += 1
                stats["patients"].add(row.patient_id)
                stats["groups"][row.card_uuid] = set()
                root_of[row.card_uuid] = row.card_uuid
        reasons: dict[str, Counter[tuple[Any, ...]]] = defaultdict(Counter)
        feedback_query = select(feedback.c.card_uuid, feedback.c.outcome, feedback.c.override_code,
                                feedback.c.override_system, feedback.c.override_display)
        for row in connection.execute(feedback_query):
            root = root_of.get(row.card_uuid)
            if root is None:
                continue
            for stats in per_rule.values():
                if root in stats["groups"]:
                    stats["groups"][root].add(row.outcome)
                    if row.outcome == "overridden":
                        reasons[stats["rule_id"]][(row.override_code, row.override_system,
                                                   row.override_display)] += 1
                    break
    report = []
    for rule_id in sorted(per_rule):
        stats = per_rule[rule_id]
        groups: dict[str, set[str]] = stats["groups"]
        report.append({
            "rule_id": rule_id,
            "cards_issued": stats["cards_issued"],
            "distinct_patients": len(stats["patients"]),
            "accepted": sum(1 for outcomes in groups.values() if "accepted" in outcomes),
            "overridden": sum(1 for outcomes in groups.values() if "overridden" in outcomes),
            "no_response": sum(1 for outcomes in groups.values() if not outcomes),
            "top_override_reasons": [
                {"code": code, "system": system, "display": display, "count": count}
                for (code, system, display), count in reasons[rule_id].most_common(TOP_OVERRIDE_REASONS)
            ],
            "repeats": stats["repeats"],
            "silent": stats["silent"],
            "suppressed": stats["suppressed"],
        })
    return report


def parse_timestamp(raw: str) -> datetime:
    """Parse an ISO 8601 date or date-time (``2025-01-31``, ``2025-01-31T08:00:00Z``); naive means UTC.

    Raises ValueError with a message a person can act on.
    """
    text = raw.strip()
    try:
        parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        raise ValueError(f"{raw!r} is not an ISO 8601 date or date-time, e.g. 2025-01-31 or "
                         "2025-01-31T08:00:00Z") from None
    return as_utc(parsed)
