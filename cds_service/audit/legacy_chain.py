"""Verifying records written before the chain was keyed (schema revisions 0001-0002): verification only.

Those records carry ``key_id`` NULL and ``record_hash = SHA-256(canonical JSON of {table, row, prev})`` over
exactly the columns their tables had at revision 0002, NULL values included. Later migrations add columns
(0003, 0004, 0005: NULL in these rows), so the column lists are frozen here rather than read from schema.py.
Nothing writes this form any more (issue 15 item 6): migration 0005 anchors the legacy head with a keyed
record, and an unkeyed record after any keyed one fails verification, so a rewrite cannot pass as legacy.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from cds_service.audit.chain import link_payload

# Every column except record_hash of each chained table at revision 0002 (migration 0001; 0002 only indexed).
LEGACY_COLUMNS: dict[str, tuple[str, ...]] = {
    "calls": (
        "id", "record_uuid", "hook_instance", "service_id", "hook", "patient_id", "user_id", "encounter_id",
        "client_iss", "client_tenant", "client_jti", "received_at", "duration_ms", "http_status", "data_sources",
        "skipped_resources", "rules_evaluated", "error", "recorded_at",
    ),
    "cards": (
        "id", "call_id", "card_uuid", "rule_id", "rule_version", "indicator", "summary", "evidence",
        "suggestion_uuids", "disposition", "order_key", "repeat_of", "recorded_at",
    ),
    "feedback": (
        "id", "item_key", "service_id", "card_uuid", "card_known", "outcome", "accepted_suggestions",
        "override_code", "override_system", "override_display", "override_comment", "outcome_timestamp",
        "recorded_at",
    ),
    "checkpoints": ("id", "purged_before", "purged_through_id", "anchor_hash", "purged_counts", "recorded_at"),
}


def legacy_link_hash(table_name: str, row: Mapping[str, Any], previous_hash: str) -> str | None:
    """The unkeyed SHA-256 link of a pre-0005 row; None for a table that did not exist then (never legacy)."""
    columns = LEGACY_COLUMNS.get(table_name)
    if columns is None:
        return None
    content = {name: row.get(name) for name in columns}
    return hashlib.sha256(link_payload(table_name, content, previous_hash)).hexdigest()
