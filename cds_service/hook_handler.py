"""One hook call, top to bottom: validate -> gather data -> assess -> alert policy -> audit -> cards.

The audit record is committed before the response is returned (issue #4: nothing acknowledged is lost); if the
database is down the audit log spools the record durably and the cards are still served (decision support
must not stop).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from cards.shared import share_evidence
from cds_service.alert_policy import CallScope, apply_alert_policy
from cds_service.audit.records import CardRecord, HookCallRecord
from cds_service.auth import ClientIdentity
from cds_service.engine import PatientRecord, assess
from cds_service.errors import ServiceError
from cds_service.hook_models import HookRequest, parse_hook_request
from cds_service.metrics import record_cards, record_prefetch_unavailable, record_rule_failures
from cds_service.prefetch import SOURCE_FAILED, SOURCE_PARTIAL, ResolvedData, resolve_prefetch
from cds_service.runtime import Runtime
from cds_service.services import ServiceDefinition, key_words
from cds_service.tenant import Tenant
from fhir_mappings import wire

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HookOutcome:
    """The HTTP status and JSON body to send."""

    status: int
    body: dict[str, Any]


def handle_hook_call(runtime: Runtime, service: ServiceDefinition, body: Any,
                     client: ClientIdentity | None, links_base_url: str = "",
                     request_started: float | None = None) -> HookOutcome:
    """Run one CDS Hooks call for ``service`` and record it in the audit log.

    ``links_base_url`` (the service's public base URL) makes cards carry their viewer/rule links (issue #6).
    ``request_started`` (``time.perf_counter()`` when the request reached the app) gives the record its
    ``request_ms`` (issue 15 item 7). An unexpected error is recorded as a 500 call and raised again for the
    app's error handler: every authenticated call is in the log, whatever its outcome.
    """
    started = time.perf_counter()
    now = datetime.now(UTC)
    request: HookRequest | None = None
    data = ResolvedData()
    skipped: list[dict[str, str]] = []
    rules_evaluated: list[tuple[str, str]] = []
    card_records: list[CardRecord] = []
    error: str | None = None
    tenant: Tenant | None = None
    values: dict[str, Any] | None = None
    try:
        request = parse_hook_request(body, service.hook)
        # Issue 15 item 1: all alert state is the tenant's (client + FHIR server).
        tenant = Tenant.of(client.iss if client else None, client.tenant if client else None, request.fhir_server)
        data = resolve_prefetch(service, request, runtime.settings, runtime.fhir_session, runtime.executor)
        options = runtime.engine_options
        if links_base_url:
            options = replace(options, links_base_url=links_base_url)
        patient_record = _patient_record(request, data)
        assessment = assess(patient_record, service.hook, now, options)
        record_rule_failures(s["id"] for s in assessment.skipped if s.get("resource_type") == "rule")
        skipped, rules_evaluated = assessment.skipped + assessment.tolerant_reads, assessment.rules_evaluated
        values = assessment.governance_values
        shown, card_records = apply_alert_policy(
            assessment.cards, hook=service.hook, patient_id=request.patient_id, now=now,
            settings=runtime.settings, audit=runtime.audit,
            scope=CallScope(tenant.key, request.user_id), resources=patient_record.resources,
        )
        # Each fact once per response: a later card repeating values already shown says so in one line.
        outcome = HookOutcome(200, {"cards": share_evidence(shown, assessment.cards)})
    except ServiceError as exc:
        error = exc.audit_code
        outcome = HookOutcome(exc.status, exc.to_outcome())
        if exc.status == 412:
            record_prefetch_unavailable(service.id)
    except Exception:
        if runtime.audit is not None:
            runtime.audit.record_hook_call(hook_call_record(
                service.id, service.hook, client, now, 500, INTERNAL_ERROR, request_started, body=body,
                request=request, tenant=tenant, data_sources=data.sources,
                duration_ms=(time.perf_counter() - started) * 1000.0))
        raise
    record_cards(card_records)
    if runtime.audit is not None:
        runtime.audit.record_hook_call(hook_call_record(
            service.id, service.hook, client, now, outcome.status, error, request_started, body=body,
            request=request, tenant=tenant, data_sources=data.sources,
            duration_ms=(time.perf_counter() - started) * 1000.0, skipped_resources=skipped,
            rules_evaluated=rules_evaluated, cards=card_records, governance_values=values))
    return outcome


INTERNAL_ERROR = "internal-error"  # audit code of a call answered 500 by the app's error handler


def hook_call_record(service_id: str, hook: str, client: ClientIdentity | None, received_at: datetime,
                         status: int, error: str | None, request_started: float | None, *, body: Any = None,
                         request: HookRequest | None = None, tenant: Tenant | None = None,
                         data_sources: dict[str, str] | None = None, duration_ms: float = 0.0,
                         skipped_resources: list[dict[str, Any]] | None = None,
                         rules_evaluated: list[tuple[str, str]] | None = None,
                         cards: list[CardRecord] | None = None,
                         governance_values: dict[str, Any] | None = None) -> HookCallRecord:
    """The audit record of one authenticated hook call, whatever its answer (issue 15 item 7).

    The hook handler's evaluated calls (200, 400 envelope, 412) pass what the evaluation found; a body that
    cannot be read (400/413/415), an unknown service id (404) and unexpected errors (500) pass what was known of
    the call by then.
    """
    return HookCallRecord(
        hook_instance=request.hook_instance if request else _raw_field(body, "hookInstance"),
        service_id=service_id[:128],
        hook=hook,
        patient_id=request.patient_id if request else None,
        user_id=request.user_id if request else None,
        encounter_id=request.encounter_id if request else None,
        client_iss=client.iss if client else None,
        client_tenant=client.tenant if client else None,
        client_jti=client.jti if client else None,
        received_at=received_at,
        duration_ms=duration_ms,
        http_status=status,
        data_sources=dict(data_sources or {}),
        skipped_resources=list(skipped_resources or []),
        rules_evaluated=list(rules_evaluated or []),
        cards=list(cards or []),
        error=error,
        request_ms=_elapsed_ms(request_started),
        fhir_server=tenant.fhir_server if tenant else None,
        tenant_key=tenant.key if tenant else None,
        governance_values=governance_values,
    )


def _elapsed_ms(started: float | None) -> float | None:
    """Milliseconds since ``started`` (a ``time.perf_counter()`` reading), None when unknown."""
    return None if started is None else (time.perf_counter() - started) * 1000.0


def _patient_record(request: HookRequest, data: ResolvedData) -> PatientRecord:
    patient = next((r for r in data.resources.get("patient", []) if wire.identity(r)[0] == "Patient"), None)
    resources = [r for key, rs in data.resources.items() if key != "patient" for r in rs]
    draft_orders: list[dict[str, Any]] = []
    if request.draft_orders is not None:
        for entry in request.draft_orders.get("entry", []):
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(resource, dict):
                draft_orders.append(resource)
    # §8 C6: data that could not be (fully) read although the call is answered is named on a card.
    unreadable = list(dict.fromkeys(key_words(key) for key, source in data.sources.items()
                                    if source in (SOURCE_FAILED, SOURCE_PARTIAL)))
    return PatientRecord(patient=patient, resources=resources, draft_orders=draft_orders,
                         selections=request.selections, unreadable=unreadable)


def _raw_field(body: Any, key: str) -> str:
    """A field of an invalid body, for the audit record only (bounded, string or empty)."""
    value = body.get(key) if isinstance(body, dict) else None
    return value[:128] if isinstance(value, str) else ""
