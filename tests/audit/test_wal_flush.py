"""SQLite: a hook call's records are flushed to disk after the chain's write lock is released, before
``record_hook_call`` returns (issue #7), and are still never acknowledged before they are durable (issue #4).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from cds_service.audit import AuditLog, db, hotpath, store
from cds_service.audit.integrity import verify_chain
from cds_service.audit.schema import calls
from cds_service.audit.spool import Spool
from cds_service.config import load_settings
from tests.audit.conftest import TEST_CHAIN_KEY, TEST_KEYRING
from tests.audit.factories import engine_for, make_call, make_card


@pytest.fixture
def sqlite_audit(tmp_path: Path) -> Iterator[AuditLog]:
    settings = load_settings({}, data_dir=str(tmp_path / "data"), audit_chain_key=TEST_CHAIN_KEY,
                             database_url=f"sqlite:///{tmp_path / 'db' / 'audit.sqlite3'}")
    audit = AuditLog.open(settings, create_schema=True)
    yield audit
    audit.close()


def _database_file(audit: AuditLog) -> str:
    return str(audit.engine.url.database)


def _writer_lock_is_free(database_file: str) -> bool:
    fd = os.open(f"{database_file}.writer-lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


def _stored(database_file: str, hook_instance: str) -> bool:
    engine = engine_for(f"sqlite:///{database_file}")
    try:
        with engine.connect() as connection:
            return connection.execute(
                select(calls.c.id).where(calls.c.hook_instance == hook_instance)).first() is not None
    finally:
        engine.dispose()


def test_the_flush_follows_the_commit_outside_the_writer_lock(sqlite_audit: AuditLog,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    database_file = _database_file(sqlite_audit)
    record = make_call("pat-1", [make_card()])
    seen: list[tuple[str, bool, bool]] = []
    real_flush = db.flush_sqlite_wal

    def observing_flush(wal_path: str) -> None:
        # At flush time the transaction is committed (visible to another connection) and the lock is free.
        seen.append((wal_path, _writer_lock_is_free(database_file), _stored(database_file, record.hook_instance)))
        real_flush(wal_path)

    monkeypatch.setattr(hotpath, "flush_sqlite_wal", observing_flush)
    sqlite_audit.record_hook_call(record)
    assert seen == [(f"{database_file}-wal", True, True)]


def test_the_wal_and_its_directory_are_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wal = tmp_path / "audit.sqlite3-wal"
    wal.write_bytes(b"frames")
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(db.os, "fsync", recording_fsync)
    db.flush_sqlite_wal(str(wal))
    assert synced == [str(wal), str(tmp_path)]  # the directory entry of a (possibly new) WAL file too

    wal.unlink()  # the last connection checkpointed the WAL into the database and removed it
    (tmp_path / "audit.sqlite3").write_bytes(b"pages")
    synced.clear()
    db.flush_sqlite_wal(str(wal))
    assert synced == [str(tmp_path / "audit.sqlite3"), str(tmp_path)]


def test_a_failed_flush_is_not_acknowledged_the_record_is_spooled_and_stored_once(
        sqlite_audit: AuditLog, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "RETRY_AFTER_S", 0.0)
    database_file = _database_file(sqlite_audit)

    def refusing_flush(_wal_path: str) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(hotpath, "flush_sqlite_wal", refusing_flush)
    record = make_call("pat-1", [make_card()])
    sqlite_audit.record_hook_call(record)  # committed but not known to be durable: it goes to the spool too
    spool = Spool(Path(sqlite_audit._settings.spool_dir))
    assert len(spool.pending()) == 1

    monkeypatch.undo()
    assert sqlite_audit.replay_spool() == 0  # already in the database: skipped, not stored twice
    assert not spool.pending()
    engine = engine_for(f"sqlite:///{database_file}")
    try:
        with engine.connect() as connection:
            assert connection.execute(select(calls.c.hook_instance)).scalars().all() == [record.hook_instance]
        assert verify_chain(engine, TEST_KEYRING).ok
    finally:
        engine.dispose()
