"""Group commit: the hook calls that threads of one process hand in at the same time share one transaction.

Each durable commit is one fsync of the WAL (SQLite; after the chain's write lock is released, hotpath.py) or
one synchronous WAL flush (PostgreSQL, under the lock), and the chain's write lock is what every worker and
instance serialises on. Under load a
thread often hands in its record while another thread of its process is still waiting for that lock or
committing (about 40% of writes with 2 workers x 2 threads, BENCHMARKS.md). Here the first of them becomes the
leader: it takes the lock, then collects every record queued until that moment and writes them all in one
transaction: one chain-head read, one insert per table, one head update, one commit. The others wait for the
commit of the batch holding their record and return only then, so nothing is acknowledged before it is on disk
(issue #4). There is no extra thread: the leader is one of the request threads.

A follower waits at most ``timeout_s``; a timeout or failure raises in its own thread, where the caller
spools the record. A batch the database refuses for a reason other than an outage is split up, so one bad
record cannot take the others with it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


class GroupCommitTimeout(TimeoutError):
    """The batch holding a record was not committed in time (the caller spools the record)."""


@dataclass(eq=False)
class _Slot(Generic[T]):
    record: T
    taken: bool = False  # collected into a batch by a leader
    done: bool = False
    error: BaseException | None = None


class GroupCommit(Generic[T]):
    """Hand records to ``write`` in batches; ``submit`` returns once its record is committed.

    ``write(collect)`` must take the write lock, call ``collect()`` once to get the batch (everything queued
    up to then) and commit it, raising on failure. ``is_transient`` tells an outage (every record of the batch
    fails with it) from a record the database refuses (the batch is retried record by record).
    """

    def __init__(self, write: Callable[[Callable[[], list[T]]], object],
                 is_transient: Callable[[BaseException], bool], timeout_s: float) -> None:
        self._write = write
        self._is_transient = is_transient
        self._timeout_s = timeout_s
        self._condition = threading.Condition()
        self._queue: list[_Slot[T]] = []
        self._leading = False

    def submit(self, record: T) -> None:
        """Commit ``record`` (in a batch with others); raise its error or GroupCommitTimeout if not stored."""
        slot: _Slot[T] = _Slot(record)
        deadline = time.monotonic() + self._timeout_s
        with self._condition:
            self._queue.append(slot)
            while self._leading and not slot.done:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    if not slot.taken:
                        self._queue.remove(slot)
                    # A record already taken may still be committed; the caller spools it anyway, and a
                    # spool replay skips a record uuid that is already stored.
                    raise GroupCommitTimeout("the audit batch holding this record was not committed in time")
                self._condition.wait(remaining)
            if not slot.done:
                self._leading = True
        if not slot.done:
            try:
                self._lead()
            finally:
                with self._condition:
                    self._leading = False
                    self._condition.notify_all()
        if slot.error is not None:
            raise slot.error

    def _lead(self) -> None:
        taken: list[_Slot[T]] = []

        def collect() -> list[T]:
            with self._condition:
                batch, self._queue = self._queue, []
                for queued in batch:
                    queued.taken = True
            taken.extend(batch)
            return [queued.record for queued in batch]

        try:
            self._write(collect)
        except Exception as exc:  # every waiting thread gets the error to handle (it spools its record)
            if not taken:
                collect()  # the write could not even start (database down): fail everyone queued behind it
            if len(taken) > 1 and not self._is_transient(exc):
                self._one_by_one(taken)
            else:
                for slot in taken:
                    slot.error = exc
        except BaseException:  # the leader is being stopped: the others must not wait for it, nor die of it
            for slot in taken:
                slot.error = RuntimeError("the audit batch writer was interrupted")
            raise
        finally:
            with self._condition:
                for slot in taken:
                    slot.done = True

    def _one_by_one(self, slots: list[_Slot[T]]) -> None:
        """Write each record of a refused batch on its own, so only the bad one fails."""
        for slot in slots:
            try:
                self._write(_just(slot.record))
            except Exception as exc:  # handed to that record's thread
                slot.error = exc

    def reset_after_fork(self) -> None:
        """A forked child starts with an empty queue and fresh locks (the parent's threads do not exist)."""
        self._condition = threading.Condition()
        self._queue = []
        self._leading = False


def _just(record: T) -> Callable[[], list[T]]:
    """A collect function that yields one given record."""
    return lambda: [record]
