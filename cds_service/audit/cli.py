"""``calcinosis-cds audit ...`` (verify, checkpoint, export, stats, purge) and ``calcinosis-cds db upgrade``."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, NoReturn

import click
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from cds_service.audit.db import AuditSchemaError, check_schema, create_audit_engine, upgrade_schema
from cds_service.audit.export import FORMATS, write_export
from cds_service.audit.integrity import ExternalCheckpoint, purge_before, verify_chain
from cds_service.audit.keys import Keyring, load_keyring
from cds_service.audit.queries import AuditFilter, iter_calls, iter_cards, parse_timestamp
from cds_service.audit.stats import stats_report
from cds_service.config import ConfigError, load_settings

EXIT_BROKEN = 1
EXIT_ERROR = 2


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_ERROR)


class _Timestamp(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click stubs
    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return parse_timestamp(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


TIMESTAMP = _Timestamp()


@contextmanager
def _audit_engine(*, check: bool = True) -> Iterator[Engine]:
    """The engine for CDS_DATABASE_URL (or the embedded SQLite file), with errors turned into messages."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        _fail(str(exc))
    try:
        engine = create_audit_engine(settings.effective_database_url)
    except (ValueError, SQLAlchemyError) as exc:
        _fail(f"CDS_DATABASE_URL is not usable: {exc}")
    try:
        if check:
            check_schema(engine)
        yield engine
    except (AuditSchemaError, ConfigError) as exc:  # ConfigError: `db upgrade` found no chain key (0005)
        _fail(str(exc))
    except SQLAlchemyError as exc:
        # Class name only: driver messages can include statement parameters (patient data).
        _fail(f"the audit database cannot be reached or queried ({type(exc).__name__}); "
              "check CDS_DATABASE_URL and that the database is running")
    finally:
        engine.dispose()


@click.group()
def audit() -> None:
    """Verify, checkpoint, export, summarise and purge the alert audit log (CDS_DATABASE_URL or the embedded
    SQLite)."""


def _keyring() -> Keyring:
    """The chain keys (CDS_AUDIT_CHAIN_KEY + CDS_AUDIT_CHAIN_KEYS_FILE, or the --dev key file); exit 2 if none."""
    try:
        return load_keyring(load_settings(), tool=True)
    except ConfigError as exc:
        _fail(str(exc))


def _checkpoint_option(value: str | None) -> ExternalCheckpoint | None:
    if not value:
        return None
    seq, _, record_hash = value.partition(":")
    if not seq.isdigit() or len(record_hash) != 64:
        raise click.BadParameter("expected SEQ:HASH as printed by `audit checkpoint`")
    return ExternalCheckpoint(int(seq), record_hash.lower())


@audit.command()
@click.option("--checkpoint", "expected", metavar="SEQ:HASH",
              callback=lambda _ctx, _param, value: _checkpoint_option(value),
              help="A head printed earlier by `audit checkpoint` and kept outside the database: that record must "
                   "still have that hash.")
def verify(expected: ExternalCheckpoint | None) -> None:
    """Check the keyed hash chain; exit 1 naming the first record changed, deleted, inserted or rewritten."""
    keyring = _keyring()
    with _audit_engine() as engine:
        result = verify_chain(engine, keyring, expect=expected)
    if result.ok:
        click.echo(result.message)
        return
    click.echo(f"TAMPERED: {result.message}", err=True)
    sys.exit(EXIT_BROKEN)


@audit.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
def checkpoint(as_json: bool) -> None:
    """Verify the chain, then print its head (sequence, hash), record count and time, to keep outside the
    database (a ticket, a signed e-mail, a WORM store); `audit verify --checkpoint SEQ:HASH` checks it later."""
    keyring = _keyring()
    with _audit_engine() as engine:
        result = verify_chain(engine, keyring)
    if not result.ok:
        click.echo(f"TAMPERED: {result.message}", err=True)
        sys.exit(EXIT_BROKEN)
    report = {
        "head_seq": result.head_seq,
        "head_hash": result.head_hash,
        "records": result.records_checked,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "key_id": keyring.current.key_id,
    }
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo(f"audit chain checkpoint at {report['time']}: {report['records']} record(s), "
               f"head {report['head_seq']}:{report['head_hash']} (chain key id {report['key_id']})")


@audit.command()
@click.option("--since", type=TIMESTAMP, help="Only hook calls received at or after this time (ISO 8601).")
@click.option("--until", type=TIMESTAMP, help="Only hook calls received before this time (ISO 8601).")
@click.option("--patient", "patient_id", help="Only this patient id.")
@click.option("--rule", "rule_id", help="Only cards of this rule id (with --calls: calls with a card of it).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True,
              help="ndjson (one object per card or call), csv, or fhir (Bundle of AuditEvent).")
@click.option("--calls", "by_call", is_flag=True,
              help="One row per hook call instead of per card: every authenticated call, also those with no "
                   "card, an error (4xx, 412) or an engine failure, with data sources, skipped resources, "
                   "duration_ms and request_ms.")
@click.option("--output", type=click.File("w", encoding="utf-8"), default="-",
              help="File to write (default: standard output).")
def export(since: datetime | None, until: datetime | None, patient_id: str | None, rule_id: str | None,
           fmt: str, by_call: bool, output: Any) -> None:
    """Export cards with their hook call and feedback (or, with --calls, every hook call). The output is PHI:
    store it accordingly."""
    audit_filter = AuditFilter(since=since, until=until, patient_id=patient_id, rule_id=rule_id)
    with _audit_engine() as engine:
        rows = iter_calls(engine, audit_filter) if by_call else iter_cards(engine, audit_filter)
        count = write_export(rows, fmt, output, calls=by_call)
    click.echo(f"{count} {'call' if by_call else 'card'}(s) exported", err=True)


@audit.command()
@click.option("--since", type=TIMESTAMP, help="Only hook calls received at or after this time (ISO 8601).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON instead of a table.")
def stats(since: datetime | None, as_json: bool) -> None:
    """Alert burden per rule: issued, distinct patients, accepted, overridden (top reasons), no response;
    suppressions per rule and reason; unmatched feedback."""
    with _audit_engine() as engine:
        report = stats_report(engine, since)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    header = f"{'rule':40} {'issued':>7} {'patients':>8} {'accepted':>8} {'overridden':>10} {'no resp':>7} " \
             f"{'repeats':>7} {'silent':>6} {'suppr':>6}"
    click.echo(header)
    for row in report["rules"]:
        click.echo(f"{row['rule_id'][:40]:40} {row['cards_issued']:>7} {row['distinct_patients']:>8} "
                   f"{row['accepted']:>8} {row['overridden']:>10} {row['no_response']:>7} "
                   f"{row['repeats']:>7} {row['silent']:>6} {row['suppressed']:>6}")
        for reason in row["top_override_reasons"]:
            label = reason["display"] or reason["code"] or "(no reason given)"
            click.echo(f"    override reason: {label} x{reason['count']}")
        for suppression in row["suppressed_by_reason"]:
            click.echo(f"    suppressed: {suppression['reason']} x{suppression['count']}")
    click.echo("suppressions by reason:" if report["suppressions_by_reason"] else "suppressions: none")
    for suppression in report["suppressions_by_reason"]:
        click.echo(f"    {suppression['reason']} x{suppression['count']}")
    counts = report["feedback"]
    click.echo(f"feedback: {counts['total']} item(s), {counts['unmatched']} unmatched "
               "(unknown card or another client's card: stored, no effect)")


@audit.command()
@click.option("--before", type=TIMESTAMP, required=True, help="Remove records written before this time.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def purge(before: datetime, yes: bool) -> None:
    """Remove old records (retention) and anchor the chain at a checkpoint so it still verifies."""
    if not yes:
        click.confirm(f"Permanently delete audit records written before {before.isoformat()}?", abort=True)
    keyring = _keyring()
    with _audit_engine() as engine:
        result = purge_before(engine, before, keyring.current)
    if result.purged_through_id is None:
        click.echo("nothing to purge")
        return
    counts = ", ".join(f"{name}: {count}" for name, count in result.counts.items())
    click.echo(f"purged records up to sequence {result.purged_through_id} ({counts}); "
               f"checkpoint {result.checkpoint_id} anchors the chain")


@click.group()
def db() -> None:
    """Audit database administration."""


@db.command()
def upgrade() -> None:
    """Create or migrate the audit schema (run once per release for a shared PostgreSQL, before `serve`)."""
    with _audit_engine(check=False) as engine:
        revision = upgrade_schema(engine)
    click.echo(f"audit database at revision {revision}")
