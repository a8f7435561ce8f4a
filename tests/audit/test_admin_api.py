"""The admin HTTP API: off (404) without CDS_ADMIN_TOKEN, 401 with a wrong token, data with the right one."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable

import pytest
from fhir.resources.R4B.bundle import Bundle
from flask import Flask

from cds_service.audit import AuditLog
from cds_service.audit.admin_api import create_admin_blueprint
from tests.audit.conftest import Database
from tests.audit.factories import make_call, make_feedback

TOKEN = "admin-secret-token-value"


def _app(database: Database, audit: AuditLog | None, token: str = TOKEN) -> Flask:
    app = Flask(__name__)
    settings = database.settings(admin_token=token)
    app.register_blueprint(create_admin_blueprint(settings, lambda: audit))
    return app


def _auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ROUTES = ["/admin/audit/calls", "/admin/audit/cards", "/admin/audit/export?format=ndjson",
          "/admin/audit/export/calls?format=ndjson", "/admin/audit/stats"]


@pytest.mark.parametrize("path", ROUTES)
def test_api_is_absent_without_an_admin_token(database: Database, audit: AuditLog, path: str) -> None:
    client = _app(database, audit, token="").test_client()
    response = client.get(path, headers=_auth(""))
    assert response.status_code == 404
    assert response.json is not None
    assert response.json["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("headers", [{}, _auth("wrong"), {"Authorization": TOKEN}, {"Authorization": "Basic x"}])
def test_wrong_or_missing_token_is_401(database: Database, audit: AuditLog, path: str,
                                       headers: dict[str, str]) -> None:
    response = _app(database, audit).test_client().get(path, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.json is not None
    assert response.json["resourceType"] == "OperationOutcome"
    assert TOKEN not in response.get_data(as_text=True)


def test_queries_with_the_right_token(database: Database, audit: AuditLog) -> None:
    record = make_call("pat-admin")
    audit.record_hook_call(record)
    audit.record_hook_call(make_call("pat-other"))
    audit.record_feedback([make_feedback(record.cards[0].card_uuid)])
    client = _app(database, audit).test_client()

    calls = client.get("/admin/audit/calls?patient=pat-admin", headers=_auth())
    assert calls.status_code == 200
    assert calls.headers["Cache-Control"] == "no-store"
    assert [call["hook_instance"] for call in calls.json["calls"]] == [record.hook_instance]  # type: ignore[index]
    assert calls.json["calls"][0]["card_count"] == 1  # type: ignore[index]

    cards = client.get("/admin/audit/cards?patient=pat-admin", headers=_auth()).json
    assert cards is not None
    assert cards["cards"][0]["card_uuid"] == record.cards[0].card_uuid
    assert cards["cards"][0]["feedback"][0]["outcome"] == "overridden"
    assert len(client.get("/admin/audit/cards?limit=1", headers=_auth()).json["cards"]) == 1  # type: ignore[index]

    stats = client.get("/admin/audit/stats", headers=_auth()).json
    assert stats is not None
    assert stats["rules"][0]["cards_issued"] == 2

    ndjson = client.get("/admin/audit/export?format=ndjson", headers=_auth())
    assert ndjson.mimetype == "application/x-ndjson"
    assert len(ndjson.get_data(as_text=True).splitlines()) == 2
    csv_export = client.get("/admin/audit/export?format=csv&patient=pat-admin", headers=_auth())
    assert len(list(csv.DictReader(io.StringIO(csv_export.get_data(as_text=True))))) == 1
    fhir = client.get("/admin/audit/export?format=fhir", headers=_auth())
    assert fhir.mimetype == "application/fhir+json"
    assert len(Bundle.model_validate(json.loads(fhir.get_data(as_text=True))).entry or []) == 2


@pytest.mark.parametrize("query", ["/admin/audit/cards?since=not-a-date", "/admin/audit/calls?limit=0",
                                   "/admin/audit/calls?limit=abc", "/admin/audit/export?format=xml",
                                   "/admin/audit/export/calls?format=xml"])
def test_bad_parameters_are_400_operation_outcomes(database: Database, audit: AuditLog, query: str) -> None:
    response = _app(database, audit).test_client().get(query, headers=_auth())
    assert response.status_code == 400
    body = response.json
    assert body is not None
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["diagnostics"]


def test_audit_disabled_is_503(database: Database, open_audit: Callable[..., AuditLog]) -> None:
    response = _app(database, None).test_client().get("/admin/audit/stats", headers=_auth())
    assert response.status_code == 503
    assert response.json is not None
    assert response.json["resourceType"] == "OperationOutcome"
