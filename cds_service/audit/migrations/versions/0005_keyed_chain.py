"""Keyed hash chain (issue 15 item 6): ``key_id`` on every chained table, the ``anchors`` table, and a keyed
anchor over the existing unkeyed head.

Records written before this revision keep their unkeyed SHA-256 links (``key_id`` NULL) and are verified
with the legacy form (cds_service/audit/legacy_chain.py). The anchor written here is the first keyed record:
an HMAC under the current chain key that names the last unkeyed record and its hash, so it vouches for the
legacy prefix; any unkeyed record after it fails verification, so a rewrite cannot pass as legacy. An empty
chain needs no anchor (every record will be keyed).

The key comes from the caller (``upgrade_schema(engine, keyring)``: the service and ``db upgrade``), else from
CDS_AUDIT_CHAIN_KEY or the --dev key file in CDS_DATA_DIR; without one the migration stops with the fix.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import context, op

from cds_service.audit.keys import Keyring, load_keyring
from cds_service.audit.schema import UtcDateTime
from cds_service.audit.writer import ChainTransaction
from cds_service.config import ConfigError, load_settings

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

CHAINED = ("calls", "cards", "feedback", "checkpoints")
ANCHOR_KIND = "keyed-chain"


def upgrade() -> None:
    """Add key_id columns and the anchors table; anchor a non-empty unkeyed chain with a keyed record."""
    for table in CHAINED:
        op.add_column(table, sa.Column("key_id", sa.String(16)))
    # As the table is at this revision (the anchor below is inserted with this definition, not schema.py's).
    anchors = op.create_table(
        "anchors",
        sa.Column("id", sa.BigInteger, autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("legacy_through_id", sa.BigInteger, nullable=False),
        sa.Column("legacy_head_hash", sa.String(64), nullable=False),
        sa.Column("recorded_at", UtcDateTime, nullable=False),
        sa.Column("record_hash", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_anchors"),
    )
    bind = op.get_bind()
    last_seq = int(bind.execute(sa.text("SELECT last_seq FROM chain_head WHERE id = 1")).scalar_one())
    if bind.dialect.name == "postgresql":
        # Instances of the previous version may still be running against a shared PostgreSQL during a rollout:
        # their unkeyed appends would break verification for good, so the database refuses them (they spool
        # and fail visibly instead). SQLite is one embedded instance, and cannot add a CHECK in place.
        for table in CHAINED:
            op.create_check_constraint(f"ck_{table}_keyed", table, sa.text(f"key_id IS NOT NULL OR id <= {last_seq}"))
    if last_seq == 0:
        return
    keyring = _keyring(last_seq)
    # The chain's one writer, on this migration's connection and transaction (PostgreSQL: it takes the chain
    # lock, so no instance appends between the head read and the anchor).
    chain = ChainTransaction(bind.connection.driver_connection, bind.dialect.name == "postgresql",
                             keyring.current, datetime.now(UTC))
    chain.append(anchors, {"kind": ANCHOR_KIND, "legacy_through_id": chain.last_seq,
                           "legacy_head_hash": chain.last_hash})
    chain.finish()


def _keyring(records: int) -> Keyring:
    given = context.config.attributes.get("chain_keyring")
    if isinstance(given, Keyring):
        return given
    try:
        return load_keyring(load_settings(), tool=True)
    except ConfigError as exc:
        raise ConfigError(
            f"audit migration 0005 must anchor the existing {records} unkeyed audit record(s) with a keyed "
            f"record, and found no chain key: {exc}. Set CDS_AUDIT_CHAIN_KEY (the key the service will use) "
            "and run `calcinosis-cds db upgrade` again"
        ) from None


def downgrade() -> None:
    """Drop the anchors table and the key_id columns (keyed records then no longer verify: development only)."""
    op.drop_table("anchors")
    if op.get_bind().dialect.name == "postgresql":
        for table in CHAINED:
            op.drop_constraint(f"ck_{table}_keyed", table, type_="check")
    for table in CHAINED:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("key_id")
