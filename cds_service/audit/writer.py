"""The one writer of the audit hash chain (issue 15 item 6): every record of every chained table is linked here.

Hook calls with their cards (the hot path, batched by group commit), feedback, purge checkpoints and the keyed
anchor of migration 0005 all become links through :class:`ChainLinks`: the next sequence number, the write
time, the signing key's id and the HMAC of :func:`cds_service.audit.chain.link_hash`. They are stored with the
SQL of :class:`RowInsert`, prepared once per table from the ``Table`` objects and run on the DB-API connection
(issue #7: SQLAlchemy Core's per-statement work was most of the audit's CPU per call).

What is stored is what SQLAlchemy Core would store, so every reader sees the same values
(tests/audit/test_hotpath.py): ``UtcDateTime`` is naive UTC in SQLAlchemy's SQLite text format and an aware
``timestamptz`` on PostgreSQL; JSON columns hold ``json.dumps`` text (SQLite) or a psycopg ``Json``
(PostgreSQL). The caller holds the chain's write lock: SQLite's ``BEGIN IMMEDIATE`` (its own transaction) or,
on PostgreSQL, the advisory lock :class:`ChainTransaction` takes before reading the head.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import JSON, Connection, Engine, Table

from cds_service.audit.chain import CHAIN_LOCK_KEY, keyed_content, link_hash
from cds_service.audit.db import WRITE_OPTION, is_postgres, sqlite_writer_lock
from cds_service.audit.keys import ChainKey
from cds_service.audit.records import as_utc
from cds_service.audit.schema import CHAINED_TABLES, UtcDateTime

# SQLAlchemy's SQLite DATETIME storage format (sqlalchemy.dialects.sqlite.DATETIME), applied to naive UTC.
_SQLITE_TIME = "%04d-%02d-%02d %02d:%02d:%02d.%06d"


def sqlite_time(value: datetime | None) -> str | None:
    """A datetime as SQLAlchemy's ``UtcDateTime`` stores it in SQLite (naive UTC text, microseconds)."""
    if value is None:
        return None
    utc = as_utc(value)
    return _SQLITE_TIME % (utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond)


def pg_time(value: datetime | None) -> datetime | None:
    """A datetime as ``UtcDateTime`` binds it on PostgreSQL (aware UTC, stored as timestamptz)."""
    return None if value is None else as_utc(value)


def _identity(value: Any) -> Any:
    return value


def _nullable(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``convert``, except that None stays None (SQL NULL)."""
    def bind(value: Any) -> Any:
        return None if value is None else convert(value)
    return bind


class RowInsert:
    """``INSERT INTO table (every column) VALUES (...)`` with one converter per column."""

    def __init__(self, table: Table, placeholder: str, to_time: Callable[[Any], Any],
                 to_json: Callable[[Any], Any]) -> None:
        self.table_name = table.name
        self.columns = [column.name for column in table.columns]
        # The hashed content is every column except record_hash (chain.keyed_content), in table order.
        self.content_columns = [name for name in self.columns if name != "record_hash"]
        self.converters: list[Callable[[Any], Any]] = []
        for column in table.columns:
            if isinstance(column.type, UtcDateTime):
                self.converters.append(to_time)
            elif isinstance(column.type, JSON):
                # ``JSON(none_as_null=True)`` columns store a missing value as SQL NULL, as SQLAlchemy Core does
                # (issue 19: governance_values, whose queries select ``IS NOT NULL``); the others JSON null.
                none_as_null = bool(getattr(column.type, "none_as_null", False))
                self.converters.append(_nullable(to_json) if none_as_null else to_json)
            elif column.type.python_type in (int, float, str, bool):
                self.converters.append(_identity)
            else:  # pragma: no cover - a new column type must be taught here, not silently mis-stored
                raise TypeError(f"the chain writer cannot bind {table.name}.{column.name} ({column.type!r})")
        # Only names from the Table and placeholders are interpolated into SQL here and below, never values.
        self._values = f"({', '.join([placeholder] * len(self.columns))})"
        self.sql = self.multi_row_sql(1)

    def multi_row_sql(self, rows: int) -> str:
        """``INSERT`` of ``rows`` rows in one statement."""
        values = ", ".join([self._values] * rows)
        return f"INSERT INTO {self.table_name} ({', '.join(self.columns)}) VALUES {values}"  # noqa: S608

    def parameters(self, row: dict[str, Any]) -> tuple[Any, ...]:
        """The row's values in column order, converted for the driver."""
        return tuple(convert(row.get(name)) for name, convert in zip(self.columns, self.converters, strict=True))


class ChainStatements:
    """The chain's SQL for one backend: an insert per chained table, the head read and move, the lock."""

    def __init__(self, postgres: bool) -> None:
        self.postgres = postgres
        if postgres:
            from psycopg.types.json import Json  # only installed where PostgreSQL is used

            self.mark = "%s"
            self.to_time: Callable[[Any], Any] = pg_time
            self.to_json: Callable[[Any], Any] = Json  # what SQLAlchemy's psycopg dialect binds for JSON
        else:
            self.mark = "?"
            self.to_time = sqlite_time
            self.to_json = json.dumps  # what SQLAlchemy's JSON type stores on SQLite (default serializer)
        mark = self.mark
        self.inserts = {name: self.insert_for(table) for name, table in CHAINED_TABLES.items()}
        self.sql_head = "SELECT last_seq, last_hash FROM chain_head WHERE id = 1"
        self.sql_move_head = f"UPDATE chain_head SET last_seq = {mark}, last_hash = {mark} WHERE id = 1"  # noqa: S608
        self.sql_lock = f"SELECT pg_advisory_xact_lock({mark})"

    def insert_for(self, table: Table) -> RowInsert:
        """The insert of ``table`` (a chained table as a migration defines it, or as schema.py does)."""
        return RowInsert(table, self.mark, self.to_time, self.to_json)


@lru_cache(maxsize=2)
def statements(postgres: bool) -> ChainStatements:
    """The prepared chain SQL of a backend (built once per process)."""
    return ChainStatements(postgres)


class ChainLinks:
    """Numbers, keys and hashes the records that follow a chain head: the only place a record_hash is made."""

    def __init__(self, key: ChainKey, head: Sequence[Any], recorded_at: datetime) -> None:
        self._key = key
        self._recorded_at = recorded_at
        self.last_seq = int(head[0])
        self.last_hash = str(head[1])

    def link(self, insert: RowInsert, values: dict[str, Any]) -> tuple[int, tuple[Any, ...]]:
        """``values`` as the next link: (its sequence number, its insert parameters).

        Sets ``id``, ``recorded_at`` and ``key_id`` (values must not carry them) and hashes the row's
        non-NULL columns with the previous link's hash.
        """
        row = dict(values, id=self.last_seq + 1, recorded_at=self._recorded_at, key_id=self._key.key_id)
        record_hash = link_hash(self._key, insert.table_name, keyed_content(insert.content_columns, row),
                                self.last_hash)
        row["record_hash"] = record_hash
        self.last_seq += 1
        self.last_hash = record_hash
        return self.last_seq, insert.parameters(row)


class ChainTransaction:
    """Appends records to the chain inside an open write transaction on a DB-API connection.

    The caller has begun the transaction (SQLite: ``BEGIN IMMEDIATE``, the chain's write lock); on PostgreSQL
    the advisory chain lock is taken here before the head is read. ``finish`` moves ``chain_head``; the
    caller commits.
    """

    def __init__(self, connection: Any, postgres: bool, key: ChainKey, recorded_at: datetime) -> None:
        self._connection = connection
        self._statements = statements(postgres)
        if postgres:
            connection.execute(self._statements.sql_lock, (CHAIN_LOCK_KEY,))
        head = connection.execute(self._statements.sql_head).fetchone()
        self._links = ChainLinks(key, head, recorded_at)
        self._dirty = False

    @property
    def last_seq(self) -> int:
        """The sequence number of the newest link (the head, or the last record appended here)."""
        return self._links.last_seq

    @property
    def last_hash(self) -> str:
        """The hash of the newest link."""
        return self._links.last_hash

    def append(self, table: str | Table, values: dict[str, Any]) -> int:
        """Insert ``values`` into a chained table as the next link; returns its id (= sequence number).

        ``table`` is a name from ``CHAINED_TABLES`` or a ``Table`` (migrations pass the table as they define it).
        """
        insert = self._insert(table)
        record_id, parameters = self._links.link(insert, values)
        self._connection.execute(insert.sql, parameters)
        self._dirty = True
        return record_id

    def append_many(self, table: str | Table, rows: Sequence[dict[str, Any]]) -> list[int]:
        """Insert ``rows`` as consecutive links with one executemany; returns their ids in order."""
        if not rows:
            return []
        insert = self._insert(table)
        linked = [self._links.link(insert, values) for values in rows]
        cursor = self._connection.cursor()
        try:
            cursor.executemany(insert.sql, [parameters for _id, parameters in linked])
        finally:
            cursor.close()
        self._dirty = True
        return [record_id for record_id, _parameters in linked]

    def finish(self) -> None:
        """Move ``chain_head`` to the last appended link (call before commit)."""
        if self._dirty:
            self._connection.execute(self._statements.sql_move_head, (self.last_seq, self.last_hash))

    def _insert(self, table: str | Table) -> RowInsert:
        if isinstance(table, str):
            return self._statements.inserts[table]
        return self._statements.insert_for(table)


@contextmanager
def chain_transaction(engine: Engine, key: ChainKey) -> Iterator[tuple[Connection, ChainTransaction]]:
    """A write transaction holding the chain lock: (SQLAlchemy connection for reads, the chain writer).

    Both work on the same DB-API connection, hence in the same transaction, committed when the block ends
    (SQLite at the connection's default ``synchronous=FULL``: durable before the caller returns).
    """
    with engine.connect() as connection, sqlite_writer_lock(engine):
        connection.execution_options(**{WRITE_OPTION: True})  # SQLite: BEGIN IMMEDIATE (db.py)
        with connection.begin():
            driver = connection.connection.driver_connection
            chain = ChainTransaction(driver, is_postgres(engine), key, datetime.now(UTC))
            yield connection, chain
            chain.finish()
