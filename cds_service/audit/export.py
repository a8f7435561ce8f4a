"""Export formats for the audit log: NDJSON, CSV and a FHIR R4 Bundle of AuditEvent resources.

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
from cds_service.fhir_validation import audit_event_json

FORMATS = ("ndjson", "csv", "fhir")
MEDIA_TYPES = {"ndjson": "application/x-ndjson", "csv": "text/csv", "fhir": "application/fhir+json"}

CSV_COLUMNS = [
    "card_uuid", "issued_at", "service_id", "hook", "hook_instance", "patient_id", "user_id", "encounter_id",
    "rule_id", "rule_version", "indicator", "disposition", "repeat_of", "order_key", "summary",
    "feedback_outcomes", "override_reasons", "evidence",
]
# Spreadsheet formula injection (OWASP "CSV Injection"): text starting with these is prefixed with "'".
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

DCM = "http://dicom.nema.org/resources/ontology/DCM"
_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def write_ndjson(rows: Iterable[dict[str, Any]], out: TextIO) -> int:
    """One JSON object per card per line; returns the number of lines."""
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


def audit_event(row: dict[str, Any]) -> dict[str, Any]:
    """The AuditEvent (FHIR R4/R4B) for one exported card row."""
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
    entities: list[dict[str, Any]] = []
    if row.get("patient_id"):
        entities.append({
            "what": _reference(row["patient_id"], "Patient"),
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1",
                     "display": "Person"},
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1",
                     "display": "Patient"},
        })
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
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest",
                 "display": "Restful Operation"},
        "subtype": [
            {"system": "http://hl7.org/fhir/restful-interaction", "code": "operation",
             "display": "operation"},
            {"system": "urn:calcinosis-cds:hook", "code": row["hook"]},
        ],
        "action": "E",
        "recorded": row["issued_at"],
        "outcome": _outcome_code(int(row["http_status"])),
        "purposeOfEvent": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                                        "code": "TREAT", "display": "treatment"}]}],
        "agent": agents,
        "source": {
            "observer": {"display": "calcinosis-cds"},
            "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4",
                      "display": "Application Server"}],
        },
        "entity": entities,
    }
    card_uuid = str(row["card_uuid"])
    event["id"] = card_uuid if _FHIR_ID.match(card_uuid) else f"card-{row['audit_id']}"
    return event


def write_fhir(rows: Iterable[dict[str, Any]], out: TextIO) -> int:
    """A Bundle (type collection) of AuditEvents, streamed entry by entry; returns the number of entries."""
    header = {"resourceType": "Bundle", "type": "collection", "timestamp": canonical_time(datetime.now(UTC))}
    out.write(json.dumps(header)[:-1])
    count = 0
    for row in rows:
        # FHIR JSON forbids empty arrays, so "entry" is only opened once there is a first entry.
        out.write(', "entry": [' if count == 0 else ",")
        # Built with the FHIR R4B AuditEvent model, which rejects an invalid event (issue #14).
        full_url = json.dumps(f"urn:uuid:{row['card_uuid']}")
        out.write('{"fullUrl": ' + full_url + ', "resource": ' + audit_event_json(audit_event(row)) + "}")
        count += 1
    out.write("]}\n" if count else "}\n")
    return count


def write_export(rows: Iterable[dict[str, Any]], fmt: str, out: TextIO) -> int:
    """Write ``rows`` in one of FORMATS; raises ValueError for an unknown format."""
    if fmt == "ndjson":
        return write_ndjson(rows, out)
    if fmt == "csv":
        return write_csv(rows, out)
    if fmt == "fhir":
        return write_fhir(rows, out)
    raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
