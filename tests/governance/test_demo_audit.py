"""Issue 19 item 3: ``calcinosis-cds demo-audit`` fills the configured audit database through the real service,
and the dashboard then shows non-zero numbers for the simulated period."""

from __future__ import annotations

import re
from datetime import date, timedelta

from click.testing import CliRunner
from flask import Flask
from sqlalchemy import text

from cds_service.audit import AuditLog
from cds_service.cli import main
from cds_service.governance.views import create_governance_blueprint
from tests.audit.conftest import CHAIN_KEY_ENV, Database
from tests.audit.factories import engine_for

TOKEN = "governance-demo-admin-token-8901"
END = date(2026, 5, 31)


def test_demo_audit_fills_the_dashboard(database: Database) -> None:
    env = {"CDS_DATABASE_URL": database.url, "CDS_DATA_DIR": str(database.data_dir), **CHAIN_KEY_ENV}
    result = CliRunner().invoke(main, ["demo-audit", "--patients", "8", "--weeks", "2", "--seed", "5",
                                       "--end", END.isoformat()], env=env)
    assert result.exit_code == 0, result.output
    printed = re.search(r"demo audit: (\d+) hook calls .*?, (\d+) cards; feedback: (\d+) accepted, "
                        r"(\d+) overridden, (\d+) no response", result.output)
    assert printed is not None, result.output
    calls, cards, accepted, overridden, _ = (int(n) for n in printed.groups())
    with engine_for(database.url).connect() as connection:
        stored_calls = connection.execute(text("SELECT COUNT(*) FROM calls")).scalar_one()
        stored_cards = connection.execute(text("SELECT COUNT(*) FROM cards WHERE disposition = 'shown'"))\
            .scalar_one()
        outcomes = dict(connection.execute(text("SELECT outcome, COUNT(DISTINCT card_uuid) FROM feedback "
                                                "GROUP BY outcome")).all())
        with_values = connection.execute(text("SELECT COUNT(*) FROM calls WHERE governance_values IS NOT NULL"))\
            .scalar_one()
    assert calls > 0
    assert stored_calls == calls
    assert stored_cards == cards > 0
    assert with_values == calls  # every simulated patient-view call recorded its values (what-if input)
    assert outcomes.get("accepted", 0) == accepted
    assert outcomes.get("overridden", 0) == overridden > 0

    audit = AuditLog.open(database.settings(admin_token=TOKEN), create_schema=False)
    try:
        app = Flask(__name__)
        app.register_blueprint(create_governance_blueprint(database.settings(admin_token=TOKEN), lambda: audit))
        start = END - timedelta(weeks=2)
        page = app.test_client().get(f"/admin/dashboard?start={start.isoformat()}&end={END + timedelta(days=1)}",
                                     base_url="https://cds.example.org",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    finally:
        audit.close()
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert f'data-num="hook_calls">{calls}<' in html
    body = re.search(r'<table id="rules">.*?<tbody>(.*?)</tbody>', html, re.S)
    assert body is not None
    rows = [[re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr>(.*?)</tr>", body.group(1), re.S)]
    assert rows
    assert sum(int(row[1]) for row in rows) == cards  # shown, over every rule
    assert sum(int(row[5]) for row in rows) == overridden > 0
