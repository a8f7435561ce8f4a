"""The governance dashboard's covering indexes (issue 19, scale: 1 million calls on PostgreSQL).

The dashboard's per-rule counts walk the period's calls, their cards and each card's feedback. Two existing
single-column indexes are widened, not joined by new ones, so a hook call still maintains the same number of
index entries (the write path, issue 18):

- ``ix_cards_call_id`` becomes (call_id, rule_id, disposition, card_uuid): the cards of a call, with everything
  the counts read, come from the index alone (index-only scan) instead of the wide card rows;
- ``ix_feedback_card_uuid`` becomes (card_uuid, outcome): a card's response is answered by the index alone.

Both keep their leading column, so every read that used the old index (the chain walk, purge, feedback match)
uses the new one. Plain composite keys rather than PostgreSQL's INCLUDE: the same declaration then holds on
SQLite. The new index is built before the old one is dropped; each CREATE INDEX holds off writes to its table
while it builds (seconds at a million rows; BENCHMARKS.md, "Governance dashboard at 1 million calls").

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Replace ix_cards_call_id and ix_feedback_card_uuid by their covering forms."""
    op.create_index("ix_cards_call_id_rule_id_disposition_card_uuid", "cards",
                    ["call_id", "rule_id", "disposition", "card_uuid"])
    op.drop_index("ix_cards_call_id", table_name="cards")
    op.create_index("ix_feedback_card_uuid_outcome", "feedback", ["card_uuid", "outcome"])
    op.drop_index("ix_feedback_card_uuid", table_name="feedback")


def downgrade() -> None:
    """Back to the single-column indexes of 0001."""
    op.create_index("ix_feedback_card_uuid", "feedback", ["card_uuid"])
    op.drop_index("ix_feedback_card_uuid_outcome", table_name="feedback")
    op.create_index("ix_cards_call_id", "cards", ["call_id"])
    op.drop_index("ix_cards_call_id_rule_id_disposition_card_uuid", table_name="cards")
