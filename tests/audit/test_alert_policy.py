"""Alert-fatigue controls: silent mode, suppression after an override with a reason, order dedup, PN cap,
tenant scope and fail-open (issue #4 item 5, issue 15 items 1-4), on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from cds_service.alert_policy import CallScope, apply_alert_policy
from cds_service.audit import AuditLog, AuditUnavailable
from cds_service.audit.schema import feedback
from cds_service.config import Settings, load_settings
from cds_service.tenant import Tenant
from tests.audit.conftest import Database
from tests.audit.factories import ISSUER, REASON_SYSTEM, TENANT, engine_for, make_call, make_feedback

RULE = "calcinosis.phosphate.high"
DOC, OTHER_DOC = "Practitioner/doc-1", "Practitioner/doc-2"
OFFERED = [{"system": REASON_SYSTEM, "code": "not-relevant", "display": "Not relevant for this patient"}]


def _lab(oid: str, version: str = "1") -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid,
            "meta": {"versionId": version, "lastUpdated": f"2025-01-0{version}T00:00:00Z"}}


@dataclass(frozen=True)
class Assessed:
    """Stands in for cds_service.engine.AssessedCard (same attributes)."""

    rule_id: str = RULE
    order_key: str | None = None
    indicator: str = "warning"
    lab_id: str = "Observation/ob-1"
    card: dict[str, Any] = field(default_factory=lambda: {
        "uuid": str(uuid.uuid4()), "summary": "Check phosphate", "indicator": "warning", "source": {"label": "x"},
        "overrideReasons": OFFERED})
    rule_version: str = "1.0.0"
    suggestion_uuids: list[str] = field(default_factory=list)

    @property
    def evidence(self) -> list[dict[str, Any]]:
        """One lab value from ``lab_id``."""
        return [{"name": "phosphate", "value": 6.1, "resource_id": self.lab_id}]


@dataclass
class Ehr:
    """One EHR tenant calling the policy the way the hook handler does, and storing what it decided."""

    audit: AuditLog
    settings: Settings
    tenant: Tenant = TENANT
    resources: list[dict[str, Any]] = field(default_factory=lambda: [_lab("ob-1")])

    def call(self, cards: list[Assessed], *, patient: str, user: str = DOC, now: datetime,
             hook: str = "patient-view") -> tuple[list[dict[str, Any]], list[Any]]:
        shown, records = apply_alert_policy(cards, hook=hook, patient_id=patient, now=now, settings=self.settings,
                                            audit=self.audit, scope=CallScope(self.tenant.key, user),
                                            resources=self.resources)
        self.audit.record_hook_call(make_call(patient, records, hook=hook, received_at=now, user_id=user,
                                              client_iss=self.tenant.client_iss,
                                              client_tenant=self.tenant.client_tenant,
                                              fhir_server=self.tenant.fhir_server, tenant_key=self.tenant.key))
        return shown, records

    def shows(self, card: Assessed, *, patient: str, user: str = DOC, now: datetime) -> bool:
        shown, records = self.call([card], patient=patient, user=user, now=now)
        assert records[0].disposition == ("shown" if shown else "suppressed")
        return bool(shown)


def _patient() -> str:
    return f"pat-{uuid.uuid4().hex[:8]}"


def test_silent_rule_is_logged_not_shown(database: Database) -> None:
    settings = database.settings(silent_rules=(RULE,))
    assessed = [Assessed(), Assessed(rule_id="calcinosis.other")]
    shown, records = apply_alert_policy(assessed, hook="patient-view", patient_id="p", now=datetime.now(UTC),
                                        settings=settings, audit=None)
    assert shown == [assessed[1].card]
    assert [record.disposition for record in records] == ["silent", "shown"]
    assert records[0].card_uuid == assessed[0].card["uuid"]
    assert records[0].evidence == assessed[0].evidence


def test_card_records_its_evidence_fingerprint_and_offered_reasons(database: Database) -> None:
    _, records = apply_alert_policy([Assessed()], hook="patient-view", patient_id="p", now=datetime.now(UTC),
                                    settings=database.settings(), audit=None, resources=[_lab("ob-1", "3")])
    assert records[0].evidence_fingerprint == ["Observation/ob-1|3|2025-01-03T00:00:00Z"]
    assert records[0].override_codes == [f"{REASON_SYSTEM}|not-relevant"]


def test_sandbox_shaped_reasonless_dismiss_suppresses_nothing(database: Database, audit: AuditLog) -> None:
    """The CDS Hooks sandbox's "Dismiss": outcome overridden with no overrideReason at all."""
    ehr, pid, now = Ehr(audit, database.settings()), _patient(), datetime.now(UTC)
    first = Assessed()
    assert ehr.shows(first, patient=pid, now=now - timedelta(hours=2))
    audit.record_feedback([make_feedback(first.card["uuid"], code=None, when=now - timedelta(hours=1))])
    assert ehr.shows(Assessed(), patient=pid, now=now)  # same user, same evidence: still shown
    # A code the card did not offer is not a reason either.
    audit.record_feedback([make_feedback(first.card["uuid"], code="made-up", when=now - timedelta(minutes=30))])
    assert ehr.shows(Assessed(), patient=pid, now=now)
    # A blank comment is no reason.
    audit.record_feedback([make_feedback(first.card["uuid"], code=None, comment="   ",
                                         when=now - timedelta(minutes=20))])
    assert ehr.shows(Assessed(), patient=pid, now=now)


def test_override_with_a_reason_suppresses_for_that_user_and_that_evidence_only(database: Database,
                                                                                audit: AuditLog) -> None:
    ehr, pid, now = Ehr(audit, database.settings(suppress_overridden_hours=24.0)), _patient(), datetime.now(UTC)
    first = Assessed()
    assert ehr.shows(first, patient=pid, now=now - timedelta(hours=2))
    audit.record_feedback([make_feedback(first.card["uuid"], when=now - timedelta(hours=1))])

    assert not ehr.shows(Assessed(), patient=pid, now=now)  # same user, same result: suppressed
    assert ehr.shows(Assessed(), patient=pid, user=OTHER_DOC, now=now)  # another clinician still sees it
    assert ehr.shows(Assessed(), patient=_patient(), now=now)  # another patient
    assert ehr.shows(Assessed(rule_id="calcinosis.other"), patient=pid, now=now)  # another rule
    # A newer lab (another resource) that still fires: shown again at once.
    ehr.resources = [_lab("ob-1"), _lab("ob-2")]
    assert ehr.shows(Assessed(lab_id="Observation/ob-2"), patient=pid, now=now)
    # The same result corrected (a new meta.versionId): shown again at once.
    ehr.resources = [_lab("ob-1", "2")]
    assert ehr.shows(Assessed(), patient=pid, now=now)
    ehr.resources = [_lab("ob-1")]
    # After the window (measured from this server's receipt of the override): shown again.
    assert ehr.shows(Assessed(), patient=pid, now=now + timedelta(hours=23, minutes=1))


def test_a_higher_indicator_is_shown_again_at_once(database: Database, audit: AuditLog) -> None:
    ehr, pid, now = Ehr(audit, database.settings()), _patient(), datetime.now(UTC)
    first = Assessed(indicator="info")
    assert ehr.shows(first, patient=pid, now=now - timedelta(hours=2))
    audit.record_feedback([make_feedback(first.card["uuid"], when=now - timedelta(hours=1))])
    assert not ehr.shows(Assessed(indicator="info"), patient=pid, now=now)
    assert ehr.shows(Assessed(indicator="warning"), patient=pid, now=now)


def test_comment_only_override_is_a_reason(database: Database, audit: AuditLog) -> None:
    ehr, pid, now = Ehr(audit, database.settings()), _patient(), datetime.now(UTC)
    first = Assessed()
    assert ehr.shows(first, patient=pid, now=now - timedelta(hours=2))
    audit.record_feedback([make_feedback(first.card["uuid"], code=None, comment="rechecking tomorrow",
                                         when=now - timedelta(hours=1))])
    assert not ehr.shows(Assessed(), patient=pid, now=now)


def test_tenant_scope_setting_suppresses_for_everyone_of_the_tenant(database: Database, audit: AuditLog) -> None:
    ehr, pid, now = Ehr(audit, database.settings(suppress_scope="tenant")), _patient(), datetime.now(UTC)
    first = Assessed()
    assert ehr.shows(first, patient=pid, now=now - timedelta(hours=2))
    audit.record_feedback([make_feedback(first.card["uuid"], when=now - timedelta(hours=1))])
    assert not ehr.shows(Assessed(), patient=pid, user=OTHER_DOC, now=now)
    other_ehr = Ehr(audit, ehr.settings, tenant=Tenant.of("https://other-ehr.example.org", None,
                                                          "https://ehr.example.org/fhir"))
    assert other_ehr.shows(Assessed(), patient=pid, now=now)  # still per tenant


def test_critical_is_never_suppressed(database: Database, audit: AuditLog) -> None:
    ehr, pid, now = Ehr(audit, database.settings(suppress_scope="tenant")), _patient(), datetime.now(UTC)
    first = Assessed(indicator="critical")
    assert ehr.shows(first, patient=pid, now=now - timedelta(hours=2))
    audit.record_feedback([make_feedback(first.card["uuid"], comment="aware", when=now - timedelta(hours=1))])
    assert ehr.shows(Assessed(indicator="critical"), patient=pid, now=now)


def test_two_issuers_with_the_same_patient_id_do_not_affect_each_other(database: Database,
                                                                       audit: AuditLog) -> None:
    settings = database.settings(suppress_scope="tenant", order_dedup_minutes=30.0)
    a = Ehr(audit, settings, tenant=Tenant.of(ISSUER, None, "https://ehr.example.org/fhir"))
    b = Ehr(audit, settings, tenant=Tenant.of("https://second-ehr.example.net", None, "https://ehr.example.org/fhir"))
    # The same issuer and FHIR host with another tenant in the path is another tenant as well.
    c = Ehr(audit, settings, tenant=Tenant.of(ISSUER, None, "https://ehr.example.org/fhir/other-hospital"))
    pid, now = "shared-id-123", datetime.now(UTC)
    first_b = Assessed()
    assert b.shows(first_b, patient=pid, now=now - timedelta(hours=2))
    audit.record_feedback([make_feedback(first_b.card["uuid"], client_iss=b.tenant.client_iss,
                                         when=now - timedelta(hours=1))])
    assert not b.shows(Assessed(), patient=pid, now=now)
    assert a.shows(Assessed(), patient=pid, now=now)
    assert c.shows(Assessed(), patient=pid, now=now)

    # Order dedup and the PN cap are per tenant too.
    draft = Assessed(order_key="MedicationRequest/draft-1")
    a.call([draft], patient=pid, now=now - timedelta(minutes=5), hook="order-select")
    _, records = b.call([Assessed(order_key="MedicationRequest/draft-1")], patient=pid, now=now, hook="order-select")
    assert records[0].repeat_of is None
    _, records = a.call([Assessed(order_key="MedicationRequest/draft-1")], patient=pid, now=now, hook="order-select")
    assert records[0].repeat_of == draft.card["uuid"]
    pn = Assessed(rule_id="iv-calcium-order", order_key="parenteral-nutrition")
    a.call([pn], patient=pid, now=now - timedelta(hours=1), hook="order-select")
    shown, _ = b.call([Assessed(rule_id="iv-calcium-order", order_key="parenteral-nutrition")], patient=pid,
                      now=now, hook="order-select")
    assert len(shown) == 1


def test_far_future_outcome_timestamp_has_no_effect_beyond_the_window_and_is_flagged(database: Database,
                                                                                     audit: AuditLog) -> None:
    ehr, pid, now = Ehr(audit, database.settings()), _patient(), datetime.now(UTC)
    first = Assessed()
    assert ehr.shows(first, patient=pid, now=now - timedelta(hours=2))
    far_future = now + timedelta(days=365)
    audit.record_feedback([make_feedback(first.card["uuid"], when=far_future, received_at=now - timedelta(hours=1))])
    assert not ehr.shows(Assessed(), patient=pid, now=now)  # the normal window, from the server's receipt
    assert ehr.shows(Assessed(), patient=pid, now=now + timedelta(hours=23, minutes=1))  # and no longer

    engine = engine_for(database.url)
    with engine.connect() as connection:
        row = connection.execute(select(feedback).where(feedback.c.card_uuid == first.card["uuid"])).mappings().one()
    engine.dispose()
    assert row["timestamp_in_future"] is True
    assert row["outcome_timestamp"] == far_future  # stored as sent
    assert row["match"] == "matched"


def test_order_select_repeat_is_shown_but_marked(database: Database, audit: AuditLog) -> None:
    ehr, now = Ehr(audit, database.settings(order_dedup_minutes=30.0)), datetime.now(UTC)
    first = Assessed(order_key="MedicationRequest/draft-9")
    _, records = ehr.call([first], patient="pat-o", now=now - timedelta(minutes=5), hook="order-select")
    assert records[0].repeat_of is None

    repeat = Assessed(order_key="MedicationRequest/draft-9")
    shown, records = ehr.call([repeat], patient="pat-o", now=now, hook="order-select")
    assert shown == [repeat.card]  # still shown: hiding it while the order is edited would be unsafe
    assert records[0].disposition == "shown"
    assert records[0].repeat_of == first.card["uuid"]
    _, records = ehr.call([Assessed(order_key="MedicationRequest/draft-10")], patient="pat-o", now=now,
                          hook="order-select")
    assert records[0].repeat_of is None
    _, records = ehr.call([Assessed(order_key="MedicationRequest/draft-9")], patient="pat-o", now=now)
    assert records[0].repeat_of is None  # dedup is for order hooks only


class _BrokenAudit:
    def alert_history(self, *args: object) -> None:  # the one read apply_alert_policy makes per call
        raise AuditUnavailable("down")


@pytest.mark.parametrize("hook", ["patient-view", "order-select"])
def test_fails_open_when_the_log_is_unavailable(hook: str) -> None:
    settings = load_settings({})
    assessed = [Assessed(order_key="MedicationRequest/1")]
    shown, records = apply_alert_policy(assessed, hook=hook, patient_id="p", now=datetime.now(UTC),
                                        settings=settings, audit=_BrokenAudit(),  # type: ignore[arg-type]
                                        scope=CallScope(TENANT.key, DOC))
    assert shown == [assessed[0].card]
    assert records[0].disposition == "shown"
    assert records[0].repeat_of is None


def test_parenteral_nutrition_card_at_most_once_per_24_hours(database: Database, audit: AuditLog) -> None:
    """§8 C7: a PN card (engine key "parenteral-nutrition") is shown once per 24 h per patient, whichever draft."""
    ehr, now = Ehr(audit, database.settings(order_dedup_minutes=30.0)), datetime.now(UTC)
    first = Assessed(rule_id="iv-calcium-order", order_key="parenteral-nutrition")
    shown, _ = ehr.call([first], patient="pat-pn", now=now - timedelta(hours=23), hook="order-select")
    assert shown == [first.card]

    again = Assessed(rule_id="iv-calcium-order", order_key="parenteral-nutrition")
    shown, records = ehr.call([again], patient="pat-pn", now=now, hook="order-select")
    assert shown == []
    assert records[0].disposition == "suppressed"
    assert records[0].repeat_of == first.card["uuid"]
    other_draft = Assessed(rule_id="iv-calcium-order", order_key="MedicationRequest/not-pn")
    shown, _ = ehr.call([other_draft], patient="pat-pn", now=now, hook="order-select")
    assert shown == [other_draft.card]   # a non-PN IV calcium card is never capped this way
    later, _ = ehr.call([Assessed(rule_id="iv-calcium-order", order_key="parenteral-nutrition")],
                        patient="pat-pn", now=now + timedelta(hours=2), hook="order-select")
    assert len(later) == 1   # 25 h after the first one
