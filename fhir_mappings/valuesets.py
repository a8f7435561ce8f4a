"""Load the ValueSet JSON files in ``fhir_mappings/valuesets/`` once and answer membership questions.

File format (agreed with the terminology data): one FHIR R4 ValueSet per ``<id>.json``;
``compose.include[]`` holds ``{system, concept: [{code, display}]}`` enumerations, or for ICD-10-CM an
``is-a`` filter meaning "this code and every code below it" (prefix match on the dotted code);
medication and route value sets carry ValueSet-level ``text-pattern`` extensions (case-insensitive
Python regexes) used as the text fallback when no code matches.

A missing or unreadable file never breaks import: the index records it in ``problems`` and the
content check reports it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

TEXT_PATTERN_URL = "https://calcinosis-cds.org/fhir/StructureDefinition/text-pattern"
VALUESET_URL_PREFIX = "https://calcinosis-cds.org/fhir/ValueSet/"

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
V3_ROUTE = "http://terminology.hl7.org/CodeSystem/v3-RouteOfAdministration"

# Equivalent spellings of the code systems seen in real feeds (OIDs, http/https variants).
_SYSTEM_ALIASES = {
    "urn:oid:2.16.840.1.113883.6.1": LOINC,
    "https://loinc.org": LOINC,
    "urn:oid:2.16.840.1.113883.6.96": SNOMED,
    "https://snomed.info/sct": SNOMED,
    "urn:oid:2.16.840.1.113883.6.90": ICD10CM,
    "http://hl7.org/fhir/sid/icd-10-cm/": ICD10CM,
    "urn:oid:2.16.840.1.113883.6.88": RXNORM,
    "urn:oid:2.16.840.1.113883.5.112": V3_ROUTE,
    "http://hl7.org/fhir/v3/RouteOfAdministration": V3_ROUTE,
}

LAB_VALUESETS = (
    "lab-calcium-total", "lab-calcium-blood", "lab-calcium-ionized", "lab-calcium-corrected",
    "lab-phosphate", "lab-albumin", "lab-pth", "lab-vitamin-d-25oh", "lab-vitamin-d-125", "lab-alp",
    "lab-creatinine", "lab-egfr", "lab-potassium", "lab-urate", "lab-bmi", "lab-bicarbonate", "lab-magnesium",
)
CONDITION_VALUESETS = (
    "cond-esrd", "cond-ckd-stage-5", "cond-ckd-stage-5-dialysis", "cond-dialysis-dependence",
    "cond-ckd-stage-4", "cond-ckd-stage-3", "cond-ckd-unspecified", "cond-kidney-transplant",
    "cond-other-transplant", "cond-hyperparathyroidism", "cond-calciphylaxis", "cond-calcinosis-cutis",
    "cond-dermatomyositis", "cond-juvenile-dermatomyositis", "cond-systemic-sclerosis", "cond-sle",
    "cond-sarcoidosis", "cond-tumor-lysis", "cond-milk-alkali", "cond-malignancy",
    "cond-multiple-myeloma", "cond-leukemia", "cond-paget", "cond-diabetes", "cond-obesity", "cond-aki",
    "cond-hypervitaminosis-d", "cond-kidney-graft-failure",
)
# proc-dialysis-peritoneal and proc-crrt are subsets of proc-dialysis (§8.0): a PD or CRRT session is in both.
PROCEDURE_VALUESETS = (
    "proc-dialysis", "proc-dialysis-peritoneal", "proc-crrt", "proc-kidney-transplant", "proc-parathyroidectomy",
)
MEDICATION_VALUESETS = (
    "med-iv-calcium", "med-iv-phosphate", "med-oral-calcium", "med-vitamin-d", "med-active-vitamin-d",
    "med-nadroparin", "med-warfarin", "med-al-mg-binder", "med-aluminium-binder", "med-magnesium-binder",
    "med-sodium-bicarbonate", "med-thiosulfate", "med-calcium-exclusions",
)
ROUTE_VALUESETS = ("route-iv", "route-not-iv")
EXPECTED_VALUESETS = (
    LAB_VALUESETS + CONDITION_VALUESETS + PROCEDURE_VALUESETS + MEDICATION_VALUESETS + ROUTE_VALUESETS
)


def normalize_system(system: object) -> str:
    """Canonical code-system URI (aliases folded); '' when absent or not a string."""
    if not isinstance(system, str):
        return ""
    system = system.strip()
    return _SYSTEM_ALIASES.get(system, system)


_MEMO_LIMIT = 50_000


def _icd_key(code: str) -> str:
    return code.replace(".", "").strip().upper()


@dataclass
class CodeIndex:
    """Membership index over all loaded value sets (built once, read-only afterwards)."""

    by_code: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    # ICD-10-CM is-a filters: (value set id, undotted prefix)
    icd_prefixes: list[tuple[str, str]] = field(default_factory=list)
    text_patterns: dict[str, list[re.Pattern[str]]] = field(default_factory=dict)
    # (system, code) -> the display the value set files give it: a name for a coded fact that came without one
    displays: dict[tuple[str, str], str] = field(default_factory=dict)
    loaded: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)
    # (system, code) as sent -> value set ids. The index does not change after build_index, and a record
    # repeats the same few codes hundreds of times (monthly labs, 100 dialysis sessions), so each distinct
    # code is resolved once per process (BENCHMARKS.md, issue #7). Bounded: codes come from the request.
    _memo: dict[tuple[object, object], frozenset[str]] = field(
        default_factory=dict, init=False, repr=False, compare=False)
    # value set id -> (pattern count, one matcher for all its text patterns); see _text_matcher.
    _text_matchers: dict[str, tuple[int, Callable[[str], bool]]] = field(
        default_factory=dict, init=False, repr=False, compare=False)
    # value set ids -> (pattern count of each, one matcher for all their text patterns); see text_sets_matching.
    _any_text_matchers: dict[tuple[str, ...], tuple[tuple[int, ...], Callable[[str], bool]]] = field(
        default_factory=dict, init=False, repr=False, compare=False)
    # (system, code, restriction) -> sorted ids: what the extractors ask per resource (issue #7).
    _within_memo: dict[tuple[object, object, frozenset[str]], tuple[str, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    def members(self, system: object, code: object) -> frozenset[str]:
        """Ids of every value set containing (system, code), memoised; empty when none."""
        key = (system, code)
        try:
            return self._memo[key]
        except KeyError:
            pass
        except TypeError:  # an unhashable system (malformed input): answer without memoising
            return self._lookup(system, code)
        found = self._lookup(system, code)
        if len(self._memo) >= _MEMO_LIMIT:
            self._memo.clear()  # hostile input with endless distinct codes must not grow memory
        self._memo[key] = found
        return found

    def members_within(self, system: object, code: object, within: frozenset[str]) -> tuple[str, ...]:
        """Sorted ids of the value sets in ``within`` containing (system, code), memoised; () when none.

        Equal to ``tuple(sorted(self.members(system, code) & within))``: one dictionary lookup for the
        question every Observation asks ("which lab value sets is this code in?").
        """
        key = (system, code, within)
        try:
            return self._within_memo[key]
        except KeyError:
            pass
        except TypeError:  # unhashable input: answer without memoising
            return tuple(sorted(self.members(system, code) & within))
        found = tuple(sorted(self.members(system, code) & within))
        if len(self._within_memo) >= _MEMO_LIMIT:
            self._within_memo.clear()  # bounded like _memo
        self._within_memo[key] = found
        return found

    def forget_lookups(self) -> None:
        """Drop memoised lookups (call after changing the index)."""
        self._memo.clear()
        self._within_memo.clear()
        self._text_matchers.clear()
        self._any_text_matchers.clear()

    def _lookup(self, system: object, code: object) -> frozenset[str]:
        if not isinstance(code, str) or not code.strip():
            return frozenset()
        sys_uri = normalize_system(system)
        found = set(self.by_code.get((sys_uri, code.strip()), ()))
        # Only ICD-10-CM has is-a (prefix) filters; SNOMED, LOINC and RxNorm codes are exact lookups.
        if sys_uri == ICD10CM and self.icd_prefixes:
            key = _icd_key(code)
            found.update(vs for vs, prefix in self.icd_prefixes if key.startswith(prefix))
        return frozenset(found)

    def valuesets_for(self, system: object, code: object) -> set[str]:
        """Ids of every value set containing (system, code); empty set when none (a new set the caller owns)."""
        return set(self.members(system, code))

    def contains(self, valueset_id: str, system: object, code: object) -> bool:
        """True when (system, code) is a member of ``valueset_id``."""
        return valueset_id in self.members(system, code)

    def codings_in(self, codings: Iterable[tuple[str, str]]) -> set[str]:
        """Union of value set ids over several (system, code) pairs."""
        found: set[str] = set()
        for system, code in codings:
            found |= self.members(system, code)
        return found

    def text_matches(self, valueset_id: str, text: str) -> bool:
        """True when ``text`` matches one of the value set's text-pattern regexes."""
        patterns = self.text_patterns.get(valueset_id, ())
        entry = self._text_matchers.get(valueset_id)
        if entry is None or entry[0] != len(patterns):  # built lazily; rebuilt when patterns were added
            entry = self._text_matchers[valueset_id] = (len(patterns), _text_matcher(patterns))
        return entry[1](text)

    def text_sets_matching(self, valueset_ids: tuple[str, ...], text: str) -> list[str]:
        """The value sets of ``valueset_ids`` one of whose text patterns ``text`` matches, in the order given.

        Equal to ``[vs for vs in valueset_ids if self.text_matches(vs, text)]``. Most texts asked about match none
        (the typical record's problem list and non-binder drugs), so one search for every pattern of the sets
        (``_text_matcher``) answers that first; only a text that matches is tried set by set (issue #7).
        """
        counts = tuple([len(self.text_patterns.get(vs, ())) for vs in valueset_ids])
        entry = self._any_text_matchers.get(valueset_ids)
        if entry is None or entry[0] != counts:  # built lazily; rebuilt when patterns were added
            patterns = [p for vs in valueset_ids for p in self.text_patterns.get(vs, ())]
            entry = self._any_text_matchers[valueset_ids] = (counts, _text_matcher(patterns))
        if not entry[1](text):
            return []
        return [vs for vs in valueset_ids if self.text_matches(vs, text)]

    def display_of(self, codings: Iterable[tuple[str, str, str]]) -> str:
        """The value-set display of the first of ``codings`` (system, code, display) that has one, else "".

        Cards name facts by display, never by raw code (issue 13); the EHR's own text always comes first.
        """
        for system, code, _display in codings:
            if isinstance(code, str):
                found = self.displays.get((normalize_system(system), code.strip()))
                if found:
                    return _display_name(found)
        return ""

    def codes_of(self, valueset_id: str, system: str) -> list[str]:
        """Enumerated codes of one system in a value set (sorted), e.g. LOINCs for a prefetch query."""
        return sorted(c for (s, c), ids in self.by_code.items() if s == system and valueset_id in ids)


# Constructs whose meaning depends on group numbers, which shift when patterns are joined into one alternation.
_GROUP_NUMBER_REFERENCE = re.compile(r"\\[1-9]|\(\?P=|\(\?\(")


def _text_matcher(patterns: Sequence[re.Pattern[str]]) -> Callable[[str], bool]:
    """One callable answering ``any(p.search(text) for p in patterns)``.

    The medication value sets have up to 13 patterns each and a text-only medication is tried against all of them
    (~45 searches per drug). One search of the alternation ``(?:p1)|(?:p2)|...`` answers the same question: a
    match of the alternation at some position is a match of one alternative there, and back again. Patterns are
    joined only when that holds exactly: same flags, no back-references or conditionals on group numbers; else
    they are searched one by one as before (issue #7).
    """
    if not patterns:
        return _no_match
    if len(patterns) == 1:
        only = patterns[0]
        return lambda text: only.search(text) is not None
    flags = patterns[0].flags
    if all(
        p.flags == flags and not _GROUP_NUMBER_REFERENCE.search(p.pattern) for p in patterns
    ):
        try:
            joined = re.compile("|".join(f"(?:{p.pattern})" for p in patterns), flags)
        except re.error:
            pass
        else:
            return lambda text: joined.search(text) is not None
    return lambda text: any(p.search(text) for p in patterns)


def _no_match(_text: str) -> bool:
    return False


# SNOMED's semantic tag, and the value sets' own note on product codes whose RxNorm name the source did not give.
_DISPLAY_NOTE = re.compile(
    r"\s+\((disorder|finding|procedure|situation|substance|product|regime/therapy|name not shown in source)\)$")


def _display_name(display: str) -> str:
    """A value-set display as a name: "Hemodialysis (procedure)" -> "Hemodialysis"; "calcium gluconate injectable
    product (name not shown in source)" -> "calcium gluconate injectable product"."""
    return _DISPLAY_NOTE.sub("", display)


def _add_valueset(index: CodeIndex, vs_id: str, resource: Mapping[str, Any]) -> None:
    index.forget_lookups()
    compose = resource.get("compose")
    includes = compose.get("include") if isinstance(compose, dict) else None
    for include in includes if isinstance(includes, list) else []:
        if not isinstance(include, dict):
            continue
        system = normalize_system(include.get("system"))
        for concept in include.get("concept") or []:
            code = concept.get("code") if isinstance(concept, dict) else None
            if isinstance(code, str) and code.strip():
                index.by_code.setdefault((system, code.strip()), set()).add(vs_id)
                display = concept.get("display")
                if isinstance(display, str) and display.strip():
                    index.displays.setdefault((system, code.strip()), display.strip())
        for flt in include.get("filter") or []:
            if not isinstance(flt, dict):
                continue
            if system == ICD10CM and flt.get("op") == "is-a" and isinstance(flt.get("value"), str):
                index.icd_prefixes.append((vs_id, _icd_key(flt["value"])))
            else:
                index.problems.append(f"valueset {vs_id}: unsupported filter {flt!r} (ignored)")
    for ext in resource.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == TEXT_PATTERN_URL:
            pattern = ext.get("valueString")
            try:
                index.text_patterns.setdefault(vs_id, []).append(re.compile(str(pattern), re.IGNORECASE))
            except re.error as exc:
                index.problems.append(f"valueset {vs_id}: text pattern {pattern!r} does not compile: {exc}")


def build_index(directory: Path | None = None, expected: Iterable[str] = EXPECTED_VALUESETS) -> CodeIndex:
    """Read every ``*.json`` ValueSet in ``directory`` (default: the packaged folder) into an index."""
    index = CodeIndex()
    folder = directory if directory is not None else Path(str(resources.files("fhir_mappings"))) / "valuesets"
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    for path in files:
        try:
            resource = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            index.problems.append(f"valueset file {path.name}: unreadable ({exc})")
            continue
        if not isinstance(resource, dict) or resource.get("resourceType") != "ValueSet":
            index.problems.append(f"valueset file {path.name}: not a ValueSet resource")
            continue
        vs_id = path.stem
        if resource.get("id") not in (None, vs_id):
            index.problems.append(f"valueset file {path.name}: id {resource.get('id')!r} != file name")
        _add_valueset(index, vs_id, resource)
        index.loaded.add(vs_id)
    for vs_id in expected:
        if vs_id not in index.loaded:
            index.problems.append(f"valueset {vs_id} is missing (fhir_mappings/valuesets/{vs_id}.json)")
    return index


@lru_cache(maxsize=1)
def default_index() -> CodeIndex:
    """The packaged value sets, loaded once per process."""
    return build_index()
