"""Issue 19 item 1: the dashboard's access rules and its numbers against an independent SQL count."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from cds_service.audit import AuditLog
from cds_service.governance.views import create_governance_blueprint
from tests.audit.conftest import Database
from tests.audit.factories import engine_for
from tests.governance.seed import END, START, seed_history

TOKEN = "governance-admin-token-0123"
BASE = "https://cds.example.org"
QUERY = f"?start={START.date().isoformat()}&end={END.date().isoformat()}"


def _client(database: Database, audit: AuditLog | None, token: str = TOKEN) -> FlaskClient:
    app = Flask(__name__)
    app.register_blueprint(create_governance_blueprint(database.settings(admin_token=token), lambda: audit))
    return app.test_client()


def _login(client: FlaskClient) -> None:
    page = client.get("/admin/dashboard/login", base_url=BASE)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.get_data(as_text=True))
    assert csrf is not None
    response = client.post("/admin/dashboard/login", base_url=BASE, data={"csrf": csrf.group(1), "token": TOKEN})
    assert response.status_code == 303


def test_off_without_an_admin_token(database: Database, audit: AuditLog) -> None:
    assert _client(database, audit, token="").get("/admin/dashboard", base_url=BASE).status_code == 404


def test_no_token_gives_the_login_page_and_wrong_token_401(database: Database, audit: AuditLog) -> None:
    client = _client(database, audit)
    page = client.get("/admin/dashboard", base_url=BASE)
    assert page.status_code == 200
    assert 'name="token"' in page.get_data(as_text=True)
    assert "script-src" not in page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]  # an admin page is never framed
    wrong = client.get("/admin/dashboard", base_url=BASE, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    page = client.get("/admin/dashboard/login", base_url=BASE)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.get_data(as_text=True))
    assert csrf is not None
    bad = client.post("/admin/dashboard/login", base_url=BASE, data={"csrf": csrf.group(1), "token": "nope"})
    assert bad.status_code == 401
    assert client.get("/admin/dashboard", base_url=BASE,
                      headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_login_needs_the_csrf_token_and_sets_a_strict_cookie(database: Database, audit: AuditLog) -> None:
    client = _client(database, audit)
    forged = client.post("/admin/dashboard/login", base_url=BASE, data={"csrf": "guess", "token": TOKEN})
    assert forged.status_code == 403
    page = client.get("/admin/dashboard/login", base_url=BASE)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.get_data(as_text=True))
    assert csrf is not None
    response = client.post("/admin/dashboard/login", base_url=BASE, data={"csrf": csrf.group(1), "token": TOKEN})
    assert response.status_code == 303
    cookie = next(h for h in response.headers.getlist("Set-Cookie") if h.startswith("cds_governance_session="))
    assert "Secure" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert TOKEN not in cookie
    assert client.get("/admin/dashboard", base_url=BASE).status_code == 200
    assert 'name="token"' not in client.get("/admin/dashboard", base_url=BASE).get_data(as_text=True)


def _cells(html: str, table_id: str) -> list[list[str]]:
    body = re.search(rf'<table id="{table_id}">.*?<tbody>(.*?)</tbody>', html, re.S)
    assert body is not None
    return [[re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr>(.*?)</tr>", body.group(1), re.S)]


def _sql(database: Database, query: str) -> list[tuple[object, ...]]:
    params = ({"s": START, "e": END} if database.backend == "postgres" else
              {"s": START.replace(tzinfo=None).isoformat(" "), "e": END.replace(tzinfo=None).isoformat(" ")})
    period = "c.received_at >= :s AND c.received_at < :e"  # the dashboard's half-open period
    with engine_for(database.url).connect() as connection:
        return [tuple(row) for row in connection.execute(text(query.replace("PERIOD", period)), params)]


def test_rule_numbers_equal_an_independent_sql_count(database: Database, audit: AuditLog,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    written = seed_history(audit)
    client = _client(database, audit)
    _login(client)
    caplog.set_level(logging.DEBUG)
    html = client.get(f"/admin/dashboard{QUERY}", base_url=BASE).get_data(as_text=True)
    shown = dict(_sql(database, "SELECT k.rule_id, COUNT(*) FROM cards k JOIN calls c ON c.id = k.call_id "
                                "WHERE PERIOD AND k.disposition = 'shown' GROUP BY k.rule_id"))
    patients = dict(_sql(database, "SELECT k.rule_id, COUNT(DISTINCT c.patient_id) FROM cards k JOIN calls c "
                                   "ON c.id = k.call_id WHERE PERIOD AND k.disposition = 'shown' "
                                   "GROUP BY k.rule_id"))
    accepted = dict(_sql(database, "SELECT k.rule_id, COUNT(DISTINCT k.card_uuid) FROM cards k JOIN calls c "
                                   "ON c.id = k.call_id JOIN feedback f ON f.card_uuid = k.card_uuid WHERE PERIOD "
                                   "AND k.disposition = 'shown' AND f.outcome = 'accepted' GROUP BY k.rule_id"))
    suppressed = dict(_sql(database, "SELECT k.rule_id, COUNT(*) FROM cards k JOIN calls c ON c.id = k.call_id "
                                     "WHERE PERIOD AND k.disposition = 'suppressed' GROUP BY k.rule_id"))
    total = _sql(database, "SELECT COUNT(*) FROM calls c WHERE PERIOD")[0][0]
    rows = {row[0]: row for row in _cells(html, "rules")}
    assert set(rows) == set(shown)
    for rule_id, row in rows.items():
        assert int(row[1]) == shown[rule_id]
        assert int(row[2]) == patients[rule_id]
        assert float(row[3]) == round(100.0 * shown[rule_id] / int(str(total)), 1)
        assert int(row[4]) == accepted.get(rule_id, 0)
        assert int(row[7]) == suppressed.get(rule_id, 0)
        assert int(row[4]) + int(row[5]) + int(row[6]) == int(row[1])
    assert f'data-num="hook_calls">{total}<' in html
    # No PHI: no patient id in the page's links, no patient id or value in any log line.
    patient_ids = {w["call"].patient_id for w in written}
    assert not any(f"/{pid}" in html or f"={pid}" in html for pid in patient_ids)
    drill = client.get(f"/admin/dashboard/rule/caxp-high{QUERY}", base_url=BASE).get_data(as_text=True)
    assert not any(f">{pid}<" in drill for pid in patient_ids)
    assert len(_cells(drill, "cards")) == len(_sql(database, "SELECT k.id FROM cards k JOIN calls c ON "
                                                             "c.id = k.call_id WHERE PERIOD AND "
                                                             "k.rule_id = 'caxp-high'"))
    assert not any(pid in record.getMessage() for record in caplog.records for pid in patient_ids)
    csv_rules = client.get(f"/admin/dashboard/csv/rules{QUERY}", base_url=BASE).get_data(as_text=True)
    assert csv_rules.splitlines()[0].startswith("rule,shown,patients")
    assert len(csv_rules.splitlines()) == len(rows) + 1
    whatif = client.get(f"/admin/dashboard{QUERY}&parameter=caxp_seed&candidate=65", base_url=BASE)
    assert "Values recorded since" in whatif.get_data(as_text=True)


def test_weekly_trend_csv_equals_an_independent_count_per_week(database: Database, audit: AuditLog) -> None:
    seed_history(audit)
    client = _client(database, audit)
    _login(client)
    lines = client.get(f"/admin/dashboard/csv/trend{QUERY}", base_url=BASE).get_data(as_text=True).splitlines()
    assert lines[0] == "rule,week_start,shown,accepted,overridden"
    shown_by_rule: dict[str, int] = {}
    for line in lines[1:]:
        rule_id, week, shown, accepted, overridden = line.split(",")
        start = datetime.fromisoformat(week).replace(tzinfo=UTC)
        end = min(start + timedelta(days=7), END)
        window = ({"s": start, "e": end} if database.backend == "postgres" else
                  {"s": start.replace(tzinfo=None).isoformat(" "), "e": end.replace(tzinfo=None).isoformat(" ")})
        with engine_for(database.url).connect() as connection:
            row = connection.execute(text(
                "SELECT COUNT(*), "
                "SUM(CASE WHEN EXISTS (SELECT 1 FROM feedback f WHERE f.card_uuid = k.card_uuid "
                "AND f.outcome = 'accepted') THEN 1 ELSE 0 END), "
                "SUM(CASE WHEN EXISTS (SELECT 1 FROM feedback f WHERE f.card_uuid = k.card_uuid "
                "AND f.outcome = 'overridden') AND NOT EXISTS (SELECT 1 FROM feedback f WHERE "
                "f.card_uuid = k.card_uuid AND f.outcome = 'accepted') THEN 1 ELSE 0 END) "
                "FROM cards k JOIN calls c ON c.id = k.call_id WHERE c.received_at >= :s AND c.received_at < :e "
                "AND k.disposition = 'shown' AND k.rule_id = :r"), {**window, "r": rule_id}).one()
        assert (int(shown), int(accepted), int(overridden)) == tuple(int(v or 0) for v in row), (rule_id, week)
        shown_by_rule[rule_id] = shown_by_rule.get(rule_id, 0) + int(shown)
    assert len(lines) - 1 == 3 * len(shown_by_rule)  # three weeks per rule, zeros included
    assert sum(shown_by_rule.values()) > 0
