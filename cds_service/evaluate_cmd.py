"""``calcinosis-cds evaluate REQUEST.json``: run the rules offline and print the cards as JSON.

The file is either a CDS Hooks request (``hook``, ``context``, ``prefetch``; ``context.draftOrders``
for order hooks) or a FHIR Bundle holding a patient's resources (then ``--hook`` names the hook,
default patient-view). Lets a clinician review the rules without an EHR.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from cds_service.engine import EngineOptions, PatientRecord, assess
from fhir_mappings.datetimes import parse_datetime

HOOK_CHOICES = ("patient-view", "order-select", "order-sign")


class InputError(ValueError):
    """The input file cannot be used; the message says why."""


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def _resources_of(value: object) -> list[dict[str, Any]]:
    """Resources from a prefetch value: a Bundle (entries unwrapped), a single resource, or null."""
    if isinstance(value, dict) and value.get("resourceType") == "Bundle":
        entries = value.get("entry")
        return [e["resource"] for e in entries if isinstance(e, dict) and isinstance(e.get("resource"), dict)] \
            if isinstance(entries, list) else []
    if isinstance(value, dict) and isinstance(value.get("resourceType"), str):
        return [value]
    if isinstance(value, list):
        return [r for item in value for r in _resources_of(item)]
    return []


def _split_patient(resources: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    patient = next((r for r in resources if r.get("resourceType") == "Patient"), None)
    return patient, [r for r in resources if r is not patient and r.get("resourceType") != "OperationOutcome"]


def record_from_json(data: object, hook_option: str | None) -> tuple[PatientRecord, str]:
    """Build the engine input from a hook request or a Bundle; raises InputError when unusable."""
    if not isinstance(data, dict):
        raise InputError("the file must hold a JSON object (a CDS Hooks request or a FHIR Bundle)")
    if data.get("resourceType") == "Bundle":
        patient, resources = _split_patient(_resources_of(data))
        return PatientRecord(patient=patient, resources=resources), hook_option or "patient-view"
    if "hook" in data or "prefetch" in data or "context" in data:
        hook = hook_option or data.get("hook")
        if hook not in HOOK_CHOICES:
            raise InputError(f"unsupported hook {hook!r}; use one of {', '.join(HOOK_CHOICES)}")
        prefetch = data.get("prefetch")
        gathered = [r for value in (prefetch.values() if isinstance(prefetch, dict) else [])
                    for r in _resources_of(value)]
        patient, resources = _split_patient(gathered)
        raw_context = data.get("context")
        context: dict[str, Any] = raw_context if isinstance(raw_context, dict) else {}
        drafts = _resources_of(context.get("draftOrders"))
        selections = [s for s in context.get("selections") or [] if isinstance(s, str)]
        return PatientRecord(patient, resources, drafts, selections), str(hook)
    raise InputError("not a CDS Hooks request (no hook/context/prefetch) and not a FHIR Bundle")


@click.command()
@click.argument("request_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--hook", type=click.Choice(HOOK_CHOICES), default=None,
              help="Hook to evaluate (required context for a Bundle; overrides a request's hook).")
@click.option("--now", "now_text", default=None, help="Evaluation time, ISO 8601 (default: the current time).")
@click.option("--include-preliminary", is_flag=True, help="Also use preliminary lab results.")
@click.option("--ctd-info-card", is_flag=True, help="Enable the connective-tissue disease info card (R16).")
@click.option("--tumoral-calcinosis-rule", is_flag=True, help="Enable the tumoral calcinosis hint (R19).")
def evaluate(
    request_file: Path,
    hook: str | None,
    now_text: str | None,
    include_preliminary: bool,
    ctd_info_card: bool,
    tumoral_calcinosis_rule: bool,
) -> None:
    """Evaluate REQUEST_FILE offline and print {"cards": [...]} as JSON."""
    try:
        data = json.loads(request_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"cannot read {request_file}: {exc}")
        return
    except ValueError as exc:
        _fail(f"{request_file} is not valid JSON: {exc}")
        return
    now = datetime.now(UTC)
    if now_text is not None:
        parsed = parse_datetime(now_text)
        if parsed is None:
            _fail(f"--now {now_text!r} is not an ISO 8601 date/time")
            return
        now = parsed
    try:
        record, resolved_hook = record_from_json(data, hook)
    except InputError as exc:
        _fail(str(exc))
        return
    options = EngineOptions(include_preliminary, ctd_info_card, tumoral_calcinosis_rule)
    result = assess(record, resolved_hook, now, options)
    for item in result.skipped:
        click.echo(f"skipped {item['resource_type']}/{item['id']}: {item['reason']}", err=True)
    click.echo(json.dumps({"cards": [c.card for c in result.cards]}, indent=2, ensure_ascii=False))
