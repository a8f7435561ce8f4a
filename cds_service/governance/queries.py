"""The dashboard's numbers (issue 19 item 1), each one SQL aggregate over one period and tenant.

A card counts as *accepted* when any feedback item accepted a suggestion, *overridden* when one overrode it and
none accepted, *no response* when shown without either. A suppressed card repeats an alert already shown in its
window (``repeat_of``, §8 C7) or was held back by an earlier override (issue 15 item 4).
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from hashlib import sha256
from typing import Any

from sqlalchemy import Engine, case, exists, func, literal, select

from cds_service.audit.schema import calls, cards, feedback
from cds_service.governance.period import Period

REPEAT = "repeat of an alert shown in its window"
EARLIER_OVERRIDE = "held back by an earlier override"


def hook_calls(engine: Engine, period: Period) -> int:
    """Hook calls in the period (every service and status)."""
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(calls).where(period.calls_where()))
                   .scalar_one())


@dataclass(frozen=True)
class RuleRow:
    """One rule's line of the dashboard."""

    rule_id: str
    shown: int
    patients: int
    per_100_calls: float
    accepted: int
    overridden: int
    no_response: int
    suppressed: int
    silent: int
    previous_shown: int

    @property
    def change(self) -> int:
        """Cards shown minus those of the previous period."""
        return self.shown - self.previous_shown


def _answered(outcome: str) -> Any:
    """Whether any feedback item on the card has ``outcome`` (an index probe on feedback.card_uuid per card, so a
    period's cards never wait for the whole feedback table to be grouped)."""
    return exists().where(feedback.c.card_uuid == cards.c.card_uuid, feedback.c.outcome == outcome)


def _count_columns() -> list[Any]:
    """The per-rule aggregates shared by the period table and the weekly trend."""
    shown = cards.c.disposition == "shown"
    accepted, overridden = _answered("accepted"), _answered("overridden")
    return [func.sum(case((shown, 1), else_=0)).label("shown"),
            func.count(func.distinct(case((shown, calls.c.patient_id)))).label("patients"),
            func.sum(case((shown & accepted, 1), else_=0)).label("accepted"),
            func.sum(case((shown & overridden & ~accepted, 1), else_=0)).label("overridden"),
            func.sum(case((cards.c.disposition == "suppressed", 1), else_=0)).label("suppressed"),
            func.sum(case((cards.c.disposition == "silent", 1), else_=0)).label("silent")]


_COUNT_KEYS = ("shown", "patients", "accepted", "overridden", "suppressed", "silent")


def _rule_counts(engine: Engine, period: Period) -> dict[str, dict[str, int]]:
    query = (select(cards.c.rule_id, *_count_columns())
             .select_from(cards.join(calls, cards.c.call_id == calls.c.id))
             .where(period.calls_where()).group_by(cards.c.rule_id))
    with engine.connect() as connection:
        return {row.rule_id: {key: int(row._mapping[key] or 0) for key in _COUNT_KEYS}
                for row in connection.execute(query)}


def rule_rows(engine: Engine, period: Period) -> list[RuleRow]:
    """Per rule: shown, patients, per 100 calls, accepted, overridden, no response, suppressed, silent, change."""
    now, before = _rule_counts(engine, period), _rule_counts(engine, period.previous())
    total = hook_calls(engine, period)
    rows = []
    for rule_id in sorted(set(now) | set(before)):
        c = now.get(rule_id, dict.fromkeys(("shown", "patients", "accepted", "overridden", "suppressed",
                                            "silent"), 0))
        rows.append(RuleRow(rule_id, c["shown"], c["patients"],
                            round(100.0 * c["shown"] / total, 1) if total else 0.0,
                            c["accepted"], c["overridden"], c["shown"] - c["accepted"] - c["overridden"],
                            c["suppressed"], c["silent"], before.get(rule_id, {}).get("shown", 0)))
    return rows


def override_reasons(engine: Engine, period: Period, rule_id: str | None = None) -> list[tuple[str, str, int]]:
    """(rule, reason, cards) of shown cards overridden in the period, most frequent first."""
    reason = func.coalesce(feedback.c.override_display, feedback.c.override_code, literal("(no reason)"))
    query = (select(cards.c.rule_id, reason.label("reason"), func.count(func.distinct(cards.c.card_uuid)).label("n"))
             .select_from(cards.join(calls, cards.c.call_id == calls.c.id)
                          .join(feedback, feedback.c.card_uuid == cards.c.card_uuid))
             .where(period.calls_where(), feedback.c.outcome == "overridden", cards.c.disposition == "shown")
             .group_by(cards.c.rule_id, reason))
    if rule_id is not None:
        query = query.where(cards.c.rule_id == rule_id)
    with engine.connect() as connection:
        rows = [(str(r.rule_id), str(r.reason), int(r.n)) for r in connection.execute(query)]
    return sorted(rows, key=lambda row: (-row[2], row[0], row[1]))


def suppressed_reasons(engine: Engine, period: Period) -> list[tuple[str, str, int]]:
    """(rule, reason, cards) of suppressed cards: a repeat (``repeat_of``) or an earlier override."""
    reason = case((cards.c.repeat_of.is_not(None), literal(REPEAT)), else_=literal(EARLIER_OVERRIDE))
    query = (select(cards.c.rule_id, reason.label("reason"), func.count().label("n"))
             .select_from(cards.join(calls, cards.c.call_id == calls.c.id))
             .where(period.calls_where(), cards.c.disposition == "suppressed").group_by(cards.c.rule_id, reason))
    with engine.connect() as connection:
        rows = [(str(r.rule_id), str(r.reason), int(r.n)) for r in connection.execute(query)]
    return sorted(rows, key=lambda row: (row[0], -row[2], row[1]))


def weekly_trend(engine: Engine, period: Period) -> dict[str, list[tuple[datetime, int, int, int]]]:
    """Per rule and week of the period: (week start, shown, accepted, overridden); one query for all weeks."""
    weeks = period.weeks()
    bucket = case(*[(calls.c.received_at < end, index) for index, (_, end) in enumerate(weeks)],
                  else_=len(weeks) - 1).label("week")
    query = (select(cards.c.rule_id, bucket, *_count_columns())
             .select_from(cards.join(calls, cards.c.call_id == calls.c.id))
             .where(period.calls_where()).group_by(cards.c.rule_id, bucket))
    counts: dict[tuple[str, int], tuple[int, int, int]] = {}
    with engine.connect() as connection:
        for row in connection.execute(query):
            counts[(str(row.rule_id), int(row.week))] = (int(row.shown or 0), int(row.accepted or 0),
                                                         int(row.overridden or 0))
    # A week without cards of the rule is a zero, not a gap.
    return {rule_id: [(start, *counts.get((rule_id, index), (0, 0, 0))) for index, (start, _) in enumerate(weeks)]
            for rule_id in sorted({key[0] for key in counts})}


@dataclass(frozen=True)
class ServiceRow:
    """One service's line: latency percentiles, 412 share, prefetch share of the data sources."""

    service_id: str
    calls: int
    p50_ms: float
    p95_ms: float
    rate_412: float
    prefetch_share: float
    fetched_share: float


def _percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, -(-len(sorted_values) * fraction // 1))  # ceil
    return float(sorted_values[int(rank) - 1])


def service_rows(engine: Engine, period: Period) -> list[ServiceRow]:
    """Per service: calls, p50/p95 of the whole request (request_ms, else duration_ms), 412 rate, data sources."""
    latency = func.coalesce(calls.c.request_ms, calls.c.duration_ms)
    query = (select(calls.c.service_id, latency.label("ms"), calls.c.http_status, calls.c.data_sources)
             .where(period.calls_where()))
    per: dict[str, dict[str, Any]] = {}
    with engine.connect() as connection:
        for row in connection.execute(query):
            entry = per.setdefault(row.service_id, {"ms": [], "412": 0, "prefetch": 0, "fetched": 0, "sources": 0})
            entry["ms"].append(float(row.ms))
            entry["412"] += row.http_status == 412
            for source in (row.data_sources or {}).values():
                entry["sources"] += 1
                entry["prefetch"] += source == "prefetch"
                entry["fetched"] += source == "fetched"
    rows = []
    for service_id, entry in sorted(per.items()):
        ms = sorted(entry["ms"])
        sources = entry["sources"] or 1
        rows.append(ServiceRow(service_id, len(ms), round(_percentile(ms, 0.5), 1), round(_percentile(ms, 0.95), 1),
                               round(100.0 * entry["412"] / len(ms), 1), round(100.0 * entry["prefetch"] / sources, 1),
                               round(100.0 * entry["fetched"] / sources, 1)))
    return rows


def pseudonym(key: bytes, patient_id: str | None) -> str:
    """A keyed, non-reversible pseudonym of a patient id (HMAC-SHA-256, 12 hex digits)."""
    if not patient_id:
        return ""
    return hmac.new(key, patient_id.encode("utf-8"), sha256).hexdigest()[:12]


def rule_cards(engine: Engine, period: Period, rule_id: str, key: bytes, *,
               limit: int = 500) -> list[dict[str, Any]]:
    """The cards of one rule in the period, newest first, patient ids pseudonymised with ``key``."""
    query = (select(calls.c.received_at, calls.c.patient_id, calls.c.service_id, cards.c.indicator,
                    cards.c.disposition, case((_answered("accepted"), 1), else_=0).label("acc"),
                    case((_answered("overridden"), 1), else_=0).label("ovr"))
             .select_from(cards.join(calls, cards.c.call_id == calls.c.id))
             .where(period.calls_where(), cards.c.rule_id == rule_id)
             .order_by(calls.c.received_at.desc()).limit(limit))
    with engine.connect() as connection:
        return [{"received_at": row.received_at.strftime("%Y-%m-%d %H:%M"),
                 "patient": pseudonym(key, row.patient_id), "service": row.service_id,
                 "indicator": row.indicator, "disposition": row.disposition,
                 "response": ("accepted" if row.acc == 1 else "overridden" if row.ovr == 1
                              else "no response" if row.disposition == "shown" else "")}
                for row in connection.execute(query)]
