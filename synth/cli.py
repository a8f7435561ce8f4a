"""``calcinosis-cds synth``: write a synthetic cohort (the service's CLI imports this module only for this command)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import click

from synth.cohort import (
    DEFAULT_MAX_ENTRIES,
    FORMATS,
    MAX_PATIENTS,
    SynthError,
    check_arguments,
    iter_cohort,
    write_cohort,
)


@click.command("synth")
@click.option("--patients", type=int, required=True, help=f"How many patients (1-{MAX_PATIENTS}).")
@click.option("--years", type=int, default=1, show_default=True, help="Years of history per patient.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed -> byte-identical output.")
@click.option("--as-of", "as_of", default=None, metavar="YYYY-MM-DD",
              help="Date the newest data leads up to (default: today, UTC).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory to write (default: standard output).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="bundle", show_default=True,
              help="bundle: transaction Bundles (PUT, stable ids) per patient; ndjson: one file per type.")
@click.option("--max-entries", type=int, default=DEFAULT_MAX_ENTRIES, show_default=True,
              help="Entries per transaction Bundle (the Medplum test server takes 50; 0 = one per patient).")
def synth_command(patients: int, years: int, seed: int, as_of: str | None, out_dir: Path | None,
                  fmt: str, max_entries: int) -> None:
    """Write a synthetic CKD-MBD cohort as FHIR R4 (fiction, tagged HTEST)."""
    day: date | None = None
    if as_of is not None:
        try:
            day = date.fromisoformat(as_of)
        except ValueError:
            raise click.BadParameter(f"{as_of!r} is not a date like 2025-06-15", param_hint="--as-of") from None
    try:
        check_arguments(patients, years, seed)
        written = write_cohort(iter_cohort(patients, years, seed, day), fmt, out_dir, max_entries=max_entries)
    except SynthError as exc:
        raise click.UsageError(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot write the cohort: {exc}") from None
    if out_dir is not None:
        click.echo(f"wrote {patients} patients to {len(written)} file(s) in {out_dir}", err=True)
