"""``calcinosis-cds demo-audit``: fill the configured audit database with simulated weeks of synthetic calls and
clinician feedback (issue 19 item 3), then open ``/admin/dashboard`` to look at them."""

from __future__ import annotations

from datetime import date

import click

from cds_service.config import ConfigError, load_settings


@click.command("demo-audit")
@click.option("--patients", type=click.IntRange(1, 5000), default=60, show_default=True,
              help="Synthetic patients in the cohort.")
@click.option("--weeks", type=click.IntRange(1, 104), default=8, show_default=True,
              help="Simulated weeks, ending today (or at --end).")
@click.option("--seed", type=int, default=19, show_default=True, help="Random seed (same seed, same history).")
@click.option("--end", "end", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="Last simulated day (YYYY-MM-DD); default today.")
def demo_audit_command(patients: int, weeks: int, seed: int, end: object) -> None:
    """Run a synthetic cohort through the service over simulated weeks, with simulated accepted / overridden /
    unanswered cards, into the configured audit database (CDS_DATABASE_URL, else the SQLite file in the data
    directory). Synthetic data only: never point it at a production audit log."""
    try:
        settings = load_settings(None)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    from cds_service.governance.demo import run_demo

    last_day = end.date() if hasattr(end, "date") else None
    summary = run_demo(settings, patients=patients, weeks=weeks, seed=seed,
                       end=last_day if isinstance(last_day, date) else None)
    span = (f"{summary.first_call:%Y-%m-%d} to {summary.last_call:%Y-%m-%d}" if summary.first_call and
            summary.last_call else "no calls")
    click.echo(f"demo audit: {summary.calls} hook calls ({span}), {summary.cards} cards; feedback: "
               + ", ".join(f"{n} {outcome}" for outcome, n in summary.feedback.items()))
