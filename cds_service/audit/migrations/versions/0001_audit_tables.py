"""Audit tables: calls, cards, feedback, checkpoints (hash-chained), chain_head and client_jti.

Revision ID: 0001
Revises:
Create Date: 2025-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from cds_service.audit.schema import UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

GENESIS_HASH = "0" * 64


def upgrade() -> None:
    """Create the audit tables and the chain head at the genesis link."""
    head = op.create_table(
        "chain_head",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.Column("last_hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_chain_head"),
    )
    op.bulk_insert(head, [{"id": 1, "last_seq": 0, "last_hash": GENESIS_HASH}])

    op.create_table(
        "calls",
        sa.Column("id", sa.BigInteger, autoincrement=False, nullable=False),
        sa.Column("record_uuid", sa.String(36), nullable=False),
        sa.Column("hook_instance", sa.Text, nullable=False),
        sa.Column("service_id", sa.Text, nullable=False),
        sa.Column("hook", sa.Text, nullable=False),
        sa.Column("patient_id", sa.Text),
        sa.Column("user_id", sa.Text),
        sa.Column("encounter_id", sa.Text),
        sa.Column("client_iss", sa.Text),
        sa.Column("client_tenant", sa.Text),
        sa.Column("client_jti", sa.Text),
        sa.Column("received_at", UtcDateTime, nullable=False),
        sa.Column("duration_ms", sa.Float, nullable=False),
        sa.Column("http_status", sa.Integer, nullable=False),
        sa.Column("data_sources", sa.JSON, nullable=False),
        sa.Column("skipped_resources", sa.JSON, nullable=False),
        sa.Column("rules_evaluated", sa.JSON, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("recorded_at", UtcDateTime, nullable=False),
        sa.Column("record_hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_calls"),
        sa.UniqueConstraint("record_uuid", name="uq_calls_record_uuid"),
    )
    op.create_index("ix_calls_hook_instance", "calls", ["hook_instance"])
    op.create_index("ix_calls_received_at", "calls", ["received_at"])
    op.create_index("ix_calls_patient_id_received_at", "calls", ["patient_id", "received_at"])

    op.create_table(
        "cards",
        sa.Column("id", sa.BigInteger, autoincrement=False, nullable=False),
        sa.Column("call_id", sa.BigInteger, nullable=False),
        sa.Column("card_uuid", sa.Text, nullable=False),
        sa.Column("rule_id", sa.Text, nullable=False),
        sa.Column("rule_version", sa.Text, nullable=False),
        sa.Column("indicator", sa.Text, nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("evidence", sa.JSON, nullable=False),
        sa.Column("suggestion_uuids", sa.JSON, nullable=False),
        sa.Column("disposition", sa.String(16), nullable=False),
        sa.Column("order_key", sa.Text),
        sa.Column("repeat_of", sa.Text),
        sa.Column("recorded_at", UtcDateTime, nullable=False),
        sa.Column("record_hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_cards"),
        sa.ForeignKeyConstraint(["call_id"], ["calls.id"], name="fk_cards_call_id_calls"),
        sa.UniqueConstraint("card_uuid", name="uq_cards_card_uuid"),
    )
    op.create_index("ix_cards_call_id", "cards", ["call_id"])
    op.create_index("ix_cards_rule_id", "cards", ["rule_id"])
    op.create_index("ix_cards_order_key", "cards", ["order_key"])

    op.create_table(
        "feedback",
        sa.Column("id", sa.BigInteger, autoincrement=False, nullable=False),
        sa.Column("item_key", sa.String(64), nullable=False),
        sa.Column("service_id", sa.Text, nullable=False),
        sa.Column("card_uuid", sa.Text, nullable=False),
        sa.Column("card_known", sa.Boolean, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("accepted_suggestions", sa.JSON, nullable=False),
        sa.Column("override_code", sa.Text),
        sa.Column("override_system", sa.Text),
        sa.Column("override_display", sa.Text),
        sa.Column("override_comment", sa.Text),
        sa.Column("outcome_timestamp", UtcDateTime, nullable=False),
        sa.Column("recorded_at", UtcDateTime, nullable=False),
        sa.Column("record_hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_feedback"),
        sa.UniqueConstraint("item_key", name="uq_feedback_item_key"),
    )
    op.create_index("ix_feedback_card_uuid", "feedback", ["card_uuid"])
    op.create_index("ix_feedback_recorded_at", "feedback", ["recorded_at"])

    op.create_table(
        "checkpoints",
        sa.Column("id", sa.BigInteger, autoincrement=False, nullable=False),
        sa.Column("purged_before", UtcDateTime, nullable=False),
        sa.Column("purged_through_id", sa.BigInteger, nullable=False),
        sa.Column("anchor_hash", sa.String(64), nullable=False),
        sa.Column("purged_counts", sa.JSON, nullable=False),
        sa.Column("recorded_at", UtcDateTime, nullable=False),
        sa.Column("record_hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_checkpoints"),
    )

    op.create_table(
        "client_jti",
        sa.Column("iss", sa.Text, nullable=False),
        sa.Column("jti", sa.Text, nullable=False),
        sa.Column("expires_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("iss", "jti", name="pk_client_jti"),
    )
    op.create_index("ix_client_jti_expires_at", "client_jti", ["expires_at"])


def downgrade() -> None:
    """Drop every audit table (destroys the audit log: only for development databases)."""
    for name in ("client_jti", "checkpoints", "feedback", "cards", "calls", "chain_head"):
        op.drop_table(name)
