"""The secret key of the audit hash chain, its id, and the retired keys that keep old records verifiable.

Issue 15 item 6: a plain SHA-256 chain can be recomputed by anyone with write access to the database, so every
link is an HMAC-SHA-256 under a key the database never holds. The key comes from ``CDS_AUDIT_CHAIN_KEY``
(required outside ``--dev``); ``--dev`` generates one into ``CDS_DATA_DIR`` (mode 0600) and reuses it. Each
record stores the id of the key that signed it: the first 16 hex digits of SHA-256 of the key, which names the
key without revealing it. After a rotation the old keys go into ``CDS_AUDIT_CHAIN_KEYS_FILE`` (one per line,
optionally preceded by its key id), so ``audit verify`` still checks the records they signed.

A key is never logged, printed or put in an exception message: :class:`ChainKey` keeps it only inside its
prepared HMAC object and its ``repr`` shows the key id.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cds_service.config import ConfigError, Settings

logger = logging.getLogger(__name__)

# The --dev key beside the embedded SQLite database (CDS_DATA_DIR).
DEV_KEY_FILE = "audit-chain.key"
# 32 characters is 128 bits as hex; `openssl rand -hex 32` gives 64.
MIN_KEY_CHARS = 32
KEY_ID_CHARS = 16


def key_id_of(secret: bytes) -> str:
    """The public name of a key: the first 16 hex digits of its SHA-256 (stored in every record it signs)."""
    return hashlib.sha256(secret).hexdigest()[:KEY_ID_CHARS]


class ChainKey:
    """One chain key, ready to sign: the secret lives only inside the prepared HMAC-SHA-256 object."""

    __slots__ = ("_mac", "key_id")

    def __init__(self, secret: bytes) -> None:
        self.key_id = key_id_of(secret)
        self._mac = hmac.new(secret, digestmod=hashlib.sha256)

    def sign(self, payload: bytes) -> str:
        """HMAC-SHA-256 of ``payload`` as 64 hex digits (copying the prepared object skips the key set-up)."""
        mac = self._mac.copy()
        mac.update(payload)
        return mac.hexdigest()

    def __repr__(self) -> str:
        return f"ChainKey(key_id={self.key_id!r})"


@dataclass(frozen=True)
class Keyring:
    """The key that signs new records, and every key (current and retired) by key id for verification."""

    current: ChainKey
    retired: Mapping[str, ChainKey]

    def get(self, key_id: str) -> ChainKey | None:
        """The key with this id, current or retired; None when it is not configured."""
        if key_id == self.current.key_id:
            return self.current
        return self.retired.get(key_id)


def parse_key(text: str, where: str) -> ChainKey:
    """A key from its text form (surrounding whitespace ignored); ``where`` names the source in errors."""
    value = text.strip()
    if len(value) < MIN_KEY_CHARS:
        raise ConfigError(f"{where}: an audit chain key must be at least {MIN_KEY_CHARS} characters "
                          "(generate one with `openssl rand -hex 32`)")
    return ChainKey(value.encode("utf-8"))


def load_keyring(settings: Settings, *, tool: bool = False) -> Keyring:
    """The chain keys for ``settings``; raises ConfigError with the fix when there is no usable key.

    Order: ``CDS_AUDIT_CHAIN_KEY``; under ``--dev`` the generated key in ``CDS_DATA_DIR`` (created on first
    use); for operator commands (``tool``: ``audit verify``, ``db upgrade``, ...) an existing dev key file,
    so they work on a ``--dev`` data directory without setting the variable.
    """
    dev_file = Path(settings.data_dir) / DEV_KEY_FILE
    if settings.audit_chain_key:
        current = parse_key(settings.audit_chain_key, "CDS_AUDIT_CHAIN_KEY")
    elif settings.dev:
        current = _dev_key(dev_file)
    elif tool and dev_file.is_file():
        current = parse_key(_read_private(dev_file), str(dev_file))
    else:
        raise ConfigError(
            "CDS_AUDIT_CHAIN_KEY is required outside --dev: it keys the audit log's hash chain (HMAC-SHA-256) "
            "so a database user cannot rewrite the log. Generate one with `openssl rand -hex 32`, keep it in "
            "a secret store (not in the database), and keep retired keys in CDS_AUDIT_CHAIN_KEYS_FILE"
        )
    retired = _retired_keys(settings.audit_chain_keys_file) if settings.audit_chain_keys_file else {}
    retired.pop(current.key_id, None)
    return Keyring(current=current, retired=retired)


def _retired_keys(path_text: str) -> dict[str, ChainKey]:
    """Keys from the keys file: one per line, ``<key>`` or ``<key id> <key>``; blank lines and ``#`` skipped."""
    path = Path(path_text)
    text = _read_private(path, setting="CDS_AUDIT_CHAIN_KEYS_FILE")
    keys: dict[str, ChainKey] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parts = stripped.split()
        where = f"CDS_AUDIT_CHAIN_KEYS_FILE {path} line {number}"
        if len(parts) > 2:
            raise ConfigError(f"{where}: expected `<key>` or `<key id> <key>`")
        key = parse_key(parts[-1], where)
        if len(parts) == 2 and parts[0] != key.key_id:
            # The id given does not belong to the key on that line (a copy error); the line's key is not shown.
            raise ConfigError(f"{where}: key id {parts[0]} does not match the key (its id is {key.key_id})")
        keys[key.key_id] = key
    return keys


def _read_private(path: Path, *, setting: str | None = None) -> str:
    label = f"{setting}={path}" if setting else str(path)
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"{label} cannot be read ({type(exc).__name__})") from None
    if mode & 0o077:
        logger.warning("audit chain key file is readable by other users; restrict it to mode 0600: %s", path)
    return text


def _dev_key(path: Path) -> ChainKey:
    """The --dev key in ``path``: created once (0600, atomically, so concurrent workers agree), then reused."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, (secrets.token_hex(32) + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temporary, path)  # fails if another process created it first: then that key is used
            logger.info("generated the --dev audit chain key file %s", path)
        except FileExistsError:
            pass
        finally:
            os.unlink(temporary)
    return parse_key(_read_private(path), str(path))
