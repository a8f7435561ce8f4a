"""Alert governance (issue 19): ``calls.governance_values`` and the dashboard's indexes.

``governance_values`` holds the Ca x P, Ca, P, PTH multiple and R07 co-factor count every patient-view call
computed, fired or not, so the what-if simulator can recount a moved threshold. Nullable: rows written before
this revision have none, and the keyed chain hashes only non-NULL columns, so they still verify.

``ix_calls_tenant_key_received_at`` serves the dashboard's period queries filtered by tenant (the period-only
queries use ``ix_calls_received_at``).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the nullable JSON column calls.governance_values and the tenant/period index."""
    op.add_column("calls", sa.Column("governance_values", sa.JSON(none_as_null=True), nullable=True))
    op.create_index("ix_calls_tenant_key_received_at", "calls", ["tenant_key", "received_at"])


def downgrade() -> None:
    """Drop the index and the column again (batch mode: SQLite rebuilds the table)."""
    op.drop_index("ix_calls_tenant_key_received_at", table_name="calls")
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("governance_values")
