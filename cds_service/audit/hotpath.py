"""The two audit operations of every hook call, on the DB-API connection with SQL prepared once (issue #7).

Per call the service reads the alert history (suppression, order dedup) and appends the call and its cards to
the chain. Through SQLAlchemy Core every statement was built, cache-keyed and given an execution context per
call, which was most of the audit's 2.6 ms of CPU per typical call (8 M instructions; BENCHMARKS.md). Here the
SQL text and the per-column conversions are derived once from the same ``Table`` objects and run on the pooled
DB-API connection. Everything else (feedback, export, purge, queries, migrations) stays on SQLAlchemy Core.

The rows are linked by the chain's one writer (:class:`cds_service.audit.writer.ChainLinks`, keyed HMAC,
issue 15 item 6) and stored with its prepared inserts, so they read back exactly as Core would store them
(tests/audit/test_hotpath.py). Only the batching (group commit, one pipelined statement on PostgreSQL) is here.

Driver errors leave here as SQLAlchemy's wrapped classes (``OperationalError``, ``IntegrityError``, ...) without
statement parameters, so the callers' transient/permanent classification is unchanged. There is no
``pool_pre_ping`` any more (one round trip per checkout): a pooled connection that turns out to be dead (the
database restarted) is invalidated and the operation is retried once on a fresh connection.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, TypeVar

from sqlalchemy import Engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from cds_service.audit.chain import CHAIN_LOCK_KEY
from cds_service.audit.db import flush_sqlite_wal, is_postgres, sqlite_wal_path, sqlite_writer_lock
from cds_service.audit.keys import ChainKey
from cds_service.audit.overrides import OVERRIDE_COLUMNS, OverrideSeen, override_from_row
from cds_service.audit.schema import client_jti
from cds_service.audit.writer import ChainLinks, statements

# How often a pooled connection has been checked out (by any code path) since it was opened: on the first
# checkout it was just opened, so its failure is a real one; after that it may be stale.
_CHECKOUTS = "cds_checkouts"
# Rows written in the single PostgreSQL statement of a batch; beyond this (far more than any rule set and group
# commit give) they go in executemany calls of their own.
_MAX_CALLS_PER_STATEMENT = 16
_MAX_CARDS_PER_STATEMENT = 100
_T = TypeVar("_T")


@dataclass(frozen=True)
class CallRows:
    """One hook call for the chain: its ``calls`` column values and its cards' (JSON values ``json_safe``).

    ``id``, ``call_id``, ``recorded_at`` and ``record_hash`` are filled in when it is appended.
    """

    record_uuid: str
    call: dict[str, Any]
    cards: list[dict[str, Any]]


class HotPath:
    """Append a hook call with its cards, and read the alert history, on one engine's pooled connections."""

    def __init__(self, engine: Engine, key: ChainKey) -> None:
        self._engine = engine
        self._key = key
        self._dialect = engine.dialect
        self._postgres = is_postgres(engine)
        self._wal_path = sqlite_wal_path(engine)
        dbapi = self._dialect.loaded_dbapi
        self._dbapi_error: type[Exception] = dbapi.Error
        chain_sql = statements(self._postgres)  # the chain writer's SQL (writer.py)
        mark = self._mark = chain_sql.mark
        self._to_time = chain_sql.to_time
        self._insert_call = chain_sql.inserts["calls"]
        self._insert_card = chain_sql.inserts["cards"]
        self._sql_head = chain_sql.sql_head
        self._sql_move_head = chain_sql.sql_move_head
        self._sql_lock = chain_sql.sql_lock
        self._sql_exists = f"SELECT id FROM calls WHERE record_uuid = {mark}"  # noqa: S608
        # RETURNING yields the row only when it was inserted: the answer to "first time seen?" in one statement.
        self._sql_claim_jti = (
            f"INSERT INTO {client_jti.name} (iss, jti, expires_at) VALUES ({mark}, {mark}, {mark})"  # noqa: S608
            " ON CONFLICT (iss, jti) DO NOTHING RETURNING jti"
        )
        self._sql_forget_jtis = f"DELETE FROM {client_jti.name} WHERE expires_at < {mark}"  # noqa: S608
        self._sql_first_alerts: dict[tuple[int, int], str] = {}
        self._sql_append: dict[tuple[int, int], str] = {}
        event.listen(engine, "connect", _count_from_zero)
        event.listen(engine, "checkout", _count_checkout)

    # ----------------------------------------------------------------------------------------- write
    def append(self, collect: Callable[[], Sequence[CallRows]], *, skip_stored: bool = False) -> list[CallRows]:
        """Append calls with their cards as the next links of the chain, in one committed transaction.

        ``collect`` is called once, when the chain's write lock is held, and returns the calls to write (group
        commit hands in everything queued up to then; group_commit.py). ``skip_stored`` leaves out record
        uuids that are already stored (spool replays; a freshly generated uuid cannot be). Returns the calls
        written.
        """
        batch: list[CallRows] | None = None

        def rows() -> list[CallRows]:  # the same batch again if a stale connection makes us start over
            nonlocal batch
            if batch is None:
                batch = list(collect())
            return batch

        append = self._append_postgres if self._postgres else self._append_sqlite
        return self._on_connection(lambda connection: append(connection, rows, skip_stored))

    def _links(self, head: tuple[Any, Any], batch: Sequence[CallRows]
               ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], int, str]:
        """The batch as the links after ``head``: (call params, card params, last id, last hash).

        Each call is followed by its cards, in the order handed in, exactly as single appends would chain them.
        """
        links = ChainLinks(self._key, head, datetime.now(UTC))  # the chain's one writer (writer.py)
        call_params: list[tuple[Any, ...]] = []
        card_params: list[tuple[Any, ...]] = []
        for item in batch:
            call_id, parameters = links.link(self._insert_call, item.call)
            call_params.append(parameters)
            for values in item.cards:
                card_params.append(links.link(self._insert_card, dict(values, call_id=call_id))[1])
        return call_params, card_params, links.last_seq, links.last_hash

    def _append_sqlite(self, connection: Any, rows: Callable[[], list[CallRows]], skip_stored: bool
                       ) -> list[CallRows]:
        # The disk flush happens after the write lock is released, not inside it (issue #7): the transaction
        # commits without a flush (see _sqlite_write) and then one fsync of the WAL makes it durable before
        # anything is acknowledged, so what issue #4 item 2 asks of synchronous=FULL holds. With FULL the fsync
        # ran under the lock and every writer of every worker queued behind it; now the next writer appends
        # while this one waits for the disk, and concurrent flushes share the device's work. The WAL keeps
        # frames in commit order and recovery only replays a checksummed prefix, so a crash before the flush
        # loses only unacknowledged calls at the end of the chain, never a link inside it.
        with self._sqlite_write(connection):
            batch = rows()
            if skip_stored:
                batch = [item for item in batch
                         if connection.execute(self._sql_exists, (item.record_uuid,)).fetchone() is None]
            if batch:
                head = connection.execute(self._sql_head).fetchone()
                call_params, card_params, last_seq, last_hash = self._links(head, batch)
                connection.executemany(self._insert_call.sql, call_params)
                if card_params:
                    connection.executemany(self._insert_card.sql, card_params)
                connection.execute(self._sql_move_head, (last_seq, last_hash))
        if self._wal_path is not None and batch:
            # An OSError here (the disk refused) means nothing is acknowledged: the caller spools the records
            # as for any transient failure, and the replay skips them if they did reach the database.
            flush_sqlite_wal(self._wal_path)
        return batch

    @contextmanager
    def _sqlite_write(self, connection: Any) -> Iterator[None]:
        """One write transaction under the chain's write lock, committed when the block ends without an error.

        The kernel lock first: a waiting writer sleeps in flock() and wakes when the lock is free, instead of
        polling in SQLite's busy handler (1..100 ms naps) while the CPU idles (issue #7, BENCHMARKS.md).
        BEGIN IMMEDIATE then takes SQLite's own write lock, which guarantees the chain order. For a database
        file the commit does not flush (``synchronous=NORMAL`` for this transaction only; the connection's
        default for every other write stays FULL): the caller flushes the WAL after the lock is released, or
        relies on the next flush (``claim_jti``). A failed restore leaves a broken connection the pool drops.
        """
        deferred = self._wal_path is not None  # in-memory and URI databases commit FULL as before
        with sqlite_writer_lock(self._engine):
            if deferred:
                connection.execute("PRAGMA synchronous=NORMAL")  # per connection, outside a transaction
            try:
                connection.execute("BEGIN IMMEDIATE")
                try:
                    yield
                    connection.execute("COMMIT")
                except BaseException:
                    with suppress(self._dbapi_error):  # keep the original error; a dead connection is discarded
                        if connection.in_transaction:
                            connection.execute("ROLLBACK")
                    raise
            finally:
                if deferred:
                    connection.execute("PRAGMA synchronous=FULL")

    def _append_postgres(self, connection: Any, rows: Callable[[], list[CallRows]], skip_stored: bool
                         ) -> list[CallRows]:
        # Two round trips in pipeline mode: (BEGIN, chain lock, head) and (one statement inserting the calls
        # and their cards and moving the head, COMMIT); psycopg prepares the statements after five runs.
        # The head SELECT is a statement of its own after the lock, so its snapshot sees the last commit of
        # whoever held the lock before (READ COMMITTED takes a snapshot per statement). The advisory lock is
        # held for the hashing between the two round trips and the commit, nothing more.
        try:
            with connection.pipeline():
                connection.execute(self._sql_lock, (CHAIN_LOCK_KEY,))
                head = connection.execute(self._sql_head).fetchone()  # the first round trip
                batch = rows()
                if skip_stored:  # spool replays only: one more round trip
                    found = [connection.execute(self._sql_exists, (item.record_uuid,)) for item in batch]
                    batch = [item for item, cursor in zip(batch, found, strict=True) if cursor.fetchone() is None]
                if not batch:
                    connection.rollback()
                    return []
                call_params, card_params, last_seq, last_hash = self._links(head, batch)
                if len(call_params) <= _MAX_CALLS_PER_STATEMENT and len(card_params) <= _MAX_CARDS_PER_STATEMENT:
                    parameters: list[Any] = []
                    for params in (*call_params, *card_params):
                        parameters.extend(params)
                    parameters.extend((last_seq, last_hash))
                    connection.execute(self._sql_append_postgres(len(call_params), len(card_params)), parameters)
                else:  # PostgreSQL takes at most 65,535 parameters per statement
                    with connection.cursor() as cursor:
                        cursor.executemany(self._insert_call.sql, call_params)
                        if card_params:
                            cursor.executemany(self._insert_card.sql, card_params)
                    connection.execute(self._sql_move_head, (last_seq, last_hash))
                connection.commit()  # the second round trip
        except BaseException:
            with suppress(self._dbapi_error):  # keep the original error; a dead connection is discarded
                connection.rollback()
            raise
        return batch

    def _sql_append_postgres(self, call_count: int, card_count: int) -> str:
        """One statement for the calls, their cards and the chain head (data-modifying CTEs; one Bind/Execute)."""
        sql = self._sql_append.get((call_count, card_count))
        if sql is None:
            call, card = self._insert_call, self._insert_card
            parts = [f"new_calls AS ({call.multi_row_sql(call_count)})"]
            if card_count:
                parts.append(f"new_cards AS ({card.multi_row_sql(card_count)})")
            sql = f"WITH {', '.join(parts)} {self._sql_move_head}"
            self._sql_append[(call_count, card_count)] = sql  # bounded by the two limits above
        return sql

    # ----------------------------------------------------------------------------------------- jti cache
    def claim_jti(self, iss: str, jti: str, expires_at: datetime, forget_before: datetime | None) -> bool:
        """Insert (iss, jti) into the replay cache; True when it was not there yet. Optionally drop ids that
        expired before ``forget_before`` in the same transaction.

        Committed without waiting for the disk (SQLite ``synchronous=NORMAL`` for this transaction,
        PostgreSQL ``synchronous_commit = off``): the claim is visible to every worker at once and survives
        ``kill -9`` (it is in the WAL), and it reaches the disk with the next synchronous commit, at the latest
        the hook call's own audit append, which commits before the response is sent (issue #4 item 2). WAL is
        written and flushed in order, so that flush covers this earlier commit. A token whose call is
        acknowledged therefore has its jti on disk, without a second fsync per call (issue #7; it was one
        fsync under the chain's write lock for every authenticated call).
        """
        claim = self._claim_jti_postgres if self._postgres else self._claim_jti_sqlite
        parameters = (iss, jti, self._to_time(expires_at))
        forget = None if forget_before is None else (self._to_time(forget_before),)
        return self._on_connection(lambda connection: claim(connection, parameters, forget))

    def _claim_jti_sqlite(self, connection: Any, parameters: tuple[Any, ...], forget: tuple[Any, ...] | None
                          ) -> bool:
        with self._sqlite_write(connection):  # no flush of its own (see claim_jti)
            first_seen = connection.execute(self._sql_claim_jti, parameters).fetchone() is not None
            if forget is not None:
                connection.execute(self._sql_forget_jtis, forget)
        return first_seen

    def _claim_jti_postgres(self, connection: Any, parameters: tuple[Any, ...], forget: tuple[Any, ...] | None
                            ) -> bool:
        try:
            with connection.pipeline():  # one round trip: SET LOCAL, INSERT ... RETURNING, (DELETE), COMMIT
                connection.execute("SET LOCAL synchronous_commit TO off")
                cursor = connection.execute(self._sql_claim_jti, parameters)
                if forget is not None:
                    connection.execute(self._sql_forget_jtis, forget)
                connection.commit()
            return cursor.fetchone() is not None
        except BaseException:
            with suppress(self._dbapi_error):
                connection.rollback()
            raise

    # ----------------------------------------------------------------------------------------- read
    def alert_history(self, tenant_key: str, patient_id: str, rule_ids: Collection[str],
                      overridden_since: datetime | None, order_alerts: Collection[tuple[str, str]],
                      orders_since: datetime | None) -> tuple[list[OverrideSeen], dict[tuple[str, str], str]]:
        """(overrides of ``rule_ids`` for the tenant's patient received since ..., first alert uuid per (rule,
        order key) since ...).

        Semantics as ``AuditLog.alert_history``, which calls this; ``None`` for a ``since`` skips that read.
        """
        return self._on_connection(lambda connection: self._history(
            connection, tenant_key, patient_id, rule_ids, overridden_since, order_alerts, orders_since))

    def _history(self, connection: Any, tenant_key: str, patient_id: str, rule_ids: Collection[str],
                 overridden_since: datetime | None, order_alerts: Collection[tuple[str, str]],
                 orders_since: datetime | None) -> tuple[list[OverrideSeen], dict[tuple[str, str], str]]:
        overrides: list[OverrideSeen] = []
        first_alerts: dict[tuple[str, str], str] = {}
        if self._postgres:
            # Autocommit for the reads: no BEGIN and no ROLLBACK round trip around two SELECTs.
            connection.autocommit = True
        try:
            if overridden_since is not None and rule_ids:
                wanted = set(rule_ids)
                rows = self._select(connection, _overrides_sql(self._mark),
                                    (self._to_time(overridden_since), tenant_key, patient_id))
                overrides = [override_from_row(row) for row in rows if row[1] in wanted]
            if orders_since is not None and order_alerts:
                pairs = set(order_alerts)
                rules = sorted({rule for rule, _key in pairs})
                keys = sorted({key for _rule, key in pairs})
                sql = self._first_alerts_sql(len(rules), len(keys))
                rows = self._select(connection, sql,
                                    (*rules, *keys, tenant_key, patient_id, self._to_time(orders_since)))
                for rule_id, order_key, series_uuid in rows:
                    pair = (str(rule_id), str(order_key))
                    if pair in pairs:  # one row per (rule, order key): its newest shown card
                        first_alerts[pair] = str(series_uuid)
        finally:
            if self._postgres:
                with suppress(self._dbapi_error):  # a broken connection is discarded by the pool anyway
                    connection.autocommit = False
        return overrides, first_alerts

    def _select(self, connection: Any, sql: str, parameters: tuple[Any, ...]) -> list[Any]:
        if self._postgres:
            # Planned for the actual values every time (~0.1 ms of server CPU), never as a cached generic plan:
            # psycopg prepares a statement after 5 runs and PostgreSQL may then keep a generic plan made while
            # the tables were small, e.g. starting from the patient's calls, which grows with the patient's
            # history (1.7 ms of server CPU per call after 1,000 calls of one patient, measured). With the
            # values the planner picks the cheaper start: overrides in the window, or this patient's calls.
            return list(connection.execute(sql, parameters, prepare=False).fetchall())
        return list(connection.execute(sql, parameters).fetchall())

    def _first_alerts_sql(self, rule_count: int, key_count: int) -> str:
        sql = self._sql_first_alerts.get((rule_count, key_count))
        if sql is None:
            mark = self._mark
            # Only the newest shown card per (rule, draft order) leaves the database (row_number() = 1): order-select
            # fires on every change of an order form, so one draft can collect many shown cards in the window, and
            # turning them all into Python rows grew with each call (issue #7). SQLite >= 3.25 and PostgreSQL both
            # have window functions.
            sql = (
                "SELECT rule_id, order_key, series FROM ("  # noqa: S608
                "SELECT cards.rule_id AS rule_id, cards.order_key AS order_key,"
                " coalesce(cards.repeat_of, cards.card_uuid) AS series,"
                " row_number() OVER (PARTITION BY cards.rule_id, cards.order_key"
                " ORDER BY calls.received_at DESC, cards.id DESC) AS newest"
                " FROM cards JOIN calls ON calls.id = cards.call_id"
                " WHERE cards.disposition = 'shown'"
                f" AND cards.rule_id IN ({', '.join([mark] * rule_count)})"
                f" AND cards.order_key IN ({', '.join([mark] * key_count)})"
                f" AND calls.tenant_key = {mark} AND calls.patient_id = {mark} AND calls.received_at >= {mark}"
                ") AS ranked WHERE newest = 1"
            )
            if len(self._sql_first_alerts) < 256:  # a handful of shapes in practice; bounded anyway
                self._sql_first_alerts[(rule_count, key_count)] = sql
        return sql

    def _on_connection(self, operation: Callable[[Any], _T]) -> _T:
        """Run ``operation`` on a pooled driver connection; once more on a fresh one if it was stale."""
        lease = _Lease(self)
        try:
            while True:
                try:
                    return operation(lease.proxied.driver_connection)
                except self._dbapi_error as exc:
                    lease.retry(exc)
        finally:
            lease.proxied.close()

    def _checkout(self) -> PoolProxiedConnection:
        try:
            return self._engine.raw_connection()
        except self._dbapi_error as exc:
            raise self._wrap(exc, disconnect=True) from exc

    def _wrap(self, exc: Exception, *, disconnect: bool) -> BaseException:
        """SQLAlchemy's class for a driver error, without statement or parameters (they can hold PHI)."""
        return DBAPIError.instance(None, None, exc, self._dbapi_error, hide_parameters=True,
                                   connection_invalidated=disconnect, dialect=self._dialect)

    def _is_disconnect(self, exc: Exception, proxied: PoolProxiedConnection) -> bool:
        driver = proxied.driver_connection
        if self._postgres:
            return bool(driver is None or driver.closed or driver.broken)
        return bool(self._dialect.is_disconnect(exc, driver, None))  # type: ignore[arg-type]


@cache
def _overrides_sql(mark: str) -> str:
    """The suppression read (issue 15): overrides received in the window on cards of this tenant's patient.

    It starts at the overrides inside the window (index on feedback (outcome, received_at), migration 0003) ->
    cards by uuid -> calls by id, with no rule_id filter in SQL on purpose: with one, SQLite drove the join from
    the rule_id index, i.e. every card of those rules for ALL patients (issue #7). Rules, reasons, clients,
    users and evidence are checked in Python (cds_service.alert_policy). Windows use this server's receive
    time, never the EHR's outcomeTimestamp (issue 15 item 3).
    """
    columns = ", ".join(f"{column.table.name}.{column.name}" for column in OVERRIDE_COLUMNS)
    return (
        f"SELECT {columns} FROM feedback"  # noqa: S608
        " JOIN cards ON cards.card_uuid = feedback.card_uuid JOIN calls ON calls.id = cards.call_id"
        f" WHERE feedback.outcome = 'overridden' AND feedback.received_at >= {mark}"
        f" AND calls.tenant_key = {mark} AND calls.patient_id = {mark}"
    )


def _count_from_zero(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    record.info[_CHECKOUTS] = 0


def _count_checkout(_dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
    record.info[_CHECKOUTS] = record.info.get(_CHECKOUTS, 0) + 1


class _Lease:
    """The connection one hot-path operation runs on, replaced at most once when it turns out stale."""

    def __init__(self, hot_path: HotPath) -> None:
        self._hot_path = hot_path
        self.proxied = hot_path._checkout()
        self._pooled = self.proxied.info.get(_CHECKOUTS, 0) > 1
        self._retried = False

    def retry(self, exc: Exception) -> None:
        """After ``exc``: switch to a fresh connection if the pooled one was stale, else raise ``exc`` wrapped.

        A connection that came out of the pool (not opened for this checkout) and now reports a lost connection
        is left over from before a database restart; that is no outage, so the operation runs once more on a
        fresh connection instead of spooling (what ``pool_pre_ping`` did, without its round trip per checkout).
        """
        hot_path = self._hot_path
        disconnect = hot_path._is_disconnect(exc, self.proxied)
        if disconnect:
            # Like SQLAlchemy's own handling of a disconnect: every pooled connection opened before now is
            # replaced at its next checkout (after a restart they are all dead), not only this one.
            hot_path._engine.pool._invalidate(self.proxied, exc)
        if not (disconnect and self._pooled and not self._retried):
            raise hot_path._wrap(exc, disconnect=disconnect) from exc
        self._retried = True
        fresh = hot_path._checkout()  # if this fails, the stale one is still ours and is closed by the caller
        self.proxied.close()
        self.proxied = fresh
        self._pooled = fresh.info.get(_CHECKOUTS, 0) > 1
