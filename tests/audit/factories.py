"""Builders for audit records with unique ids, and small database read helpers for assertions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, create_engine, event, func, select, text

from cds_service.audit import AuditLog, CardRecord, FeedbackRecord, HookCallRecord
from cds_service.audit.db import normalise_url
from cds_service.audit.schema import calls, cards, feedback
from cds_service.tenant import Tenant

# A value that must never reach a log line (grepped by the log tests).
SECRET_LAB_VALUE = 13.37
# The tenant of make_call's records (issue 15 item 1) and the override reason its cards offer (item 4).
ISSUER = "https://ehr.example.org"
TENANT = Tenant.of(ISSUER, None, "https://ehr.example.org/fhir")
REASON_SYSTEM = "https://example.org/override-reasons"


def make_card(rule_id: str = "calcinosis.phosphate.high", *, disposition: str = "shown",
              order_key: str | None = None, repeat_of: str | None = None) -> CardRecord:
    """A card record with a fresh uuid and one piece of evidence."""
    return CardRecord(
        card_uuid=str(uuid.uuid4()),
        rule_id=rule_id,
        rule_version="1.0.0",
        indicator="warning",
        summary="Phosphate above range",
        evidence=[{"name": "phosphate", "value": SECRET_LAB_VALUE, "unit": "mg/dL", "original_value": 13.37,
                   "original_unit": "mg/dL", "resource_id": "Observation/ob-1", "time": "2025-01-01T00:00:00Z"}],
        suggestion_uuids=[str(uuid.uuid4())],
        disposition=disposition,
        order_key=order_key,
        repeat_of=repeat_of,
        evidence_fingerprint=["Observation/ob-1|1|2025-01-01T00:00:00Z"],
        override_codes=[f"{REASON_SYSTEM}|not-relevant"],
    )


def make_call(patient_id: str | None = "pat-1", cards_: list[CardRecord] | None = None, *,
              received_at: datetime | None = None, hook: str = "patient-view", http_status: int = 200,
              **extra: Any) -> HookCallRecord:
    """A hook-call record with a fresh hookInstance."""
    values: dict[str, Any] = {
        "hook_instance": str(uuid.uuid4()),
        "service_id": "calcinosis-patient-view" if hook == "patient-view" else f"calcinosis-{hook}",
        "hook": hook,
        "patient_id": patient_id,
        "user_id": "Practitioner/doc-1",
        "encounter_id": "enc-1",
        "client_iss": ISSUER,
        "client_tenant": None,
        "client_jti": str(uuid.uuid4()),
        "received_at": received_at or datetime.now(UTC),
        "duration_ms": 12.5,
        "http_status": http_status,
        "data_sources": {"patient": "prefetch", "labs": "fetched"},
        "skipped_resources": [{"resource_type": "Observation", "id": "bad-1", "reason": "no value"}],
        "rules_evaluated": [("calcinosis.phosphate.high", "1.0.0")],
        "cards": cards_ if cards_ is not None else [make_card()],
        "error": None,
        "fhir_server": TENANT.fhir_server,
        "tenant_key": TENANT.key,
    }
    values.update(extra)
    return HookCallRecord(**values)


def make_feedback(card_uuid: str, outcome: str = "overridden", *, when: datetime | None = None,
                  code: str | None = "not-relevant", service_id: str = "calcinosis-patient-view",
                  comment: str | None = None, client_iss: str | None = ISSUER, client_tenant: str | None = None,
                  received_at: datetime | None = None) -> FeedbackRecord:
    """A feedback item for ``card_uuid`` from make_call's client, received at ``received_at`` (default: ``when``,
    as if the EHR's clock agreed with the server's)."""
    return FeedbackRecord(
        service_id=service_id,
        card_uuid=card_uuid,
        outcome=outcome,
        accepted_suggestions=[] if outcome == "overridden" else [str(uuid.uuid4())],
        override_code=code if outcome == "overridden" else None,
        override_system=REASON_SYSTEM if outcome == "overridden" else None,
        override_display="Not relevant for this patient" if outcome == "overridden" and code else None,
        override_comment=comment,
        outcome_timestamp=when or datetime.now(UTC),
        client_iss=client_iss,
        client_tenant=client_tenant,
        received_at=received_at or when,
    )


def engine_for(url: str) -> Engine:
    """A plain engine for assertions and out-of-band tampering (no audit machinery)."""
    return create_engine(normalise_url(url))


def count(engine: Engine, table_name: str) -> int:
    """Rows in one audit table."""
    table = {"calls": calls, "cards": cards, "feedback": feedback}[table_name]
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


def execute(engine: Engine, statement: str, **params: Any) -> None:
    """Run raw SQL out of band (the way an attacker with database access would)."""
    with engine.begin() as connection:
        connection.execute(text(statement), params)


def capture_driver_statements(audit: AuditLog, backend: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every SQL statement the audit log sends from now on, at the DB-API level.

    The hot path bypasses SQLAlchemy's events, so SQLite's trace callback and psycopg's execute methods are
    watched instead (SQLite traces each row of an executemany).
    """
    statements: list[str] = []
    if backend == "sqlite":
        def trace(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
            dbapi_connection.set_trace_callback(statements.append)

        event.listen(audit.engine, "checkout", trace)
        return statements
    original_execute = psycopg.Connection.execute
    original_many = psycopg.Cursor.executemany

    def traced_execute(self: psycopg.Connection[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        statements.append(str(query))
        return original_execute(self, query, *args, **kwargs)

    def traced_executemany(self: psycopg.Cursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        statements.append(str(query))
        return original_many(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Connection, "execute", traced_execute)
    monkeypatch.setattr(psycopg.Cursor, "executemany", traced_executemany)
    return statements
