"""Export formats for the audit log: NDJSON, CSV and a FHIR R4 Bundle of AuditEvent resources.

Two kinds of rows: cards (``audit export``) and hook calls (``audit export --calls``, every authenticated call
whatever its answer, issue 15 item 7).

The FHIR form follows the IHE Basic Audit Log Patterns (BALP) where they fit a CDS Hooks call: a RESTful
"execute" event (type ``rest``, action ``E``) with the client system (DICOM 110153 Source Role ID), the human
user (``humanuser``) and this service (110152 Destination Role ID) as agents, the patient as an entity with
role Patient, and the card as a system-object entity whose details carry the rule, disposition and feedback.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TextIO

from cds_service.audit.chain import canonical_time
from cds_service.audit.queries import CALL_EXPORT_COLUMNS
from cds_service.fhir_validation import audit_event_json

FORMATS = ("ndjson", "csv", "fhir")
MEDIA_TYPES = {"ndjson": "application/x-ndjson", "csv": "text/csv", "fhir": "application/fhir+json"}

CSV_COLUMNS = [
    "card_uuid", "issued_at", "service_id", "hook", "hook_instance", "patient_id", "user_id", "encounter_id",
    "rule_id", "rule_version", "indicator", "disposition", "repeat_of", "order_key", "summary",
    "feedback_outcomes", "override_reasons", "evidence",
]
# ``audit export --calls``: the sequence number, every other column of the calls table, then the call's cards.
CALL_CSV_COLUMNS = ["audit_id", *(name for name in CALL_EXPORT_COLUMNS if name != "id"), "cards"]
# Spreadsheet formula injection (OWASP "CSV Injection"): text starting with these is prefixed with "'".
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

DCM = "http://dicom.nema.org/resources/ontology/DCM"
_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def write_ndjson(rows: Iterable[dict[str, Any]], out: TextIO) -> int:
    """One JSON object per row (card or call) per line; returns the number of lines."""
    count = 0
    for row in rows:
        out.write(json.dumps(row, ensure_ascii=False, sort_keys=True))
        out.write("\n")
        count += 1
    return count


def _csv_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _reason_label(reason: dict[str, Any] | None) -> str:
    if not reason:
        return ""
    return str(reason.get("display") or reason.get("code") or "")


def write_csv(rows: Iterable[dict[str, Any]], out: TextIO) -> int:
    """One CSV row per card (feedback outcomes ';'-joined, evidence as JSON); returns the number of rows."""
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    count = 0
    for row in rows:
        outcomes = [item["outcome"] for item in row["feedback"]]
        reasons = [
            _reason_label(item["override_reason"])
            for item in row["feedback"] if item["outcome"] == "overridden"
        ]
        flat = dict(row)
        flat["feedback_outcomes"] = ";".join(outcomes)
        flat["override_reasons"] = ";".join(reason for reason in reasons if reason)
        flat["evidence"] = json.dumps(row["evidence"], ensure_ascii=False, sort_keys=True)
        writer.writerow([_csv_cell(flat.get(column)) for column in CSV_COLUMNS])
        count += 1
    return count


def _outcome_code(http_status: int) -> str:
    # FHIR R4 AuditEventOutcome: 0 success, 4 minor failure (client error), 8 serious failure (server error).
    if http_status < 400:
        return "0"
    return "4" if http_status < 500 else "8"


def _reference(value: str, resource_type: str) -> dict[str, Any]:
    reference = value if "/" in value else f"{resource_type}/{value}"
    return {"reference": reference}


def _agents(row: dict[str, Any]) -> list[dict[str, Any]]:
    """Client system, human user and this service (BALP agents) of a card or call row."""
    agents: list[dict[str, Any]] = []
    if row.get("client_iss"):
        agents.append({
            "type": {"coding": [{"system": DCM, "code": "110153", "display": "Source Role ID"}]},
            "who": {"identifier": {"system": "urn:ietf:rfc:3986", "value": row["client_iss"]}},
            "requestor": False,
        })
    if row.get("user_id"):
        agents.append({
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
                                 "code": "humanuser", "display": "human user"}]},
            "who": _reference(row["user_id"], "Practitioner"),
            "requestor": True,
        })
    agents.append({
        "type": {"coding": [{"system": DCM, "code": "110152", "display": "Destination Role ID"}]},
        "who": {"display": "calcinosis-cds", "identifier": {"value": row["service_id"]}},
        "requestor": False,
    })
    return agents


def _patient_entities(row: dict[str, Any]) -> list[dict[str, Any]]:
    if not row.get("patient_id"):
        return []
    return [{
        "what": _reference(row["patient_id"], "Patient"),
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1",
                 "display": "Person"},
        "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1",
                 "display": "Patient"},
    }]


def _event(row: dict[str, Any], recorded: str, entities: list[dict[str, Any]]) -> dict[str, Any]:
    """The AuditEvent frame shared by card and call events: a RESTful "execute" of the hook (BALP)."""
    subtype = [{"system": "http://hl7.org/fhir/restful-interaction", "code": "operation", "display": "operation"}]
    if row.get("hook"):  # empty when the call was refused before its service was known (unknown service id)
        subtype.append({"system": "urn:calcinosis-cds:hook", "code": row["hook"]})
    return {
        "resourceType": "AuditEvent",
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest",
                 "display": "Restful Operation"},
        "subtype": subtype,
        "action": "E",
        "recorded": recorded,
        "outcome": _outcome_code(int(row["http_status"])),
        "purposeOfEvent": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                                        "code": "TREAT", "display": "treatment"}]}],
        "agent": _agents(row),
        "source": {
            "observer": {"display": "calcinosis-cds"},
            "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4",
                      "display": "Application Server"}],
        },
        "entity": entities,
    }


def audit_event(row: dict[str, Any]) -> dict[str, Any]:
    """The AuditEvent (FHIR R4/R4B) for one exported card row."""
    entities = _patient_entities(row)
    details = [
        {"type": "rule_id", "valueString": row["rule_id"]},
        {"type": "rule_version", "valueString": row["rule_version"]},
        {"type": "indicator", "valueString": row["indicator"]},
        {"type": "disposition", "valueString": row["disposition"]},
        {"type": "hookInstance", "valueString": row["hook_instance"]},
    ]
    for name in ("repeat_of", "order_key", "encounter_id"):
        if row.get(name):
            details.append({"type": name, "valueString": str(row[name])})
    if row["feedback"]:
        details.append({"type": "feedback", "valueString": json.dumps(row["feedback"], sort_keys=True)})
    entities.append({
        "what": {"identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{row['card_uuid']}"}},
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2",
                 "display": "System Object"},
        "name": "CDS Hooks card",
        "description": row["summary"],
        "detail": details,
    })
    event = _event(row, row["issued_at"], entities)
    card_uuid = str(row["card_uuid"])
    event["id"] = card_uuid if _FHIR_ID.match(card_uuid) else f"card-{row['audit_id']}"
    return event


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def call_audit_event(row: dict[str, Any]) -> dict[str, Any]:
    """The AuditEvent for one exported hook call (``audit export --calls``): one per call, whatever its answer.

    The call is a system-object entity whose details carry the HTTP status, the error code, ``duration_ms``
    (evaluation), ``request_ms`` (whole request), data sources, skipped resources and rules evaluated; each card
    it produced is an entity of its own. FHIR strings cannot be empty, so empty values are left out.
    """
    details: list[dict[str, Any]] = [{"type": "http_status", "valueString": str(row["http_status"])}]
    for name in ("error", "encounter_id", "client_tenant"):
        if row.get(name):
            details.append({"type": name, "valueString": str(row[name])})
    for name in ("duration_ms", "request_ms"):
        if row.get(name) is not None:
            details.append({"type": name, "valueString": f"{float(row[name]):.3f}"})
    for name in ("data_sources", "skipped_resources", "rules_evaluated"):
        details.append({"type": name, "valueString": _json_text(row.get(name))})
    call: dict[str, Any] = {
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2",
                 "display": "System Object"},
        "name": "CDS Hooks call",
        "detail": details,
    }
    if row.get("hook_instance"):
        call["what"] = {"identifier": {"system": "urn:calcinosis-cds:hookInstance", "value": row["hook_instance"]}}
    entities = [*_patient_entities(row), call]
    for card in row["cards"]:
        card_details = [{"type": name, "valueString": str(card[name])}
                        for name in ("rule_id", "rule_version", "indicator", "disposition", "repeat_of", "order_key")
                        if card.get(name)]
        entities.append({
            "what": {"identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{card['card_uuid']}"}},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2",
                     "display": "System Object"},
            "name": "CDS Hooks card",
            "detail": card_details,
        })
    event = _event(row, row["received_at"], entities)
    if row.get("error"):
        event["outcomeDesc"] = f"HTTP {row['http_status']}: {row['error']}"
    elif _evaluation_failed(row):
        # Answered 200, but a rule, the engine or a card template failed (§8 C6): a minor failure to an auditor.
        event["outcome"] = "4"
        event["outcomeDesc"] = "evaluation incomplete: answered with the evaluation-incomplete card"
    event["id"] = f"call-{row['audit_id']}"
    return event


# Skipped-resource types the engine records when evaluation itself failed (cds_service/engine.py, §8 C6).
_FAILURE_TYPES = frozenset({"rule", "engine", "card"})


def _evaluation_failed(row: dict[str, Any]) -> bool:
    skipped = row.get("skipped_resources") or []
    return any(isinstance(item, dict) and item.get("resource_type") in _FAILURE_TYPES for item in skipped)


def write_fhir(rows: Iterable[dict[str, Any]], out: TextIO, *, calls: bool = False) -> int:
    """A Bundle (type collection) of AuditEvents, streamed entry by entry; returns the number of entries.

    One event per card row, or with ``calls`` one per hook-call row (:func:`call_audit_event`).
    """
    header = {"resourceType": "Bundle", "type": "collection", "timestamp": canonical_time(datetime.now(UTC))}
    out.write(json.dumps(header)[:-1])
    count = 0
    for row in rows:
        # FHIR JSON forbids empty arrays, so "entry" is only opened once there is a first entry.
        out.write(', "entry": [' if count == 0 else ",")
        # Built with the FHIR R4B AuditEvent model, which rejects an invalid event (issue #14).
        event = call_audit_event(row) if calls else audit_event(row)
        full_url = json.dumps(f"urn:uuid:{row['record_uuid'] if calls else row['card_uuid']}")
        out.write('{"fullUrl": ' + full_url + ', "resource": ' + audit_event_json(event) + "}")
        count += 1
    out.write("]}\n" if count else "}\n")
    return count


def write_calls_csv(rows: Iterable[dict[str, Any]], out: TextIO) -> int:
    """One CSV row per hook call: every call column (JSON values as JSON text) and its cards; returns the count."""
    writer = csv.writer(out)
    writer.writerow(CALL_CSV_COLUMNS)
    count = 0
    for row in rows:
        flat = dict(row)
        for name in ("data_sources", "skipped_resources", "rules_evaluated", "cards"):
            flat[name] = _json_text(row.get(name))
        writer.writerow([_csv_cell(flat.get(column)) for column in CALL_CSV_COLUMNS])
        count += 1
    return count


def write_export(rows: Iterable[dict[str, Any]], fmt: str, out: TextIO, *, calls: bool = False) -> int:
    """Write ``rows`` (card rows, or hook-call rows with ``calls``) in one of FORMATS; raises ValueError for an
    unknown format."""
    if fmt == "ndjson":
        return write_ndjson(rows, out)
    if fmt == "csv":
        return write_calls_csv(rows, out) if calls else write_csv(rows, out)
    if fmt == "fhir":
        return write_fhir(rows, out, calls=calls)
    raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
