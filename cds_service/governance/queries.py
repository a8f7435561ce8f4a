"""The dashboard's numbers (issue 19 item 1), each one SQL aggregate over one period and tenant.

A card counts as *accepted* when any feedback item accepted a suggestion, *overridden* when one overrode it and
none accepted, *no response* when shown without either. A suppressed card repeats an alert already shown in its
window (``repeat_of``, §8 C7) or was held back by an earlier override (issue 15 item 4).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from hashlib import sha256
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Integer,
    case,
    cast,
    exists,
    false,
    func,
    literal,
    select,
    true,
)

from cds_service.audit.schema import calls, cards, feedback
from cds_service.governance.period import Period

REPEAT = "repeat of an alert shown in its window"
EARLIER_OVERRIDE = "held back by an earlier override"


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A connection for one dashboard read; on PostgreSQL with JIT compilation off for its transaction.

    PostgreSQL JIT-compiles every plan whose estimated cost passes ``jit_above_cost``. For these one-off
    aggregates the compilation is pure loss: EXPLAIN ANALYZE of the per-rule counts at 1 million calls showed
    3.3 s of JIT (inlining, optimisation, emission) on a query that runs in 1.7 s without it (issue 19, scale).
    ``SET LOCAL`` ends with the transaction, so the pooled connection goes back unchanged.
    """
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("SET LOCAL jit = off")
        yield connection


def hook_calls(engine: Engine, period: Period) -> int:
    """Hook calls in the period (every service and status)."""
    with reading(engine) as connection:
        return int(connection.execute(select(func.count()).select_from(calls).where(period.calls_where()))
                   .scalar_one())


def tenants(engine: Engine) -> list[str]:
    """The tenant keys in the log (at most 200), for the tenant selector.

    A skip scan written as a recursive query: each step asks ix_calls_tenant_key_received_at for the next key
    above the last one, so the cost grows with the number of tenants, not of calls (a GROUP BY read the whole
    index: 0.3-0.6 s at 1 million calls, BENCHMARKS.md).
    """
    first = select(func.min(calls.c.tenant_key).label("key")).cte("tenant_keys", recursive=True)
    following = select(func.min(calls.c.tenant_key)).where(calls.c.tenant_key > first.c.key).scalar_subquery()
    keys = first.union_all(select(following).where(first.c.key.is_not(None)))
    with reading(engine) as connection:
        rows = connection.execute(select(keys.c.key).where(keys.c.key.is_not(None)).limit(200))
        return sorted(str(row.key) for row in rows)


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
    """Whether any feedback item on the card has ``outcome`` (an index probe on feedback.card_uuid per card; the
    drill-down's few hundred cards only)."""
    return exists().where(feedback.c.card_uuid == cards.c.card_uuid, feedback.c.outcome == outcome)


def card_slice(connection: Connection, period: Period) -> tuple[int, ColumnElement[bool]]:
    """The period's call count and a condition keeping the cards of its calls' id range.

    A call's id is its chain sequence number, so a period's calls hold a narrow id range (a spool replay written
    late widens it: still exact, only slower). ``cards.call_id BETWEEN`` that range is implied by every join on
    the period's calls, but stated it lets PostgreSQL read just that slice of the card index instead of every
    card of the log (a sequential scan of all 811,477 cards at 1 million calls; EXPLAIN, issue 19 scale). The
    count keeps min() and max() from being planned as two walks of the primary key from either end.
    """
    total, low, high = connection.execute(select(func.count(), func.min(calls.c.id), func.max(calls.c.id))
                                          .where(period.calls_where())).one()
    return int(total), (cards.c.call_id.between(low, high) if total else false())


def _period_cards(period: Period, in_slice: ColumnElement[bool], *columns: Any) -> Any:
    """One row per card of the period's calls: rule, disposition, the call's patient, ``columns`` and ``response``.

    ``response`` is 2 when any feedback item accepted the card, 1 when one overrode it and none accepted, else 0
    or NULL. One outer join and one group per card: the feedback index is probed once per card (it was probed up
    to three times, once per EXISTS), and the card index (call_id, rule_id, disposition, card_uuid) of migration
    0007 answers the card side without reading the card rows.
    """
    response = func.max(case((feedback.c.outcome == "accepted", 2), (feedback.c.outcome == "overridden", 1),
                             else_=0))
    return (select(cards.c.rule_id, cards.c.disposition, calls.c.patient_id, *columns, response.label("response"))
            .select_from(calls.join(cards, cards.c.call_id == calls.c.id)
                         .outerjoin(feedback, feedback.c.card_uuid == cards.c.card_uuid))
            .where(period.calls_where(), in_slice)
            .group_by(cards.c.card_uuid, cards.c.rule_id, cards.c.disposition, calls.c.patient_id, *columns)
            .subquery())


def _response_counts(card_rows: Any) -> list[Any]:
    """Shown, accepted and overridden cards of ``card_rows`` (a :func:`_period_cards` subquery)."""
    shown = card_rows.c.disposition == "shown"
    return [func.sum(case((shown, 1), else_=0)).label("shown"),
            func.sum(case((shown & (card_rows.c.response == 2), 1), else_=0)).label("accepted"),
            func.sum(case((shown & (card_rows.c.response == 1), 1), else_=0)).label("overridden")]


_COUNT_KEYS = ("shown", "patients", "accepted", "overridden", "suppressed", "silent")


def _rule_counts(connection: Connection, period: Period) -> tuple[int, dict[str, dict[str, int]]]:
    """The period's hook calls, and per rule the counts of the dashboard's table."""
    total, in_slice = card_slice(connection, period)
    card_rows = _period_cards(period, in_slice)
    shown = card_rows.c.disposition == "shown"
    query = (select(card_rows.c.rule_id, *_response_counts(card_rows),
                    func.count(func.distinct(case((shown, card_rows.c.patient_id)))).label("patients"),
                    func.sum(case((card_rows.c.disposition == "suppressed", 1), else_=0)).label("suppressed"),
                    func.sum(case((card_rows.c.disposition == "silent", 1), else_=0)).label("silent"))
             .group_by(card_rows.c.rule_id))
    return total, {row.rule_id: {key: int(row._mapping[key] or 0) for key in _COUNT_KEYS}
                   for row in connection.execute(query)}


def _shown_counts(connection: Connection, period: Period) -> dict[str, int]:
    """Cards shown per rule, for every rule with a card in the period (no feedback needed: the baseline)."""
    query = (select(cards.c.rule_id, func.sum(case((cards.c.disposition == "shown", 1), else_=0)).label("shown"))
             .select_from(calls.join(cards, cards.c.call_id == calls.c.id))
             .where(period.calls_where(), card_slice(connection, period)[1]).group_by(cards.c.rule_id))
    return {str(row.rule_id): int(row.shown or 0) for row in connection.execute(query)}


def rule_rows(engine: Engine, period: Period) -> list[RuleRow]:
    """Per rule: shown, patients, per 100 calls, accepted, overridden, no response, suppressed, silent, change."""
    with reading(engine) as connection:
        (total, now), before = _rule_counts(connection, period), _shown_counts(connection, period.previous())
    rows = []
    for rule_id in sorted(set(now) | set(before)):
        c = now.get(rule_id, dict.fromkeys(_COUNT_KEYS, 0))
        rows.append(RuleRow(rule_id, c["shown"], c["patients"],
                            round(100.0 * c["shown"] / total, 1) if total else 0.0,
                            c["accepted"], c["overridden"], c["shown"] - c["accepted"] - c["overridden"],
                            c["suppressed"], c["silent"], before.get(rule_id, 0)))
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
    with reading(engine) as connection:
        query = query.where(card_slice(connection, period)[1])
        rows = [(str(r.rule_id), str(r.reason), int(r.n)) for r in connection.execute(query)]
    return sorted(rows, key=lambda row: (-row[2], row[0], row[1]))


def suppressed_reasons(engine: Engine, period: Period) -> list[tuple[str, str, int]]:
    """(rule, reason, cards) of suppressed cards: a repeat (``repeat_of``) or an earlier override."""
    reason = case((cards.c.repeat_of.is_not(None), literal(REPEAT)), else_=literal(EARLIER_OVERRIDE))
    query = (select(cards.c.rule_id, reason.label("reason"), func.count().label("n"))
             .select_from(cards.join(calls, cards.c.call_id == calls.c.id))
             .where(period.calls_where(), cards.c.disposition == "suppressed").group_by(cards.c.rule_id, reason))
    with reading(engine) as connection:
        query = query.where(card_slice(connection, period)[1])
        rows = [(str(r.rule_id), str(r.reason), int(r.n)) for r in connection.execute(query)]
    return sorted(rows, key=lambda row: (row[0], -row[2], row[1]))


def weekly_trend(engine: Engine, period: Period) -> dict[str, list[tuple[datetime, int, int, int]]]:
    """Per rule and week of the period: (week start, shown, accepted, overridden); one query for all weeks."""
    weeks = period.weeks()
    counts: dict[tuple[str, int], tuple[int, int, int]] = {}
    with reading(engine) as connection:
        card_rows = _period_cards(period, card_slice(connection, period)[1], calls.c.received_at)
        bucket = case(*[(card_rows.c.received_at < end, index) for index, (_, end) in enumerate(weeks)],
                      else_=len(weeks) - 1).label("week")
        query = (select(card_rows.c.rule_id, bucket, *_response_counts(card_rows))
                 .group_by(card_rows.c.rule_id, bucket))
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


def _latency_percentiles(period: Period, postgres: bool) -> Any:
    """Per service: calls, nearest-rank p50 and p95 of the whole request (request_ms, else duration_ms), 412s.

    Nearest rank: the value at position ceil(n x fraction) of the ascending list, which is PostgreSQL's
    ``percentile_disc``. SQLite has no ordered-set aggregates, so there the same position is picked with
    ``row_number()`` (ceil written with CAST, which truncates: SQLite's math functions are optional) - the
    double-precision product n x fraction is the one percentile_disc rounds up, so both pick the same row.
    """
    latency = func.coalesce(calls.c.request_ms, calls.c.duration_ms)
    is_412 = func.sum(case((calls.c.http_status == 412, 1), else_=0)).label("n412")
    if postgres:
        return (select(calls.c.service_id, func.count().label("n"),
                       func.percentile_disc(0.5).within_group(latency).label("p50"),
                       func.percentile_disc(0.95).within_group(latency).label("p95"), is_412)
                .where(period.calls_where()).group_by(calls.c.service_id))
    ranked = (select(calls.c.service_id, latency.label("ms"), calls.c.http_status,
                     func.row_number().over(partition_by=calls.c.service_id, order_by=latency).label("position"),
                     func.count().over(partition_by=calls.c.service_id).label("n"))
              .where(period.calls_where()).subquery())

    def at(fraction: float) -> Any:
        product = ranked.c.n * literal(fraction)
        rank = cast(product, Integer) + case((product > cast(product, Integer), 1), else_=0)
        return func.max(case((ranked.c.position == rank, ranked.c.ms)))

    return (select(ranked.c.service_id, func.count().label("n"), at(0.5).label("p50"), at(0.95).label("p95"),
                   func.sum(case((ranked.c.http_status == 412, 1), else_=0)).label("n412"))
            .group_by(ranked.c.service_id))


def _source_counts(period: Period, postgres: bool) -> Any:
    """Per service: data sources recorded (prefetch keys of all calls), how many prefetched, how many fetched."""
    # One row per key of calls.data_sources (a JSON object of strings, records.HookCallRecord).
    each = (func.json_each_text if postgres else func.json_each)(calls.c.data_sources).table_valued("value")
    return (select(calls.c.service_id, func.count().label("sources"),
                   func.sum(case((each.c.value == "prefetch", 1), else_=0)).label("prefetch"),
                   func.sum(case((each.c.value == "fetched", 1), else_=0)).label("fetched"))
            .select_from(calls.join(each, true())).where(period.calls_where()).group_by(calls.c.service_id))


def service_rows(engine: Engine, period: Period) -> list[ServiceRow]:
    """Per service: calls, p50/p95 of the whole request (request_ms, else duration_ms), 412 rate, data sources."""
    with reading(engine) as connection:
        postgres = connection.dialect.name == "postgresql"
        latency = connection.execute(_latency_percentiles(period, postgres)).all()
        sources = {str(row.service_id): row for row in connection.execute(_source_counts(period, postgres))}
    rows = []
    for row in sorted(latency, key=lambda r: str(r.service_id)):
        source = sources.get(str(row.service_id))
        total = int(source.sources) if source is not None else 0
        prefetch, fetched = (int(source.prefetch), int(source.fetched)) if source is not None else (0, 0)
        n = int(row.n)
        rows.append(ServiceRow(str(row.service_id), n, round(float(row.p50), 1), round(float(row.p95), 1),
                               round(100.0 * int(row.n412) / n, 1), round(100.0 * prefetch / (total or 1), 1),
                               round(100.0 * fetched / (total or 1), 1)))
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
    with reading(engine) as connection:
        return [{"received_at": row.received_at.strftime("%Y-%m-%d %H:%M"),
                 "patient": pseudonym(key, row.patient_id), "service": row.service_id,
                 "indicator": row.indicator, "disposition": row.disposition,
                 "response": ("accepted" if row.acc == 1 else "overridden" if row.ovr == 1
                              else "no response" if row.disposition == "shown" else "")}
                for row in connection.execute(query)]
