"""The three CDS services this product offers, and their discovery metadata and prefetch templates.

Prefetch templates follow CDS Hooks 2.0 "Prefetch Template": tokens name only root-level context fields
(``{{context.patientId}}``), searches use the R4 ``_sort=-date`` form and a bounded ``_count``, and the
Observation query is filtered by the LOINC codes of the lab value sets the rules use, so discovery and the
clinical mapping can never drift apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from fhir_mappings.valuesets import LAB_VALUESETS, PROCEDURE_VALUESETS, default_index

# Page sizes: a dialysis patient has ~8 relevant labs a month, so 250 covers 2-3 years; the rules look back at
# most 365 days (eGFR staging, clinical-rules.md 2.6). Paging in the fallback fetch is capped by
# CDS_FHIR_MAX_PAGES.
_OBSERVATION_COUNT = 250
_CONDITION_COUNT = 250
_PROCEDURE_COUNT = 100
_MEDICATION_COUNT = 100


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


def _code_filter(valueset_ids: Iterable[str]) -> str:
    """``system|code,system|code`` token list (FHIR token search, OR) of every coded member."""
    index = default_index()
    tokens: list[str] = []
    for valueset_id in valueset_ids:
        for system in sorted({s for (s, _code), ids in index.by_code.items() if valueset_id in ids}):
            for code in index.codes_of(valueset_id, system):
                token = f"{system}|{code}"
                if token not in tokens:
                    tokens.append(token)
    return ",".join(tokens)


@cache
def _prefetch_keys() -> tuple[PrefetchKey, ...]:
    patient = "{{context.patientId}}"
    return (
        PrefetchKey("patient", f"Patient/{patient}", required=True),
        PrefetchKey(
            "observations",
            f"Observation?patient={patient}&code={_code_filter(LAB_VALUESETS)}"
            f"&_sort=-date&_count={_OBSERVATION_COUNT}",
            required=True,
        ),
        PrefetchKey("conditions", f"Condition?patient={patient}&_count={_CONDITION_COUNT}", required=True),
        PrefetchKey(
            "procedures",
            f"Procedure?patient={patient}&code={_code_filter(PROCEDURE_VALUESETS)}"
            f"&_sort=-date&_count={_PROCEDURE_COUNT}",
            required=False,
        ),
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
    )


_USAGE = (
    "Needs the patient's serum calcium, phosphate, albumin, PTH, 25-OH vitamin D, ALP and eGFR Observations, "
    "Conditions, dialysis/transplant Procedures and active medications: either prefetched as advertised, or "
    "fetchable from fhirServer with fhirAuthorization (patient/Observation.rs, Condition.rs, Procedure.rs, "
    "MedicationRequest.rs, MedicationStatement.rs, Patient.r). Without them it answers 412."
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
