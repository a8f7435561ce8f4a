"""The viewer's findings and history are its own launch's FHIR server's (issue 15 items 1 and 5), and an overridden
finding stays listed, marked; a reason-less dismissal marks nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient

from cds_service.runtime import get_runtime
from cds_service.smart.findings import current_findings
from cds_service.smart.history import patient_history
from cds_service.tenant import normalise_fhir_base
from tests.support.app import make_app
from tests.support.fhir_builders import esrd_with_high_caxp, hook_request, prefetch_for

SERVER_A = "http://fhir.example.org/tenant-a/"
SERVER_B = "http://fhir.example.org/tenant-b"


def _card(client: FlaskClient, pid: str, server: str) -> dict[str, Any]:
    body = hook_request("patient-view", pid, prefetch=prefetch_for(esrd_with_high_caxp(pid)), fhir_server=server)
    response = client.post("/cds-services/calcinosis-patient-view", json=body)
    assert response.status_code == 200
    return next(c for c in response.get_json()["cards"] if c["source"]["topic"]["code"] == "caxp-high")


def _feedback(client: FlaskClient, card: dict[str, Any], reason: dict[str, Any] | None) -> None:
    item: dict[str, Any] = {"card": card["uuid"], "outcome": "overridden",
                            "outcomeTimestamp": datetime.now(UTC).isoformat()}
    if reason is not None:
        item["overrideReason"] = reason
    assert client.post("/cds-services/calcinosis-patient-view/feedback", json={"feedback": [item]}).status_code == 200


def test_findings_marked_and_history_filtered_by_the_launch_server(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    runtime = get_runtime(app)
    try:
        client = app.test_client()
        pid = f"pat-{uuid.uuid4().hex[:8]}"
        resources = esrd_with_high_caxp(pid)
        dismissed = _card(client, pid, SERVER_B)
        _feedback(client, dismissed, None)  # a plain dismissal at B
        overridden = _card(client, pid, SERVER_A)
        _feedback(client, overridden, {"reason": overridden["overrideReasons"][1], "userComment": "lab Friday"})
        now = datetime.now(UTC)

        at_a = current_findings(runtime, resources[0], resources[1:], now, normalise_fhir_base(SERVER_A))
        (finding_a,) = [f for f in at_a.shown if f.rule_id == "caxp-high"]
        assert finding_a.override is not None
        assert finding_a.override.text.startswith(f"overridden by Practitioner/pr-1 on {now:%Y-%m-%d} ")
        assert finding_a.override.text.endswith(f": {overridden['overrideReasons'][1]['display']} (lab Friday)")
        at_b = current_findings(runtime, resources[0], resources[1:], now, normalise_fhir_base(SERVER_B))
        assert [f.override for f in at_b.shown if f.rule_id == "caxp-high"] == [None]  # listed, nothing to mark

        history_a = patient_history(runtime, pid, normalise_fhir_base(SERVER_A))
        history_b = patient_history(runtime, pid, normalise_fhir_base(SERVER_B))
        assert [e.rule_id for e in history_a.entries] == [e.rule_id for e in history_b.entries] == ["caxp-high"]
        assert "lab Friday" in history_a.entries[0].outcomes[0]
        (outcome_b,) = history_b.entries[0].outcomes
        assert outcome_b.startswith(f"overridden {now:%Y-%m-%d}")  # recorded, with no reason to show
        assert patient_history(runtime, pid, "http://fhir.example.org/tenant-c").entries == []
    finally:
        runtime.close()
