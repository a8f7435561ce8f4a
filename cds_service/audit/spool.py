"""The durable local spool: hook-call records wait here while the audit database is unavailable.

One file per record, written to a temporary name, fsync'ed, renamed into place and the directory fsync'ed, so
a record that ``record_hook_call`` returned for survives ``kill -9`` and power loss (issue #4 item 2). A file
that cannot be read back is moved to ``quarantine/`` (kept, never deleted) rather than retried forever.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from cds_service.audit.records import SpooledCall, call_from_json, call_to_json

logger = logging.getLogger(__name__)

SUFFIX = ".call.json"
TMP_PREFIX = ".tmp-"
# A temporary file older than this belongs to a writer that died before acknowledging (never renamed).
STALE_TMP_SECONDS = 600


class Spool:
    """A directory of spooled hook-call records, oldest first."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.quarantine = directory / "quarantine"

    def put(self, spooled: SpooledCall) -> Path:
        """Write one record durably; returns its path. Raises OSError when the disk refuses."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)  # audit data is PHI
        name = f"{time.time_ns():020d}-{spooled.record_uuid}{SUFFIX}"
        final = self.directory / name
        temporary = self.directory / f"{TMP_PREFIX}{name}"
        payload = json.dumps(call_to_json(spooled), ensure_ascii=False, allow_nan=False).encode("utf-8")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temporary, final)
        _fsync_directory(self.directory)
        return final

    def pending(self) -> list[Path]:
        """The spooled record files, oldest first."""
        try:
            return sorted(path for path in self.directory.iterdir() if path.name.endswith(SUFFIX)
                          and not path.name.startswith(TMP_PREFIX))
        except FileNotFoundError:
            return []

    def has_pending(self) -> bool:
        """True when at least one record waits (cheap: stops at the first match)."""
        try:
            with os.scandir(self.directory) as entries:
                return any(entry.name.endswith(SUFFIX) and not entry.name.startswith(TMP_PREFIX)
                           for entry in entries)
        except FileNotFoundError:
            return False

    def depth(self) -> int:
        """How many records wait (for metrics and /readyz)."""
        return len(self.pending())

    def read(self, path: Path) -> SpooledCall | None:
        """Load a spooled record; a file that is gone (another worker replayed it) gives None.

        A malformed file is quarantined and also gives None.
        """
        try:
            data = json.loads(path.read_bytes())
            return call_from_json(data)
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, AttributeError):
            self.quarantine_file(path, "unreadable")
            return None

    def remove(self, path: Path) -> None:
        """Delete a record after the database committed it (another worker may have been first)."""
        try:
            path.unlink()
        except FileNotFoundError:
            return
        _fsync_directory(self.directory)

    def quarantine_file(self, path: Path, reason: str) -> None:
        """Keep a record the database refuses (or that cannot be parsed) aside for an operator."""
        try:
            self.quarantine.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.rename(path, self.quarantine / path.name)
            _fsync_directory(self.directory)
        except FileNotFoundError:
            return
        logger.error("audit spool record quarantined (%s): %s", reason, path.name)

    def remove_stale_temporaries(self) -> None:
        """Delete temporary files left by writers killed before they acknowledged anything."""
        cutoff = time.time() - STALE_TMP_SECONDS
        for path in self._temporaries():
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
            except FileNotFoundError:
                continue

    def _temporaries(self) -> Iterator[Path]:
        try:
            yield from (path for path in self.directory.iterdir() if path.name.startswith(TMP_PREFIX))
        except FileNotFoundError:
            return


def _fsync_directory(directory: Path) -> None:
    # The rename/unlink is only durable once the directory entry itself is on disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
