"""The audit database tables (SQLAlchemy Core). Alembic migrations in ``migrations/`` create them.

Every audited record (hook call, card, feedback item, purge checkpoint, anchor) carries a global sequence
number as its primary key and ``record_hash``, an HMAC-SHA-256 chained to the previous record of the same
database (issue #4 item 3, issue 15 item 6, see :mod:`cds_service.audit.chain`), with ``key_id`` naming the
signing key. ``chain_head`` holds the last sequence number and hash;
``client_jti`` is the JWT replay cache shared by every worker and instance (issue #8 item 3), not part
of the chain.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)

from cds_service.audit.records import as_utc

# Stable constraint names so migrations and autogenerate comparisons agree on every backend.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp that is always an aware UTC datetime in Python, whatever the backend stores.

    SQLite has no time zone type, so values are written there as naive UTC; PostgreSQL gets ``timestamptz``.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert to UTC before storing (naive on SQLite, where offsets would break string ordering)."""
        if value is None:
            return None
        utc = as_utc(value)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        """Read back as an aware UTC datetime."""
        if value is None:
            return None
        return as_utc(value)


HASH = String(64)
KEY_ID = String(16)  # cds_service.audit.keys.key_id_of

chain_head = Table(
    "chain_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),  # always 1
    Column("last_seq", BigInteger, nullable=False),
    Column("last_hash", HASH, nullable=False),
)

calls = Table(
    "calls",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),  # = chain sequence number
    Column("record_uuid", String(36), nullable=False, unique=True),  # makes spool replays idempotent
    Column("hook_instance", Text, nullable=False, index=True),
    Column("service_id", Text, nullable=False),
    Column("hook", Text, nullable=False),
    Column("patient_id", Text),
    Column("user_id", Text),
    Column("encounter_id", Text),
    Column("client_iss", Text),
    Column("client_tenant", Text),
    Column("client_jti", Text),
    Column("received_at", UtcDateTime, nullable=False, index=True),
    Column("duration_ms", Float, nullable=False),
    Column("http_status", Integer, nullable=False),
    Column("data_sources", JSON, nullable=False),
    Column("skipped_resources", JSON, nullable=False),
    Column("rules_evaluated", JSON, nullable=False),
    Column("error", Text),
    # From the request reaching the app until the response was ready (migration 0004, issue 15 item 7); NULL
    # in rows written before it, whose hash was computed without it.
    Column("request_ms", Float, info={"added_in": "0004"}),
    # The tenant that owns the call's alert state (migration 0003, issue 15 item 1): the normalised fhirServer
    # and the digest of (client iss, tenant claim, fhirServer). NULL in rows written before it.
    Column("fhir_server", Text, info={"added_in": "0003"}),
    Column("tenant_key", String(64), info={"added_in": "0003"}),
    # Issue 19 (migration 0006): the values a patient-view call computed, fired or not, for the what-if
    # simulator (cds_service.governance.values). NULL in rows written before it, hashed without it.
    Column("governance_values", JSON(none_as_null=True), info={"added_in": "0006"}),
    Column("recorded_at", UtcDateTime, nullable=False),
    Column("record_hash", HASH, nullable=False),
    Column("key_id", KEY_ID),  # the chain key that signed the row (migration 0005); NULL: legacy SHA-256
    Index(None, "patient_id", "received_at"),
    Index(None, "tenant_key", "patient_id", "received_at"),
    Index(None, "tenant_key", "received_at"),  # the governance dashboard's tenant filter (migration 0006)
)

cards = Table(
    "cards",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("call_id", BigInteger, ForeignKey("calls.id"), nullable=False),
    Column("card_uuid", Text, nullable=False, unique=True),
    Column("rule_id", Text, nullable=False, index=True),
    Column("rule_version", Text, nullable=False),
    Column("indicator", Text, nullable=False),
    Column("summary", Text, nullable=False),
    Column("evidence", JSON, nullable=False),
    Column("suggestion_uuids", JSON, nullable=False),
    Column("disposition", String(16), nullable=False),
    Column("order_key", Text, index=True),
    Column("repeat_of", Text),
    # What drove the card and which override reasons it offered (migration 0003, issue 15 item 4).
    Column("evidence_fingerprint", JSON, info={"added_in": "0003"}),
    Column("override_codes", JSON, info={"added_in": "0003"}),
    Column("recorded_at", UtcDateTime, nullable=False),
    Column("record_hash", HASH, nullable=False),
    Column("key_id", KEY_ID),  # the chain key that signed the row (migration 0005); NULL: legacy SHA-256
    # A call's cards with what the governance dashboard counts, read from the index alone (migration 0007).
    Index(None, "call_id", "rule_id", "disposition", "card_uuid"),
)

feedback = Table(
    "feedback",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("item_key", HASH, nullable=False, unique=True),  # digest of the item: the same item is stored once
    Column("service_id", Text, nullable=False),
    Column("card_uuid", Text, nullable=False),
    Column("card_known", Boolean, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("accepted_suggestions", JSON, nullable=False),
    Column("override_code", Text),
    Column("override_system", Text),
    Column("override_display", Text),
    Column("override_comment", Text),
    Column("outcome_timestamp", UtcDateTime, nullable=False),
    # Migration 0003, issue 15 items 2-3: the sending client, this server's receive time (windows start here,
    # never at outcome_timestamp), outcome_timestamp more than 5 minutes after it, and whether the card and its
    # client were known at receipt ("matched" / "unmatched"; the join on card uuid and client decides the effect,
    # so a card replayed later from a spool is matched then).
    Column("client_iss", Text, info={"added_in": "0003"}),
    Column("client_tenant", Text, info={"added_in": "0003"}),
    Column("received_at", UtcDateTime, info={"added_in": "0003"}),
    Column("timestamp_in_future", Boolean, info={"added_in": "0003"}),
    Column("match", String(16), info={"added_in": "0003"}),
    Column("recorded_at", UtcDateTime, nullable=False, index=True),
    Column("record_hash", HASH, nullable=False),
    Column("key_id", KEY_ID),  # the chain key that signed the row (migration 0005); NULL: legacy SHA-256
    # The alert policy's suppression read starts here: overrides inside the window, however long the
    # patient's history (migration 0002, issue #7).
    Index(None, "outcome", "outcome_timestamp"),
    # Since migration 0003 the suppression read starts at the overrides received inside the window.
    Index(None, "outcome", "received_at"),
    # A card's responses from the index alone (migration 0007, the governance dashboard).
    Index(None, "card_uuid", "outcome"),
)

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("purged_before", UtcDateTime, nullable=False),
    Column("purged_through_id", BigInteger, nullable=False),  # last sequence number removed by the purge
    Column("anchor_hash", HASH, nullable=False),  # its hash: the chain continues from here
    Column("purged_counts", JSON, nullable=False),
    Column("recorded_at", UtcDateTime, nullable=False),
    Column("record_hash", HASH, nullable=False),
    Column("key_id", KEY_ID),  # the chain key that signed the row (migration 0005); NULL: legacy SHA-256
)

# The keyed anchor migration 0005 writes over a chain that was written before it was keyed (issue 15 item 6): it
# vouches for the unkeyed records up to ``legacy_through_id`` (whose hash is ``legacy_head_hash``); an unkeyed
# record anywhere after a keyed one fails verification.
anchors = Table(
    "anchors",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("kind", String(32), nullable=False),  # "keyed-chain"
    Column("legacy_through_id", BigInteger, nullable=False),
    Column("legacy_head_hash", HASH, nullable=False),
    Column("recorded_at", UtcDateTime, nullable=False),
    Column("record_hash", HASH, nullable=False),
    Column("key_id", KEY_ID, nullable=False),
)

client_jti = Table(
    "client_jti",
    metadata,
    Column("iss", Text, primary_key=True),
    Column("jti", Text, primary_key=True),
    Column("expires_at", UtcDateTime, nullable=False, index=True),
)

# The tables whose rows are links of the hash chain, in the order their rows are written in one transaction.
CHAINED_TABLES: dict[str, Table] = {
    "calls": calls,
    "cards": cards,
    "feedback": feedback,
    "checkpoints": checkpoints,
    "anchors": anchors,
}
