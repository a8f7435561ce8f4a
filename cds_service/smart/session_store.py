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
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Float, MetaData, String, Table, Text, create_engine, delete, event, select
from sqlalchemy.engine import Engine

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
        _metadata.create_all(self._engine)
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
    cursor.execute("PRAGMA journal_mode=WAL")  # concurrent readers while a worker writes
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def default_store_path(data_dir: str) -> Path:
    """``<data_dir>/smart-sessions.sqlite3`` (git-ignored pattern; kept apart from the audit database)."""
    return Path(os.path.expanduser(data_dir)) / "smart-sessions.sqlite3"
