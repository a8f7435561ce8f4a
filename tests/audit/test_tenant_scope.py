"""The tenant key, the evidence fingerprint and migration 0003 on an existing database (issue 15 items 1, 4)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from sqlalchemy import inspect, text

from cds_service.audit.db import alembic_config, create_audit_engine, current_revision
from cds_service.evidence_fingerprint import fingerprint, is_offered_reason, override_codes, resource_versions
from cds_service.tenant import Tenant, normalise_fhir_base, same_client
from tests.audit.conftest import Database
from tests.audit.factories import TENANT


@pytest.mark.parametrize(("raw", "expected"), [
    ("https://EHR.Example.org/fhir/", "https://ehr.example.org/fhir"),
    ("HTTPS://ehr.example.org:443/fhir", "https://ehr.example.org/fhir"),
    ("http://ehr.example.org:80/fhir", "http://ehr.example.org/fhir"),
    ("https://ehr.example.org:8443/fhir", "https://ehr.example.org:8443/fhir"),
    ("https://ehr.example.org/fhir/Tenant-A/R4/", "https://ehr.example.org/fhir/Tenant-A/R4"),  # path kept as is
    ("https://ehr.example.org", "https://ehr.example.org"),
    ("https://ehr.example.org/fhir?x=1#frag", "https://ehr.example.org/fhir"),
    (None, None),
    ("", None),
])
def test_fhir_server_is_normalised_keeping_the_path(raw: str | None, expected: str | None) -> None:
    assert normalise_fhir_base(raw) == expected


def test_tenant_key_separates_client_tenant_claim_and_fhir_server() -> None:
    base = Tenant.of("https://ehr.example.org", None, "https://ehr.example.org/fhir/")
    assert base.key == Tenant.of("https://ehr.example.org", None, "HTTPS://EHR.example.org:443/fhir").key
    others = [
        Tenant.of("https://other.example.org", None, "https://ehr.example.org/fhir"),
        Tenant.of("https://ehr.example.org", "hospital-b", "https://ehr.example.org/fhir"),
        Tenant.of("https://ehr.example.org", None, "https://ehr.example.org/fhir/hospital-b"),
        Tenant.of("https://ehr.example.org", None, None),
    ]
    assert len({base.key, *(t.key for t in others)}) == 5
    assert all(len(t.key) == 64 for t in others)


def test_same_client_requires_iss_and_tenant_unless_feedback_has_no_client() -> None:
    assert same_client("a", None, "a", None)
    assert not same_client("a", None, "b", None)
    assert not same_client("a", "t1", "a", None)
    assert same_client(None, None, "a", "t1")  # --dev without a JWT: by card uuid only


def test_fingerprint_names_each_source_resource_with_its_version() -> None:
    evidence = [{"resource_id": "Observation/ca,Observation/p"}, {"resource_id": "Observation/ca"},
                {"name": "derived, no resource"}]
    resources = [{"resourceType": "Observation", "id": "ca", "meta": {"versionId": "2"}},
                 {"resourceType": "Observation", "id": "p", "meta": {"lastUpdated": "2025-01-01T00:00:00Z"}},
                 {"resourceType": "Observation", "id": "unrelated", "meta": {"versionId": "9"}}]
    versions = resource_versions(resources, {"Observation/ca", "Observation/p"})
    assert fingerprint(evidence, versions) == ["Observation/ca|2|", "Observation/p||2025-01-01T00:00:00Z"]
    assert fingerprint(evidence, {}) == ["Observation/ca||", "Observation/p||"]


def test_offered_reason_codes() -> None:
    card = {"overrideReasons": [{"system": "urn:s", "code": "known-managed", "display": "Known"}]}
    offered = override_codes(card)
    assert offered == ["urn:s|known-managed"]
    assert is_offered_reason("known-managed", "urn:s", offered)
    assert is_offered_reason("known-managed", None, offered)  # no system sent: the code decides
    assert not is_offered_reason("known-managed", "urn:other", offered)
    assert not is_offered_reason("other", "urn:s", offered)
    assert not is_offered_reason(None, None, offered)


def test_migration_0003_keeps_existing_rows_which_never_suppress(database: Database) -> None:
    """An existing database at 0002 with an override: upgraded, its rows keep NULL tenant columns and the old
    (tenant-less) override suppresses nothing for calls made after the upgrade."""
    engine = create_audit_engine(database.url)
    try:
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), "0002")
        now = datetime.now(UTC)
        when = (now - timedelta(hours=1)).replace(tzinfo=None)
        stamp = when.isoformat(sep=" ") if database.backend == "sqlite" else when.replace(tzinfo=UTC)
        with engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO calls (id, record_uuid, hook_instance, service_id, hook, patient_id, user_id,"
                " client_iss, received_at, duration_ms, http_status, data_sources, skipped_resources,"
                " rules_evaluated, recorded_at, record_hash) VALUES (1, 'r-1', 'h-1', 'calcinosis-patient-view',"
                " 'patient-view', 'pat-old', 'Practitioner/doc-1', :iss, :t, 1.0, 200, '{}', '[]', '[]', :t,"
                " :h)"), {"iss": TENANT.client_iss, "t": stamp, "h": "a" * 64})
            connection.execute(text(
                "INSERT INTO cards (id, call_id, card_uuid, rule_id, rule_version, indicator, summary, evidence,"
                " suggestion_uuids, disposition, recorded_at, record_hash) VALUES (2, 1, 'card-old', 'rule-a',"
                " '1', 'warning', 's', '[]', '[]', 'shown', :t, :h)"), {"t": stamp, "h": "b" * 64})
            connection.execute(text(
                "INSERT INTO feedback (id, item_key, service_id, card_uuid, card_known, outcome,"
                " accepted_suggestions, override_comment, outcome_timestamp, recorded_at, record_hash) VALUES"
                " (3, :k, 'calcinosis-patient-view', 'card-old', :known, 'overridden', '[]', 'aware', :t, :t,"
                " :h)"), {"k": "c" * 64, "known": True, "t": stamp, "h": "d" * 64})
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), "0003")
            assert current_revision(connection) == "0003"
            columns = {c["name"] for c in inspect(connection).get_columns("feedback")}
            assert {"client_iss", "client_tenant", "received_at", "timestamp_in_future", "match"} <= columns
            row = connection.execute(text("SELECT tenant_key, fhir_server FROM calls WHERE id = 1")).one()
            assert tuple(row) == (None, None)
            fingerprint_value = connection.execute(
                text("SELECT evidence_fingerprint FROM cards WHERE id = 2")).scalar_one()
            assert fingerprint_value is None or json.loads(str(fingerprint_value)) is None
            # The suppression read filters on calls.tenant_key and feedback.received_at: both NULL here.
            found = connection.execute(text(
                "SELECT count(*) FROM feedback JOIN cards ON cards.card_uuid = feedback.card_uuid"
                " JOIN calls ON calls.id = cards.call_id WHERE calls.tenant_key = :key"
                " AND feedback.received_at >= :since"), {"key": TENANT.key, "since": stamp}).scalar_one()
            assert found == 0
        with engine.begin() as connection:  # and back down again
            command.downgrade(alembic_config(connection), "0002")
            assert "tenant_key" not in {c["name"] for c in inspect(connection).get_columns("calls")}
    finally:
        engine.dispose()
