"""Logs of a representative run are JSON lines without tokens or patient data (issue #8 acceptance).

One gunicorn instance (2 workers) is driven with JWT-signed hook calls, a FHIR fallback fetch carrying a
fhirAuthorization bearer token (to the real FHIR test server), prefetch with lab values, a replayed JWT, a bad
JWT, a 412, an invalid body and feedback with a free-text comment. Then every line the instance wrote must
parse as JSON, and none may contain the tokens, the patient id or the lab values.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.deploy.clients import PATIENT_VIEW, CdsClient, new_patient_id, rule_of
from tests.deploy.service_process import base_environment, json_log_records, start_service
from tests.support.fhir_builders import condition, hook_request, lab, patient, prefetch_for

# Lab values with three decimals: the logs' own numbers (durations) have two, so a match is a leak.
CALCIUM = 10.537
PHOSPHATE = 7.219
ALBUMIN = 3.913


def _record(pid: str) -> list[dict[str, Any]]:
    return [
        patient(pid),
        condition(pid, f"{pid}-esrd", "N18.6", display="End stage renal disease"),
        lab(pid, f"{pid}-ca", "17861-6", CALCIUM, "mg/dL", days_ago=1, specimen=f"{pid}-s1"),
        lab(pid, f"{pid}-p", "2777-1", PHOSPHATE, "mg/dL", days_ago=1, specimen=f"{pid}-s1"),
        lab(pid, f"{pid}-alb", "1751-7", ALBUMIN, "g/dL", days_ago=1, specimen=f"{pid}-s1"),
    ]


@pytest.mark.integration
@pytest.mark.slow
def test_logs_are_json_lines_without_tokens_or_patient_data(tmp_path: Path, fhir_server: Any,
                                                           fhir_patient_loader: Any) -> None:
    client = CdsClient(public_base_url="")  # set once the port is known (dev mode: aud = the URL called)
    issuers = client.write_issuers_file(tmp_path / "issuers.json")
    env = base_environment(CDS_DEV="1", CDS_TRUSTED_ISSUERS_FILE=str(issuers),
                           CDS_ALLOWED_FHIR_SERVERS=fhir_server.base_url, CDS_LOG_LEVEL="DEBUG")
    service = start_service("logs", tmp_path, env, workers=2)
    client.public_base_url = service.base_url
    fetched_pid, prefetched_pid = new_patient_id(), new_patient_id()
    access_token = f"at-{uuid.uuid4().hex}"
    comment = f"comment-{uuid.uuid4().hex}"
    try:
        fhir_patient_loader(_record(fetched_pid))
        fetched = client.call(service.base_url, hook_request("patient-view", fetched_pid,
                                                             fhir_server=fhir_server.base_url, token=access_token))
        assert fetched.status_code == 200, fetched.text
        cards = fetched.json()["cards"]
        assert cards, "data fetched with the token must give cards"

        body = hook_request("patient-view", prefetched_pid, prefetch=prefetch_for(_record(prefetched_pid)))
        replayed = client.token(f"/cds-services/{PATIENT_VIEW}")
        assert client.call(service.base_url, body, token=replayed).status_code == 200
        assert client.call(service.base_url, body, token=replayed).status_code == 401
        assert client.call(service.base_url, body, token=replayed[:-8] + "AAAAAAAA").status_code == 401
        assert client.call(service.base_url, hook_request("patient-view", prefetched_pid)).status_code == 412
        invalid = {**body, "hook": 42}
        assert client.call(service.base_url, invalid).status_code == 400
        assert client.override(service.base_url, cards[0]["uuid"], comment=comment).status_code == 200
        assert requests.get(f"{service.base_url}/metrics", timeout=10).status_code == 200
    finally:
        service.stop()

    text = service.log_text()
    records = json_log_records(text)
    forbidden = [access_token, comment, fetched_pid, prefetched_pid, str(CALCIUM), str(PHOSPHATE), str(ALBUMIN)]
    for token in client.tokens:
        forbidden += [token, token.rsplit(".", 1)[-1]]  # the whole JWT and its signature
    for value in forbidden:
        assert value not in text, f"the log contains {value[:24]}..."

    access = [r for r in records if r.get("message") == "request" and r.get("endpoint") == "cds.call_service"]
    assert len(access) == 6
    for record in access:
        assert {"request_id", "service_id", "status", "duration_ms", "method", "route"} <= record.keys()
        assert record["service_id"] == PATIENT_VIEW
    assert any(r.get("hook_instance") == body["hookInstance"] and r["status"] == 200 for r in access)
    assert {r["status"] for r in access} == {200, 400, 401, 412}
    assert rule_of(cards[0])  # the card came from a named rule (sanity of the run itself)
