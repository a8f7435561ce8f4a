"""Engines for the audit database and its schema migrations (Alembic, run programmatically).

SQLite (the embedded default) runs in WAL mode with a busy timeout and ``synchronous=FULL`` so a committed
record survives a crash; write transactions start with ``BEGIN IMMEDIATE`` so the chain head is read under the
write lock. The hook-call append (and the jti claim) commit with ``synchronous=NORMAL`` instead and are made
durable by :func:`flush_sqlite_wal` after the write lock is released and before they are acknowledged
(hotpath.py). PostgreSQL (``CDS_DATABASE_URL``) uses psycopg 3 with a short connect timeout, so an unreachable
database fails fast and the records go to the spool instead of holding up the response.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import QueuePool

from cds_service.audit.chain import MIGRATION_LOCK_KEY

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
SQLITE_BUSY_TIMEOUT_MS = 10_000
# Pooled SQLite connections per process: gthread threads + the spool replay thread, with room to spare.
SQLITE_POOL_SIZE = 8
PG_CONNECT_TIMEOUT_S = 3
# Execution option that marks a connection whose transaction appends to the chain (SQLite: BEGIN IMMEDIATE).
WRITE_OPTION = "cds_audit_write"


class AuditSchemaError(RuntimeError):
    """The database is reachable but its schema is not the one this version needs."""


def normalise_url(raw: str) -> URL:
    """Parse a database URL; plain ``postgresql://`` means psycopg 3, the driver we ship."""
    url = make_url(raw)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url


def is_postgres(engine: Engine) -> bool:
    """True when the engine talks to PostgreSQL."""
    return engine.dialect.name == "postgresql"


def create_audit_engine(raw_url: str) -> Engine:
    """An engine configured for the audit log on SQLite or PostgreSQL."""
    url = normalise_url(raw_url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(url)
    if backend == "postgresql":
        # No pool_pre_ping: it cost a round trip on every checkout, two per hook call (issue #7). A pooled
        # connection left dead by a database restart fails on first use instead; SQLAlchemy (Core paths) and
        # the hot path (hotpath.py) then invalidate the pool and the hot path retries once on a fresh one.
        return create_engine(
            url,
            pool_size=5,
            max_overflow=10,
            connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S, "application_name": "calcinosis-cds"},
        )
    raise ValueError(f"unsupported audit database {backend!r}: use sqlite:///path or postgresql+psycopg://...")


def _sqlite_engine(url: URL) -> Engine:
    database = url.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        try:
            Path(database).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError:
            pass  # reported when the first write fails, and the records are spooled meanwhile
    # A pool of connections per process (issue #7): opening a connection and its four PRAGMAs on every unit of
    # work cost more than the insert itself. The pool is per engine and each gunicorn worker builds its own
    # after the fork (AuditLog also drops inherited connections in the child). A pooled connection must not
    # keep writing to a database file that was moved or replaced (an outage, a restore), so every checkout
    # compares the file's identity with the one recorded at connect; a mismatch discards the connection and a
    # fresh connect either finds the new file or fails, and the record goes to the spool.
    engine = create_engine(
        url, poolclass=QueuePool, pool_size=SQLITE_POOL_SIZE, max_overflow=8,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
    )
    file_path = _sqlite_file(database)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        # Let SQLAlchemy's "begin" event below decide how each transaction starts (pysqlite would not).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")  # acknowledged means on disk (issue #4 item 2)
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()
        if file_path is not None:
            record.info["cds_file_id"] = _file_identity(file_path)

    @event.listens_for(engine, "checkout")
    def _on_checkout(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if file_path is not None and record.info.get("cds_file_id") != _file_identity(file_path):
            raise DisconnectionError("the SQLite audit database file was moved or replaced")

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # The chain head must be read under the write lock, or two workers could both extend the same link.
        immediate = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


@contextmanager
def sqlite_writer_lock(engine: Engine) -> Iterator[None]:
    """Hold the kernel lock that serialises SQLite write transactions of every process (no-op elsewhere).

    Take it before ``BEGIN IMMEDIATE``. SQLite's own write lock still guarantees the chain order; this lock only
    changes how a writer waits: asleep in ``flock()``, woken the moment the holder commits, instead of
    SQLite's busy handler, which retries in 1..100 ms naps and left 16% of the CPU idle under load while
    writers waited (issue #7, BENCHMARKS.md). The lock file sits beside the database (``<file>.writer-lock``);
    it is opened per transaction so a moved or replaced database directory never keeps a stale lock.
    """
    path = _writer_lock_path(engine.url.get_backend_name(), engine.url.database or "")
    if path is None:
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released by close(), also when the process dies
        yield
    finally:
        os.close(fd)


@lru_cache(maxsize=16)
def _writer_lock_path(backend: str, database: str) -> str | None:
    if backend != "sqlite":
        return None
    file_path = _sqlite_file(database)
    return None if file_path is None else f"{file_path}.writer-lock"


def sqlite_wal_path(engine: Engine) -> str | None:
    """The write-ahead log file of a SQLite database file (``<file>-wal``); None for other databases."""
    if engine.url.get_backend_name() != "sqlite":
        return None
    file_path = _sqlite_file(engine.url.database or "")
    return None if file_path is None else f"{file_path}-wal"


def flush_sqlite_wal(wal_path: str) -> None:
    """Make every transaction committed to this WAL so far durable: ``fsync`` of the file, then of its directory.

    fsync flushes the file (the inode), not a descriptor, so a descriptor of our own reaches frames any
    connection wrote. The WAL may be a new file (SQLite removes it when the last connection closes and makes a
    new one on the next open), and a new file's directory entry is only durable once its directory is flushed
    (SQLite does the same on its first sync of a new WAL). A new file cannot be told apart reliably (ext4 hands
    a freed inode number straight to the next file), and flushing a directory with no pending change is nearly
    free (measured ~0.01-0.08 ms here), so the directory is flushed every time. If the WAL is gone, the last
    connection checkpointed it into the database file and removed it, which SQLite does only after syncing the
    database file; that file is flushed again anyway.
    """
    try:
        fd = os.open(wal_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        fd = os.open(wal_path.removesuffix("-wal"), os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    directory = os.open(os.path.dirname(wal_path) or ".", os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _sqlite_file(database: str) -> Path | None:
    """The database file a pooled connection must stay bound to; None for in-memory or URI databases."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).absolute()


def _file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the database file, None while it does not exist (one stat, ~2 us)."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


def alembic_config(connection: Connection | None = None, keyring: Any = None) -> Config:
    """An Alembic configuration pointing at the migrations shipped in this package (no alembic.ini).

    ``keyring`` (cds_service.audit.keys.Keyring) is the chain key migration 0005 signs its anchor with.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    if keyring is not None:
        config.attributes["chain_keyring"] = keyring
    return config


def head_revision() -> str:
    """The newest migration revision this version of the code needs."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships migrations
        raise AuditSchemaError("no audit migrations found in the package")
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at, or None for an empty database."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade_schema(engine: Engine, keyring: Any = None) -> str:
    """Run the migrations to head under a lock so concurrent starters do not race; returns the revision.

    ``keyring``: the audit chain keys (migration 0005 anchors an existing unkeyed chain with the current key;
    without one it reads CDS_AUDIT_CHAIN_KEY or the --dev key file itself).
    """
    with engine.connect() as connection, sqlite_writer_lock(engine):
        connection.execution_options(**{WRITE_OPTION: True})
        with connection.begin():
            if is_postgres(engine):
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            command.upgrade(alembic_config(connection, keyring), "head")
            revision = current_revision(connection)
    logger.info("audit schema at revision %s", revision)
    return revision or ""


def check_schema(engine: Engine) -> None:
    """Raise AuditSchemaError with the fix when the database is not at the head revision."""
    with engine.connect() as connection:
        revision = current_revision(connection)
    head = head_revision()
    if revision != head:
        found = "empty (no audit tables)" if revision is None else f"at revision {revision}"
        raise AuditSchemaError(
            f"the audit database is {found} but this version needs revision {head}; "
            "run `calcinosis-cds db upgrade` with the same CDS_DATABASE_URL before starting the service"
        )
