"""The ``calcinosis-cds`` command line: serve, evaluate, audit, db, synth."""

from __future__ import annotations

import sys

import click

from cds_service.config import ConfigError, load_settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Calcinosis cutis risk CDS Hooks 2.0 service."""


@main.command()
@click.option("--host", default=None, help="Interface to bind (CDS_HOST, default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to listen on (CDS_PORT, default 8080).")
@click.option(
    "--dev",
    is_flag=True,
    default=None,
    help="Local trials and the public sandbox: http FHIR servers allowed, sandbox JWT trusted (CDS_DEV=1). "
    "Never use with production data.",
)
def serve(host: str | None, port: int | None, dev: bool | None) -> None:
    """Run the service on the embedded defaults (SQLite audit log)."""
    overrides = {k: v for k, v in {"host": host, "port": port, "dev": dev}.items() if v is not None}
    try:
        settings = load_settings(**overrides)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    from cds_service.server import run

    run(settings)


# Sub-commands that live in their own modules register themselves here.


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
