"""The three CDS services this product offers, and their discovery metadata and prefetch templates.

Prefetch templates follow CDS Hooks 2.0 "Prefetch Template": tokens name only root-level context fields
(``{{context.patientId}}``), searches use the R4 ``_sort=-date`` form and a bounded ``_count``. Every code
filter is BUILT from the value set files (fhir_mappings/valuesets/*.json), never kept by hand: each ``lab-*``
set feeds the Observation query, each ``proc-*`` set the Procedure query, so a code added to a value set is
fetched the moment it ships (issue 13 item 2, "every code a rule reads is fetched"). The same templates are
the fallback queries run against ``fhirServer`` when prefetch is missing (cds_service/prefetch.py).

URL length: real EHR front ends refuse long GET URLs (IIS's default query-string limit is 2,048 bytes). A
code list that would make a query longer than ``MAX_QUERY_CHARS`` is split into several keys of the same
search (``procedures``, ``procedures2``, ...), whole value sets kept together where they fit; the service
merges their results. Conditions and active medications carry no code filter at all: ICD-10-CM ``is-a``
members and medication text patterns cannot be expressed as a token list, and an unfiltered search cannot
miss a code.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import quote

from cds_service.fhir_query import build_relative_url
from fhir_mappings.valuesets import LAB_VALUESETS, PROCEDURE_VALUESETS, default_index

# Page sizes: a dialysis patient has ~8 relevant labs a month, so 250 covers 2-3 years; the rules look back at
# most 365 days (eGFR staging, clinical-rules.md 2.6). Paging in the fallback fetch is capped by
# CDS_FHIR_MAX_PAGES.
_OBSERVATION_COUNT = 250
_CONDITION_COUNT = 250
_PROCEDURE_COUNT = 100
_MEDICATION_COUNT = 100
_SERVICE_REQUEST_COUNT = 50

PATIENT_PLACEHOLDER = "{{context.patientId}}"
# Longest query (the part after the FHIR base URL) discovery may advertise, measured with a 64-character patient
# id (the FHIR R4 id maximum) and every query value percent-encoded as the service itself sends it (":" "/" "|" as
# %XX, 3 bytes each; issue 16 item 4), so an EHR that encodes as fully fits too. 1,800 leaves ~240 bytes of a
# 2,048-byte limit for the base URL.
MAX_QUERY_CHARS = 1800
_LONGEST_PATIENT_ID = "x" * 64

# Value sets read from resources other than their prefix says (clinical-rules.md §8.0 "C2/C7 data": "an
# active ServiceRequest for CRRT"; §8.0 C16: warfarin MedicationRequests/Statements of ANY status within 90
# days, because inpatient warfarin is re-ordered daily and a stopped order is still recent exposure).
SERVICE_REQUEST_VALUESETS = ("proc-crrt",)
MEDICATION_HISTORY_VALUESETS = ("med-warfarin",)
# The ServiceRequest statuses the rules accept (§8.0: active; on-hold and draft orders are kept so the rules,
# not the query, decide).
_SERVICE_REQUEST_STATUSES = "active,on-hold,draft"


@dataclass(frozen=True)
class PrefetchKey:
    """One prefetch template; ``required`` keys that cannot be obtained make the call fail with 412."""

    key: str
    template: str
    required: bool


@dataclass(frozen=True)
class ServiceDefinition:
    """A CDS service as advertised by discovery (CDS Hooks 2.0 "Discovery")."""

    id: str
    hook: str
    title: str
    description: str
    usage_requirements: str
    prefetch: tuple[PrefetchKey, ...]

    def discovery_entry(self) -> dict[str, Any]:
        """The service's entry in the ``GET /cds-services`` response."""
        return {
            "hook": self.hook,
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "usageRequirements": self.usage_requirements,
            "prefetch": {p.key: p.template for p in self.prefetch},
        }


def valuesets_for(prefix: str, declared: Iterable[str] = ()) -> tuple[str, ...]:
    """Ids of every value set whose file name starts with ``prefix`` (``"lab-"``), plus ``declared``, sorted.

    Built from the files, so a new value set (``lab-magnesium``, ``proc-parathyroidectomy``) is fetched even
    before a list in fhir_mappings names it.
    """
    loaded = {vs for vs in default_index().loaded if vs.startswith(prefix)}
    return tuple(sorted(loaded | set(declared)))


def code_tokens(valueset_ids: Iterable[str]) -> list[list[str]]:
    """Per value set, its ``system|code`` search tokens (FHIR token search) not already given by an earlier set.

    Only enumerated concepts: ICD-10-CM ``is-a`` filters have no token form (they are never used on the
    Observation/Procedure/ServiceRequest/medication searches built here).
    """
    index = default_index()
    seen: set[str] = set()
    groups: list[list[str]] = []
    for valueset_id in valueset_ids:
        tokens = []
        for system in sorted({s for (s, _code), ids in index.by_code.items() if valueset_id in ids}):
            for code in index.codes_of(valueset_id, system):
                token = f"{system}|{code}"
                if token not in seen:
                    seen.add(token)
                    tokens.append(token)
        groups.append(tokens)
    return groups


def query_length(template: str) -> int:
    """What ``template`` costs in a GET URL after the base: a 64-character patient id and every query value
    percent-encoded as the service sends it (``:``, ``/`` and ``|`` as ``%XX``; issue 16 item 4)."""
    return len(build_relative_url(template, lambda _name: _LONGEST_PATIENT_ID) or template)


def _token_length(token: str) -> int:
    """A ``system|code`` token's length once percent-encoded (``http%3A%2F%2Floinc.org%7C2000-8``)."""
    return len(quote(token, safe=""))


def _pack(groups: Sequence[list[str]], room: int) -> list[list[str]]:
    """Split the token groups into lists whose ``,``-joined, percent-encoded length fits ``room``.

    Greedy, in order, keeping a value set's tokens together when they fit in one list (so, e.g., daily dialysis
    sessions and a transplant done years ago can land in separate searches that page separately).
    """
    def cost(tokens: Sequence[str]) -> int:
        return sum(_token_length(t) for t in tokens) + max(len(tokens) - 1, 0)

    chunks: list[list[str]] = []
    current: list[str] = []
    for group in groups:
        if not group:
            continue
        if current and cost(current + group) > room:
            chunks.append(current)
            current = []
        for token in group:
            if current and cost([*current, token]) > room:
                chunks.append(current)
                current = []
            current.append(token)
    if current:
        chunks.append(current)
    return chunks


def _coded_search(key: str, resource: str, valueset_ids: Iterable[str], tail: str,
                  required: bool) -> list[PrefetchKey]:
    """``resource?patient=..&code=<tokens><tail>`` keys for every code of ``valueset_ids``, split to fit.

    No key at all when the value sets have no enumerated code (an empty ``code=`` would match nothing).
    """
    head = f"{resource}?patient={PATIENT_PLACEHOLDER}&code="
    room = MAX_QUERY_CHARS - query_length(head + tail)
    chunks = _pack(code_tokens(valueset_ids), room)
    return [
        PrefetchKey(key if n == 0 else f"{key}{n + 1}", head + ",".join(chunk) + tail, required)
        for n, chunk in enumerate(chunks)
    ]


def _recent_search(key: str, resource: str, valueset_ids: Iterable[str], tail: str) -> list[PrefetchKey]:
    """An optional search without a code filter, only when one of ``valueset_ids`` has text patterns."""
    patterns = default_index().text_patterns
    if not any(patterns.get(valueset_id) for valueset_id in valueset_ids):
        return []
    return [PrefetchKey(key, f"{resource}?patient={PATIENT_PLACEHOLDER}{tail}", required=False)]


@cache
def _prefetch_keys() -> tuple[PrefetchKey, ...]:
    patient = PATIENT_PLACEHOLDER
    return (
        PrefetchKey("patient", f"Patient/{patient}", required=True),
        *_coded_search("observations", "Observation", valuesets_for("lab-", LAB_VALUESETS),
                       f"&_sort=-date&_count={_OBSERVATION_COUNT}", required=True),
        # No code filter: the condition value sets use ICD-10-CM is-a (prefix) members, and every state
        # (CKD stage, transplant, graft failure, AKI, calciphylaxis, ...) reads the problem list.
        PrefetchKey("conditions", f"Condition?patient={patient}&_count={_CONDITION_COUNT}", required=True),
        *_coded_search("procedures", "Procedure", valuesets_for("proc-", PROCEDURE_VALUESETS),
                       f"&_sort=-date&_count={_PROCEDURE_COUNT}", required=False),
        # A procedure set matched by text (e.g. "parathyroidectomy" with no code, §8.0 C2) cannot be searched by
        # code: the most recent procedures of every code are fetched as well, newest first.
        *_recent_search("recentProcedures", "Procedure", valuesets_for("proc-", PROCEDURE_VALUESETS),
                        f"&_sort=-date&_count={_PROCEDURE_COUNT}"),
        *_coded_search("serviceRequests", "ServiceRequest", SERVICE_REQUEST_VALUESETS,
                       f"&status={_SERVICE_REQUEST_STATUSES}&_count={_SERVICE_REQUEST_COUNT}", required=False),
        # Active medications: no code filter, because drugs are matched by RxNorm code or by text pattern.
        PrefetchKey(
            "medications",
            f"MedicationRequest?patient={patient}&status=active,on-hold&_count={_MEDICATION_COUNT}",
            required=False,
        ),
        PrefetchKey(
            "medicationStatements",
            f"MedicationStatement?patient={patient}&status=active&_count={_MEDICATION_COUNT}",
            required=False,
        ),
        # §8.0 C16: warfarin of any status (the rule itself sets aside entered-in-error and > 90 days), newest
        # first so a long history of daily re-orders cannot push the recent ones past the page cap.
        *_coded_search("warfarinRequests", "MedicationRequest", MEDICATION_HISTORY_VALUESETS,
                       f"&_sort=-authoredon&_count={_MEDICATION_COUNT}", required=False),
        *_coded_search("warfarinStatements", "MedicationStatement", MEDICATION_HISTORY_VALUESETS,
                       f"&_sort=-effective&_count={_MEDICATION_COUNT}", required=False),
    )


# What each prefetch key holds, in a clinician's words (the incomplete card and the viewer name unreadable data).
KEY_WORDS = {
    "patient": "patient demographics", "observations": "laboratory results", "conditions": "problem list",
    "procedures": "dialysis, transplant and other procedures", "recentProcedures": "recent procedures",
    "serviceRequests": "CRRT orders", "medications": "active medication orders",
    "medicationStatements": "medication statements", "warfarinRequests": "warfarin order history",
    "warfarinStatements": "warfarin medication statements",
}


def key_words(key: str) -> str:
    """The words for a prefetch key (split keys such as ``procedures2`` read as their base key)."""
    return KEY_WORDS.get(key.rstrip("0123456789"), key)


def resource_type_of(template: str) -> str:
    """The resource type a template reads or searches: ``Observation`` for ``Observation?patient=...``."""
    return template.split("?", 1)[0].split("/", 1)[0]


_USAGE = (
    "Needs the patient's serum calcium, phosphate, albumin, PTH, 25-OH vitamin D, ALP, eGFR, potassium and "
    "magnesium Observations, Conditions, dialysis/CRRT/transplant/parathyroidectomy Procedures, active CRRT "
    "ServiceRequests, active medications and any warfarin order or statement: either prefetched as advertised, "
    "or fetchable from fhirServer with fhirAuthorization (patient/Observation.rs, Condition.rs, Procedure.rs, "
    "ServiceRequest.rs, MedicationRequest.rs, MedicationStatement.rs, Patient.r). Without the Patient, "
    "Observations and Conditions it answers 412."
)


@cache
def service_definitions() -> tuple[ServiceDefinition, ...]:
    """All services, sorted by id so discovery output is deterministic."""
    keys = _prefetch_keys()
    services = (
        ServiceDefinition(
            id="calcinosis-patient-view",
            hook="patient-view",
            title="Calcinosis cutis and calciphylaxis risk",
            description=(
                "Summarises the patient's risk of metastatic calcification, calciphylaxis and calcinosis cutis "
                "from calcium x phosphate product, calcium, phosphate, PTH, vitamin D and kidney status, and "
                "flags missing or stale mineral labs. Decision support, not a diagnosis."
            ),
            usage_requirements=_USAGE,
            prefetch=keys,
        ),
        ServiceDefinition(
            id="calcinosis-order-select",
            hook="order-select",
            title="Calcification risk of selected calcium, phosphate and vitamin D orders",
            description=(
                "Reviews newly selected draft orders (IV calcium, IV phosphate, calcium-based binders, vitamin D, "
                "nadroparin, aluminium/magnesium binders) against the patient's calcification risk, and suggests "
                "safer alternatives. Never blocks an order."
            ),
            usage_requirements=_USAGE,
            prefetch=keys,
        ),
        ServiceDefinition(
            id="calcinosis-order-sign",
            hook="order-sign",
            title="Calcification risk check before signing calcium, phosphate and vitamin D orders",
            description=(
                "Checks the orders being signed (IV calcium, IV phosphate, calcium-based binders, vitamin D and "
                "related drugs) against the patient's calcification risk. Warns and suggests; never blocks."
            ),
            usage_requirements=_USAGE,
            prefetch=keys,
        ),
    )
    return tuple(sorted(services, key=lambda s: s.id))


def find_service(service_id: str) -> ServiceDefinition | None:
    """The service with this id, or None."""
    for service in service_definitions():
        if service.id == service_id:
            return service
    return None
