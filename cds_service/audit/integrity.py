"""Verifying the hash chain and purging old records without breaking it (issue #4 items 3 and 6)."""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, select, text

from cds_service.audit.chain import CHAIN_LOCK_KEY, GENESIS_HASH, ChainAppender, link_hash, row_content
from cds_service.audit.db import WRITE_OPTION, is_postgres, sqlite_writer_lock
from cds_service.audit.records import as_utc
from cds_service.audit.schema import CHAINED_TABLES, chain_head, checkpoints, client_jti

_STREAM_BATCH = 1000


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of a chain check; ``table``/``record_id`` name the first broken record."""

    ok: bool
    records_checked: int
    message: str
    table: str | None = None
    record_id: int | None = None


@dataclass(frozen=True)
class PurgeResult:
    """What a purge removed, and the checkpoint that now anchors the chain (None when nothing was old)."""

    purged_through_id: int | None
    counts: dict[str, int] = field(default_factory=dict)
    checkpoint_id: int | None = None


def _stream(connection: Connection, table_name: str) -> Iterator[tuple[int, str, dict[str, Any]]]:
    table = CHAINED_TABLES[table_name]
    result = connection.execution_options(yield_per=_STREAM_BATCH).execute(select(table).order_by(table.c.id))
    for row in result.mappings():
        yield int(row["id"]), table_name, dict(row)


def _anchor(connection: Connection) -> tuple[int, str]:
    """(first sequence number expected, hash before it): the newest purge checkpoint, or the genesis link."""
    latest = connection.execute(
        select(checkpoints.c.purged_through_id, checkpoints.c.anchor_hash).order_by(checkpoints.c.id.desc())
        .limit(1)
    ).first()
    if latest is None:
        return 1, GENESIS_HASH
    return int(latest.purged_through_id) + 1, str(latest.anchor_hash)


def verify_chain(engine: Engine) -> VerifyResult:
    """Recompute every link in sequence order; report the first record changed, deleted or inserted."""
    with engine.connect() as connection:
        expected, previous = _anchor(connection)
        start = expected
        head = connection.execute(select(chain_head.c.last_seq, chain_head.c.last_hash)).first()
        checked = 0
        streams = [_stream(connection, name) for name in CHAINED_TABLES]
        merged = heapq.merge(*streams, key=lambda item: item[0])
        for record_id, table_name, row in merged:
            if record_id < expected:
                where = "before the chain anchor" if record_id < start else "with a duplicate sequence number"
                return VerifyResult(False, checked, f"{table_name} id {record_id}: row inserted out of band "
                                    f"({where})", table_name, record_id)
            if record_id > expected:
                missing = f"{expected}" if record_id == expected + 1 else f"{expected}..{record_id - 1}"
                return VerifyResult(False, checked, f"{table_name} id {record_id}: the record(s) before it "
                                    f"(sequence {missing}) were deleted", table_name, record_id)
            table = CHAINED_TABLES[table_name]
            recomputed = link_hash(table_name, row_content(table, row), previous)
            if recomputed != row["record_hash"]:
                return VerifyResult(False, checked, f"{table_name} id {record_id}: hash mismatch (row "
                                    "changed, or inserted out of band)", table_name, record_id)
            previous = recomputed
            expected += 1
            checked += 1
    last = expected - 1
    if head is None:
        return VerifyResult(False, checked, "chain_head is missing (table tampered with)", "chain_head", 1)
    if int(head.last_seq) > last:
        return VerifyResult(False, checked, f"the newest record(s) (sequence {last + 1}..{head.last_seq}) "
                            "were deleted", "chain_head", 1)
    if int(head.last_seq) < last or head.last_hash != previous:
        return VerifyResult(False, checked, "chain_head does not match the last record (records inserted "
                            "or chain_head changed out of band)", "chain_head", 1)
    return VerifyResult(True, checked, f"chain intact: {checked} record(s) verified")


def purge_before(engine: Engine, before: datetime) -> PurgeResult:
    """Delete the oldest records written before ``before`` and anchor the chain at a checkpoint record.

    Only a prefix of the chain can go (the remaining records must still link up), so the purge stops at the
    first record written at or after ``before``; all rows of one hook call share one write time and leave
    together. The checkpoint stores the hash of the last purged record, from which ``verify`` continues.
    """
    cutoff = as_utc(before)
    with engine.connect() as connection, sqlite_writer_lock(engine):
        connection.execution_options(**{WRITE_OPTION: True})
        with connection.begin():
            if is_postgres(engine):
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CHAIN_LOCK_KEY})
            first_kept_candidates = [
                connection.execute(select(func.min(table.c.id)).where(table.c.recorded_at >= cutoff)).scalar()
                for table in CHAINED_TABLES.values()
            ]
            chain = ChainAppender(connection, datetime.now(UTC))
            kept = [int(value) for value in first_kept_candidates if value is not None]
            through = min(kept) - 1 if kept else chain.last_seq
            start, _ = _anchor(connection)
            if through < start:
                return PurgeResult(purged_through_id=None)
            anchor_hash = _hash_of(connection, through)
            counts: dict[str, int] = {}
            # Children before parents: cards reference calls.
            for name in ("feedback", "cards", "calls", "checkpoints"):
                table = CHAINED_TABLES[name]
                counts[name] = connection.execute(delete(table).where(table.c.id <= through)).rowcount
            connection.execute(delete(client_jti).where(client_jti.c.expires_at < datetime.now(UTC)))
            checkpoint_id = chain.append("checkpoints", {
                "purged_before": cutoff,
                "purged_through_id": through,
                "anchor_hash": anchor_hash,
                "purged_counts": counts,
            })
            chain.finish()
    return PurgeResult(purged_through_id=through, counts=counts, checkpoint_id=checkpoint_id)


def _hash_of(connection: Connection, record_id: int) -> str:
    for table in CHAINED_TABLES.values():
        found = connection.execute(select(table.c.record_hash).where(table.c.id == record_id)).scalar()
        if found is not None:
            return str(found)
    raise LookupError(f"no audit record with sequence number {record_id}; run `calcinosis-cds audit verify`")
