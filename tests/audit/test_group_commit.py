"""Group commit: records handed in while a write is under way share the next transaction (issue #7).

Unit tests drive ``GroupCommit`` with a fake writer; the integration tests hold the real chain lock (SQLite's
lock file, PostgreSQL's advisory lock) so that several hook calls queue behind it deterministically.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from sqlalchemy import select

from cds_service.audit import AuditLog
from cds_service.audit.chain import CHAIN_LOCK_KEY
from cds_service.audit.group_commit import GroupCommit, GroupCommitTimeout
from cds_service.audit.integrity import verify_chain
from cds_service.audit.records import HookCallRecord
from cds_service.audit.schema import calls
from tests.audit.conftest import TEST_KEYRING, Database
from tests.audit.factories import capture_driver_statements, make_call, make_card


class Refused(Exception):
    """A record the fake database refuses."""


class Down(Exception):
    """The fake database is unavailable."""


class FakeDatabase:
    """Writes batches; the first transaction is held open; commits are recorded in order."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.committed: list[str] = []
        self.hold_first = threading.Event()
        self.first_started = threading.Event()
        self.refuse: set[str] = set()
        self.down = False
        self.fail_before_collect = False

    def write(self, collect: Callable[[], list[str]]) -> None:
        if self.fail_before_collect:
            raise Down("cannot connect")
        batch = collect()
        self.batches.append(batch)
        if not self.first_started.is_set():  # the first transaction stays open until the test lets it commit
            self.first_started.set()
            assert self.hold_first.wait(5)
        if self.down:
            raise Down("connection lost")
        if self.refuse & set(batch):
            raise Refused("constraint violated")
        self.committed.extend(batch)


def _group(database: FakeDatabase, timeout_s: float = 5.0) -> GroupCommit[str]:
    return GroupCommit(database.write, lambda exc: isinstance(exc, Down), timeout_s)


def _submit_all(group: GroupCommit[str], records: list[str], database: FakeDatabase,
                outcome: dict[str, object]) -> list[threading.Thread]:
    def submit(record: str) -> None:
        try:
            group.submit(record)
        except Exception as exc:  # noqa: BLE001 - recorded for the assertions
            outcome[record] = exc
        else:
            # Returned only after its batch was committed.
            outcome[record] = "ok" if record in database.committed else "returned before commit"

    threads = [threading.Thread(target=submit, args=(record,)) for record in records]
    for thread in threads:
        thread.start()
    return threads


def _wait_queued(group: GroupCommit[Any], count: int) -> None:
    deadline = time.monotonic() + 5
    while len(group._queue) < count:  # noqa: SLF001 - the test needs to know they are all waiting
        assert time.monotonic() < deadline, "records were not queued"
        time.sleep(0.005)


def test_records_queued_during_a_write_share_the_next_transaction() -> None:
    database = FakeDatabase()
    group = _group(database)
    outcome: dict[str, object] = {}
    first = _submit_all(group, ["a"], database, outcome)
    assert database.first_started.wait(5)
    others = _submit_all(group, ["b", "c", "d", "e"], database, outcome)
    _wait_queued(group, 4)
    database.hold_first.set()
    for thread in first + others:
        thread.join(5)
    assert database.batches[0] == ["a"]
    assert sorted(database.batches[1]) == ["b", "c", "d", "e"]
    assert len(database.batches) == 2
    assert outcome == dict.fromkeys("abcde", "ok")


def test_a_refused_record_does_not_take_its_batch_with_it() -> None:
    database = FakeDatabase()
    database.refuse = {"c"}
    group = _group(database)
    outcome: dict[str, object] = {}
    first = _submit_all(group, ["a"], database, outcome)
    assert database.first_started.wait(5)
    others = _submit_all(group, ["b", "c", "d"], database, outcome)
    _wait_queued(group, 3)
    database.hold_first.set()
    for thread in first + others:
        thread.join(5)
    assert isinstance(outcome.pop("c"), Refused)
    assert outcome == dict.fromkeys("abd", "ok")
    assert sorted(database.committed) == ["a", "b", "d"]


def test_an_outage_fails_every_record_of_the_batch() -> None:
    database = FakeDatabase()
    group = _group(database)
    outcome: dict[str, object] = {}
    first = _submit_all(group, ["a"], database, outcome)
    assert database.first_started.wait(5)
    database.down = True
    others = _submit_all(group, ["b", "c"], database, outcome)
    _wait_queued(group, 2)
    database.hold_first.set()
    for thread in first + others:
        thread.join(5)
    assert all(isinstance(outcome[record], Down) for record in "abc")
    assert database.committed == []


def test_a_write_that_cannot_start_fails_everyone_queued_at_once() -> None:
    database = FakeDatabase()
    database.first_started.set()  # no holding
    database.fail_before_collect = True
    group = _group(database)
    with pytest.raises(Down):
        group.submit("a")
    assert database.batches == []


def test_a_follower_that_waits_too_long_gives_up_and_is_not_written_later() -> None:
    database = FakeDatabase()
    group = _group(database, timeout_s=0.2)
    outcome: dict[str, object] = {}
    first = _submit_all(group, ["a"], database, outcome)
    assert database.first_started.wait(5)
    late = _submit_all(group, ["b"], database, outcome)
    late[0].join(5)
    assert isinstance(outcome["b"], GroupCommitTimeout)
    database.hold_first.set()
    first[0].join(5)
    assert outcome["a"] == "ok"
    assert database.committed == ["a"]  # b was taken out of the queue: the caller spools it instead


# ------------------------------------------------------------------------------------------ real databases
def _hold_chain_lock(database: Database) -> Callable[[], None]:
    """Take the chain's write lock the way another writer would; returns the release function."""
    if database.backend == "sqlite":
        fd = os.open(f"{database.url.removeprefix('sqlite:///')}.writer-lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)

        def release_file() -> None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        return release_file
    assert database.pg_name is not None
    connection = psycopg.connect(f"host=127.0.0.1 port=5432 user=postgres dbname={database.pg_name}",
                                 autocommit=True)
    connection.execute("SELECT pg_advisory_lock(%s)", (CHAIN_LOCK_KEY,))

    def release_session() -> None:
        connection.execute("SELECT pg_advisory_unlock(%s)", (CHAIN_LOCK_KEY,))
        connection.close()
    return release_session


def test_hook_calls_waiting_for_the_chain_lock_are_committed_together(
        audit: AuditLog, database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    audit.record_hook_call(make_call())  # schema, lock file and pool exist
    statements = capture_driver_statements(audit, database.backend, monkeypatch)
    records = [make_call(f"pat-{index}", [make_card(), make_card()]) for index in range(5)]
    returned: list[str] = []
    release = _hold_chain_lock(database)
    try:
        threads = [threading.Thread(target=lambda r=record: (audit.record_hook_call(r),
                                                             returned.append(r.hook_instance)))
                   for record in records]
        for thread in threads:
            thread.start()
        _wait_queued(audit._group, 5)  # noqa: SLF001 - all five wait behind the lock
        time.sleep(0.05)
        assert returned == []  # nothing is acknowledged before it is committed
    finally:
        release()
    for thread in threads:
        thread.join(10)
    assert sorted(returned) == sorted(record.hook_instance for record in records)
    assert audit.spool_depth() == 0
    if database.backend == "sqlite":
        assert statements.count("COMMIT") == 1, statements
    else:
        writes = [s for s in statements if s.startswith("WITH new_calls")]
        assert len(writes) == 1, statements
    with audit.engine.connect() as connection:
        stored = set(connection.execute(select(calls.c.hook_instance)).scalars())
    assert {record.hook_instance for record in records} <= stored
    result = verify_chain(audit.engine, TEST_KEYRING)
    assert result.ok, result.message
    assert result.records_checked == 2 + 5 * 3


def test_a_record_the_database_refuses_is_spooled_alone(audit: AuditLog, database: Database) -> None:
    audit.record_hook_call(make_call())
    shared = make_card()
    good, bad = make_call("pat-good", [make_card()]), make_call("pat-bad", [shared])
    clash = make_call("pat-clash", [make_card(), shared])  # reuses a card uuid: the unique constraint refuses
    outcome: list[HookCallRecord] = []
    release = _hold_chain_lock(database)
    try:
        threads = [threading.Thread(target=lambda r=record: (audit.record_hook_call(r), outcome.append(r)))
                   for record in (bad, good, clash)]
        for thread in threads:
            thread.start()
        _wait_queued(audit._group, 3)  # noqa: SLF001
    finally:
        release()
    for thread in threads:
        thread.join(10)
    assert len(outcome) == 3  # every call returned (none raised)
    with audit.engine.connect() as connection:
        stored = set(connection.execute(select(calls.c.hook_instance)).scalars())
    assert good.hook_instance in stored
    assert (bad.hook_instance in stored) != (clash.hook_instance in stored)  # the first of the two wins
    assert audit.spool_depth() == 1  # the other one waits in the spool (and is quarantined on replay)
    assert verify_chain(audit.engine, TEST_KEYRING).ok
