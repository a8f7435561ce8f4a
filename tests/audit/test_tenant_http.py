"""Issue 15 acceptance through the real app in production mode (JWT-authenticated clients), SQLite and PostgreSQL.

Two trusted EHR issuers call with the SAME patient id and FHIR server. The sandbox-shaped "Dismiss" (overridden,
no reason) suppresses nothing; an override with one of the card's reasons suppresses the card for that user
and client only, until a newer lab arrives; feedback from the other client, or for an unknown card, is answered
200, stored as unmatched and has no effect; a far-future outcomeTimestamp is stored as sent and flagged.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from cds_service.audit.db import create_audit_engine, upgrade_schema
from cds_service.audit.schema import calls, cards, feedback
from cds_service.runtime import get_runtime
from cds_service.tenant import Tenant
from tests.audit.conftest import TEST_CHAIN_KEY, TEST_KEYRING, Database
from tests.audit.factories import engine_for
from tests.security.tokens import Signer, jwks, make_key, write_issuers_file
from tests.support.app import make_app
from tests.support.fhir_builders import esrd_with_high_caxp, hook_request, lab, prefetch_for

PUBLIC = "https://cds.example.org"
SERVICE = "calcinosis-patient-view"
FHIR = "https://ehr.shared-host.example.org/fhir/"
ISSUER_A, ISSUER_B = "https://ehr-a.example.org", "https://ehr-b.example.org"
USER, OTHER_USER = "Practitioner/pr-1", "Practitioner/pr-2"


@dataclass
class Client:
    """One EHR: its signer and the app's test client."""

    signer: Signer
    http: FlaskClient

    def _headers(self, path: str) -> dict[str, str]:
        return {"Authorization": self.signer.bearer(PUBLIC + path)}

    def call(self, pid: str, *, user: str = USER, resources: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        body = hook_request("patient-view", pid, prefetch=prefetch_for(resources or esrd_with_high_caxp(pid)),
                            fhir_server=FHIR)
        body["context"]["userId"] = user
        path = f"/cds-services/{SERVICE}"
        response = self.http.post(path, json=body, headers=self._headers(path))
        assert response.status_code == 200, response.get_data(as_text=True)
        return {"hookInstance": body["hookInstance"], "cards": response.get_json()["cards"]}

    def feedback(self, item: dict[str, Any]) -> int:
        path = f"/cds-services/{SERVICE}/feedback"
        return self.http.post(path, json={"feedback": [item]}, headers=self._headers(path)).status_code


def _caxp(result: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for c in result["cards"] if c["source"]["topic"]["code"] == "caxp-high"), None)


def _now() -> str:
    return datetime.now(UTC).isoformat()


@pytest.fixture
def ehrs(database: Database, tmp_path: Path) -> Iterator[tuple[Client, Client, Flask]]:
    """The app in production mode trusting two issuers, and a client for each."""
    key_a, key_b = make_key("ES384"), make_key("ES384")
    issuers = write_issuers_file(tmp_path / "issuers.json", [{"iss": ISSUER_A, "jwks": jwks(key_a)},
                                                             {"iss": ISSUER_B, "jwks": jwks(key_b)}])
    if database.backend == "postgres":  # a shared database is migrated by `db upgrade`, as in production
        engine = create_audit_engine(database.url)
        upgrade_schema(engine, TEST_KEYRING)
        engine.dispose()
    app = make_app(database.data_dir, dev=False, database_url=database.url, public_base_url=PUBLIC,
                   trusted_issuers_file=str(issuers), audit_chain_key=TEST_CHAIN_KEY,
                   allowed_fhir_servers=("https://ehr.shared-host.example.org/",))
    try:
        yield (Client(Signer(ISSUER_A, key_a), app.test_client()), Client(Signer(ISSUER_B, key_b), app.test_client()),
               app)
    finally:
        get_runtime(app).close()


def _dispositions(database: Database, hook_instance: str) -> dict[str, str]:
    engine = engine_for(database.url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(cards.c.rule_id, cards.c.disposition)
                .select_from(cards.join(calls, calls.c.id == cards.c.call_id))
                .where(calls.c.hook_instance == hook_instance)).all()
        return {str(rule): str(disposition) for rule, disposition in rows}
    finally:
        engine.dispose()


def _feedback_rows(database: Database, card_uuid: str) -> list[dict[str, Any]]:
    engine = engine_for(database.url)
    try:
        with engine.connect() as connection:
            return [dict(row) for row in connection.execute(
                select(feedback).where(feedback.c.card_uuid == card_uuid).order_by(feedback.c.id)).mappings()]
    finally:
        engine.dispose()


def test_override_semantics_and_tenant_scope_over_http(ehrs: tuple[Client, Client, Flask],
                                                       database: Database) -> None:
    a, b, _app = ehrs
    pid = f"shared-{uuid.uuid4().hex[:8]}"  # the same patient id at both EHRs
    first = a.call(pid)
    card = _caxp(first)
    assert card is not None
    assert card["overrideReasons"], "patient-view cards offer override reasons"

    # The sandbox's "Dismiss": overridden, no reason. Recorded; suppresses nothing.
    assert a.feedback({"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": _now()}) == 200
    assert _feedback_rows(database, card["uuid"])[0]["match"] == "matched"
    assert _caxp(a.call(pid)) is not None

    # The other EHR's feedback on A's card (even with a reason): 200, unmatched, no effect.
    reason = {"reason": card["overrideReasons"][0]}
    assert b.feedback({"card": card["uuid"], "outcome": "overridden", "overrideReason": reason,
                       "outcomeTimestamp": _now()}) == 200
    assert _feedback_rows(database, card["uuid"])[-1]["match"] == "unmatched"
    assert _caxp(a.call(pid)) is not None
    # Feedback for a card nobody issued: 200, unmatched.
    unknown = str(uuid.uuid4())
    assert a.feedback({"card": unknown, "outcome": "overridden", "overrideReason": reason,
                       "outcomeTimestamp": _now()}) == 200
    assert [row["match"] for row in _feedback_rows(database, unknown)] == ["unmatched"]

    # An override with one of the card's reasons, sent with a far-future outcomeTimestamp.
    far_future = datetime.now(UTC) + timedelta(days=30)
    assert a.feedback({"card": card["uuid"], "outcome": "overridden", "overrideReason": reason,
                       "outcomeTimestamp": far_future.isoformat()}) == 200
    stored = _feedback_rows(database, card["uuid"])[-1]
    assert stored["match"] == "matched"
    assert stored["timestamp_in_future"] is True
    assert stored["outcome_timestamp"] == far_future
    assert stored["client_iss"] == ISSUER_A

    again = a.call(pid)
    assert _caxp(again) is None  # suppressed for the same user of the same EHR
    assert _dispositions(database, again["hookInstance"])["caxp-high"] == "suppressed"
    assert _caxp(a.call(pid, user=OTHER_USER)) is not None  # another clinician still sees it
    assert _caxp(b.call(pid)) is not None  # the other EHR's patient with the same id: untouched
    # A newer phosphate that still fires: shown again at once.
    newer = [*esrd_with_high_caxp(pid), lab(pid, f"{pid}-p-new", "2777-1", 7.6, "mg/dL", days_ago=0.1)]
    assert _caxp(a.call(pid, resources=newer)) is not None

    engine = engine_for(database.url)
    with engine.connect() as connection:
        call = connection.execute(select(calls).where(calls.c.hook_instance == again["hookInstance"])).mappings().one()
    engine.dispose()
    assert call["fhir_server"] == "https://ehr.shared-host.example.org/fhir"
    assert call["tenant_key"] == Tenant.of(ISSUER_A, None, FHIR).key
