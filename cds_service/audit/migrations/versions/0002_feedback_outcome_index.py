"""Index feedback by (outcome, outcome_timestamp) for the alert policy's suppression read.

Without it the read ``which rules were overridden for this patient since T`` had to walk either every card of
those rules (all patients) or every call of the patient: its cost grew with the log (4.7 ms per hook call after
3,000 calls). With it the read starts from the few overrides inside the window (issue #7, BENCHMARKS.md).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ix_feedback_outcome_outcome_timestamp."""
    op.create_index("ix_feedback_outcome_outcome_timestamp", "feedback", ["outcome", "outcome_timestamp"])


def downgrade() -> None:
    """Drop the index again."""
    op.drop_index("ix_feedback_outcome_outcome_timestamp", table_name="feedback")
