"""Alert state and feedback scoped to the tenant, override semantics (issue 15 items 1-4).

- ``calls``: ``fhir_server`` (normalised fhirServer) and ``tenant_key`` (digest of client iss, tenant claim and
  fhirServer), indexed with patient and time for the alert-history reads;
- ``cards``: ``evidence_fingerprint`` (source resources with versionId/lastUpdated) and ``override_codes`` (the
  override reasons the card offered);
- ``feedback``: the sending client (``client_iss``, ``client_tenant``), the server's ``received_at``,
  ``timestamp_in_future`` and ``match``, with an index on (outcome, received_at) for the suppression read.

Every new column is nullable: rows written before this revision keep NULL (and their hashes). Those rows carry
no tenant, so they never suppress or deduplicate an alert of a call made after the upgrade.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from cds_service.audit.schema import UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the tenant, evidence and feedback-match columns and their indexes."""
    # Plain ADD/DROP COLUMN (SQLite >= 3.35 has both): a batch rebuild of ``calls`` would trip the foreign key
    # from ``cards`` on SQLite, and nothing here needs one.
    op.add_column("calls", sa.Column("fhir_server", sa.Text, nullable=True))
    op.add_column("calls", sa.Column("tenant_key", sa.String(64), nullable=True))
    op.create_index("ix_calls_tenant_key_patient_id_received_at", "calls",
                    ["tenant_key", "patient_id", "received_at"])
    op.add_column("cards", sa.Column("evidence_fingerprint", sa.JSON, nullable=True))
    op.add_column("cards", sa.Column("override_codes", sa.JSON, nullable=True))
    op.add_column("feedback", sa.Column("client_iss", sa.Text, nullable=True))
    op.add_column("feedback", sa.Column("client_tenant", sa.Text, nullable=True))
    op.add_column("feedback", sa.Column("received_at", UtcDateTime, nullable=True))
    op.add_column("feedback", sa.Column("timestamp_in_future", sa.Boolean, nullable=True))
    op.add_column("feedback", sa.Column("match", sa.String(16), nullable=True))
    op.create_index("ix_feedback_outcome_received_at", "feedback", ["outcome", "received_at"])


def downgrade() -> None:
    """Drop them again (the tenant scope and feedback matching are lost)."""
    op.drop_index("ix_feedback_outcome_received_at", table_name="feedback")
    for name in ("match", "timestamp_in_future", "received_at", "client_tenant", "client_iss"):
        op.drop_column("feedback", name)
    op.drop_column("cards", "override_codes")
    op.drop_column("cards", "evidence_fingerprint")
    op.drop_index("ix_calls_tenant_key_patient_id_received_at", table_name="calls")
    op.drop_column("calls", "tenant_key")
    op.drop_column("calls", "fhir_server")
