"""Run as a separate process by the concurrency tests: write hook calls into a shared audit database.

Usage: python tests/audit/_worker.py <database_url> <data_dir> <calls> <cards_per_call> <tag>
Prints one line per call: "<hook_instance> <card_uuid> <card_uuid> ...".
"""

from __future__ import annotations

import sys

from cds_service.audit import AuditLog
from cds_service.config import load_settings
from tests.audit.conftest import TEST_CHAIN_KEY
from tests.audit.factories import make_call, make_card


def main() -> None:
    """Write the calls, then print what was written so the parent can check every one is stored."""
    url, data_dir, calls, cards_per_call, tag = sys.argv[1:6]
    settings = load_settings({}, data_dir=data_dir, database_url=url, audit_chain_key=TEST_CHAIN_KEY)
    audit = AuditLog.open(settings, create_schema=True)
    try:
        for _ in range(int(calls)):
            record = make_call(f"{tag}-patient", [make_card() for _ in range(int(cards_per_call))])
            audit.record_hook_call(record)
            print(record.hook_instance, *(card.card_uuid for card in record.cards), flush=True)
    finally:
        audit.close()


if __name__ == "__main__":
    main()
