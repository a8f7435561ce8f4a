"""Hypothesis strategies for hostile CDS Hooks traffic, and the per-run request statistics.

The strategies aim at the edge the service must survive (issue #5): arbitrary JSON, wrong types in every
envelope field, huge strings, deep nesting, random FHIR-ish resources in prefetch and draftOrders, wrong
content types and raw garbage; and, for outbound calls (issue 16 items 2, 3 and 9), fhirServer, ``next`` and SMART
``iss`` URLs with dot segments (``..``, ``%2e%2e``, ``//``, ``..;``, encoded separators) and ids with a trailing
newline or made of dots. They deliberately mix valid and invalid parts so that bodies get past the
first checks and reach the deeper parsing (value sets, units, dates, dosage).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from cds_service.services import resource_type_of, service_definitions

SERVICE_IDS = ("calcinosis-patient-view", "calcinosis-order-select", "calcinosis-order-sign")
HOOK_BY_SERVICE = {
    "calcinosis-patient-view": "patient-view",
    "calcinosis-order-select": "order-select",
    "calcinosis-order-sign": "order-sign",
}
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"


@dataclass
class FuzzStats:
    """What the fuzz run did; printed in the pytest terminal summary (tests/security/conftest.py)."""

    requests: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    slowest_s: float = 0.0
    total_s: float = 0.0

    def record(self, status: int, elapsed_s: float) -> None:
        """Count one request."""
        self.requests += 1
        self.total_s += elapsed_s
        self.by_status[status] = self.by_status.get(status, 0) + 1
        self.slowest_s = max(self.slowest_s, elapsed_s)


STATS = FuzzStats()


def _known_codes() -> list[tuple[str, str]]:
    """(system, code) pairs the clinical value sets contain, so random resources hit the real rule paths."""
    try:
        from fhir_mappings.valuesets import default_index

        return sorted(default_index().by_code)
    except Exception:  # the value sets are another helper's work; fall back to a few well-known codes
        return [(LOINC, "17861-6"), (LOINC, "2777-1"), (LOINC, "1751-7"), (LOINC, "2731-8"),
                (LOINC, "33914-3"), (LOINC, "62238-1"), (ICD10, "N18.6"), (SNOMED, "46177005")]


KNOWN_CODES = _known_codes()

# --- scalars ---------------------------------------------------------------------------------------------

weird_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "null", "NaN", "Infinity", "-0", "1e309", "../../etc/passwd",
                     "<script>x</script>", "{{context.patientId}}", "%s%s%n", "\u202e", "\x00",
                     "DROP TABLE audit;--", "ä" * 3]),
)
json_scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    weird_text,
)
arbitrary_json = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


def anything_or(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``valid`` values three times in four, otherwise any JSON at all (wrong types). For FHIR content."""
    return st.one_of(valid, valid, valid, arbitrary_json)


def mostly(valid: st.SearchStrategy[Any], wrong: st.SearchStrategy[Any] | None = None) -> st.SearchStrategy[Any]:
    """``valid`` nine times in ten, otherwise ``wrong`` (default: any JSON). For envelope fields, so that
    a good share of requests passes validation and reaches the FHIR parsing and the rules."""
    bad = wrong if wrong is not None else arbitrary_json
    # sampled_from is uniform (st.integers favours small values); shrinking moves towards the valid side.
    return st.sampled_from(range(10)).flatmap(lambda roll: bad if roll == 9 else valid)


def one_in(n: int) -> st.SearchStrategy[bool]:
    """True with probability 1/n (uniform, unlike st.integers)."""
    return st.sampled_from(range(n)).map(lambda roll: roll == n - 1)


dates = st.one_of(
    st.dates().map(lambda d: d.isoformat()),
    st.datetimes(timezones=st.none()).map(lambda d: d.isoformat() + "Z"),
    st.sampled_from(["2024", "2024-02", "2024-02-30", "2024-13-01T00:00:00Z", "yesterday", "0000-01-01",
                     "9999-12-31T23:59:59+14:00", "2024-06-01T10:00:00", "2024-06-01T25:61:00Z"]),
)
numbers = st.one_of(
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, -1, 1e308, -1e308, 5e-324, 10**30]),
    st.text(max_size=8),
)
ucum_units = st.sampled_from(["mg/dL", "mmol/L", "pg/mL", "ng/mL", "pmol/L", "nmol/L", "U/L", "g/dL", "g/L",
                              "mL/min/{1.73_m2}", "mL/min/1.73m2", "%", "", "furlong", "mg/dl", "umol/L"])


# -- outbound URLs and ids (issue 16 items 3 and 9) ---------------------------------------------------------

ALLOWED_FHIR = "https://fhir.example.org/fhir"  # the allowlisted base of the outbound fuzz app
# Ways to leave a base URL's path that a string prefix check does not see (RFC 3986 5.2.4 dot segments, the same
# encoded, empty segments that proxies collapse, servlet path parameters, encoded separators, double encoding).
DOT_SEGMENT_ESCAPES = ("/../admin", "/%2e%2e/admin", "/%2E%2e/admin", "/.%2e/admin", "/./../admin", "//../admin",
                       "/..;/admin", "/..%2fadmin", "/..%5Cadmin", "/..\\admin", "/x/../../admin", "//admin",
                       "/%252e%252e/admin", "/.", "/..", "/./", "/fhir/..", "/Observation/../../admin")
hostile_urls = st.builds(
    lambda base, escape, tail: base + escape + tail,
    st.sampled_from([ALLOWED_FHIR, "https://fhir.example.org", "https://FHIR.example.org:443/fhir",
                     "https://fhir.example.org/fhir/"]),
    st.one_of(st.sampled_from(DOT_SEGMENT_ESCAPES), st.text(alphabet="./%2eE5cCfF;\\", max_size=12)),
    st.sampled_from(["", "/Observation?page=2", "/Patient/p1", "?_getpages=x&page=2"]),
)
fhir_server_urls = st.one_of(st.just(ALLOWED_FHIR), st.just(ALLOWED_FHIR + "/"), hostile_urls, st.sampled_from([
    "https://[::1", ALLOWED_FHIR + "\n", ALLOWED_FHIR + "\t/../admin", "https://u:p@fhir.example.org/fhir",
    "https://fhir.example.org:99999/fhir", ALLOWED_FHIR + "?x=1", ALLOWED_FHIR + "#f", "https://fhir.example.org.",
]))
# Ids that only look valid to a regex anchored with "$" (re.match), or are URL dot segments.
TRICKY_IDS = ("p1\n", "p1\r\n", "p1\r", ".", "..", "p1\x00", "p1 ")


@st.composite
def codings(draw: st.DrawFn) -> dict[str, Any]:
    """A Coding: usually from the real value sets, sometimes random."""
    if draw(st.booleans()) and len(KNOWN_CODES) > 0:
        system, code = draw(st.sampled_from(KNOWN_CODES))
    else:
        system = draw(st.sampled_from([LOINC, SNOMED, RXNORM, ICD10, "urn:oid:2.16.840.1.113883.6.1", "x"]))
        code = draw(weird_text)
    return {"system": draw(anything_or(st.just(system))), "code": draw(anything_or(st.just(code))),
            "display": draw(weird_text)}


codeable = st.builds(lambda cs, text: {"coding": cs, "text": text},
                     st.lists(codings(), max_size=3), weird_text)
reference = st.one_of(st.just("Patient/p1"), st.text(max_size=20)).map(lambda r: {"reference": r})
quantity = st.fixed_dictionaries(
    {"value": numbers},
    optional={"unit": ucum_units, "code": ucum_units, "system": st.just("http://unitsofmeasure.org"),
              "comparator": st.sampled_from(["<", ">", "<=", ">=", "ad", "?"])},
)

_RESOURCE_FIELDS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "Observation": {
        "status": st.sampled_from(["final", "amended", "preliminary", "entered-in-error", "cancelled", "x"]),
        "code": codeable, "subject": reference, "valueQuantity": quantity, "valueString": weird_text,
        "effectiveDateTime": dates, "issued": dates, "category": st.lists(codeable, max_size=2),
        "specimen": reference, "component": st.lists(st.fixed_dictionaries({"code": codeable,
                                                                           "valueQuantity": quantity}),
                                                     max_size=2),
        "effectivePeriod": st.fixed_dictionaries({}, optional={"start": dates, "end": dates}),
        "interpretation": st.lists(codeable, max_size=1),
    },
    "Condition": {
        "code": codeable, "subject": reference, "onsetDateTime": dates, "recordedDate": dates,
        "clinicalStatus": codeable, "verificationStatus": codeable, "abatementDateTime": dates,
        "category": st.lists(codeable, max_size=2),
    },
    "Procedure": {
        "status": st.sampled_from(["completed", "in-progress", "not-done", "x"]), "code": codeable,
        "subject": reference, "performedDateTime": dates,
        "performedPeriod": st.fixed_dictionaries({}, optional={"start": dates, "end": dates}),
    },
    "MedicationRequest": {
        "status": st.sampled_from(["active", "draft", "on-hold", "stopped", "x"]),
        "intent": st.sampled_from(["order", "plan", "proposal", "x"]),
        "medicationCodeableConcept": codeable, "subject": reference, "authoredOn": dates,
        "category": st.one_of(codeable, st.lists(codeable, max_size=2)),  # the sandbox sends one object
        "dosageInstruction": st.lists(st.fixed_dictionaries({}, optional={
            "route": codeable, "text": weird_text,
            "doseAndRate": st.lists(st.fixed_dictionaries({"doseQuantity": quantity}), max_size=2),
            "timing": arbitrary_json,
        }), max_size=2),
        "medicationReference": reference,
    },
    "MedicationStatement": {
        "status": st.sampled_from(["active", "completed", "x"]), "medicationCodeableConcept": codeable,
        "subject": reference, "effectiveDateTime": dates, "dosage": arbitrary_json,
    },
    "Patient": {
        "birthDate": dates, "gender": st.sampled_from(["male", "female", "other", "unknown", "x"]),
        "deceasedBoolean": st.booleans(), "deceasedDateTime": dates,
    },
}


@st.composite
def fhir_resources(draw: st.DrawFn, resource_type: str | None = None) -> dict[str, Any]:
    """A random FHIR-ish resource: real field names with plausible, wrong or hostile values."""
    rtype = resource_type or draw(st.sampled_from([*_RESOURCE_FIELDS, "OperationOutcome", "Basic", ""]))
    resource: dict[str, Any] = {"resourceType": draw(anything_or(st.just(rtype)))}
    if draw(st.booleans()):
        resource["id"] = draw(anything_or(st.from_regex(r"[A-Za-z0-9\-.]{1,64}", fullmatch=True)))
    fields = _RESOURCE_FIELDS.get(rtype, {})
    if fields:
        names = draw(st.lists(st.sampled_from(sorted(fields)), unique=True, max_size=len(fields)))
        for name in names:
            resource[name] = draw(anything_or(fields[name]))
    if draw(one_in(5)):
        resource[draw(st.text(max_size=10))] = draw(arbitrary_json)
    return resource


@st.composite
def bundles(draw: st.DrawFn, resource_type: str | None = None) -> dict[str, Any]:
    """A searchset-like Bundle of (mostly ``resource_type``) resources, sometimes with odd links/entries."""
    resources = mostly(fhir_resources(resource_type), fhir_resources()) if resource_type else fhir_resources()
    entries = draw(st.lists(mostly(st.one_of(
        resources.map(lambda r: {"resource": r}),
        resources.map(lambda r: {"resource": r, "search": {"mode": "match"}}),
    )), max_size=8))
    bundle: dict[str, Any] = {"resourceType": "Bundle", "entry": entries}
    if draw(st.booleans()):
        bundle["type"] = draw(anything_or(st.sampled_from(["searchset", "collection", "transaction"])))
    if draw(one_in(6)):
        bundle["link"] = draw(anything_or(st.just([{"relation": "next",
                                                    "url": draw(st.one_of(st.sampled_from([
                                                        "https://evil.example.net/fhir/Observation?page=2",
                                                        "https://fhir.example.org/Observation?page=2",
                                                        "not a url"]), hostile_urls))}])))
    if draw(one_in(6)):
        bundle["total"] = draw(arbitrary_json)
    return bundle


def _codes_by_valueset() -> dict[str, list[tuple[str, str]]]:
    try:
        from fhir_mappings.valuesets import default_index

        grouped: dict[str, list[tuple[str, str]]] = {}
        for pair, valueset_ids in default_index().by_code.items():
            for valueset_id in valueset_ids:
                grouped.setdefault(valueset_id, []).append(pair)
        return {k: sorted(v) for k, v in grouped.items()}
    except Exception:
        return {"lab-calcium-total": [(LOINC, "17861-6")], "lab-phosphate": [(LOINC, "2777-1")],
                "cond-esrd": [(SNOMED, "46177005")]}


CODES_BY_VALUESET = _codes_by_valueset()
# Typical units per lab value set, so plausible values pass unit conversion and reach the rules.
_LAB_UNITS = {
    "lab-calcium-total": ["mg/dL", "mmol/L"], "lab-calcium-blood": ["mg/dL"], "lab-calcium-corrected": ["mg/dL"],
    "lab-calcium-ionized": ["mmol/L", "mg/dL"], "lab-phosphate": ["mg/dL", "mmol/L"], "lab-albumin": ["g/dL", "g/L"],
    "lab-pth": ["pg/mL", "pmol/L"], "lab-vitamin-d-25oh": ["ng/mL", "nmol/L"], "lab-vitamin-d-125": ["pg/mL"],
    "lab-alp": ["U/L"], "lab-creatinine": ["mg/dL", "umol/L"], "lab-egfr": ["mL/min/{1.73_m2}"],
    "lab-potassium": ["mmol/L"], "lab-urate": ["mg/dL"], "lab-bmi": ["kg/m2"], "lab-bicarbonate": ["mmol/L"],
}


@st.composite
def plausible_labs(draw: st.DrawFn) -> dict[str, Any]:
    """A recent, final lab Observation with a real LOINC, a usual unit and a wide but numeric value."""
    valueset_id = draw(st.sampled_from(sorted(v for v in _LAB_UNITS if v in CODES_BY_VALUESET)))
    system, code = draw(st.sampled_from(CODES_BY_VALUESET[valueset_id]))
    unit = draw(st.sampled_from(_LAB_UNITS[valueset_id]))
    when = datetime.now(UTC) - timedelta(days=draw(st.integers(0, 400)), minutes=draw(st.integers(0, 1440)))
    value = draw(st.one_of(st.floats(0, 20, allow_nan=False), st.floats(20, 3000, allow_nan=False)))
    return {
        "resourceType": "Observation", "id": f"obs-{draw(st.integers(0, 10**6))}", "status": "final",
        "code": {"coding": [{"system": system, "code": code}]}, "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": when.isoformat().replace("+00:00", "Z"),
        "valueQuantity": {"value": round(value, 2), "unit": unit, "system": "http://unitsofmeasure.org",
                          "code": unit},
    }


@st.composite
def plausible_conditions(draw: st.DrawFn) -> dict[str, Any]:
    """An active Condition from one of the clinical value sets (ESRD, dialysis, SLE, ...)."""
    valueset_id = draw(st.sampled_from(sorted(v for v in CODES_BY_VALUESET if v.startswith("cond-"))))
    system, code = draw(st.sampled_from(CODES_BY_VALUESET[valueset_id]))
    return {
        "resourceType": "Condition", "id": f"cond-{draw(st.integers(0, 10**6))}",
        "code": {"coding": [{"system": system, "code": code}]}, "subject": {"reference": "Patient/p1"},
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                       "code": "active"}]},
    }


def _searchset(resources: st.SearchStrategy[dict[str, Any]], max_size: int) -> st.SearchStrategy[Any]:
    return st.lists(resources, max_size=max_size).map(
        lambda rs: {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in rs]})


# Every advertised key but the patient, with the resource type it searches (derived from discovery, so a new key
# is fuzzed as soon as it is advertised).
_PREFETCH_TYPES = {p.key: resource_type_of(p.template) for p in service_definitions()[0].prefetch
                   if p.key != "patient"}
_CORE_KEYS = frozenset({"observations", "conditions", "procedures", "medications", "medicationStatements"})


@st.composite
def prefetch_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """Prefetch with (usually) every advertised key: the right resource types, with hostile content."""
    prefetch: dict[str, Any] = {}
    if not draw(one_in(10)):
        prefetch["patient"] = draw(mostly(fhir_resources("Patient"), st.none() | fhir_resources()))
    for key, resource_type in _PREFETCH_TYPES.items():
        # The five core keys are nearly always there; the rest (split and history keys) one time in four each,
        # so every key is fuzzed without multiplying the data drawn per example (the suite's time budget).
        present = not draw(one_in(10)) if key in _CORE_KEYS else draw(one_in(4))
        if present:
            plausible = {"observations": _searchset(plausible_labs(), 12),
                         "conditions": _searchset(plausible_conditions(), 4)}.get(key, bundles(resource_type))
            # Half plausible data (so rules fire and cards are rendered), half hostile FHIR.
            prefetch[key] = draw(mostly(st.one_of(plausible, bundles(resource_type)),
                                        st.none() | bundles() | fhir_resources()))
    if draw(one_in(8)):
        prefetch[draw(st.text(max_size=12))] = draw(st.none() | bundles() | arbitrary_json)
    return prefetch


@st.composite
def hook_bodies(draw: st.DrawFn, service_id: str) -> dict[str, Any]:
    """A CDS Hooks request for ``service_id`` where any field may be missing, mistyped or hostile."""
    hook = HOOK_BY_SERVICE[service_id]
    context: dict[str, Any] = {
        "patientId": draw(mostly(st.sampled_from(["p1", "smart-1288992", "a" * 64]),
                                 st.sampled_from(["a" * 65, "x/y", "", 7, *TRICKY_IDS]) | arbitrary_json)),
        "userId": draw(mostly(st.sampled_from(["Practitioner/COREPRACTITIONER1", "PractitionerRole/r"]),
                              st.sampled_from(["Patient/p1", "Device/d", "practitioner"]) | arbitrary_json)),
    }
    if draw(st.booleans()):
        context["encounterId"] = draw(mostly(st.just("enc-1")))
    if hook != "patient-view" or draw(one_in(6)):
        drafts = draw(st.one_of(bundles(), st.builds(
            lambda r: {"resourceType": "Bundle", "entry": [{"resource": r}]},
            fhir_resources("MedicationRequest"))))
        context["draftOrders"] = draw(mostly(st.just(drafts)))
        context["selections"] = draw(mostly(
            st.lists(st.sampled_from(["MedicationRequest/request-123", "MedicationRequest/x"]), min_size=1,
                     max_size=3),
            st.lists(st.sampled_from(["MedicationRequest/" + "x" * 70, "bad", ""]), max_size=2) | arbitrary_json,
        ))
    if draw(one_in(7)):
        context[draw(st.text(max_size=12))] = draw(arbitrary_json)
    body: dict[str, Any] = {
        "hook": draw(mostly(st.just(hook), st.sampled_from(["patient-view", "order-sign", "x"]) | arbitrary_json)),
        "hookInstance": draw(mostly(st.uuids().map(str))),
        "context": draw(mostly(st.just(context))),
    }
    if draw(one_in(4)):
        # Outbound calls are blocked in the fuzz run (responses), so a fetch is a failed fetch, never a leak.
        body["fhirServer"] = draw(mostly(
            st.sampled_from(["https://fhir.example.org", "http://localhost:1/fhir"]),
            st.sampled_from(["ftp://x", "https://user:pw@h/fhir", "", "https://[::1", "https://h:99999/",
                             "https://h:abc/", "https://h:0/"]) | hostile_urls | arbitrary_json))
    if ("fhirServer" in body or draw(one_in(10))) and draw(one_in(3)):
        body["fhirAuthorization"] = draw(mostly(st.fixed_dictionaries(
            {"access_token": st.text(max_size=20), "token_type": st.sampled_from(["Bearer", "bearer", "MAC"]),
             "expires_in": numbers, "scope": weird_text, "subject": weird_text},
        )))
    if not draw(one_in(10)):
        body["prefetch"] = draw(mostly(prefetch_dicts()))
    if draw(one_in(10)):
        del body[draw(st.sampled_from(sorted(body)))]  # a required field goes missing
    return body


@st.composite
def feedback_items(draw: st.DrawFn) -> dict[str, Any]:
    """One feedback entry where every field may be missing, mistyped or hostile."""
    entry: dict[str, Any] = {
        "card": draw(mostly(st.uuids().map(str))),
        "outcome": draw(mostly(st.sampled_from(["accepted", "overridden"]), st.just("ignored") | arbitrary_json)),
        "outcomeTimestamp": draw(mostly(dates)),
    }
    if draw(st.booleans()):
        entry["acceptedSuggestions"] = draw(mostly(st.lists(
            st.fixed_dictionaries({"id": mostly(st.uuids().map(str))}), max_size=3)))
    if draw(st.booleans()):
        entry["overrideReason"] = draw(mostly(st.fixed_dictionaries({}, optional={
            "reason": mostly(st.fixed_dictionaries({"code": weird_text}, optional={
                "system": weird_text, "display": weird_text})),
            "userComment": weird_text,
        })))
    if draw(one_in(10)):
        del entry[draw(st.sampled_from(sorted(entry)))]
    return entry


feedback_bodies = st.builds(lambda items: {"feedback": items},
                            mostly(st.lists(feedback_items(), max_size=4)))


def nested(depth: int, kind: str) -> str:
    """JSON text nested ``depth`` levels deep (built as text: no recursion anywhere)."""
    if kind == "list":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def encode(body: Any) -> bytes:
    """Serialise like a client would (json.dumps may emit NaN-free, non-ASCII text)."""
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


@st.composite
def outbound_hook_bodies(draw: st.DrawFn, service_id: str) -> dict[str, Any]:
    """A patient-view-like call WITHOUT (most of) its prefetch, so the service fetches from ``fhirServer``.

    ``fhirServer`` is the allowlisted base or a dot-segment variant of it; ids are sometimes tricky. Used by the
    outbound property of test_fuzz.py, whose fake FHIR server sets cookies and links ``next`` to hostile URLs.
    """
    hook = HOOK_BY_SERVICE[service_id]
    patient_id = draw(mostly(st.sampled_from(["p1", "smart-1288992"]), st.sampled_from(TRICKY_IDS)))
    context: dict[str, Any] = {"patientId": patient_id, "userId": "Practitioner/COREPRACTITIONER1"}
    if hook != "patient-view":
        context["draftOrders"] = {"resourceType": "Bundle", "entry": [{"resource": {
            "resourceType": "MedicationRequest", "id": "request-123", "status": "draft"}}]}
        context["selections"] = ["MedicationRequest/request-123"]
    body: dict[str, Any] = {"hook": hook, "hookInstance": draw(st.uuids().map(str)), "context": context,
                            "fhirServer": draw(fhir_server_urls)}
    if draw(st.booleans()):
        body["fhirAuthorization"] = {"access_token": "fuzz-token", "token_type": "Bearer", "expires_in": 300,
                                     "scope": "patient/*.rs", "subject": "cds", "patient": patient_id}
    if draw(one_in(3)):
        body["prefetch"] = {"patient": {"resourceType": "Patient", "id": "p1"}}
    return body
