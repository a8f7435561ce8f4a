"""The hash chain that makes the audit log tamper-evident (issue #4 item 3).

One chain per database: every audited row gets the next global sequence number (its primary key) and
``record_hash = sha256(canonical JSON of {table, row content, previous hash})``. Writers serialise the append:
PostgreSQL takes a transaction-level advisory lock, SQLite holds its single write lock (``BEGIN IMMEDIATE``),
so concurrent workers and instances cannot fork the chain. ``chain_head`` records the last link, which is how
deleting the newest rows is detected.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Table, select, update

from cds_service.audit.records import as_utc
from cds_service.audit.schema import CHAINED_TABLES, chain_head

GENESIS_HASH = "0" * 64
# Arbitrary constant keys for pg_advisory_xact_lock: one for chain appends, one for schema migrations.
CHAIN_LOCK_KEY = 0x63_64_73_41_55_44_49_54  # "cdsAUDIT"
MIGRATION_LOCK_KEY = CHAIN_LOCK_KEY + 1


def json_safe(value: Any) -> Any:
    """A copy of ``value`` that JSON can hold on every backend (non-finite floats and odd types as text)."""
    kind = type(value)
    if kind is str or kind is int or value is None:  # the common leaves first (hot path, issue #7)
        return value
    if kind is float:
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {key if type(key) is str else str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):
        return canonical_time(value)
    if isinstance(value, date | Decimal):
        return str(value)
    return str(value)


def canonical_time(moment: datetime) -> str:
    """A fixed-format UTC timestamp, identical however the backend returned the datetime."""
    return as_utc(moment).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _normalise(value: Any) -> Any:
    if isinstance(value, datetime):
        return canonical_time(value)
    if isinstance(value, dict):
        return {str(key): _normalise(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_normalise(item) for item in value]
    return value


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, UTF-8 kept, NaN refused."""
    return _dumps(_normalise(value))


def _dumps(normalised: Any) -> str:
    return json.dumps(normalised, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def row_content(table: Table, row: dict[str, Any]) -> dict[str, Any]:
    """The hashed content of a row: every column except ``record_hash``."""
    return {column.name: row.get(column.name) for column in table.columns if column.name != "record_hash"}


def link_hash(table_name: str, content: dict[str, Any], previous_hash: str) -> str:
    """The chain hash of one row given the hash of the record before it."""
    payload = {"table": table_name, "row": content, "prev": previous_hash}
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


def link_hash_plain(table_name: str, content: dict[str, Any], previous_hash: str) -> str:
    """``link_hash`` for a row whose values are scalars, datetimes or ``json_safe`` output (the hot path).

    Such content needs no recursive normalising walk: only its top-level datetimes are turned into
    ``canonical_time`` text, and the bytes hashed are exactly those of ``link_hash`` (tests/audit/test_hotpath.py).
    """
    row = {name: canonical_time(value) if isinstance(value, datetime) else value for name, value in content.items()}
    payload = {"table": table_name, "row": row, "prev": previous_hash}
    return hashlib.sha256(_dumps(payload).encode("utf-8")).hexdigest()


class ChainAppender:
    """Appends rows to the chain inside a write transaction that already holds the chain lock."""

    def __init__(self, connection: Connection, recorded_at: datetime) -> None:
        head = connection.execute(
            select(chain_head.c.last_seq, chain_head.c.last_hash).where(chain_head.c.id == 1)
        ).one()
        self._connection = connection
        self._recorded_at = recorded_at
        self.last_seq: int = int(head.last_seq)
        self.last_hash: str = str(head.last_hash)
        self._dirty = False

    def append(self, table_name: str, values: dict[str, Any]) -> int:
        """Insert ``values`` into ``table_name`` as the next link; returns its id (= sequence number)."""
        table = CHAINED_TABLES[table_name]
        row = dict(values)
        row["id"] = self.last_seq + 1
        row["recorded_at"] = self._recorded_at
        content = row_content(table, row)
        row["record_hash"] = link_hash(table_name, content, self.last_hash)
        self._connection.execute(table.insert().values(**row))
        self.last_seq = row["id"]
        self.last_hash = row["record_hash"]
        self._dirty = True
        return int(row["id"])

    def append_many(self, table_name: str, rows: list[dict[str, Any]]) -> list[int]:
        """Insert ``rows`` as consecutive links with one executemany; returns their ids in order.

        The hashes are computed one after the other exactly as ``append`` would; only the round trips to the
        database are batched (one INSERT for all cards of a hook call; BENCHMARKS.md, issue #7).
        """
        if not rows:
            return []
        table = CHAINED_TABLES[table_name]
        prepared: list[dict[str, Any]] = []
        for values in rows:
            row = dict(values)
            row["id"] = self.last_seq + 1
            row["recorded_at"] = self._recorded_at
            row["record_hash"] = link_hash(table_name, row_content(table, row), self.last_hash)
            self.last_seq = row["id"]
            self.last_hash = row["record_hash"]
            prepared.append(row)
        self._connection.execute(table.insert(), prepared)
        self._dirty = True
        return [int(row["id"]) for row in prepared]

    def finish(self) -> None:
        """Move ``chain_head`` to the last appended link (call before commit)."""
        if self._dirty:
            self._connection.execute(
                update(chain_head)
                .where(chain_head.c.id == 1)
                .values(last_seq=self.last_seq, last_hash=self.last_hash)
            )
