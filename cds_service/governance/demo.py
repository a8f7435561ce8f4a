"""Realistic audit data to look at (issue 19 item 3): a synthetic cohort through the real service over simulated
weeks, with simulated clinician feedback, so the governance dashboard can be tried on a fresh machine.

Every call goes through the real application (Flask test client: discovery prefetch, rules, alert policy, audit
writer, feedback endpoint); only the clock is simulated, so each call and each feedback item carries the time of
its simulated visit and the suppression windows (§8 C7, issue 15 item 3) run on that time line. The app runs in
dev mode (no client JWT to sign) against the configured audit database. All patients are synthetic (HTEST).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from unittest import mock

from cds_service.config import Settings

SERVICE = "calcinosis-patient-view"
# Profile mix: mostly dialysis patients, whose labs make the alerts fire; some CKD and ordinary records.
PROFILES = ("dialysis", "dialysis", "dialysis", "ckd", "ckd", "ordinary")
VISIT_CHANCE = 0.7  # a patient's chart is opened in a given week with this probability


@dataclass
class DemoSummary:
    """What the run wrote: hook calls, cards returned, and the feedback items by outcome."""

    calls: int = 0
    cards: int = 0
    feedback: dict[str, int] = field(default_factory=lambda: {"accepted": 0, "overridden": 0, "no response": 0})
    first_call: datetime | None = None
    last_call: datetime | None = None


class _Clock:
    """The simulated time the patched modules read instead of the wall clock."""

    now = datetime.now(UTC)


class _SimulatedDatetime(datetime):
    """``datetime`` whose ``now()`` is the simulated clock (everything else unchanged)."""

    @classmethod
    def now(cls, tz: Any = None) -> _SimulatedDatetime:
        """The simulated instant (in ``tz`` when given)."""
        moment = _Clock.now if tz is None else _Clock.now.astimezone(tz)
        return cls.fromtimestamp(moment.timestamp(), moment.tzinfo)


@contextmanager
def _simulated_clock() -> Iterator[None]:
    # The hook handler stamps calls and the feedback endpoint stamps feedback with datetime.now(UTC).
    with mock.patch("cds_service.hook_handler.datetime", _SimulatedDatetime), \
            mock.patch("cds_service.api.datetime", _SimulatedDatetime):
        yield


def _searchset(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
            "entry": [{"fullUrl": f"{r['resourceType']}/{r['id']}", "resource": r} for r in resources]}


def _prefetch(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """Every discovery prefetch key filled from the patient's resources (empty searchsets where it has none)."""
    from cds_service.services import service_definitions

    def of(kind: str) -> list[dict[str, Any]]:
        return [r for r in resources if r["resourceType"] == kind]

    observations = sorted(of("Observation"), key=lambda r: str(r.get("effectiveDateTime", "")), reverse=True)
    prefetch: dict[str, Any] = {"patient": resources[0], "observations": _searchset(observations[:200]),
                                "conditions": _searchset(of("Condition")),
                                "procedures": _searchset(of("Procedure")[-100:]),
                                "medications": _searchset(of("MedicationRequest"))}
    for spec in next(s for s in service_definitions() if s.id == SERVICE).prefetch:
        prefetch.setdefault(spec.key, _searchset([]))
    return prefetch


def _generator() -> Any:
    """The cohort generator (the top-level ``synth`` package), loaded only when the demo runs."""
    import importlib

    try:
        return importlib.import_module("synth.cohort").generate_patient
    except ImportError as exc:
        raise RuntimeError("the synthetic cohort generator (synth package) is not installed") from exc


def _respond(rng: random.Random, card: dict[str, Any], at: datetime) -> dict[str, Any] | None:
    """One simulated clinician answer to a shown card: accepted, overridden with a reason, or none (None)."""
    # Each rule gets its own acceptance profile so the dashboard has something to compare.
    rule_rng = random.Random(str(card.get("source", {}).get("topic", {}).get("code", "")))  # noqa: S311 - simulation
    accept, override = rule_rng.uniform(0.15, 0.45), rule_rng.uniform(0.2, 0.5)
    roll = rng.random()
    stamp = (at + timedelta(minutes=rng.randint(1, 20))).isoformat().replace("+00:00", "Z")
    if roll < accept and card.get("suggestions"):
        return {"card": card["uuid"], "outcome": "accepted", "outcomeTimestamp": stamp,
                "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}]}
    if roll < accept + override and card.get("overrideReasons"):
        reason = rng.choice(card["overrideReasons"])
        return {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": stamp,
                "overrideReason": {"reason": {k: reason[k] for k in ("code", "system", "display") if k in reason}}}
    return None


def run_demo(settings: Settings, *, patients: int, weeks: int, seed: int, end: date | None = None) -> DemoSummary:
    """Run ``patients`` synthetic patients through the service for ``weeks`` simulated weeks ending at ``end``
    (default: today) and write the calls, cards and feedback into ``settings``' audit database."""
    from dataclasses import replace

    from cds_service import create_app

    generate_patient = _generator()
    rng = random.Random(seed)  # noqa: S311 - a reproducible simulation, not a secret
    last_day = end or datetime.now(UTC).date()
    first = datetime.combine(last_day - timedelta(weeks=weeks), datetime.min.time(), UTC)
    visits = sorted((first + timedelta(weeks=week, days=rng.uniform(0, 6.9)), index)
                    for week in range(weeks) for index in range(patients) if rng.random() < VISIT_CHANCE)
    # A fresh machine has an empty database: migrate it first, as `calcinosis-cds db upgrade` would.
    from cds_service.audit import AuditLog

    AuditLog.open(settings, create_schema=True).close()
    app = create_app(replace(settings, dev=True))
    client = app.test_client()
    summary = DemoSummary()
    with _simulated_clock():
        for at, index in visits:
            _Clock.now = at
            # A fresh draw per week: labs move between visits, the patient (and its id) stays the same.
            patient = generate_patient(index, PROFILES[index % len(PROFILES)], years=1,
                                       seed=seed + (at - first).days // 7, as_of=at.date())
            body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
                    "context": {"userId": f"Practitioner/demo-{index % 4}", "patientId": patient.id},
                    "prefetch": _prefetch(patient.resources)}
            answer = client.post(f"/cds-services/{SERVICE}", json=body)
            if answer.status_code != 200:
                raise RuntimeError(f"the service answered {answer.status_code} to a synthetic call")
            summary.calls += 1
            summary.first_call = summary.first_call or at
            summary.last_call = at
            cards = answer.get_json()["cards"]
            summary.cards += len(cards)
            items = []
            for card in cards:
                item = _respond(rng, card, at)
                summary.feedback[item["outcome"] if item else "no response"] += 1
                if item:
                    items.append(item)
            if items:
                _Clock.now = at + timedelta(minutes=25)
                stored = client.post(f"/cds-services/{SERVICE}/feedback", json={"feedback": items})
                if stored.status_code != 200:
                    raise RuntimeError(f"the feedback endpoint answered {stored.status_code}")
    runtime = app.extensions["calcinosis"]
    if runtime.audit is not None:
        runtime.audit.close()
    return summary
