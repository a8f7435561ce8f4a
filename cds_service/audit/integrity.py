"""Verifying the hash chain and purging old records without breaking it (issue #4 items 3 and 6, issue 15 item 6).

Each record is checked with the key its ``key_id`` names (CDS_AUDIT_CHAIN_KEY or a retired key from
CDS_AUDIT_CHAIN_KEYS_FILE). Records written before the chain was keyed (``key_id`` NULL) are checked with the
legacy SHA-256 form (legacy_chain.py), and only while they form an unbroken prefix that the keyed anchor of
migration 0005 vouches for: an unkeyed record after any keyed one, or unkeyed records no keyed anchor
follows, fail. So someone with write access to the database who changes a value and recomputes the hashes
without the key (the old unkeyed algorithm) is named at the first record they rewrote.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, select

from cds_service.audit.chain import GENESIS_HASH, keyed_content, link_hash
from cds_service.audit.keys import ChainKey, Keyring
from cds_service.audit.legacy_chain import legacy_link_hash
from cds_service.audit.records import as_utc
from cds_service.audit.schema import CHAINED_TABLES, chain_head, checkpoints, client_jti
from cds_service.audit.writer import chain_transaction

_STREAM_BATCH = 1000
# The hashed columns of a keyed record of each table (all but record_hash; chain.keyed_content drops NULLs).
_CONTENT_COLUMNS = {name: [column.name for column in table.columns if column.name != "record_hash"]
                    for name, table in CHAINED_TABLES.items()}


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of a chain check; ``table``/``record_id`` name the first broken record.

    ``head_seq``/``head_hash`` are the last verified link (what ``audit checkpoint`` prints for anchoring the
    chain outside the database).
    """

    ok: bool
    records_checked: int
    message: str
    table: str | None = None
    record_id: int | None = None
    head_seq: int = 0
    head_hash: str = GENESIS_HASH


@dataclass(frozen=True)
class ExternalCheckpoint:
    """A (sequence number, hash) printed by ``audit checkpoint`` earlier and kept outside the database."""

    seq: int
    record_hash: str


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


def _start(connection: Connection) -> tuple[int, str]:
    """(first sequence number expected, hash before it): the newest purge checkpoint, or the genesis link."""
    latest = connection.execute(
        select(checkpoints.c.purged_through_id, checkpoints.c.anchor_hash).order_by(checkpoints.c.id.desc())
        .limit(1)
    ).first()
    if latest is None:
        return 1, GENESIS_HASH
    return int(latest.purged_through_id) + 1, str(latest.anchor_hash)


class _Walk:
    """The state of one verification walk: the link before the next record, and the unkeyed prefix."""

    def __init__(self, keyring: Keyring, expected: int, previous: str) -> None:
        self.keyring = keyring
        self.expected = expected
        self.previous = previous
        self.checked = 0
        self.keyed_seen = False
        self.unvouched: tuple[str, int] | None = None  # the first unkeyed record no anchor has vouched for yet

    def check(self, table_name: str, record_id: int, row: dict[str, Any]) -> str | None:
        """Check one record in sequence; the problem (message after "<table> id <id>: ") or None."""
        key_id = row.get("key_id")
        if key_id is None:
            problem = self._check_legacy(table_name, record_id, row)
        else:
            problem = self._check_keyed(table_name, row, str(key_id))
        if problem is None:
            self.previous = str(row["record_hash"])
            self.expected += 1
            self.checked += 1
        return problem

    def _check_legacy(self, table_name: str, record_id: int, row: dict[str, Any]) -> str | None:
        if self.keyed_seen:
            return ("unkeyed record after keyed ones: written or rewritten without the chain key "
                    "(e.g. rehashed with the old unkeyed algorithm)")
        recomputed = legacy_link_hash(table_name, row, self.previous)
        if recomputed is None:
            return "unkeyed record in a table that only ever holds keyed records"
        if recomputed != row["record_hash"]:
            return "hash mismatch (row changed, or inserted out of band)"
        if self.unvouched is None:
            self.unvouched = (table_name, record_id)
        return None

    def _check_keyed(self, table_name: str, row: dict[str, Any], key_id: str) -> str | None:
        key: ChainKey | None = self.keyring.get(key_id)
        if key is None:
            return (f"signed with chain key id {key_id}, which is neither CDS_AUDIT_CHAIN_KEY nor in "
                    "CDS_AUDIT_CHAIN_KEYS_FILE (add the retired key there, or the record is forged)")
        content = keyed_content(_CONTENT_COLUMNS[table_name], row)
        if link_hash(key, table_name, content, self.previous) != row["record_hash"]:
            if table_name == "anchors" and self.unvouched is not None \
                    and link_hash(key, table_name, content, str(row["legacy_head_hash"])) == row["record_hash"]:
                # The anchor itself is authentic: what changed is the unkeyed run it vouches for.
                return (f"the unkeyed records before this keyed anchor (from {self.unvouched[0]} id "
                        f"{self.unvouched[1]} on) were changed or rewritten: their last hash is not the one the "
                        "anchor vouches for")
            return "hash mismatch (row changed, rewritten without the chain key, or signed with another key)"
        if table_name == "anchors":
            if int(row["legacy_through_id"]) != self.expected - 1 or row["legacy_head_hash"] != self.previous:
                return "the keyed anchor does not name the record before it"
            self.unvouched = None
        elif self.unvouched is not None:
            return "keyed record after unkeyed ones with no keyed anchor between them"
        self.keyed_seen = True
        return None


def verify_chain(engine: Engine, keyring: Keyring, *, expect: ExternalCheckpoint | None = None) -> VerifyResult:
    """Recompute every link in sequence order; report the first record changed, deleted, inserted or rewritten.

    ``expect``: a checkpoint kept outside the database; the record with that sequence number must still have
    that hash (catches a rewrite by someone holding the key, and truncation back to before it).
    """
    with engine.connect() as connection:
        expected, previous = _start(connection)
        start = expected
        head = connection.execute(select(chain_head.c.last_seq, chain_head.c.last_hash)).first()
        walk = _Walk(keyring, expected, previous)
        streams = [_stream(connection, name) for name in CHAINED_TABLES]
        merged = heapq.merge(*streams, key=lambda item: item[0])
        for record_id, table_name, row in merged:
            if record_id < walk.expected:
                where = "before the chain anchor" if record_id < start else "with a duplicate sequence number"
                return _broken(walk, f"{table_name} id {record_id}: row inserted out of band ({where})",
                               table_name, record_id)
            if record_id > walk.expected:
                missing = f"{walk.expected}" if record_id == walk.expected + 1 else f"{walk.expected}..{record_id - 1}"
                return _broken(walk, f"{table_name} id {record_id}: the record(s) before it (sequence {missing}) "
                               "were deleted", table_name, record_id)
            problem = walk.check(table_name, record_id, row)
            if problem is None and expect is not None and record_id == expect.seq \
                    and walk.previous != expect.record_hash:
                problem = "its hash differs from the checkpoint kept outside the database (chain rewritten)"
            if problem is not None:
                return _broken(walk, f"{table_name} id {record_id}: {problem}", table_name, record_id)
    if walk.unvouched is not None:
        table_name, record_id = walk.unvouched
        return _broken(walk, f"{table_name} id {record_id}: unkeyed record(s) from here on are not vouched for by "
                       "a keyed anchor (rewritten with the old unkeyed algorithm, or the anchor was deleted)",
                       table_name, record_id)
    last = walk.expected - 1
    if head is None:
        return _broken(walk, "chain_head is missing (table tampered with)", "chain_head", 1)
    if int(head.last_seq) > last:
        return _broken(walk, f"the newest record(s) (sequence {last + 1}..{head.last_seq}) were deleted",
                       "chain_head", 1)
    if int(head.last_seq) < last or head.last_hash != walk.previous:
        return _broken(walk, "chain_head does not match the last record (records inserted or chain_head changed "
                       "out of band)", "chain_head", 1)
    if expect is not None and expect.seq > last:
        return _broken(walk, f"the chain ends at sequence {last}, before the checkpoint kept outside the database "
                       f"(sequence {expect.seq}): records were deleted", "chain_head", 1)
    note = ""
    if expect is not None and expect.seq < start:
        note = f"; checkpoint sequence {expect.seq} was purged, so it could not be compared"
    return VerifyResult(True, walk.checked, f"chain intact: {walk.checked} record(s) verified{note}",
                        head_seq=last, head_hash=walk.previous)


def _broken(walk: _Walk, message: str, table: str, record_id: int) -> VerifyResult:
    return VerifyResult(False, walk.checked, message, table, record_id, head_seq=walk.expected - 1,
                        head_hash=walk.previous)


def purge_before(engine: Engine, before: datetime, key: ChainKey) -> PurgeResult:
    """Delete the oldest records written before ``before`` and anchor the chain at a checkpoint record.

    Only a prefix of the chain can go (the remaining records must still link up), so the purge stops at the
    first record written at or after ``before``; all rows of one hook call share one write time and leave
    together. The checkpoint stores the hash of the last purged record, from which ``verify`` continues.
    """
    cutoff = as_utc(before)
    # The checkpoint is appended by the chain's one writer, in the transaction that deletes (issue 15 item 6).
    with chain_transaction(engine, key) as (connection, chain):
        first_kept_candidates = [
            connection.execute(select(func.min(table.c.id)).where(table.c.recorded_at >= cutoff)).scalar()
            for table in CHAINED_TABLES.values()
        ]
        kept = [int(value) for value in first_kept_candidates if value is not None]
        through = min(kept) - 1 if kept else chain.last_seq
        start, _ = _start(connection)
        if through < start:
            return PurgeResult(purged_through_id=None)
        anchor_hash = _hash_of(connection, through)
        counts: dict[str, int] = {}
        # Children before parents: cards reference calls.
        for name in ("feedback", "cards", "calls", "checkpoints", "anchors"):
            table = CHAINED_TABLES[name]
            counts[name] = connection.execute(delete(table).where(table.c.id <= through)).rowcount
        connection.execute(delete(client_jti).where(client_jti.c.expires_at < datetime.now(UTC)))
        checkpoint_id = chain.append("checkpoints", {
            "purged_before": cutoff,
            "purged_through_id": through,
            "anchor_hash": anchor_hash,
            "purged_counts": counts,
        })
    return PurgeResult(purged_through_id=through, counts=counts, checkpoint_id=checkpoint_id)


def _hash_of(connection: Connection, record_id: int) -> str:
    for table in CHAINED_TABLES.values():
        found = connection.execute(select(table.c.record_hash).where(table.c.id == record_id)).scalar()
        if found is not None:
            return str(found)
    raise LookupError(f"no audit record with sequence number {record_id}; run `calcinosis-cds audit verify`")
