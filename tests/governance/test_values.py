"""Issue 19 item 2: every patient-view call records its computed values, fired or not, and old rows still verify."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from click.testing import CliRunner
from sqlalchemy import select

from cds_service.audit import AuditLog
from cds_service.audit.records import SpooledCall, call_from_json, call_to_json
from cds_service.audit.schema import calls
from cds_service.cli import main
from cds_service.engine import EngineOptions, PatientRecord, assess
from cds_service.governance.values import governance_values
from cds_service.rules.states import derive_states
from fhir_mappings.extract import extract
from fhir_mappings.valuesets import default_index
from tests.audit.conftest import CHAIN_KEY_ENV, Database
from tests.audit.factories import engine_for, make_call
from tests.support.fhir_builders import condition, esrd_with_high_caxp, healthy_adult, lab, patient

NOW = datetime.now(UTC)


def _values(resources: list[dict[str, object]]) -> dict[str, object]:
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    others = [r for r in resources if r["resourceType"] != "Patient"]
    facts = extract(patient, others, NOW, default_index())
    return governance_values(derive_states(facts))


def test_values_of_an_esrd_patient_with_high_caxp() -> None:
    values = _values(esrd_with_high_caxp("gv-1"))
    assert values["caxp"] == 75.6  # 10.5 x 7.2 mg2/dL2, the builder's pair
    assert values["phosphate"] == 7.2
    assert values["calcium"] is not None
    assert values["calcium_basis"] is not None
    assert values["pth_multiple"] is None  # no PTH result
    assert values["cofactors"] == 0  # male, no diabetes/obesity/albumin/binder co-factor
    assert values["r07_mineral"] is True


def test_values_are_recorded_when_nothing_fires() -> None:
    values = _values(healthy_adult("gv-2"))
    assert values["caxp"] is not None
    assert float(str(values["caxp"])) < 55
    assert values["cofactors"] is None  # not CKD G5/G5D or transplant: R07 cannot apply
    assert values["r07_mineral"] is False


def _esrd_with_ionized_calcium(pid: str, days_ago: float) -> list[dict[str, object]]:
    """ESRD, no Ca x P pair: the only R07 mineral candidate is a high ionized calcium ``days_ago`` days old."""
    return [patient(pid), condition(pid, f"{pid}-esrd", "N18.6", display="End stage renal disease"),
            lab(pid, f"{pid}-ica", "1994-3", 1.6, "mmol/L", days_ago=days_ago)]


def test_r07_mineral_is_the_rules_own_check() -> None:
    # R07 counts a high ionized calcium for 72 hours only (patient_view.current_hypercalcemia); the values used
    # to keep it for 90 days like a total calcium, so the simulator counted calls the rule never could.
    assert _values(_esrd_with_ionized_calcium("gv-4", days_ago=1))["r07_mineral"] is True
    stale = _values(_esrd_with_ionized_calcium("gv-5", days_ago=10))
    assert stale["calcium_basis"] == "ionized"  # still recorded: R04's what-if reads it
    assert stale["r07_mineral"] is False


def test_assess_returns_the_values_only_on_patient_view() -> None:
    resources = esrd_with_high_caxp("gv-3")
    patient = resources[0]
    record = PatientRecord(patient=patient, resources=resources[1:])
    viewed = assess(record, "patient-view", NOW, EngineOptions())
    assert viewed.governance_values is not None
    assert viewed.governance_values["caxp"] == 75.6
    selected = assess(record, "order-select", NOW, EngineOptions())
    assert selected.governance_values is None


def test_spool_round_trip_keeps_the_values() -> None:
    record = make_call(governance_values={"format": 1, "caxp": 61.2, "cofactors": 2})
    again = call_from_json(call_to_json(SpooledCall("u-1", record)))
    assert again.record.governance_values == {"format": 1, "caxp": 61.2, "cofactors": 2}
    legacy = call_to_json(SpooledCall("u-2", make_call()))
    del legacy["call"]["governance_values"]  # a file spooled before issue 19
    assert call_from_json(legacy).record.governance_values is None


def test_rows_with_and_without_values_verify(database: Database, open_audit: object) -> None:
    audit = open_audit()  # type: ignore[operator]
    assert isinstance(audit, AuditLog)
    old = make_call(received_at=NOW - timedelta(days=1))  # as written before issue 19: NULL column
    new = make_call(governance_values={"format": 1, "caxp": 72.5, "calcium": 10.1, "cofactors": 1})
    audit.record_hook_call(old)
    audit.record_hook_call(new)
    with engine_for(database.url).connect() as connection:
        stored = dict(connection.execute(select(calls.c.hook_instance, calls.c.governance_values)).all())
    assert stored[old.hook_instance] is None
    assert stored[new.hook_instance] == {"format": 1, "caxp": 72.5, "calcium": 10.1, "cofactors": 1}
    result = CliRunner().invoke(main, ["audit", "verify"], env={
        **CHAIN_KEY_ENV, "CDS_DATABASE_URL": database.url, "CDS_DATA_DIR": str(database.data_dir)})
    assert result.exit_code == 0, result.output
