"""Typed FHIR at the edge (issue 18): msgspec Structs holding exactly the fields the extraction reads.

A resource is decoded (from JSON bytes) or converted (from a dict) into one of these Structs in compiled code;
fields nobody reads are never materialised. Every field is optional: FHIR data in the wild (DSTU2, sandboxes,
hand-written test records) is incomplete, and a missing field means what it meant in the lenient reading.

A resource that does not fit the typed shape somewhere (a number as a string, an object where a list belongs)
is read by ``read`` in tolerant mode: the offending value alone is removed (a field is dropped, a list element
becomes None) and the conversion is repeated, so the resource is still read, through the same Struct and the
same extraction code. What was removed is returned as ``Misfits`` (JSON path -> what was found there) so the
extraction can name the problem exactly as the lenient reading did ("valueQuantity is not an object").

Unions mirror the shapes the lenient reading accepted (issue #7 golden cases): a CodeableConcept may be a list
of concepts or carry a bare Coding's ``system``/``code``; a status may be a string (DSTU2) or a concept (R4).
List elements are ``X | None`` so that a misfit element keeps its position (an ``interpretation`` list whose
first item is junk still has no first code).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final, TypeVar, Union

import msgspec

# What tolerant mode found at a removed path: msgspec's JSON type name ("object", "array", "str", "int",
# "float", "bool", "null") or OUT_OF_RANGE for a number no float can hold (10**400).
OUT_OF_RANGE: Final = "out of range"
Misfits = Mapping[str, str]
NO_MISFITS: Final[Misfits] = {}
# Bound on removals per resource: each removal deletes at least one JSON value, and a resource with more
# misfits than this is unreadable rather than worth reading ("malformed").
MAX_MISFITS: Final = 256

_AT = re.compile(r" - at `(\$[^`]*)`$")
_GOT = re.compile(r", got `([a-z]+)`")
_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


class Unreadable(ValueError):
    """The value does not fit the shape even after tolerant removals (too many, or the whole value)."""


# --- data types -------------------------------------------------------------------------------------------------

class Coding(msgspec.Struct, gc=False):
    """FHIR Coding: the three fields the value sets and displays use."""

    system: str | None = None
    code: str | None = None
    display: str | None = None


class CodeableConcept(msgspec.Struct, gc=False):
    """FHIR CodeableConcept; ``coding`` may be one Coding, and ``system``/``code``/``display`` are those of a
    bare Coding sent where a concept belongs (both shapes were read before issue 18 and stay readable)."""

    coding: list[Coding | None] | Coding | None = None
    text: str | None = None
    system: str | None = None
    code: str | None = None
    display: str | None = None


# A concept as the lenient reading accepted it where codes are looked up: one concept or a list of them.
Concept = Union[CodeableConcept, list[CodeableConcept | None]]  # noqa: UP007 (a runtime alias msgspec reads)


class Quantity(msgspec.Struct, gc=False):
    """FHIR Quantity (``system`` is not read: units are recognised by code or text, units.toml)."""

    value: float | None = None
    comparator: str | None = None
    unit: str | None = None
    code: str | None = None


class Range(msgspec.Struct, gc=False):
    """FHIR Range (an age band of a reference range)."""

    low: Quantity | None = None
    high: Quantity | None = None


class Period(msgspec.Struct, gc=False):
    """FHIR Period, times as sent (parsed by ``fhir_mappings.datetimes``)."""

    start: str | None = None
    end: str | None = None


class Reference(msgspec.Struct, gc=False):
    """FHIR Reference."""

    reference: str | None = None
    display: str | None = None


class Meta(msgspec.Struct, gc=False):
    """The two ``meta`` fields the evidence fingerprint records (issue 15 item 4)."""

    versionId: str | None = None  # noqa: N815 (FHIR's name)
    lastUpdated: str | None = None  # noqa: N815


class ReferenceRange(msgspec.Struct, gc=False):
    """Observation.referenceRange; ``appliesTo`` is only tested for being non-empty (§8 C11)."""

    low: Quantity | None = None
    high: Quantity | None = None
    age: Range | None = None
    appliesTo: Any = None  # noqa: N815


class Ingredient(msgspec.Struct, gc=False):
    """Medication.ingredient (R4 itemCodeableConcept)."""

    itemCodeableConcept: Concept | None = None  # noqa: N815


class MedicationBody(msgspec.Struct, gc=False):
    """What a Medication says about the drug; also the shape of a ``contained`` Medication (any resourceType)."""

    id: str | None = None
    code: Concept | None = None
    ingredient: list[Ingredient | None] | None = None


# --- resources (tagged by resourceType, so one decode picks the class) ------------------------------------------

class Resource(msgspec.Struct, gc=False, tag_field="resourceType", tag=True):
    """Fields every resource the service reads has: id, meta (evidence fingerprint), subject (patient id)."""

    id: str | None = None
    meta: Meta | None = None
    subject: Reference | None = None


class Patient(Resource, tag=True):
    """FHIR Patient."""

    birthDate: str | None = None  # noqa: N815
    gender: str | None = None


class Observation(Resource, tag=True):
    """FHIR Observation (R4 and DSTU2 shapes)."""

    status: str | None = None
    code: Concept | None = None
    valueQuantity: Quantity | None = None  # noqa: N815
    dataAbsentReason: Any = None  # noqa: N815 (only its presence counts, section 2.1)
    effectiveDateTime: str | None = None  # noqa: N815
    effectivePeriod: Period | None = None  # noqa: N815
    effectiveInstant: str | None = None  # noqa: N815
    issued: str | None = None
    referenceRange: list[ReferenceRange | None] | None = None  # noqa: N815
    specimen: Reference | None = None
    interpretation: list[CodeableConcept | None] | CodeableConcept | None = None


Status = Union[str, CodeableConcept, list[CodeableConcept | None]]  # noqa: UP007 (DSTU2 string or R4 concept)


class Condition(Resource, tag=True):
    """FHIR Condition (R4, DSTU2 ``dateRecorded``)."""

    code: CodeableConcept | None = None
    clinicalStatus: Status | None = None  # noqa: N815
    verificationStatus: Status | None = None  # noqa: N815
    onsetDateTime: str | None = None  # noqa: N815
    recordedDate: str | None = None  # noqa: N815
    dateRecorded: str | None = None  # noqa: N815
    abatementBoolean: bool | None = None  # noqa: N815
    abatementDateTime: str | None = None  # noqa: N815
    abatementPeriod: Period | None = None  # noqa: N815
    abatementString: Any = None  # noqa: N815 (presence only: abated at an unknown time)
    abatementAge: Any = None  # noqa: N815
    abatementRange: Any = None  # noqa: N815


class Procedure(Resource, tag=True):
    """FHIR Procedure."""

    status: str | None = None
    code: Concept | None = None
    performedDateTime: str | None = None  # noqa: N815
    performedPeriod: Period | None = None  # noqa: N815


class ServiceRequest(Resource, tag=True):
    """FHIR ServiceRequest (§8.0 C2/C7: an order for CRRT)."""

    status: str | None = None
    code: Concept | None = None


class Medication(Resource, tag=True):
    """FHIR Medication (referenced by id from a medication request or statement)."""

    code: Concept | None = None
    ingredient: list[Ingredient | None] | None = None


class _MedicationUse(Resource):
    """The fields MedicationRequest, MedicationOrder (DSTU2) and MedicationStatement share for the rules."""

    status: str | None = None
    intent: str | None = None
    medicationCodeableConcept: CodeableConcept | None = None  # noqa: N815
    medicationReference: Reference | None = None  # noqa: N815
    contained: list[MedicationBody | None] | None = None
    authoredOn: str | None = None  # noqa: N815
    dateWritten: str | None = None  # noqa: N815
    effectiveDateTime: str | None = None  # noqa: N815
    effectivePeriod: Period | None = None  # noqa: N815
    dateAsserted: str | None = None  # noqa: N815


class MedicationRequest(_MedicationUse, tag=True):
    """FHIR MedicationRequest."""


class MedicationOrder(_MedicationUse, tag=True):
    """DSTU2 MedicationOrder."""


class MedicationStatement(_MedicationUse, tag=True):
    """FHIR MedicationStatement."""


class DiagnosticReport(Resource, tag=True):
    """FHIR DiagnosticReport: only which Observations it groups."""

    result: list[Reference | None] | None = None


class OperationOutcome(Resource, tag=True):
    """A search's warnings (Bundle entry with search.mode = outcome) or a failed prefetch: never patient data."""


class BundleLink(msgspec.Struct, gc=False):
    """Bundle.link: the ``next`` page of a paged search."""

    relation: str | None = None
    url: str | None = None


MedicationUse = MedicationRequest | MedicationOrder | MedicationStatement
AnyResource = (Patient | Observation | Condition | Procedure | ServiceRequest | Medication | MedicationRequest
               | MedicationOrder | MedicationStatement | DiagnosticReport)


class BundleEntry(msgspec.Struct, gc=False):
    """Bundle.entry: only its resource."""

    resource: AnyResource | OperationOutcome | None = None


class Bundle(Resource, tag=True):
    """A FHIR Bundle as a prefetch value: the entries' resources and the paging links."""

    entry: list[BundleEntry] | None = None
    link: list[BundleLink] | None = None


PrefetchValue = Bundle | AnyResource | OperationOutcome


class _Envelope(msgspec.Struct, gc=False):
    """The CDS Hooks envelope fields as plain JSON values (UNSET where absent; a JSON null is None)."""

    hook: Any = msgspec.UNSET
    hookInstance: Any = msgspec.UNSET  # noqa: N815 (the spec's name)
    fhirServer: Any = msgspec.UNSET  # noqa: N815
    fhirAuthorization: Any = msgspec.UNSET  # noqa: N815
    context: Any = msgspec.UNSET


class HookEnvelope(_Envelope):
    """A CDS Hooks request body decoded in one pass (issue 18): ``prefetch`` typed FHIR, the envelope fields as
    plain values, which ``cds_service.hook_models`` validates against its declared shape."""

    prefetch: dict[str, PrefetchValue | None] | None = None


class HookEnvelopeRawPrefetch(_Envelope):
    """The same body with each prefetch value kept raw: read when one value does not fit the typed shape, so
    that only that value is read untyped (``decode_prefetch_value`` per key)."""

    prefetch: dict[str, msgspec.Raw] | None = None


ENVELOPE_FIELDS: Final = _Envelope.__struct_fields__  # the envelope fields other than the prefetch
_ENVELOPE_DECODER: Final = msgspec.json.Decoder(HookEnvelope)
_RAW_PREFETCH_DECODER: Final = msgspec.json.Decoder(HookEnvelopeRawPrefetch)
_PREFETCH_VALUE_DECODER: Final = msgspec.json.Decoder(PrefetchValue | None)


def decode_envelope(body: bytes) -> HookEnvelope:
    """The hook body decoded in one pass; raises msgspec.ValidationError when a prefetch value does not fit
    the typed shape, msgspec.DecodeError or RecursionError when the body is not JSON the reader takes."""
    return _ENVELOPE_DECODER.decode(body)


def decode_envelope_raw_prefetch(body: bytes) -> HookEnvelopeRawPrefetch:
    """The hook body with the prefetch values left raw; raises as ``decode_envelope``."""
    return _RAW_PREFETCH_DECODER.decode(body)


def decode_prefetch_value(value: msgspec.Raw) -> PrefetchValue | None:
    """One prefetch value typed; raises as ``decode_envelope`` when it does not fit."""
    decoded: PrefetchValue | None = _PREFETCH_VALUE_DECODER.decode(value)
    return decoded


# --- reading a resource that may be typed or a JSON dict (FHIR server answers, tests) -----------------------------

def identity(resource: object) -> tuple[str | None, str | None]:
    """(resourceType, id) of a typed resource or a JSON dict; None where absent or not a string."""
    if isinstance(resource, Resource):
        return resource_type(resource), resource.id
    if isinstance(resource, dict):
        rtype, rid = resource.get("resourceType"), resource.get("id")
        return (rtype if isinstance(rtype, str) else None), (rid if isinstance(rid, str) else None)
    return None, None


def version_of(resource: object) -> tuple[str, str]:
    """(meta.versionId, meta.lastUpdated) of a typed resource or a JSON dict, "" where absent."""
    if isinstance(resource, Resource):
        meta = resource.meta
        if meta is None:
            return "", ""
        return meta.versionId or "", meta.lastUpdated or ""
    raw = resource.get("meta") if isinstance(resource, dict) else None
    if not isinstance(raw, dict):
        return "", ""
    version, updated = raw.get("versionId"), raw.get("lastUpdated")
    return (version if isinstance(version, str) else ""), (updated if isinstance(updated, str) else "")


def subject_reference(resource: object) -> str | None:
    """``subject.reference`` of a typed resource or a JSON dict, if it is a string."""
    if isinstance(resource, Resource):
        return resource.subject.reference if resource.subject is not None else None
    subject = resource.get("subject") if isinstance(resource, dict) else None
    ref = subject.get("reference") if isinstance(subject, dict) else None
    return ref if isinstance(ref, str) else None


# resourceType -> Struct, for the types extraction reads; any other resource type is not read at all.
RESOURCE_TYPES: Final[dict[str, type[Resource]]] = {
    cls.__name__: cls for cls in (Patient, Observation, Condition, Procedure, ServiceRequest, Medication,
                                  MedicationRequest, MedicationOrder, MedicationStatement, DiagnosticReport)
}


def resource_type(resource: Resource) -> str:
    """The FHIR resourceType of a typed resource (its Struct tag is its class name)."""
    return type(resource).__name__


# --- tolerant reading -------------------------------------------------------------------------------------------

T = TypeVar("T")


def read(shape: type[T], data: object) -> tuple[T, Misfits]:
    """``data`` (JSON-like Python values) as ``shape``: typed when it fits, else in tolerant mode.

    Tolerant mode removes each value msgspec rejects (the field is dropped, a list element becomes None) and
    converts again; the removed paths come back with what was found there. The caller's data is never changed
    (only the containers on a removed value's path are copied). Raises ``Unreadable`` when the value itself
    does not fit (not an object, another resourceType) or after ``MAX_MISFITS`` removals.
    """
    try:
        return msgspec.convert(data, shape), NO_MISFITS
    except msgspec.ValidationError as exc:
        error = exc
    misfits: dict[str, str] = {}
    for _ in range(MAX_MISFITS):
        message = str(error)
        at = _AT.search(message)
        path = at.group(1) if at else "$"
        steps: list[str | int] = [name if name else int(index) for name, index in _STEP.findall(path)]
        if not steps or path in misfits or (steps[0] == "resourceType" and len(steps) == 1):
            raise Unreadable(message) from error
        got = _GOT.search(message)
        misfits[path] = got.group(1) if got else OUT_OF_RANGE if "out of range" in message else "value"
        data = _without(data, steps)
        try:
            return msgspec.convert(data, shape), misfits
        except msgspec.ValidationError as exc:
            error = exc
    raise Unreadable(f"more than {MAX_MISFITS} misfits")


_INDEX = re.compile(r"\[\d+\]")


def misfit_fields(misfits: Misfits) -> tuple[str, ...]:
    """The fields tolerant mode left out, as field paths without list positions (``referenceRange[].low.value``),
    sorted and once each: what an audit entry names (never a value, and a bounded set of texts however many list
    items a hostile resource holds)."""
    return tuple(sorted({_INDEX.sub("[]", path).removeprefix("$").removeprefix(".") for path in misfits}))


def _without(data: Any, steps: list[str | int]) -> Any:
    """A copy of ``data`` with the value at ``steps`` removed (a key deleted, a list item set to None)."""
    step, rest = steps[0], steps[1:]
    copy: Any
    if isinstance(data, dict):
        copy = dict(data)
        if not rest:
            copy.pop(step, None)
        elif step in copy:
            copy[step] = _without(copy[step], rest)
        return copy
    if isinstance(data, list | tuple) and isinstance(step, int) and step < len(data):
        copy = list(data)
        copy[step] = None if not rest else _without(copy[step], rest)
        return copy
    return data


def as_concept(value: object) -> Concept | None:
    """Any JSON value read as a concept (a CodeableConcept, a bare Coding or a list of them); None if neither."""
    if isinstance(value, dict | list):
        try:
            return read(Concept, value)[0]  # type: ignore[arg-type]
        except Unreadable:
            return None
    return None
