"""`audit export --calls`: every authenticated hook call is in the log, whatever its answer (issue 15 item 7).

A production-mode app (client JWTs verified, no --dev) on SQLite and on the real PostgreSQL answers one call of
each kind — 200 with cards, 200 without, 400 (missing context, wrong hook, unreadable body), 404, 412, 413, 415,
an engine failure answered with the evaluation-incomplete card, and a 500 — and the calls export (CLI in every
format, and the admin API) lists exactly those calls with their statuses, data sources, skipped resources and
``request_ms``. Requests refused before authentication are counted in metrics and never reach the chain.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from click.testing import CliRunner, Result
from fhir.resources.R4B.bundle import Bundle
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from cds_service import api, create_app, hook_handler
from cds_service.audit.db import create_audit_engine, upgrade_schema
from cds_service.audit.schema import calls, cards, chain_head
from cds_service.buffered_wsgi import BufferedWSGI
from cds_service.cli import main
from cds_service.rules import RULES
from cds_service.rules.base import INCOMPLETE
from cds_service.runtime import get_runtime
from tests.audit.conftest import Database
from tests.audit.factories import engine_for
from tests.security.tokens import PUBLIC_BASE_URL, Signer, jwks, make_key, settings_for, write_issuers_file
from tests.support.fhir_builders import esrd_with_high_caxp, healthy_adult, hook_request, prefetch_for

SERVICE = "calcinosis-patient-view"
ISSUER = "https://ehr-audit.example.org"
TENANT = "ward-7"
ADMIN_TOKEN = "admin-token-for-the-calls-export-test"
CHAIN_KEY = "0123456789abcdef" * 4  # test-only chain key (64 hex digits)
MAX_BYTES = 4096


@pytest.fixture(scope="module")
def signer() -> Signer:
    """A trusted EHR that signs its calls with a key published inline in the trusted-issuers file."""
    return Signer(ISSUER, make_key("ES384"))


def _cli_env(database: Database) -> dict[str, str]:
    return {"CDS_DATABASE_URL": database.url, "CDS_DATA_DIR": str(database.data_dir),
            "CDS_AUDIT_CHAIN_KEY": CHAIN_KEY}


def _cli(database: Database, *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=_cli_env(database))


@pytest.fixture
def prod_app(database: Database, tmp_path: Path, signer: Signer) -> Iterator[Flask]:
    """The real app in production mode on the parametrised database (a shared PostgreSQL migrated first)."""
    issuers = write_issuers_file(tmp_path / "issuers.json", [{"iss": ISSUER, "jwks": jwks(signer.key)}])
    settings = settings_for(issuers, data_dir=str(database.data_dir), database_url=database.url,
                            admin_token=ADMIN_TOKEN, max_request_bytes=MAX_BYTES, audit_chain_key=CHAIN_KEY)
    if database.backend == "postgres":
        engine = create_audit_engine(database.url)
        upgrade_schema(engine)
        engine.dispose()
    app = create_app(settings)
    yield app
    get_runtime(app).close()


def _post(client: FlaskClient, signer: Signer | None, body: Any, *, service: str = SERVICE,
          content_type: str = "application/json") -> Any:
    headers = {}
    if signer is not None:
        headers["Authorization"] = signer.bearer(f"{PUBLIC_BASE_URL}/cds-services/{service}",
                                                 claims={"tenant": TENANT})
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(f"/cds-services/{service}", data=data, content_type=content_type, headers=headers)


def _call(pid: str, resources: list[dict[str, Any]]) -> dict[str, Any]:
    return hook_request("patient-view", pid, prefetch=prefetch_for(resources))


def _break_rule(monkeypatch: pytest.MonkeyPatch, rule_id: str) -> None:
    """Make one registered rule raise (an engine failure, §8 C6)."""
    def fail(_context: Any) -> Any:
        raise RuntimeError("simulated rule failure")

    monkeypatch.setitem(RULES, rule_id, dataclasses.replace(RULES[rule_id], fn=fail))


def _make_every_kind_of_call(client: FlaskClient, signer: Signer, monkeypatch: pytest.MonkeyPatch
                             ) -> list[tuple[str, int, str | None]]:
    """One authenticated call of each outcome; returns (hookInstance or "", status, error code) in order."""
    made: list[tuple[str, int, str | None]] = []

    def expect(body: Any, status: int, error: str | None, **kwargs: Any) -> Any:
        response = _post(client, signer, body, **kwargs)
        assert response.status_code == status, response.get_data(as_text=True)
        # The body of a call to an unknown service is not read: its hookInstance is not known.
        readable = isinstance(body, dict) and status != 404
        instance = body.get("hookInstance", "") if readable else ""
        made.append((instance, status, error))
        return response

    with_cards = expect(_call("p-cards", esrd_with_high_caxp("p-cards")), 200, None)
    assert with_cards.json["cards"]
    assert expect(_call("p-none", healthy_adult("p-none")), 200, None).json["cards"] == []
    no_patient = _call("p-ctx", healthy_adult("p-ctx"))
    del no_patient["context"]["patientId"]
    expect(no_patient, 400, "http-400")  # missing context
    wrong_hook = _call("p-hook", healthy_adult("p-hook"))
    wrong_hook["hook"] = "order-select"
    expect(wrong_hook, 400, "http-400")
    expect("{not json", 400, "http-400")  # unreadable body, after authentication
    expect(json.dumps(_call("p-type", healthy_adult("p-type"))), 415, "http-415", content_type="text/plain")
    expect("x" * (MAX_BYTES + 1), 413, "http-413")
    expect(hook_request("patient-view", "p-412"), 412, "prefetch-unavailable")  # no prefetch, no fhirServer
    expect(_call("p-404", healthy_adult("p-404")), 404, "http-404", service="no-such-service")
    with monkeypatch.context() as patch:
        _break_rule(patch, "caxp-high")
        failed = expect(_call("p-engine", esrd_with_high_caxp("p-engine")), 200, None)
    assert INCOMPLETE in [card["source"]["topic"]["code"] for card in failed.json["cards"]]

    def explode(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("simulated internal error")

    with monkeypatch.context() as patch:
        patch.setattr(hook_handler, "apply_alert_policy", explode)
        expect(_call("p-500", healthy_adult("p-500")), 500, hook_handler.INTERNAL_ERROR)
    return made


def _chain_length(database: Database) -> tuple[int, int]:
    """(chain head sequence number, number of call rows)."""
    engine = engine_for(database.url)
    with engine.connect() as connection:
        head = connection.execute(select(chain_head.c.last_seq)).scalar_one()
        count = connection.execute(select(func.count()).select_from(calls)).scalar_one()
    return int(head), int(count)


def test_calls_export_lists_every_authenticated_call(database: Database, prod_app: Flask, signer: Signer,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    client = prod_app.test_client()
    made = _make_every_kind_of_call(client, signer, monkeypatch)
    for _ in range(3):  # unauthenticated: answered 401, never in the export
        assert _post(client, None, _call("p-anon", healthy_adult("p-anon"))).status_code == 401

    result = _cli(database, "audit", "export", "--calls", "--format", "ndjson")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(row["hook_instance"], row["http_status"], row["error"]) for row in rows] == made
    assert f"{len(made)} call(s) exported" in result.stderr

    by_instance = {row["hook_instance"]: row for row in rows if row["hook_instance"]}
    for row in rows:
        assert (row["client_iss"], row["client_tenant"]) == (ISSUER, TENANT)
        # request_ms covers the whole request (edge to response), duration_ms the evaluation only.
        assert row["request_ms"] is not None
        assert row["request_ms"] >= row["duration_ms"] >= 0
    shown = by_instance[made[0][0]]
    assert (shown["patient_id"], shown["data_sources"]["patient"]) == ("p-cards", "prefetch")
    assert shown["cards"]
    assert {card["disposition"] for card in shown["cards"]} == {"shown"}
    assert by_instance[made[1][0]]["cards"] == []
    engine_failure = by_instance[made[-2][0]]
    assert INCOMPLETE in [card["rule_id"] for card in engine_failure["cards"]]
    assert {"resource_type": "rule", "id": "caxp-high"}.items() <= next(
        item for item in engine_failure["skipped_resources"] if item["id"] == "caxp-high").items()
    unknown = next(row for row in rows if row["http_status"] == 404)
    assert (unknown["service_id"], unknown["hook"]) == ("no-such-service", "")
    internal = by_instance[made[-1][0]]
    assert (internal["patient_id"], internal["data_sources"]["patient"]) == ("p-500", "prefetch")

    csv_result = _cli(database, "audit", "export", "--calls", "--format", "csv")
    assert csv_result.exit_code == 0, csv_result.output
    csv_rows = list(csv.DictReader(io.StringIO(csv_result.stdout)))
    assert [(row["hook_instance"], int(row["http_status"])) for row in csv_rows] == [m[:2] for m in made]
    assert all(float(row["request_ms"]) >= 0 for row in csv_rows)
    assert json.loads(csv_rows[0]["data_sources"]) == shown["data_sources"]

    fhir_result = _cli(database, "audit", "export", "--calls", "--format", "fhir")
    assert fhir_result.exit_code == 0, fhir_result.output
    bundle = Bundle.model_validate(json.loads(fhir_result.stdout))
    events = [entry.resource for entry in bundle.entry or []]
    assert len(events) == len(made)  # one AuditEvent per call
    expected_outcomes = ["0" if status < 400 else "4" if status < 500 else "8" for _i, status, _e in made]
    expected_outcomes[-2] = "4"  # the engine failure: answered 200, evaluation incomplete (a minor failure)
    assert [event.outcome for event in events] == expected_outcomes  # type: ignore[union-attr]
    assert "evaluation incomplete" in str(events[-2].outcomeDesc)  # type: ignore[union-attr]
    call_details = [
        {detail.type: detail.valueString for entity in event.entity or []  # type: ignore[union-attr]
         if entity.name == "CDS Hooks call" for detail in entity.detail or []}
        for event in events
    ]
    assert [int(details["http_status"]) for details in call_details] == [status for _i, status, _e in made]
    assert all(float(details["request_ms"]) >= 0 for details in call_details)

    # Without --calls the export keeps today's rows: one per card.
    card_result = _cli(database, "audit", "export", "--format", "ndjson")
    assert card_result.exit_code == 0, card_result.output
    with engine_for(database.url).connect() as connection:
        card_count = connection.execute(select(func.count()).select_from(cards)).scalar_one()
    assert len(card_result.stdout.splitlines()) == card_count > 0

    # The admin API's calls export gives the same calls.
    admin = client.get("/admin/audit/export/calls?format=ndjson",
                       headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert (admin.status_code, admin.mimetype) == (200, "application/x-ndjson")
    admin_rows = [json.loads(line) for line in admin.get_data(as_text=True).splitlines()]
    assert [(row["hook_instance"], row["http_status"]) for row in admin_rows] == [m[:2] for m in made]
    only_500 = client.get("/admin/audit/export/calls?format=fhir&patient=p-500",
                          headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert len(Bundle.model_validate(json.loads(only_500.get_data(as_text=True))).entry or []) == 1

    verify = _cli(database, "audit", "verify")
    assert verify.exit_code == 0, verify.output


def _unauthenticated_total() -> float:
    from prometheus_client import REGISTRY

    return sum(sample.value for family in REGISTRY.collect() if family.name == "cds_unauthenticated_requests"
               for sample in family.samples if sample.name.endswith("_total"))


def test_unauthenticated_requests_are_counted_and_never_chained(database: Database, prod_app: Flask,
                                                                signer: Signer) -> None:
    client = prod_app.test_client()
    assert _post(client, signer, _call("p-first", healthy_adult("p-first"))).status_code == 200
    before_chain = _chain_length(database)
    before_count = _unauthenticated_total()
    body = _call("p-anon", healthy_adult("p-anon"))
    forged = Signer(ISSUER, make_key("ES384"))  # right issuer, wrong key
    burst: list[Callable[[], Any]] = [
        lambda: _post(client, None, body),
        lambda: _post(client, forged, body),
        lambda: _post(client, None, "x" * (MAX_BYTES + 1)),  # too large, no token
        lambda: _post(client, None, json.dumps(body), content_type="text/plain"),  # wrong type, no token
        lambda: _post(client, None, body, service="no-such-service"),
        lambda: client.get(f"/cds-services/{SERVICE}"),  # 405, refused before authentication
    ]
    statuses = [send().status_code for _ in range(10) for send in burst]
    assert set(statuses) <= {401, 405}, statuses
    assert _chain_length(database) == before_chain  # the log did not grow
    assert _unauthenticated_total() - before_count == len(statuses)


def test_request_ms_is_measured_from_the_edge(database: Database, prod_app: Flask, signer: Signer,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Time spent before the evaluation (here a slow body read) is in request_ms and not in duration_ms."""
    original = api.read_hook_body

    def slow_read(request: Any) -> Any:
        time.sleep(0.05)
        return original(request)

    monkeypatch.setattr(api, "read_hook_body", slow_read)
    body = _call("p-slow", healthy_adult("p-slow"))
    assert _post(prod_app.test_client(), signer, body).status_code == 200
    result = _cli(database, "audit", "export", "--calls", "--format", "ndjson", "--patient", "p-slow")
    (row,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert row["request_ms"] >= 50.0 > row["duration_ms"]


def test_request_ms_counts_the_body_read_at_the_server_front(database: Database, prod_app: Flask,
                                                             signer: Signer) -> None:
    """Behind the server front (BufferedWSGI) the edge is where the request arrived, before its body was read."""
    front = BufferedWSGI(prod_app, threads=1, max_body_bytes=MAX_BYTES, body_timeout_s=5.0)
    body = json.dumps(_call("p-front", healthy_adult("p-front"))).encode()
    authorization = signer.bearer(f"{PUBLIC_BASE_URL}/cds-services/{SERVICE}", claims={"tenant": TENANT})
    scope = {
        "type": "http", "method": "POST", "path": f"/cds-services/{SERVICE}", "query_string": b"",
        "scheme": "https", "http_version": "1.1", "server": ("cds.example.org", 443),
        "headers": [(b"host", b"cds.example.org"), (b"content-type", b"application/json"),
                    (b"authorization", authorization.encode())],
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(0.05)  # the body arrives 50 ms after the headers
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    async def shutdown() -> None:
        messages = iter([{"type": "lifespan.shutdown"}])

        async def lifespan_receive() -> dict[str, Any]:
            return next(messages)

        await front({"type": "lifespan"}, lifespan_receive, send)

    asyncio.run(front(scope, receive, send))
    asyncio.run(shutdown())
    assert sent[0]["status"] == 200
    result = _cli(database, "audit", "export", "--calls", "--format", "ndjson", "--patient", "p-front")
    (row,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert row["request_ms"] >= 50.0 > row["duration_ms"]



@pytest.mark.parametrize("requested", ["bad\x00id", "no such service"])
def test_an_unknown_service_id_that_is_not_id_shaped_is_recorded_safely(
        database: Database, prod_app: Flask, signer: Signer, requested: str) -> None:
    """The 404's requested id is caller text: a NUL (which PostgreSQL refuses) or a space is not stored as sent."""
    client = prod_app.test_client()
    path = f"/cds-services/{quote(requested)}"
    authorization = signer.bearer(f"{PUBLIC_BASE_URL}/cds-services/{requested}", claims={"tenant": TENANT})
    response = client.post(path, data=json.dumps(_call("p-odd", healthy_adult("p-odd"))),
                           content_type="application/json", headers={"Authorization": authorization})
    assert response.status_code == 404
    result = _cli(database, "audit", "export", "--calls", "--format", "ndjson")
    (row,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert (row["service_id"], row["http_status"], row["error"]) == ("(not an id)", 404, "http-404")
    assert _cli(database, "audit", "verify").exit_code == 0
