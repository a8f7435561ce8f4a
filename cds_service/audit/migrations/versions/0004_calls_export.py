"""Complete calls export: ``calls.request_ms``, the time from the request reaching the app to its response.

Issue 15 item 7: ``duration_ms`` is evaluation time only (0.3 ms where the client saw 12.5 ms); ``request_ms``
covers body reading, authentication, evaluation and the alert policy. Nullable: rows written before this
revision have none, and their chain hashes were computed without it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the nullable column calls.request_ms."""
    op.add_column("calls", sa.Column("request_ms", sa.Float(), nullable=True))


def downgrade() -> None:
    """Drop calls.request_ms again (batch mode: SQLite rebuilds the table)."""
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("request_ms")
