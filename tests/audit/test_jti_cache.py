"""The JWT replay cache on the audit database: claimed without a disk flush of its own, yet never weaker.

``AuditLog.remember_jti`` commits with SQLite ``synchronous=NORMAL`` / PostgreSQL ``synchronous_commit=off``
for that one transaction (issue #7); the chain appends on the same pooled connections must stay fully
synchronous (issue #4 item 2), and a claim must survive the claiming process being killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from cds_service.audit import AuditLog, AuditUnavailable, store
from cds_service.audit.schema import client_jti
from tests.audit.conftest import Database
from tests.audit.factories import make_call, make_card

REPO_ROOT = Path(__file__).resolve().parents[2]
EHR = "https://ehr.example.org"

_CLAIM_THEN_HANG = """
import sys, time
from datetime import UTC, datetime, timedelta
from cds_service.audit import AuditLog
from cds_service.config import load_settings
from tests.audit.conftest import TEST_CHAIN_KEY

audit = AuditLog.open(load_settings({}, data_dir=sys.argv[2], database_url=sys.argv[1],
                                 audit_chain_key=TEST_CHAIN_KEY), create_schema=True)
print(audit.remember_jti("https://ehr.example.org", sys.argv[3], datetime.now(UTC) + timedelta(minutes=5)),
      flush=True)
time.sleep(60)  # killed here, never closed
"""


def _synchronous_settings(audit: AuditLog, database: Database) -> list[str]:
    """The durability setting of every connection the audit log has pooled (checked out one by one)."""
    pool = audit.engine.pool
    held = [audit.engine.raw_connection() for _ in range(pool.checkedin())]  # type: ignore[attr-defined]
    try:
        query = "SHOW synchronous_commit" if database.backend == "postgres" else "PRAGMA synchronous"
        settings = []
        for connection in held:
            cursor = connection.cursor()
            cursor.execute(query)
            settings.append(str(cursor.fetchone()[0]))
            cursor.close()
            connection.rollback()
        return settings
    finally:
        for connection in held:
            connection.close()


def _full(database: Database) -> str:
    # SQLite reports FULL as 2; PostgreSQL's default (and ours) is "on".
    return "on" if database.backend == "postgres" else "2"


def test_claims_leave_the_pooled_connections_fully_synchronous(audit: AuditLog, database: Database) -> None:
    expires = datetime.now(UTC) + timedelta(minutes=5)
    assert audit.remember_jti(EHR, "jti-a", expires) is True
    audit.record_hook_call(make_call("pat-1", [make_card()]))  # a chain append on the same pooled connection
    assert audit.remember_jti(EHR, "jti-a", expires) is False
    settings = _synchronous_settings(audit, database)
    assert settings, "the claims above must have left a pooled connection"
    assert settings == [_full(database)] * len(settings)


def test_a_failed_claim_also_restores_full_synchronous(audit: AuditLog, database: Database) -> None:
    expires = datetime.now(UTC) + timedelta(minutes=5)
    assert audit.remember_jti(EHR, "jti-before", expires) is True
    with audit.engine.begin() as connection:  # out of band: the claim's INSERT now fails inside its transaction
        connection.execute(text("ALTER TABLE client_jti RENAME TO client_jti_gone"))
    with pytest.raises(AuditUnavailable):
        audit.remember_jti(EHR, "jti-after", expires)
    settings = _synchronous_settings(audit, database)
    assert settings == [_full(database)] * len(settings)


def test_expired_ids_are_forgotten_now_and_then(audit: AuditLog, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "JTI_CLEANUP_EVERY", 3)
    now = datetime.now(UTC)
    assert audit.remember_jti(EHR, "long-expired", now - timedelta(hours=2)) is True
    assert audit.remember_jti(EHR, "just-expired", now - timedelta(minutes=5)) is True  # within the hour kept
    with audit.engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(client_jti)).scalar_one() == 2
    assert audit.remember_jti(EHR, "fresh", now + timedelta(minutes=5)) is True  # third claim: cleanup runs
    with audit.engine.connect() as connection:
        remaining = sorted(connection.execute(select(client_jti.c.jti)).scalars())
    assert remaining == ["fresh", "just-expired"]


@pytest.mark.slow
def test_a_claim_survives_kill_9_of_the_claiming_process(open_audit: Callable[..., AuditLog],
                                                         database: Database) -> None:
    """Not flushed to disk by itself, the claim is still committed: another process sees it after kill -9."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    claimer = subprocess.Popen(
        [sys.executable, "-c", _CLAIM_THEN_HANG, database.url, str(database.data_dir), "jti-killed"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT,
    )
    try:
        assert claimer.stdout is not None
        line = claimer.stdout.readline()
        assert line.strip() == "True", claimer.stderr.read() if claimer.stderr else line
    finally:
        claimer.send_signal(signal.SIGKILL)
        claimer.wait(timeout=30)
    other = open_audit()
    assert other.remember_jti(EHR, "jti-killed", datetime.now(UTC) + timedelta(minutes=5)) is False
