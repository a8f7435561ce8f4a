"""The hash chain that makes the audit log tamper-evident (issue #4 item 3), keyed (issue 15 item 6).

One chain per database: every audited row gets the next global sequence number (its primary key), the id of
the key that signed it (``key_id``) and ``record_hash = HMAC-SHA-256(key, canonical JSON of {table, row,
previous hash})``. Writers serialise the append: PostgreSQL takes a transaction-level advisory lock, SQLite
holds its single write lock (``BEGIN IMMEDIATE``), so concurrent workers and instances cannot fork the chain.
``chain_head`` records the last link, which is how deleting the newest rows is detected.

This module is the canonical form and the one hash function; :mod:`cds_service.audit.writer` is the one
writer. The hashed ``row`` is every column except ``record_hash`` whose value is not NULL, so a column added by
a later migration (NULL in older rows) leaves the older hashes valid, while any value set in it is covered.
Records written before the chain was keyed are checked by :mod:`cds_service.audit.legacy_chain` (verification
only; nothing writes that form any more).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from cds_service.audit.records import as_utc

if TYPE_CHECKING:
    from cds_service.audit.keys import ChainKey

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


def keyed_content(columns: Iterable[str], row: Mapping[str, Any]) -> dict[str, Any]:
    """The hashed content of a keyed record: the given columns (all but ``record_hash``) that are not NULL."""
    content: dict[str, Any] = {}
    for name in columns:
        value = row.get(name)
        if value is not None:
            content[name] = value
    return content


def link_payload(table_name: str, content: Mapping[str, Any], previous_hash: str) -> bytes:
    """The canonical bytes of one link: JSON of {table, row, prev}, sorted keys, no whitespace, UTF-8.

    ``content`` holds scalars, datetimes and ``json_safe`` values (what the writer binds, and what the JSON
    columns give back), so only its top-level datetimes need turning into ``canonical_time`` text; no
    recursive walk (the hot path, issue #7).
    """
    row = {name: canonical_time(value) if isinstance(value, datetime) else value for name, value in content.items()}
    return _dumps({"table": table_name, "row": row, "prev": previous_hash}).encode("utf-8")


def link_hash(key: ChainKey, table_name: str, content: Mapping[str, Any], previous_hash: str) -> str:
    """The chain hash of one record: HMAC-SHA-256 under ``key`` of its canonical link (the only one written)."""
    return key.sign(link_payload(table_name, content, previous_hash))
