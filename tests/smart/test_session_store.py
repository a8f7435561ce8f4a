"""The SMART session store opens safely when every gunicorn worker opens it at the same moment."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from cds_service.smart.session_store import SessionStore


def _open_and_use(path: str, start: object, index: int) -> None:
    start.wait()  # type: ignore[attr-defined]
    store = SessionStore(Path(path))
    store.put(f"id-{index}", {"n": index}, ttl_s=60)
    store.close()


def test_workers_opening_a_new_store_at_once_all_succeed(tmp_path: Path) -> None:
    # Separate processes like gunicorn workers; before CREATE TABLE IF NOT EXISTS the loser of the
    # check-then-create race died with "table smart_session already exists".
    for attempt in range(5):
        path = tmp_path / f"sessions-{attempt}.sqlite"
        context = multiprocessing.get_context("fork")
        start = context.Event()
        workers = [context.Process(target=_open_and_use, args=(str(path), start, i)) for i in range(6)]
        for worker in workers:
            worker.start()
        start.set()
        for worker in workers:
            worker.join(timeout=60)
        assert [worker.exitcode for worker in workers] == [0] * 6
        store = SessionStore(path)
        assert [store.get(f"id-{i}") for i in range(6)] == [{"n": i} for i in range(6)]
        store.close()
