"""Scale-out on one machine (issue #8 item 4): two instances, 2 gunicorn workers each, one PostgreSQL.

This is the production topology in miniature -- replicas behind a load balancer sharing one database, in
production mode (JWT authentication with a trusted issuer, CDS_PUBLIC_BASE_URL as the audience). The load is
spread over both instances; then:
- every accepted call is audited exactly once, nothing is left in either instance's spool, and the single
  hash chain verifies with `calcinosis-cds audit verify`;
- a jti used at one instance is refused at the other (the replay cache is the shared database);
- an alert overridden (with a reason) through one instance stays suppressed for that user when the same rule
  fires for the same patient through the other (suppression reads the shared feedback history), is still shown
  to another user, and a reason-less dismissal suppresses nothing (issue 15);
- the schema is migrated by the explicit `calcinosis-cds db upgrade` step: an instance started before it
  refuses to start and says what to run.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.deploy.clients import PATIENT_VIEW, CdsClient, new_patient_id, rule_of
from tests.deploy.service_process import (
    ServiceProcess,
    base_environment,
    json_log_records,
    metric,
    run_cli,
    start_service,
)
from tests.support.fhir_builders import esrd_with_high_caxp, hook_request, prefetch_for
from tests.support.postgres import fresh_database

pytestmark = [pytest.mark.postgres, pytest.mark.integration, pytest.mark.slow]

PUBLIC_BASE_URL = "https://cds.example.org"
CALLS_PER_INSTANCE = 12


@pytest.fixture
def database_url() -> Iterator[str]:
    """A uniquely named PostgreSQL database, dropped afterwards."""
    with fresh_database("cds_deploy") as url:
        yield url


def _query(database_url: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    dsn = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as connection:
        return list(connection.execute(statement, params).fetchall())  # type: ignore[call-overload]


def _spool_files(service: ServiceProcess, workdir: Path) -> list[Path]:
    spool = workdir / f"{service.name}-data" / "spool"
    return [p for p in spool.rglob("*") if p.is_file()] if spool.exists() else []


def test_two_instances_share_audit_chain_replay_cache_and_suppression(tmp_path: Path, database_url: str) -> None:
    client = CdsClient(public_base_url=PUBLIC_BASE_URL)
    env = base_environment(CDS_DATABASE_URL=database_url, CDS_PUBLIC_BASE_URL=PUBLIC_BASE_URL,
                           CDS_TRUSTED_ISSUERS_FILE=str(client.write_issuers_file(tmp_path / "issuers.json")))

    # Replicas never migrate: before `db upgrade` an instance refuses to start, naming the command.
    with pytest.raises(RuntimeError, match="db upgrade"):
        start_service("unmigrated", tmp_path, env, workers=1)
    upgrade = run_cli("db", "upgrade", env=env)
    assert upgrade.returncode == 0, upgrade.stderr

    a = start_service("a", tmp_path, env, workers=2)
    b = start_service("b", tmp_path, env, workers=2)
    instances = [a, b]
    accepted: list[str] = []  # hookInstance of every call that passed authentication
    patients = [new_patient_id() for _ in range(4)]
    try:
        # Load spread over both instances, concurrently (chain appends from 4 workers in 2 processes).
        bodies = [hook_request("patient-view", pid, prefetch=prefetch_for(esrd_with_high_caxp(pid)))
                  for pid in patients for _ in range(CALLS_PER_INSTANCE // 2)]
        targets = [instances[i % 2] for i in range(len(bodies))]
        with ThreadPoolExecutor(max_workers=6) as pool:
            statuses = list(pool.map(lambda pair: client.call(pair[0].base_url, pair[1]).status_code,
                                     zip(targets, bodies, strict=True)))
        assert statuses == [200] * len(bodies)
        accepted += [body["hookInstance"] for body in bodies]

        # A jti replayed against the other instance is rejected, and not audited.
        token = client.token(f"/cds-services/{PATIENT_VIEW}")
        first = hook_request("patient-view", patients[0], prefetch=prefetch_for(esrd_with_high_caxp(patients[0])))
        assert client.call(a.base_url, first, token=token).status_code == 200
        accepted.append(first["hookInstance"])
        replay = {**first, "hookInstance": str(uuid.uuid4())}
        assert client.call(b.base_url, replay, token=token).status_code == 401

        # Overridden at A -> suppressed at B for the same rule and patient.
        pid = new_patient_id()
        shown_body = hook_request("patient-view", pid, prefetch=prefetch_for(esrd_with_high_caxp(pid)))
        shown = client.call(a.base_url, shown_body)
        assert shown.status_code == 200
        accepted.append(shown_body["hookInstance"])
        card = shown.json()["cards"][0]
        overridden_rule = rule_of(card)
        assert client.override(a.base_url, card["uuid"]).status_code == 200
        again_body = hook_request("patient-view", pid, prefetch=prefetch_for(esrd_with_high_caxp(pid)))
        again = client.call(b.base_url, again_body)
        assert again.status_code == 200
        accepted.append(again_body["hookInstance"])
        assert overridden_rule not in {rule_of(c) for c in again.json()["cards"]}
        # Issue 15: only for that user (another clinician at B still sees it) ...
        other_user = hook_request("patient-view", pid, prefetch=prefetch_for(esrd_with_high_caxp(pid)))
        other_user["context"]["userId"] = "Practitioner/pr-2"
        seen = client.call(b.base_url, other_user)
        assert seen.status_code == 200
        accepted.append(other_user["hookInstance"])
        assert overridden_rule in {rule_of(c) for c in seen.json()["cards"]}
        # ... and a plain dismissal (the sandbox's "Dismiss": no reason) at B suppresses nothing at A.
        dismissed_pid = new_patient_id()
        patients.append(dismissed_pid)
        dismissed_body = hook_request("patient-view", dismissed_pid,
                                      prefetch=prefetch_for(esrd_with_high_caxp(dismissed_pid)))
        dismissed = client.call(b.base_url, dismissed_body)
        accepted.append(dismissed_body["hookInstance"])
        dismissed_card = dismissed.json()["cards"][0]
        assert client.dismiss(b.base_url, dismissed_card["uuid"]).status_code == 200
        after_dismiss = hook_request("patient-view", dismissed_pid,
                                     prefetch=prefetch_for(esrd_with_high_caxp(dismissed_pid)))
        shown_again = client.call(a.base_url, after_dismiss)
        accepted.append(after_dismiss["hookInstance"])
        assert rule_of(dismissed_card) in {rule_of(c) for c in shown_again.json()["cards"]}

        # Both instances served hook calls, and their metrics add up to all of them.
        served = [metric(s.scrape(), "cds_http_requests_total", endpoint="cds.call_service", status="200")
                  for s in instances]
        assert all(count > 0 for count in served)
        assert sum(served) == len(accepted)
    finally:
        for service in instances:
            service.stop()

    # Every accepted call audited exactly once; the replay attempt not at all; nothing stranded in a spool.
    rows = _query(database_url, "SELECT hook_instance, count(*) FROM calls GROUP BY hook_instance")
    assert dict(rows) == dict.fromkeys(accepted, 1)
    assert all(not _spool_files(s, tmp_path) for s in instances)
    (disposition,) = _query(database_url, """
        SELECT cards.disposition FROM cards JOIN calls ON calls.id = cards.call_id
        WHERE calls.hook_instance = %s AND cards.rule_id = %s""", (again_body["hookInstance"], overridden_rule))
    assert disposition == ("suppressed",)

    verify = run_cli("audit", "verify", env=env)
    assert verify.returncode == 0, verify.stdout + verify.stderr

    # The logs of both instances are JSON lines without tokens or patient ids.
    for service in instances:
        text = service.log_text()
        json_log_records(text)
        for secret in [*client.tokens, *patients, pid]:
            assert secret not in text
