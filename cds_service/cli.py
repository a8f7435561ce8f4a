"""The ``calcinosis-cds`` command line: serve, evaluate, audit, db, synth."""

from __future__ import annotations

import importlib
import sys

import click

from cds_service.config import ConfigError, load_settings


class _Commands(click.Group):
    """The command group; ``synth`` (a package of its own beside the service) is imported only when it is used."""

    _LAZY = {"synth": ("synth.cli", "synth_command"),
             "demo-audit": ("cds_service.governance.demo_cmd", "demo_audit_command")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command name, the lazy ones included."""
        return sorted({*super().list_commands(ctx), *self._LAZY})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command called ``cmd_name``, importing its module first when it is a lazy one."""
        if cmd_name in self._LAZY:
            module, name = self._LAZY[cmd_name]
            command = getattr(importlib.import_module(module), name)
            assert isinstance(command, click.Command)  # noqa: S101 - a wrong _LAZY entry is a programming error
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
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
    """Serve with granian workers (the container runs this too; README "Serving model").

    Workers, app threads and read timeouts come from WEB_CONCURRENCY, CDS_WORKER_THREADS and
    CDS_REQUEST_READ_TIMEOUT_S; the audit log is the embedded SQLite database unless CDS_DATABASE_URL is set.
    """
    overrides = {k: v for k, v in {"host": host, "port": port, "dev": dev}.items() if v is not None}
    try:
        settings = load_settings(None, **overrides)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    from cds_service.server import run

    try:
        run(settings)
    except ConfigError as exc:  # found at start-up, e.g. no CDS_AUDIT_CHAIN_KEY: one clear line, no traceback
        raise click.ClickException(str(exc)) from exc


@main.command("check-content")
def check_content_command() -> None:
    """Check the clinical content (value sets, rules, card templates); exit 1 listing every problem.

    The container runs it before the server starts, so broken content never serves a request.
    """
    from cds_service.engine import check_content

    problems = check_content()
    if problems:
        click.echo(f"clinical content check failed ({len(problems)} problem(s)):", err=True)
        for problem in problems:
            click.echo(f"- {problem}", err=True)
        sys.exit(1)
    click.echo("clinical content OK")


# Sub-commands that live in their own modules register themselves here.
from cds_service.audit.cli import audit, db  # noqa: E402 - registered after main is defined
from cds_service.evaluate_cmd import evaluate  # noqa: E402

main.add_command(audit)
main.add_command(db)
main.add_command(evaluate)


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
