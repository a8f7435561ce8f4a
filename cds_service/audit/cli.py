"""``calcinosis-cds audit ...`` (verify, export, stats, purge) and ``calcinosis-cds db upgrade``."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, NoReturn

import click
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from cds_service.audit.db import AuditSchemaError, check_schema, create_audit_engine, upgrade_schema
from cds_service.audit.export import FORMATS, write_export
from cds_service.audit.integrity import purge_before, verify_chain
from cds_service.audit.queries import AuditFilter, iter_cards, parse_timestamp, rule_stats
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
    except AuditSchemaError as exc:
        _fail(str(exc))
    except SQLAlchemyError as exc:
        # Class name only: driver messages can include statement parameters (patient data).
        _fail(f"the audit database cannot be reached or queried ({type(exc).__name__}); "
              "check CDS_DATABASE_URL and that the database is running")
    finally:
        engine.dispose()


@click.group()
def audit() -> None:
    """Verify, export, summarise and purge the alert audit log (CDS_DATABASE_URL or the embedded SQLite)."""


@audit.command()
def verify() -> None:
    """Check the hash chain; exit 1 naming the first record changed, deleted or inserted out of band."""
    with _audit_engine() as engine:
        result = verify_chain(engine)
    if result.ok:
        click.echo(result.message)
        return
    click.echo(f"TAMPERED: {result.message}", err=True)
    sys.exit(EXIT_BROKEN)


@audit.command()
@click.option("--since", type=TIMESTAMP, help="Only hook calls received at or after this time (ISO 8601).")
@click.option("--until", type=TIMESTAMP, help="Only hook calls received before this time (ISO 8601).")
@click.option("--patient", "patient_id", help="Only this patient id.")
@click.option("--rule", "rule_id", help="Only cards of this rule id (source.topic.code).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True,
              help="ndjson (one object per card), csv, or fhir (Bundle of AuditEvent).")
@click.option("--output", type=click.File("w", encoding="utf-8"), default="-",
              help="File to write (default: standard output).")
def export(since: datetime | None, until: datetime | None, patient_id: str | None, rule_id: str | None,
           fmt: str, output: Any) -> None:
    """Export cards with their hook call and feedback. The output is PHI: store it accordingly."""
    audit_filter = AuditFilter(since=since, until=until, patient_id=patient_id, rule_id=rule_id)
    with _audit_engine() as engine:
        count = write_export(iter_cards(engine, audit_filter), fmt, output)
    click.echo(f"{count} card(s) exported", err=True)


@audit.command()
@click.option("--since", type=TIMESTAMP, help="Only hook calls received at or after this time (ISO 8601).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON instead of a table.")
def stats(since: datetime | None, as_json: bool) -> None:
    """Alert burden per rule: issued, distinct patients, accepted, overridden (top reasons), no response."""
    with _audit_engine() as engine:
        report = rule_stats(engine, since)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    header = f"{'rule':40} {'issued':>7} {'patients':>8} {'accepted':>8} {'overridden':>10} {'no resp':>7} " \
             f"{'repeats':>7} {'silent':>6} {'suppr':>6}"
    click.echo(header)
    for row in report:
        click.echo(f"{row['rule_id'][:40]:40} {row['cards_issued']:>7} {row['distinct_patients']:>8} "
                   f"{row['accepted']:>8} {row['overridden']:>10} {row['no_response']:>7} "
                   f"{row['repeats']:>7} {row['silent']:>6} {row['suppressed']:>6}")
        for reason in row["top_override_reasons"]:
            label = reason["display"] or reason["code"] or "(no reason given)"
            click.echo(f"    override reason: {label} x{reason['count']}")


@audit.command()
@click.option("--before", type=TIMESTAMP, required=True, help="Remove records written before this time.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def purge(before: datetime, yes: bool) -> None:
    """Remove old records (retention) and anchor the chain at a checkpoint so it still verifies."""
    if not yes:
        click.confirm(f"Permanently delete audit records written before {before.isoformat()}?", abort=True)
    with _audit_engine() as engine:
        result = purge_before(engine, before)
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
