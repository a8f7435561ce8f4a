"""Every code a rule reads is fetched (issue 13 item 2).

The codes are DERIVED, not listed: the value set ids the rule and state code names at test time (string literals
``"lab-…"``, ``"cond-…"``, ``"proc-…"``, ``"med-…"`` in cds_service/rules/*.py and fhir_mappings/*.py, plus the
lab kinds of fhir_mappings/extract.py KIND_ANALYTE) are expanded to their members from the value set files, and
each member must be matched by a query of its resource type in the discovery response (GET /cds-services), and
by the queries the service really sends to ``fhirServer`` when prefetch is missing.

A query covers a code when its ``code`` parameter lists ``system|code``, or when it has no ``code`` parameter at
all (the Condition and active-medication searches: ICD-10-CM ``is-a`` members and text patterns have no token
form). The spec's two non-obvious reads are stated here from clinical-rules.md: CRRT is also read from active
ServiceRequests (§8.0 "C2/C7 data"), and warfarin from MedicationRequests/Statements of any status (§8.0 C16).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote

import pytest
import responses

from cds_service.config import load_settings
from cds_service.fhir_client import build_session
from cds_service.hook_models import parse_hook_request
from cds_service.prefetch import resolve_prefetch
from cds_service.runtime import get_runtime
from cds_service.services import MAX_QUERY_CHARS, find_service
from fhir_mappings.extract import KIND_ANALYTE
from fhir_mappings.valuesets import ICD10CM, LOINC, default_index
from tests.support.app import make_app

ROOT = Path(__file__).resolve().parents[2]
# The rules, and the mapping code that derives states, markers and order classes for them. Not valuesets.py:
# it lists every value set the loader expects, which is not what any rule reads.
RULE_SOURCES = (
    *sorted((ROOT / "cds_service" / "rules").glob("*.py")),
    *sorted(p for p in (ROOT / "fhir_mappings").glob("*.py") if p.name != "valuesets.py"),
)
VALUESET_ID = re.compile(r"""["']((?:lab|cond|proc|med)-[a-z0-9]+(?:-[a-z0-9]+)*)["']""")

# Which resource type a value set is read from, by its prefix (fhir_mappings/valuesets/README.md).
TYPES_BY_PREFIX = {
    "lab": ("Observation",),
    "cond": ("Condition",),
    "proc": ("Procedure",),
    "med": ("MedicationRequest", "MedicationStatement"),
}
# clinical-rules.md §8.0 "C2/C7 data": "an active ServiceRequest for CRRT".
ALSO_READ_FROM = {"proc-crrt": ("ServiceRequest",)}
# clinical-rules.md §8.0 C16: "no MedicationRequest ... or MedicationStatement ... for warfarin in 90 days, of
# any status except entered-in-error": these must be fetched without a status filter.
ANY_STATUS = {"med-warfarin": ("MedicationRequest", "MedicationStatement")}

FHIR = "https://ehr.example.org/fhir"
PATIENT_ID = "p" * 64  # the longest FHIR id, for the URL-length check


def rule_valueset_ids() -> set[str]:
    """Value set ids named by the rules and states as they are now, plus every lab kind the extractor reads."""
    found: set[str] = set(KIND_ANALYTE)
    for path in RULE_SOURCES:
        found.update(VALUESET_ID.findall(path.read_text(encoding="utf-8")))
    return found


@dataclass(frozen=True)
class Member:
    """One member of a value set: an enumerated code, an ICD-10-CM is-a prefix, or "matched by text"."""

    system: str
    code: str
    kind: str  # "code" | "is-a" | "text"


def members(valueset_id: str) -> list[Member]:
    """The value set's members, read from its file through the production loader."""
    index = default_index()
    found = [Member(system, code, "code") for (system, code), ids in index.by_code.items() if valueset_id in ids]
    found += [Member(ICD10CM, prefix, "is-a") for vs, prefix in index.icd_prefixes if vs == valueset_id]
    if index.text_patterns.get(valueset_id):
        found.append(Member("", "", "text"))
    return found


@dataclass(frozen=True)
class Query:
    """One search (or read) as sent: its resource type and parameters."""

    key: str
    resource_type: str
    params: dict[str, list[str]]

    def codes(self) -> set[str] | None:
        """The ``code`` tokens, or None when the search has no code filter (it returns every code)."""
        values = self.params.get("code")
        if values is None:
            return None
        return {token for value in values for token in value.split(",")}

    def covers(self, member: Member, any_status: bool = False) -> bool:
        """True when this search returns resources carrying ``member``.

        A text-pattern member can only be fetched by a search without a code filter. For the any-status reads
        (warfarin history) a text-only item is fetched while it is active, not after: a code-filtered history
        search is the price of a bounded one (README "Discovery changes in clinical revision 2"), and the miss
        errs towards an extra R24 warning, never a missed one.
        """
        if any_status and "status" in self.params and member.kind != "text":
            return False
        codes = self.codes()
        if codes is None:
            return True
        return member.kind == "code" and (f"{member.system}|{member.code}" in codes or member.code in codes)


def parse_query(key: str, relative: str) -> Query:
    """``Observation?patient=..&code=..`` -> Query (values percent-decoded the way a FHIR server reads them)."""
    path, _, query = relative.partition("?")
    params = {name: [unquote(v) for v in values]
              for name, values in parse_qs(query, keep_blank_values=True).items()}
    return Query(key, path.split("/", 1)[0], params)


def uncovered(queries: Iterable[Query], valueset_ids: Iterable[str]) -> list[str]:
    """Every (value set, resource type, member) that no query fetches, as readable lines; [] when all are."""
    queries = list(queries)
    missing: list[str] = []
    for valueset_id in sorted(valueset_ids):
        prefix = valueset_id.split("-", 1)[0]
        for resource_type in (*TYPES_BY_PREFIX[prefix], *ALSO_READ_FROM.get(valueset_id, ())):
            any_status = resource_type in ANY_STATUS.get(valueset_id, ())
            of_type = [q for q in queries if q.resource_type == resource_type]
            for member in members(valueset_id):
                if not any(q.covers(member, any_status) for q in of_type):
                    status = " (any status)" if any_status else ""
                    missing.append(f"{valueset_id}: {resource_type}{status} does not fetch "
                                   f"{member.kind} {member.system}|{member.code}")
    return missing


@pytest.fixture(scope="module")
def discovery(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The services of the real discovery endpoint."""
    app = make_app(tmp_path_factory.mktemp("discovery"))
    try:
        answer = app.test_client().get("/cds-services")
    finally:
        get_runtime(app).close()
    assert answer.status_code == 200
    services: list[dict[str, Any]] = answer.get_json()["services"]
    return services


def discovery_queries(service: dict[str, Any]) -> list[Query]:
    return [parse_query(key, template) for key, template in service["prefetch"].items()]


def fallback_urls(service_id: str) -> dict[str, str]:
    """The URLs the service requests from fhirServer when no prefetch is sent, by their paths and queries."""
    service = find_service(service_id)
    assert service is not None
    settings = load_settings({}, allowed_fhir_servers=(FHIR,), fhir_retries=0, fhir_total_timeout_s=5.0)
    hook = {"calcinosis-patient-view": "patient-view", "calcinosis-order-select": "order-select",
            "calcinosis-order-sign": "order-sign"}[service_id]
    context: dict[str, Any] = {"patientId": PATIENT_ID, "userId": "Practitioner/u1"}
    if hook != "patient-view":
        draft = {"resourceType": "MedicationRequest", "id": "d1", "status": "draft", "intent": "order",
                 "subject": {"reference": f"Patient/{PATIENT_ID}"}, "medicationCodeableConcept": {"text": "x"}}
        context["draftOrders"] = {"resourceType": "Bundle", "entry": [{"resource": draft}]}
    if hook == "order-select":
        context["selections"] = ["MedicationRequest/d1"]
    request = parse_hook_request({"hook": hook, "hookInstance": "coverage-1", "context": context,
                                  "fhirServer": FHIR}, hook)
    patient = {"resourceType": "Patient", "id": PATIENT_ID}
    with responses.RequestsMock() as rsps, ThreadPoolExecutor(max_workers=16) as executor:
        rsps.add_callback(
            responses.GET, re.compile(re.escape(FHIR) + "/.*"),
            callback=lambda req: (200, {}, json.dumps(
                patient if "/Patient/" in req.url else {"resourceType": "Bundle", "type": "searchset"})))
        resolve_prefetch(service, request, settings, build_session(settings), executor)
        urls = [str(call.request.url) for call in rsps.calls]
    assert len(urls) == len(service.prefetch)
    return {url: url[len(FHIR) + 1:] for url in urls}


# -- the derivation itself -------------------------------------------------------------------------------------


def test_the_scan_finds_the_value_sets_the_rules_read() -> None:
    """Not vacuous: the scan sees every kind of value set, including the ones revision 2 relies on."""
    ids = rule_valueset_ids()
    assert {i.split("-", 1)[0] for i in ids} == set(TYPES_BY_PREFIX), ids
    assert {"lab-calcium-total", "lab-phosphate", "lab-pth", "lab-potassium", "cond-esrd"} <= ids


def test_every_value_set_a_rule_reads_exists_and_has_members() -> None:
    index = default_index()
    problems = [i for i in sorted(rule_valueset_ids()) if i not in index.loaded]
    assert problems == [], f"rules read value sets with no file in fhir_mappings/valuesets/: {problems}"
    empty = [i for i in sorted(rule_valueset_ids()) if not members(i)]
    assert empty == [], f"value sets with no code, filter or text pattern: {empty}"


def test_the_checker_notices_a_code_that_is_not_fetched(discovery: list[dict[str, Any]]) -> None:
    """Drop one LOINC from the Observation search and one Procedure code (and the Procedure search without a
    code filter): the check must name both."""
    queries = [q for q in discovery_queries(discovery[0]) if q.key != "recentProcedures"]
    potassium = next(m for m in members("lab-potassium") if m.kind == "code")
    dropped_procedure = ""
    cut = []
    for q in queries:
        codes = sorted(q.codes() or ())
        if q.resource_type == "Observation" and codes:
            codes.remove(f"{potassium.system}|{potassium.code}")
            q = Query(q.key, q.resource_type, {**q.params, "code": [",".join(codes)]})
        elif q.key == "procedures":
            dropped_procedure = codes.pop(0)
            q = Query(q.key, q.resource_type, {**q.params, "code": [",".join(codes)]})
        cut.append(q)
    missing = uncovered(cut, rule_valueset_ids())
    assert any(line.startswith("lab-potassium: Observation") and potassium.code in line for line in missing)
    assert any(": Procedure does not fetch code " + dropped_procedure in line for line in missing), missing
    # And an active-only medication search does not satisfy warfarin of any status.
    active_only = [q for q in queries if not q.key.startswith("warfarin")]
    assert any(line.startswith("med-warfarin: MedicationRequest (any status)")
               for line in uncovered(active_only, {"med-warfarin"}))


# -- discovery and fallback cover them ---------------------------------------------------------------------------


def test_discovery_prefetch_fetches_every_code_the_rules_read(discovery: list[dict[str, Any]]) -> None:
    ids = rule_valueset_ids()
    assert len(discovery) == 3
    for service in discovery:
        assert uncovered(discovery_queries(service), ids) == [], service["id"]


@pytest.mark.parametrize("service_id", ["calcinosis-order-select", "calcinosis-order-sign",
                                        "calcinosis-patient-view"])
def test_fallback_queries_fetch_every_code_the_rules_read(service_id: str) -> None:
    """What the service really sends when prefetch is missing, decoded the way the FHIR server reads it."""
    sent = [parse_query(str(n), relative) for n, relative in enumerate(fallback_urls(service_id).values())]
    assert uncovered(sent, rule_valueset_ids()) == []


def test_fallback_queries_are_the_advertised_templates(discovery: list[dict[str, Any]]) -> None:
    for service in discovery:
        sent = {(q.resource_type, json.dumps(q.params, sort_keys=True))
                for q in (parse_query("", r) for r in fallback_urls(service["id"]).values())}
        advertised = {(q.resource_type, json.dumps(q.params, sort_keys=True))
                      for q in (parse_query("", t.replace("{{context.patientId}}", PATIENT_ID))
                                for t in service["prefetch"].values())}
        assert sent == advertised, service["id"]


def test_revision_2_codes_are_advertised(discovery: list[dict[str, Any]]) -> None:
    """Issue 13 item 2 names these: potassium (serum and whole blood), magnesium, PTH in pmol/L."""
    queries = discovery_queries(discovery[0])
    observation_codes = set().union(*(q.codes() or set() for q in queries if q.resource_type == "Observation"))
    for code in ("2823-3", "6298-4", "19123-9", "2601-3", "14866-8"):
        assert f"{LOINC}|{code}" in observation_codes, code
    procedure_sets = {"proc-parathyroidectomy", "proc-crrt", "proc-dialysis-peritoneal"}
    assert uncovered(queries, procedure_sets | {"cond-aki", "cond-kidney-graft-failure", "med-warfarin"}) == []


# -- URL length --------------------------------------------------------------------------------------------------


def test_every_advertised_query_fits_a_conservative_url_limit(discovery: list[dict[str, Any]]) -> None:
    """IIS refuses a query string over 2,048 bytes by default; each query, with a 64-character patient id and
    every query value percent-encoded as the service sends it (issue 16 item 4: ":" "/" "|" as %XX), stays
    within MAX_QUERY_CHARS, and the full URL on a typical base within 2 KB."""
    for service in discovery:
        for key, template in service["prefetch"].items():
            path, _, query = template.replace("{{context.patientId}}", PATIENT_ID).partition("?")
            pairs = [pair.split("=", 1) for pair in query.split("&") if pair]
            relative = path + "?" + "&".join(f"{name}={quote(value, safe=',')}" for name, value in pairs)
            assert len(relative) <= MAX_QUERY_CHARS, (key, len(relative))
            assert len(f"{FHIR}/{relative}") <= 2048, key


def test_a_split_search_loses_no_code_and_repeats_none(discovery: list[dict[str, Any]]) -> None:
    """Keys of one resource type with a code filter (procedures, procedures2, ...) partition the codes."""
    by_type: dict[str, list[set[str]]] = {}
    for q in discovery_queries(discovery[0]):
        if q.codes() is not None:
            by_type.setdefault(f"{q.resource_type}:{q.key.rstrip('0123456789')}", []).append(q.codes() or set())
    for name, parts in by_type.items():
        union = set().union(*parts)
        assert sum(len(p) for p in parts) == len(union), name


def test_packing_splits_long_code_lists_without_losing_or_reordering_codes() -> None:
    """services._pack: every chunk fits, nothing is lost, and a value set stays whole when it fits a chunk."""
    from cds_service.services import _pack

    groups = [[f"http://snomed.info/sct|{1000000 + 1000 * g + i}" for i in range(n)]
              for g, n in enumerate((5, 30, 3, 60))]
    room = 400
    chunks = _pack(groups, room)
    assert [t for chunk in chunks for t in chunk] == [t for group in groups for t in group]
    assert all(len(",".join(quote(t, safe="") for t in chunk)) <= room for chunk in chunks)
    assert len(chunks) > 2
    small = groups[2]  # 3 codes: never split across two chunks
    assert any(all(t in chunk for t in small) for chunk in chunks)
