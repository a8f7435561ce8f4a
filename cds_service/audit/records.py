"""The records the HTTP layer hands to the audit log: one per hook call, card and feedback item.

They are plain frozen dataclasses so the HTTP layer does not depend on the database; ``*_to_json`` /
``*_from_json`` turn a hook-call record into JSON for the durable spool (records wait there while the
database is unavailable, issue #4 item 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

DISPOSITIONS = ("shown", "silent", "suppressed")
FEEDBACK_OUTCOMES = ("accepted", "overridden")


@dataclass(frozen=True)
class CardRecord:
    """One card the rules produced, whether shown, silent (rule on trial) or suppressed (repeat)."""

    card_uuid: str
    rule_id: str
    rule_version: str
    indicator: str
    summary: str
    evidence: list[dict[str, Any]]  # {name, value, unit, original_value, original_unit, resource_id, time}
    suggestion_uuids: list[str]
    disposition: str  # "shown" | "silent" | "suppressed"
    order_key: str | None = None  # "MedicationRequest/<id>" for order cards
    repeat_of: str | None = None  # card_uuid of the earlier identical order alert (dedup)
    # Issue 15 item 4: the source resources (``Type/id|versionId|lastUpdated``) that drove the card, and the
    # ``system|code`` of each override reason it offered. None on records made before they existed.
    evidence_fingerprint: list[str] | None = None
    override_codes: list[str] | None = None


@dataclass(frozen=True)
class HookCallRecord:
    """One CDS Hooks call: who asked, on what data, which rules ran, what came back."""

    hook_instance: str
    service_id: str
    hook: str
    patient_id: str | None
    user_id: str | None
    encounter_id: str | None
    client_iss: str | None
    client_tenant: str | None
    client_jti: str | None  # never the token
    received_at: datetime
    duration_ms: float
    http_status: int
    data_sources: dict[str, str]  # prefetch key -> "prefetch" | "fetched" | "null" | "failed"
    # {resource_type, id, reason}; more than a few of one reason: one entry with "count" and "first_ids"
    skipped_resources: list[dict[str, Any]]
    rules_evaluated: list[tuple[str, str]]  # (rule_id, version)
    cards: list[CardRecord]
    error: str | None = None  # short machine code for non-200 outcomes (e.g. "prefetch-unavailable")
    # Issue 15 item 1: the normalised fhirServer and the tenant key (cds_service.tenant.Tenant.key) that scope
    # every piece of alert state this call reads or leaves; None on records made before they existed.
    fhir_server: str | None = None
    tenant_key: str | None = None
    # Milliseconds from the request reaching the app until its response was ready (issue 15 item 7), beside
    # ``duration_ms`` (evaluation only); None for records written before it existed.
    request_ms: float | None = None
    # Issue 19: Ca x P, Ca, P, PTH multiple and R07 co-factor count a patient-view call computed, fired or not
    # (cds_service.governance.values); None for other hooks, failed calls and records made before it existed.
    governance_values: dict[str, Any] | None = None


@dataclass(frozen=True)
class FeedbackRecord:
    """One feedback item (CDS Hooks 2.0 section "Feedback") as the EHR sent it."""

    service_id: str
    card_uuid: str
    outcome: str  # "accepted" | "overridden"
    accepted_suggestions: list[str]
    override_code: str | None
    override_system: str | None
    override_display: str | None
    override_comment: str | None
    outcome_timestamp: datetime  # as the EHR sent it; never used for windows (issue 15 item 3)
    # Issue 15 items 2-3: the client that sent it (None only in --dev without a JWT) and when this server
    # received it (None: the store uses its own clock).
    client_iss: str | None = None
    client_tenant: str | None = None
    received_at: datetime | None = None


@dataclass(frozen=True)
class SpooledCall:
    """A hook-call record plus the identity it keeps through the spool, so a replay is stored once."""

    record_uuid: str
    record: HookCallRecord
    spooled_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def as_utc(moment: datetime) -> datetime:
    """The same instant as an aware UTC datetime; a naive value is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def call_to_json(spooled: SpooledCall) -> dict[str, Any]:
    """A JSON-ready dict of a spooled hook-call record (inverse of :func:`call_from_json`)."""
    record = spooled.record
    return {
        "format": 1,
        "record_uuid": spooled.record_uuid,
        "spooled_at": as_utc(spooled.spooled_at).isoformat(),
        "call": {
            "hook_instance": record.hook_instance,
            "service_id": record.service_id,
            "hook": record.hook,
            "patient_id": record.patient_id,
            "user_id": record.user_id,
            "encounter_id": record.encounter_id,
            "client_iss": record.client_iss,
            "client_tenant": record.client_tenant,
            "client_jti": record.client_jti,
            "received_at": as_utc(record.received_at).isoformat(),
            "duration_ms": record.duration_ms,
            "http_status": record.http_status,
            "data_sources": dict(record.data_sources),
            "skipped_resources": [dict(item) for item in record.skipped_resources],
            "rules_evaluated": [[rule_id, version] for rule_id, version in record.rules_evaluated],
            "error": record.error,
            "fhir_server": record.fhir_server,
            "tenant_key": record.tenant_key,
            "request_ms": record.request_ms,
            "governance_values": record.governance_values,
            "cards": [
                {
                    "card_uuid": card.card_uuid,
                    "rule_id": card.rule_id,
                    "rule_version": card.rule_version,
                    "indicator": card.indicator,
                    "summary": card.summary,
                    "evidence": card.evidence,
                    "suggestion_uuids": list(card.suggestion_uuids),
                    "disposition": card.disposition,
                    "order_key": card.order_key,
                    "repeat_of": card.repeat_of,
                    "evidence_fingerprint": card.evidence_fingerprint,
                    "override_codes": card.override_codes,
                }
                for card in record.cards
            ],
        },
    }


def call_from_json(data: dict[str, Any]) -> SpooledCall:
    """Rebuild a spooled hook-call record; raises KeyError/ValueError/TypeError on a malformed file."""
    if data.get("format") != 1:
        raise ValueError(f"unknown spool record format {data.get('format')!r}")
    call = data["call"]
    cards = [
        CardRecord(
            card_uuid=str(card["card_uuid"]),
            rule_id=str(card["rule_id"]),
            rule_version=str(card["rule_version"]),
            indicator=str(card["indicator"]),
            summary=str(card["summary"]),
            evidence=list(card["evidence"]),
            suggestion_uuids=[str(item) for item in card["suggestion_uuids"]],
            disposition=str(card["disposition"]),
            order_key=card.get("order_key"),
            repeat_of=card.get("repeat_of"),
            evidence_fingerprint=_optional_strings(card.get("evidence_fingerprint")),
            override_codes=_optional_strings(card.get("override_codes")),
        )
        for card in call["cards"]
    ]
    record = HookCallRecord(
        hook_instance=str(call["hook_instance"]),
        service_id=str(call["service_id"]),
        hook=str(call["hook"]),
        patient_id=call.get("patient_id"),
        user_id=call.get("user_id"),
        encounter_id=call.get("encounter_id"),
        client_iss=call.get("client_iss"),
        client_tenant=call.get("client_tenant"),
        client_jti=call.get("client_jti"),
        received_at=datetime.fromisoformat(call["received_at"]),
        duration_ms=float(call["duration_ms"]),
        http_status=int(call["http_status"]),
        data_sources={str(k): str(v) for k, v in call["data_sources"].items()},
        skipped_resources=[{str(k): v for k, v in item.items()} for item in call["skipped_resources"]],
        rules_evaluated=[(str(rule_id), str(version)) for rule_id, version in call["rules_evaluated"]],
        cards=cards,
        error=call.get("error"),
        fhir_server=call.get("fhir_server"),
        tenant_key=call.get("tenant_key"),
        request_ms=None if call.get("request_ms") is None else float(call["request_ms"]),  # absent in older files
        governance_values=_optional_dict(call.get("governance_values")),  # absent in files spooled before issue 19
    )
    return SpooledCall(
        record_uuid=str(data["record_uuid"]),
        record=record,
        spooled_at=datetime.fromisoformat(data["spooled_at"]),
    )


def _optional_strings(value: Any) -> list[str] | None:
    """A spooled list of strings; None when absent (a spool file written before the field existed)."""
    return None if value is None else [str(item) for item in value]


def _optional_dict(value: Any) -> dict[str, Any] | None:
    """A spooled JSON object; None when absent or not an object."""
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else None
