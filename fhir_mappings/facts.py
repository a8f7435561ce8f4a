"""Immutable clinical facts with provenance, extracted from FHIR JSON (see ``extract.py``).

Every fact records where it came from (resource type and id), what the source said (original value
and unit) and when (timezone-aware UTC). Rules read facts only; they never see raw FHIR.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime


@dataclass(frozen=True)
class LabResult:
    """One eligible numeric laboratory result, normalised to the analyte's canonical unit."""

    analyte: str               # key of units.toml (calcium, phosphate, ...)
    kind: str                  # value set id: lab-calcium-total, lab-calcium-ionized, lab-phosphate, ...
    value: float               # canonical unit
    unit: str                  # canonical unit
    original_value: float
    original_unit: str
    time: datetime
    resource_type: str
    resource_id: str
    code: str = ""             # the LOINC that classified it
    comparator: str = ""       # "", ">", ">=", "<", "<="
    time_uncertain: bool = False   # only `issued` was available (section 2.1)
    specimen: str = ""
    reports: frozenset[str] = frozenset()  # DiagnosticReports listing this result
    ref_low: float | None = None   # lab reference range, canonical unit
    ref_high: float | None = None
    status: str = "final"
    # §8 C11: True when ref_low/ref_high came from a referenceRange whose `age` band covers the patient's age.
    ref_age_banded: bool = False
    interpretation: str = ""   # first code of Observation.interpretation ("H", "HH", "L", "LL", ...)

    @property
    def is_lower_bound(self) -> bool:
        """``>``/``>=``: the true value is at least ``value`` (section 2.1)."""
        return self.comparator in (">", ">=")

    @property
    def is_upper_bound(self) -> bool:
        """``<``/``<=``: the true value is at most ``value``; it never counts as exceeding."""
        return self.comparator in ("<", "<=")

    @property
    def reference(self) -> str:
        """Relative reference ``Type/id``."""
        return f"{self.resource_type}/{self.resource_id}"

    def exceeds(self, threshold: float, inclusive: bool = False) -> bool:
        """Whether the result is above ``threshold`` (``>=`` when inclusive), honouring comparators."""
        if self.is_upper_bound:
            return False
        return self.value >= threshold if inclusive else self.value > threshold

    def below(self, threshold: float, inclusive: bool = False) -> bool:
        """Whether the result is below ``threshold``; a lower-bound value never counts as below."""
        if self.is_lower_bound:
            return False
        return self.value <= threshold if inclusive else self.value < threshold


_new_instance = object.__new__
_set_attribute = object.__setattr__
_NO_REPORTS: frozenset[str] = frozenset()


def new_lab_result(
    analyte: str, kind: str, value: float, unit: str, original_value: float, original_unit: str, time: datetime,
    resource_type: str, resource_id: str, code: str, comparator: str, time_uncertain: bool, specimen: str,
    ref_low: float | None, ref_high: float | None, status: str, ref_age_banded: bool = False,
    interpretation: str = "",
) -> LabResult:
    """``LabResult(...)`` with no reports, built ~3x faster for the extraction hot path (issue #7).

    A frozen dataclass's ``__init__`` sets each of the 17 fields with ``object.__setattr__`` (~2.3 us per result,
    0.35 ms of a 150-lab record); this fills the instance ``__dict__`` in one step with the same keys in the same
    order, so the object is indistinguishable (equality, hash, repr, ``vars``, still frozen);
    ``test_extract_fast_paths.py`` checks that against ``LabResult(...)`` and that no field is missing. The price
    is memory: a full dictionary instead of CPython's inline attribute values, ~300 bytes more per result
    (1.5 MB for a 5,000-lab record, next to the ~100 MB its parsed JSON takes).
    """
    obj = _new_instance(LabResult)
    _set_attribute(obj, "__dict__", {
        "analyte": analyte, "kind": kind, "value": value, "unit": unit, "original_value": original_value,
        "original_unit": original_unit, "time": time, "resource_type": resource_type, "resource_id": resource_id,
        "code": code, "comparator": comparator, "time_uncertain": time_uncertain, "specimen": specimen,
        "reports": _NO_REPORTS, "ref_low": ref_low, "ref_high": ref_high, "status": status,
        "ref_age_banded": ref_age_banded, "interpretation": interpretation,
    })
    return obj


@dataclass(frozen=True)
class ConditionFact:
    """An active (clinicalStatus active/recurrence/relapse), non-refuted Condition."""

    groups: frozenset[str]     # value set ids it belongs to
    code: str
    system: str
    display: str
    established: bool          # confirmed or no verificationStatus; False = possible (section 2.1)
    time: datetime | None      # onset, else recordedDate
    resource_id: str
    recorded: datetime | None = None


@dataclass(frozen=True)
class ProcedureFact:
    """A completed / in-progress Procedure in one of the procedure value sets.

    §8.0 procedure dates: ``start`` = performedDateTime, else performedPeriod.start; ``end`` = performedPeriod.end,
    else start + 4 h; ``time`` = ``end`` (what "within N days" tests). performedString/Age/Range or no value: all
    None (undated: history, never current).
    """

    groups: frozenset[str]
    code: str
    display: str
    time: datetime | None
    resource_id: str
    start: datetime | None = None
    end: datetime | None = None
    status: str = ""


def new_condition_fact(
    groups: frozenset[str], code: str, system: str, display: str, established: bool, time: datetime | None,
    resource_id: str, recorded: datetime | None,
) -> ConditionFact:
    """``ConditionFact(...)`` without the frozen ``__init__``'s per-field calls (see ``new_lab_result``)."""
    obj = _new_instance(ConditionFact)
    _set_attribute(obj, "__dict__", {
        "groups": groups, "code": code, "system": system, "display": display, "established": established,
        "time": time, "resource_id": resource_id, "recorded": recorded})
    return obj


def new_procedure_fact(
    groups: frozenset[str], code: str, display: str, time: datetime | None, resource_id: str,
    start: datetime | None = None, end: datetime | None = None, status: str = "",
) -> ProcedureFact:
    """``ProcedureFact(...)`` without the frozen ``__init__``'s per-field calls (see ``new_lab_result``)."""
    obj = _new_instance(ProcedureFact)
    _set_attribute(obj, "__dict__", {
        "groups": groups, "code": code, "display": display, "time": time, "resource_id": resource_id,
        "start": start, "end": end, "status": status})
    return obj


@dataclass(frozen=True)
class MedicationFact:
    """A medication (MedicationRequest or MedicationStatement) classified by value set.

    ``time``: MedicationRequest.authoredOn; MedicationStatement.effective[x] (dateTime, or period end else start), else
    dateAsserted (§8.0 C16). None when absent or unusable.
    """

    classes: frozenset[str]
    name: str
    resource_type: str
    resource_id: str
    status: str = ""
    time: datetime | None = None


@dataclass(frozen=True)
class ServiceRequestFact:
    """An active / on-hold / draft ServiceRequest whose code is in a procedure value set (§8.0 C2/C7: CRRT)."""

    groups: frozenset[str]
    code: str
    display: str
    status: str
    resource_id: str


@dataclass(frozen=True)
class DraftOrder:
    """One draft MedicationRequest from ``context.draftOrders`` (section 2.8)."""

    resource_id: str
    name: str                  # untrusted EHR text: escape before display
    classes: frozenset[str]    # med-* ids after route logic (e.g. med-iv-calcium only when IV)
    route: str                 # "iv" | "not-iv" | "unknown" | "none"
    route_inferred: bool       # no route given; injectable calcium/phosphate salt treated as IV
    route_text: str
    dose_text: str
    is_calcium_chloride: bool
    central_line: bool
    selected: bool
    excluded_reason: str = ""  # thiosulfate / dialysate / lock solution / CRRT fluid ...
    is_parenteral_nutrition: bool = False  # §8 C7: a PN admixture (caps R08/R09 at info)

    @property
    def reference(self) -> str:
        """``MedicationRequest/<id>`` as used in selections and delete actions."""
        return f"MedicationRequest/{self.resource_id}"


@dataclass(frozen=True)
class Skipped:
    """A resource that could not be used because it was malformed."""

    resource_type: str
    id: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        """The audit-log shape ``{resource_type, id, reason}``."""
        return {"resource_type": self.resource_type, "id": self.id, "reason": self.reason}


@dataclass(frozen=True)
class TolerantRead:
    """A resource read in tolerant mode (issue 18): it did not fit the typed shape, the values of the wrong type
    were left out, and the rest was used. ``fields`` names what was left out (``fhir_mappings.wire.misfit_fields``),
    never a value."""

    resource_type: str
    id: str
    fields: tuple[str, ...]


@dataclass(frozen=True)
class SetAside:
    """A result set aside as a data error (§8 C6): implausible value or date. Named on cards, never used.

    Unlike ``Skipped`` it carries the value as reported, for the card detail; it must never be logged.
    """

    resource_type: str
    resource_id: str
    label: str                 # display name of the analyte, e.g. "Calcium"
    value_text: str            # as reported, e.g. "30 mg/dL"; "" if none
    time: datetime | None
    reason: str                # short words for a clinician, e.g. "dated in the future"


@dataclass(frozen=True)
class PatientFacts:
    """Everything the rules may use about one patient at one invocation time."""

    now: datetime
    patient_id: str
    birth_date: date | None
    gender: str
    labs: tuple[LabResult, ...] = ()
    conditions: tuple[ConditionFact, ...] = ()
    possible_conditions: tuple[ConditionFact, ...] = ()
    procedures: tuple[ProcedureFact, ...] = ()
    medications: tuple[MedicationFact, ...] = ()
    orders: tuple[DraftOrder, ...] = ()
    skipped: tuple[Skipped, ...] = field(default_factory=tuple)
    set_aside: tuple[SetAside, ...] = ()
    # §8.0 C16: every classified MedicationRequest/Statement of any status except entered-in-error.
    medication_history: tuple[MedicationFact, ...] = ()
    service_requests: tuple[ServiceRequestFact, ...] = ()

    def results(self, *kinds: str) -> list[LabResult]:
        """Results of the given kinds (value set ids), newest first (a new list the caller may change).

        Memoised per ``kinds`` on this instance: the states and rules ask ~20 times per evaluation, each a pass
        over every lab (100,000 steps for a 5,000-lab record; issue #7). The facts are immutable, so the answer
        cannot change; the memo lives outside the dataclass fields (no effect on equality, repr or ``replace``).
        """
        memo: dict[tuple[str, ...], list[LabResult]] | None = self.__dict__.get("_results_memo")
        if memo is None:
            # One pass groups every lab by kind (in record order), then each group gets the same stable sort.
            memo = {}
            for lab in self.labs:
                group = memo.get((lab.kind,))
                if group is None:
                    memo[(lab.kind,)] = [lab]
                else:
                    group.append(lab)
            for group in memo.values():
                group.sort(key=_lab_time, reverse=True)
            _set_attribute(self, "_results_memo", memo)
        found = memo.get(kinds)
        if found is None:
            if len(kinds) == 1:
                found = []  # no lab of that kind
            else:  # several kinds: filter in record order, then the same stable sort
                found = [r for r in self.labs if r.kind in kinds]
                found.sort(key=_lab_time, reverse=True)
            memo[kinds] = found
        return list(found)

    def tolerant_reads(self) -> tuple[TolerantRead, ...]:
        """The resources that did not fit the typed shape and were read in tolerant mode (issue 18,
        ``fhir_mappings.wire``). Kept beside the fields, like the results memo: it says how the facts were read,
        not what they are, so it takes no part in equality or ``replace``."""
        found: tuple[TolerantRead, ...] = self.__dict__.get("_tolerant_reads", ())
        return found

    def record_tolerant_reads(self, reads: tuple[TolerantRead, ...]) -> None:
        """Set what ``tolerant_reads`` answers (``fhir_mappings.extract`` does, once per extraction)."""
        _set_attribute(self, "_tolerant_reads", reads)

    def has_condition(self, *groups: str) -> bool:
        """True when an established active condition belongs to any of ``groups``."""
        return any(c.groups.intersection(groups) for c in self.conditions)

    def conditions_in(self, *groups: str) -> list[ConditionFact]:
        """Established active conditions in any of ``groups``."""
        return [c for c in self.conditions if c.groups.intersection(groups)]

    def has_medication(self, *classes: str) -> bool:
        """True when an active medication belongs to any of ``classes``."""
        return any(m.classes.intersection(classes) for m in self.medications)

    def age_years(self) -> float | None:
        """Age at ``now`` in (fractional) years, or None when the birth date is unknown."""
        if self.birth_date is None:
            return None
        today = self.now.date()
        years = today.year - self.birth_date.year
        if (today.month, today.day) < (self.birth_date.month, self.birth_date.day):
            years -= 1
        anniversary_year = self.birth_date.year + years
        try:
            last = self.birth_date.replace(year=anniversary_year)
        except ValueError:  # 29 February
            last = date(anniversary_year, 3, 1)
        return years + (today - last).days / 366.0


def _lab_time(result: LabResult) -> datetime:
    return result.time
