"""Nothing acknowledged is lost: database outages spool records durably; they are replayed when it is back."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from cds_service.audit import AuditLog, AuditUnavailable, store
from cds_service.audit.integrity import verify_chain
from cds_service.audit.records import SpooledCall, call_from_json, call_to_json
from cds_service.audit.schema import calls, cards
from cds_service.audit.spool import STALE_TMP_SECONDS, Spool
from tests.audit.conftest import TEST_KEYRING, Database
from tests.audit.factories import SECRET_LAB_VALUE, TENANT, engine_for, make_call, make_card, make_feedback
from tests.audit.pgproxy import TcpProxy
from tests.support.postgres import require_postgres

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def fast_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retry the database and look at the spool without the production back-off delays."""
    monkeypatch.setattr(store, "RETRY_AFTER_S", 0.05)
    monkeypatch.setattr(store, "SPOOL_CHECK_INTERVAL_S", 0.0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _spooled(database: Database) -> list[Path]:
    """The records waiting in the spool, by the spool's own rule (temporaries of unfinished writes excluded)."""
    return Spool(database.settings().spool_dir).pending()


def _temporaries(database: Database) -> list[Path]:
    return sorted(database.settings().spool_dir.glob(".tmp-*"))


def _stored_instances(url: str) -> list[str]:
    engine = engine_for(url)
    with engine.connect() as connection:
        found = [row.hook_instance for row in connection.execute(select(calls.c.hook_instance))]
    engine.dispose()
    return found


def _wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


class Outage:
    """Make the parametrised database unavailable and available again, the way each backend fails."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._proxy: TcpProxy | None = None
        self.url = database.url
        if database.backend == "postgres":
            self._proxy = TcpProxy(("127.0.0.1", 5432))
            self._proxy.start()
            self.url = database.url_via_port(self._proxy.port)

    def begin(self) -> None:
        """Database gone: the PostgreSQL host stops answering / the SQLite file's directory disappears."""
        if self._proxy is not None:
            self._proxy.stop()
        else:
            db_dir = Path(self.database.url.removeprefix("sqlite:///")).parent
            db_dir.rename(db_dir.with_name("db-away"))

    def end(self) -> None:
        """Database back."""
        if self._proxy is not None:
            self._proxy.start()
        else:
            db_dir = Path(self.database.url.removeprefix("sqlite:///")).parent
            db_dir.with_name("db-away").rename(db_dir)

    def close(self) -> None:
        """Stop the proxy, if any."""
        if self._proxy is not None:
            self._proxy.stop()


@pytest.fixture
def outage(database: Database) -> Iterator[Outage]:
    """An outage switch for the parametrised database."""
    switch = Outage(database)
    yield switch
    switch.close()


def test_outage_spools_then_replays_without_loss(open_audit: Callable[..., AuditLog], database: Database,
                                                 outage: Outage, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    audit = open_audit(outage.url)
    before = [make_call() for _ in range(3)]
    for record in before:
        audit.record_hook_call(record)

    outage.begin()
    during = [make_call(f"pat-down-{index}") for index in range(5)]
    for record in during:
        audit.record_hook_call(record)  # must not raise
    assert len(_spooled(database)) == 5
    with pytest.raises(AuditUnavailable):
        audit.record_feedback([make_feedback(before[0].cards[0].card_uuid)])
    with pytest.raises(AuditUnavailable):
        audit.alert_history(TENANT.key, "pat-1", ["calcinosis.phosphate.high"], before[0].received_at, [], None)
    assert audit.ping() is False

    outage.end()
    time.sleep(0.1)  # past the retry back-off
    after = make_call()
    audit.record_hook_call(after)  # stored directly, and starts the background replay
    _wait_for(lambda: not _spooled(database))

    expected = sorted(record.hook_instance for record in [*before, *during, after])
    assert sorted(_stored_instances(database.url)) == expected
    engine = engine_for(database.url)
    assert verify_chain(engine, TEST_KEYRING).ok
    engine.dispose()
    # The feedback refused during the outage succeeds on the EHR's retry.
    audit.record_feedback([make_feedback(before[0].cards[0].card_uuid)])
    _assert_no_phi_in_logs(caplog, [*before, *during, after])


def test_spool_is_replayed_when_the_log_is_opened(open_audit: Callable[..., AuditLog], database: Database,
                                                  outage: Outage) -> None:
    first = open_audit(outage.url)
    outage.begin()
    records = [make_call() for _ in range(4)]
    for record in records:
        first.record_hook_call(record)
    first.close()
    assert len(_spooled(database)) == 4
    outage.end()

    open_audit(outage.url)  # e.g. the service restarted
    assert not _spooled(database)
    assert sorted(_stored_instances(database.url)) == sorted(r.hook_instance for r in records)


def test_open_with_database_down_still_serves_and_spools(database: Database, tmp_path: Path) -> None:
    if database.backend == "postgres":
        require_postgres()
        url = database.url_via_port(_free_port())  # nothing listens there
    else:
        blocker = tmp_path / "not-a-directory"
        blocker.write_text("a file where the database directory should be")
        url = f"sqlite:///{blocker / 'audit.sqlite3'}"
    audit = AuditLog.open(database.settings(url), create_schema=True)  # does not raise
    try:
        record = make_call()
        audit.record_hook_call(record)
        assert [call_from_json(json.loads(path.read_text())).record for path in _spooled(database)] == [record]
        assert audit.ping() is False
        assert audit.spool_depth() == 1
    finally:
        audit.close()


def test_replay_is_idempotent_across_workers(open_audit: Callable[..., AuditLog], database: Database) -> None:
    """A record stored, then found again in the spool (e.g. the commit's acknowledgement was lost) is kept once."""
    audit = open_audit()
    record = make_call()
    spooled = SpooledCall(record_uuid="11111111-2222-3333-4444-555555555555", record=record)
    spool = Spool(database.settings().spool_dir)
    spool.put(spooled)
    other_worker = open_audit()  # replays at open
    spool.put(spooled)
    assert audit.replay_spool() == 0  # already stored: skipped, file removed
    assert other_worker.replay_spool() == 0
    assert not _spooled(database)
    assert _stored_instances(database.url) == [record.hook_instance]


def test_concurrent_writers_through_an_outage_lose_nothing(open_audit: Callable[..., AuditLog],
                                                           database: Database, outage: Outage) -> None:
    audit = open_audit(outage.url)
    written: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            record = make_call(cards_=[make_card(), make_card()])
            audit.record_hook_call(record)  # returns = acknowledged
            with lock:
                written.append(record.hook_instance)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.4)
    outage.begin()
    time.sleep(0.4)
    outage.end()
    time.sleep(0.4)
    stop.set()
    for thread in threads:
        thread.join()
    audit.replay_spool()
    assert not _spooled(database)
    stored = _stored_instances(database.url)
    assert sorted(stored) == sorted(written)  # every acknowledged call, exactly once
    engine = engine_for(database.url)
    with engine.connect() as connection:
        assert connection.execute(select(cards.c.id)).all().__len__() == 2 * len(written)
    result = verify_chain(engine, TEST_KEYRING)
    assert result.ok, result.message
    engine.dispose()


@pytest.mark.slow
def test_spooled_records_survive_kill_9(database: Database, tmp_path: Path) -> None:
    """A writer killed mid-run: every record it acknowledged is on disk and replays into the database."""
    if database.backend == "postgres":
        url_down = database.url_via_port(_free_port())
    else:
        url_down = f"sqlite:///{tmp_path / 'file-not-dir'}/audit.sqlite3"
        (tmp_path / "file-not-dir").write_text("x")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    worker = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "tests" / "audit" / "_worker.py"), url_down, str(database.data_dir),
         "100000", "1", "killed"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=REPO_ROOT,
    )
    assert worker.stdout is not None
    acknowledged: list[str] = []
    for line in worker.stdout:
        acknowledged.append(line.split()[0])
        if len(acknowledged) == 40:
            worker.send_signal(signal.SIGKILL)
            break
    worker.wait(timeout=30)
    acknowledged.extend(line.split()[0] for line in worker.stdout if line.strip())

    audit = AuditLog.open(database.settings(), create_schema=True)  # replays the spool at open
    try:
        stored = set(_stored_instances(database.url))
        assert set(acknowledged) <= stored
        assert not _spooled(database)
        # SIGKILL can land inside a write: that record was never renamed into place, so never acknowledged, and
        # its temporary stays until it is stale (a live writer may still own a fresh one).
        for temporary in _temporaries(database):
            unfinished = temporary.read_bytes()  # possibly truncated mid-write
            assert not [instance for instance in acknowledged if instance.encode() in unfinished]
            stale = time.time() - STALE_TMP_SECONDS - 1
            os.utime(temporary, (stale, stale))
        Spool(database.settings().spool_dir).remove_stale_temporaries()
        assert not _temporaries(database)
    finally:
        audit.close()


def test_unreadable_spool_file_is_quarantined_not_lost(open_audit: Callable[..., AuditLog],
                                                       database: Database) -> None:
    spool_dir = database.settings().spool_dir
    spool_dir.mkdir(parents=True)
    broken = spool_dir / "00000000000000000001-broken.call.json"
    broken.write_text("{ truncated")
    audit = open_audit()
    assert audit.replay_spool() == 0
    assert not broken.exists()
    assert (spool_dir / "quarantine" / broken.name).read_text() == "{ truncated"


def test_when_database_and_spool_both_fail_record_hook_call_still_returns(
        database: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    settings = database.settings(f"sqlite:///{blocker / 'audit.sqlite3'}", data_dir=str(blocker))
    audit = AuditLog.open(settings, create_schema=True)
    try:
        audit.record_hook_call(make_call())  # neither database nor spool can be written: logs, never raises
    finally:
        audit.close()
    assert "audit record LOST" in caplog.text


def test_spool_round_trip_keeps_every_field() -> None:
    record = make_call(cards_=[make_card(order_key="MedicationRequest/1", repeat_of="abc")])
    spooled = SpooledCall(record_uuid="u-1", record=record)
    restored = call_from_json(json.loads(json.dumps(call_to_json(spooled))))
    assert restored.record == record
    assert restored.record_uuid == "u-1"


def _assert_no_phi_in_logs(caplog: pytest.LogCaptureFixture, records: list) -> None:  # type: ignore[type-arg]
    text = caplog.text
    assert str(SECRET_LAB_VALUE) not in text
    for record in records:
        assert record.patient_id not in text
        assert record.client_jti not in text
        assert record.hook_instance not in text
        for card in record.cards:
            assert card.summary not in text
