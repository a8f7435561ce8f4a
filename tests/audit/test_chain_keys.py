"""The audit chain key (issue 15 item 6): required outside --dev, generated and reused under --dev, retired
keys in a keys file so a rotation keeps old records verifiable, never logged, and one writer of the chain."""

from __future__ import annotations

import logging
import os
import re
import stat
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

import cds_service
from cds_service import create_app
from cds_service.audit import AuditLog, chain
from cds_service.audit.integrity import verify_chain
from cds_service.audit.keys import DEV_KEY_FILE, load_keyring
from cds_service.audit.schema import CHAINED_TABLES
from cds_service.cli import main
from cds_service.config import ConfigError, load_settings
from tests.audit.conftest import TEST_CHAIN_KEY, TEST_KEYRING, Database
from tests.audit.factories import engine_for, execute, make_call, make_card, make_feedback

NEW_KEY = "the-rotated-audit-chain-key-00112233445566"
PACKAGE = Path(cds_service.__file__).resolve().parent


def _key_ids(database: Database) -> list[tuple[int, str | None]]:
    engine = engine_for(database.url)
    with engine.connect() as connection:
        rows = [(int(row.id), row.key_id) for table in CHAINED_TABLES.values()
                for row in connection.execute(select(table.c.id, table.c.key_id))]
    return sorted(rows)


def _cli_verify(database: Database, **env: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["audit", "verify"], env={
        "CDS_DATABASE_URL": database.url, "CDS_DATA_DIR": str(database.data_dir), **env})
    return result.exit_code, result.output


def test_rotation_keeps_old_records_verifiable(database: Database, tmp_path: Path) -> None:
    old = AuditLog.open(database.settings(), create_schema=True)
    old.record_hook_call(make_call("pat-1", [make_card()]))
    old.close()
    keys_file = tmp_path / "retired-chain-keys"
    keys_file.write_text(f"# retired at the rotation\n\n{TEST_KEYRING.current.key_id} {TEST_CHAIN_KEY}\n")
    keys_file.chmod(0o600)

    new = AuditLog.open(database.settings(audit_chain_key=NEW_KEY, audit_chain_keys_file=str(keys_file)),
                        create_schema=True)
    try:
        record = make_call("pat-2", [make_card()])
        new.record_hook_call(record)
        new.record_feedback([make_feedback(record.cards[0].card_uuid)])
        new_id = new.keyring.current.key_id
        assert new_id != TEST_KEYRING.current.key_id
        assert _key_ids(database) == [(1, TEST_KEYRING.current.key_id), (2, TEST_KEYRING.current.key_id),
                                      (3, new_id), (4, new_id), (5, new_id)]
        result = verify_chain(new.engine, new.keyring)
        assert result.ok, result.message
        assert result.records_checked == 5
    finally:
        new.close()
    code, output = _cli_verify(database, CDS_AUDIT_CHAIN_KEY=NEW_KEY, CDS_AUDIT_CHAIN_KEYS_FILE=str(keys_file))
    assert (code, "5 record(s) verified" in output) == (0, True), output
    # Without the retired key the old records cannot be checked: named, with the key id to look for.
    code, output = _cli_verify(database, CDS_AUDIT_CHAIN_KEY=NEW_KEY)
    assert code == 1
    assert f"calls id 1: signed with chain key id {TEST_KEYRING.current.key_id}" in output
    assert TEST_CHAIN_KEY not in output
    assert NEW_KEY not in output


def test_keys_file_accepts_bare_keys_and_refuses_mistakes(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"{TEST_CHAIN_KEY}\n")
    keyring = load_keyring(load_settings({}, audit_chain_key=NEW_KEY, audit_chain_keys_file=str(keys_file)))
    assert keyring.get(TEST_KEYRING.current.key_id) is not None
    assert keyring.get("0" * 16) is None
    for content, problem in ((f"{'0' * 16} {TEST_CHAIN_KEY}\n", "does not match the key"),
                             ("too-short\n", "at least 32 characters"),
                             (f"a b {TEST_CHAIN_KEY}\n", "expected `<key>` or `<key id> <key>`")):
        keys_file.write_text(content)
        with pytest.raises(ConfigError, match=problem) as caught:
            load_keyring(load_settings({}, audit_chain_key=NEW_KEY, audit_chain_keys_file=str(keys_file)))
        assert TEST_CHAIN_KEY not in str(caught.value)
        assert "line 1" in str(caught.value)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_keyring(load_settings({}, audit_chain_key=NEW_KEY, audit_chain_keys_file=str(tmp_path / "absent")))


def test_the_key_is_required_outside_dev(tmp_path: Path) -> None:
    settings = load_settings({}, data_dir=str(tmp_path / "data"), public_base_url="https://cds.example.org")
    with pytest.raises(ConfigError, match="CDS_AUDIT_CHAIN_KEY is required outside --dev"):
        AuditLog.open(settings, create_schema=True)
    with pytest.raises(ConfigError, match="CDS_AUDIT_CHAIN_KEY is required outside --dev"):
        create_app(settings)
    assert not (tmp_path / "data" / DEV_KEY_FILE).exists()  # nothing generated outside --dev
    with pytest.raises(ConfigError, match="at least 32 characters"):
        AuditLog.open(replace(settings, audit_chain_key="short"), create_schema=True)


def test_dev_generates_a_private_key_once_and_reuses_it(tmp_path: Path) -> None:
    settings = load_settings({}, dev=True, data_dir=str(tmp_path / "data"))
    first = load_keyring(settings)
    key_file = tmp_path / "data" / DEV_KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert load_keyring(settings).current.key_id == first.current.key_id
    # Operator commands (audit verify, db upgrade) find it without --dev; the service outside --dev does not.
    production = replace(settings, dev=False)
    assert load_keyring(production, tool=True).current.key_id == first.current.key_id
    with pytest.raises(ConfigError):
        load_keyring(production)
    # An explicit key wins over the generated one.
    assert load_keyring(replace(settings, audit_chain_key=NEW_KEY)).current.key_id != first.current.key_id


def test_a_key_never_reaches_a_log_or_an_output(database: Database, caplog: pytest.LogCaptureFixture,
                                                tmp_path: Path) -> None:
    caplog.set_level(logging.DEBUG)
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"{TEST_CHAIN_KEY}\n")
    keys_file.chmod(0o644)  # warned about, by path only
    settings = database.settings(dev=True, audit_chain_key="", audit_chain_keys_file=str(keys_file))
    audit = AuditLog.open(settings, create_schema=True)
    try:
        audit.record_hook_call(make_call("pat-1", [make_card()]))
        dev_key = (database.data_dir / DEV_KEY_FILE).read_text().strip()
        execute(audit.engine, "UPDATE cards SET summary = 'changed'")
        result = verify_chain(audit.engine, audit.keyring)
        assert not result.ok
        outputs = [caplog.text, result.message, repr(audit.keyring), repr(settings)]
    finally:
        audit.close()
    code, output = _cli_verify(database, CDS_AUDIT_CHAIN_KEYS_FILE=str(keys_file))  # finds the dev key file
    assert code == 1
    outputs.append(output)
    assert "readable by other users" in caplog.text
    for text in outputs:
        assert dev_key not in text
        assert TEST_CHAIN_KEY not in text


def test_there_is_one_chain_writer() -> None:
    """Every chained record is linked and inserted by writer.py; the second implementation and hash are gone."""
    assert not hasattr(chain, "ChainAppender")
    assert not hasattr(chain, "link_hash_plain")
    tables = "|".join(CHAINED_TABLES)
    writes = re.compile(rf"INSERT INTO (?:{tables})\b|INSERT INTO \{{(?!client_jti)|\b(?:{tables})\.insert\("
                        r"|\.insert\(\)\.values\(\*\*row|UPDATE chain_head|bulk_insert\((?!head)", re.IGNORECASE)
    hashing = re.compile(r"\blink_hash\(|\.sign\(")
    writers, hashers = set(), set()
    for path in PACKAGE.rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        name = str(path.relative_to(PACKAGE))
        if writes.search(source):
            writers.add(name)
        if hashing.search(source):
            hashers.add(name)
    assert writers == {os.path.join("audit", "writer.py")}
    # chain.py defines the one hash function; integrity.py recomputes it to verify.
    assert hashers == {os.path.join("audit", name) for name in ("writer.py", "chain.py", "integrity.py")}
