"""Server-side store of SMART browser sessions: tokens never reach the page, the URL or the logs.

The browser holds only a random session id (HttpOnly cookie). The store is a small SQLite database in the data
directory, so every gunicorn worker on the host sees the same sessions (the OAuth redirect may land on a worker
other than the one that started the launch). Rows expire with the access token; expired rows are purged on
write. Several replicas behind a load balancer need sticky sessions (documented in the README).
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Float, MetaData, String, Table, Text, create_engine, delete, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.schema import CreateIndex, CreateTable

from cds_service.smart.pkce import same_secret

_metadata = MetaData()
_sessions = Table(
    "smart_session", _metadata,
    Column("id", String(64), primary_key=True),
    Column("data", Text, nullable=False),
    Column("expires_at", Float, nullable=False, index=True),
)

SESSION_ID_BYTES = 32
MAX_SESSION_S = 12 * 3600.0  # even a long-lived token does not keep a browser session beyond a shift


class SessionStore:
    """Get/put/delete of JSON session documents keyed by an unguessable id."""

    def __init__(self, path: Path) -> None:
        """Open (creating when needed) the SQLite file at ``path``; the file is readable by its owner only."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.touch(mode=0o600)
        self._engine: Engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 10})
        event.listen(self._engine, "connect", _sqlite_pragmas)
        # IF NOT EXISTS, not create_all's check-then-create: gunicorn workers open the store at the same moment,
        # and the loser of that race died with "table smart_session already exists" (seen in the kill test).
        with self._engine.begin() as connection:
            connection.execute(CreateTable(_sessions, if_not_exists=True))
            for index in _sessions.indexes:
                connection.execute(CreateIndex(index, if_not_exists=True))
        self._lock = threading.Lock()

    @staticmethod
    def new_id() -> str:
        """A fresh session id (256 bits)."""
        return secrets.token_urlsafe(SESSION_ID_BYTES)

    def get(self, session_id: str | None) -> dict[str, Any] | None:
        """The unexpired session document for ``session_id``, or None."""
        if not session_id or len(session_id) > 64:
            return None
        with self._engine.connect() as connection:
            row = connection.execute(select(_sessions).where(_sessions.c.id == session_id)).first()
        if row is None or row.expires_at < time.time() or not same_secret(row.id, session_id):
            return None
        data: dict[str, Any] = json.loads(row.data)
        return data

    def put(self, session_id: str, data: dict[str, Any], ttl_s: float) -> None:
        """Store ``data`` under ``session_id`` for ``ttl_s`` seconds (capped at MAX_SESSION_S)."""
        now = time.time()
        expires = now + max(1.0, min(ttl_s, MAX_SESSION_S))
        with self._lock, self._engine.begin() as connection:
            connection.execute(delete(_sessions).where(_sessions.c.expires_at < now))
            connection.execute(delete(_sessions).where(_sessions.c.id == session_id))
            connection.execute(_sessions.insert().values(id=session_id, data=json.dumps(data), expires_at=expires))

    def delete(self, session_id: str) -> None:
        """Forget a session (after rotation or logout)."""
        with self._lock, self._engine.begin() as connection:
            connection.execute(delete(_sessions).where(_sessions.c.id == session_id))

    def close(self) -> None:
        """Release the database connections."""
        self._engine.dispose()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA busy_timeout=10000")
        # Concurrent readers while a worker writes. Switching a new file to WAL needs an exclusive lock that
        # SQLite does not wait for, so workers opening the store at once retry briefly (kill test, issue #7).
        for attempt in range(50):
            try:
                cursor.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError:
                if attempt == 49:
                    raise
                time.sleep(0.02)
    finally:
        cursor.close()


def default_store_path(data_dir: str) -> Path:
    """``<data_dir>/smart-sessions.sqlite3`` (git-ignored pattern; kept apart from the audit database)."""
    return Path(os.path.expanduser(data_dir)) / "smart-sessions.sqlite3"
