"""Data checks on fhir_mappings/valuesets: format, verification provenance and must-have codes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.valueset import ValueSet

VALUESET_DIR = Path(__file__).resolve().parents[1] / "fhir_mappings" / "valuesets"
VERIFICATION_URL = "https://calcinosis-cds.org/fhir/StructureDefinition/code-verification"
TEXT_PATTERN_URL = "https://calcinosis-cds.org/fhir/StructureDefinition/text-pattern"

EXPECTED_IDS = {
    "lab-calcium-total",
    "lab-calcium-blood",
    "lab-calcium-ionized",
    "lab-calcium-corrected",
    "lab-phosphate",
    "lab-albumin",
    "lab-pth",
    "lab-vitamin-d-25oh",
    "lab-vitamin-d-125",
    "lab-alp",
    "lab-creatinine",
    "lab-egfr",
    "lab-potassium",
    "lab-urate",
    "lab-bmi",
    "lab-bicarbonate",
    "lab-magnesium",
    "cond-esrd",
    "cond-ckd-stage-5",
    "cond-ckd-stage-5-dialysis",
    "cond-dialysis-dependence",
    "cond-ckd-stage-4",
    "cond-ckd-stage-3",
    "cond-ckd-unspecified",
    "cond-kidney-transplant",
    "cond-other-transplant",
    "cond-hyperparathyroidism",
    "cond-calciphylaxis",
    "cond-calcinosis-cutis",
    "cond-dermatomyositis",
    "cond-juvenile-dermatomyositis",
    "cond-systemic-sclerosis",
    "cond-sle",
    "cond-sarcoidosis",
    "cond-tumor-lysis",
    "cond-milk-alkali",
    "cond-malignancy",
    "cond-multiple-myeloma",
    "cond-leukemia",
    "cond-paget",
    "cond-diabetes",
    "cond-obesity",
    "cond-aki",
    "cond-hypervitaminosis-d",
    "cond-kidney-graft-failure",
    "proc-dialysis",
    "proc-dialysis-peritoneal",
    "proc-crrt",
    "proc-kidney-transplant",
    "proc-parathyroidectomy",
    "med-iv-calcium",
    "med-iv-phosphate",
    "med-oral-calcium",
    "med-vitamin-d",
    "med-active-vitamin-d",
    "med-nadroparin",
    "med-warfarin",
    "med-al-mg-binder",
    "med-aluminium-binder",
    "med-magnesium-binder",
    "med-sodium-bicarbonate",
    "med-thiosulfate",
    "med-calcium-exclusions",
    "route-iv",
    "route-not-iv",
}
KNOWN_CRITICAL = {
    "17861-6",
    "2000-8",
    "49765-1",
    "2777-1",
    "14879-1",
    "1751-7",
    "2731-8",
    "N18.6",
    "46177005",
    "Z99.2",
    "47625008",
    "26643006",
    "E88.3",
    "L94.2",
    "14866-8",  # §8 C8
    "19123-9",  # §8 C17
    "2601-3",
    "6298-4",  # §8.0 specimen exception
    "T86.11",  # §8 C5
    "T86.12",
    "714749008",  # CRRT
}
FILES = sorted(VALUESET_DIR.glob("*.json"))


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _includes(vs: dict[str, Any]) -> list[dict[str, Any]]:
    includes: list[dict[str, Any]] = vs.get("compose", {}).get("include", [])
    return includes


def _text_patterns(vs_id: str) -> list[re.Pattern[str]]:
    vs = _load(VALUESET_DIR / f"{vs_id}.json")
    return [
        re.compile(e["valueString"], re.IGNORECASE)
        for e in vs.get("extension", [])
        if e["url"] == TEXT_PATTERN_URL
    ]


def _all_codes() -> set[str]:
    return {c["code"] for p in FILES for inc in _includes(_load(p)) for c in inc.get("concept", [])} | {
        f["value"] for p in FILES for inc in _includes(_load(p)) for f in inc.get("filter", [])
    }


def test_value_set_ids_are_exactly_the_agreed_list() -> None:
    assert {p.stem for p in FILES} == EXPECTED_IDS


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_file_is_a_valid_r4b_value_set_with_the_agreed_header(path: Path) -> None:
    data = _load(path)
    ValueSet.model_validate(data)
    assert data["resourceType"] == "ValueSet"
    assert data["id"] == path.stem
    assert data["url"] == f"https://calcinosis-cds.org/fhir/ValueSet/{path.stem}"
    assert data["version"] == "0.1.0"
    assert data["status"] == "active"
    assert data["publisher"] == "calcinosis-cds"
    assert data["name"][0].isupper()
    assert data["title"]
    assert data["description"]
    assert data["date"]


def _verification(item: dict[str, Any]) -> dict[str, str]:
    exts = [e for e in item.get("extension", []) if e["url"] == VERIFICATION_URL]
    assert len(exts) == 1, f"missing verification on {item}"
    return {sub["url"]: sub.get("valueCode") or sub.get("valueString") for sub in exts[0]["extension"]}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_every_concept_and_filter_is_verified_with_a_source(path: Path) -> None:
    data = _load(path)
    assert _includes(data) or _text_patterns(path.stem), "a value set needs codes or a text pattern"
    for inc in _includes(data):
        # An include with neither concept nor filter would mean "the whole code system".
        assert inc.get("concept") or inc.get("filter")
        items = inc.get("concept", []) + ([inc] if inc.get("filter") else [])
        for item in items:
            info = _verification(item)
            assert info.get("level") in {"V1", "V2"}
            assert info.get("source", "").strip()
        for flt in inc.get("filter", []):
            assert inc["system"] == "http://hl7.org/fhir/sid/icd-10-cm"
            assert flt["property"] == "concept"
            assert flt["op"] == "is-a"
            assert flt["value"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_no_duplicate_codes_within_a_value_set(path: Path) -> None:
    seen: set[tuple[str, str]] = set()
    for inc in _includes(_load(path)):
        for concept in inc.get("concept", []):
            key = (inc["system"], concept["code"])
            assert key not in seen, f"duplicate {key}"
            seen.add(key)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_text_patterns_compile(path: Path) -> None:
    for ext in _load(path).get("extension", []):
        if ext["url"] == TEXT_PATTERN_URL:
            re.compile(ext["valueString"], re.IGNORECASE)


def test_medication_and_route_sets_have_text_patterns() -> None:
    for path in FILES:
        if path.stem.startswith(("med-", "route-")):
            assert _text_patterns(path.stem), path.stem


def test_known_critical_codes_are_present() -> None:
    assert KNOWN_CRITICAL <= _all_codes()


def test_ivflush_is_not_an_iv_route() -> None:
    includes = _includes(_load(VALUESET_DIR / "route-iv.json"))
    codes = {c["code"] for inc in includes for c in inc.get("concept", [])}
    assert "IVFLUSH" not in codes
    assert {"47625008", "IV", "IVPUSH"} <= codes


def _matches(vs_id: str, text: str) -> bool:
    return any(p.search(text) for p in _text_patterns(vs_id))


@pytest.mark.parametrize("text", ["Calcium Gluconate 100 MG/ML Injectable Solution", "calcium chloride"])
def test_iv_calcium_pattern_matches_injectable_salts(text: str) -> None:
    assert _matches("med-iv-calcium", text)


def test_oral_calcium_carbonate_is_matched_by_oral_set_not_iv_set() -> None:
    text = "Calcium Carbonate 1250 MG Oral Tablet"
    assert _matches("med-oral-calcium", text)
    assert not _matches("med-iv-calcium", text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("IV push", True),
        ("intravenous", True),
        ("i.v.", True),
        ("subcutaneous infusion", False),
        ("by mouth", False),
    ],
)
def test_iv_route_text_pattern(text: str, expected: bool) -> None:
    assert _matches("route-iv", text) is expected


def test_removed_unverified_codes_are_absent() -> None:
    removed = {"237900002", "190969000", "31848007", "62382002", "17863-2", "E83.59", "E83.52"}
    assert not removed & _all_codes()


def _codes(vs_id: str) -> set[tuple[str, str]]:
    return {(inc["system"], c["code"]) for inc in _includes(_load(VALUESET_DIR / f"{vs_id}.json"))
            for c in inc.get("concept", [])}


def test_calciphylaxis_and_calcinosis_cutis_are_split() -> None:
    """§8 C4: L94.2 is calcinosis cutis only; calciphylaxis is matched by its own text pattern."""
    assert not _includes(_load(VALUESET_DIR / "cond-calciphylaxis.json"))
    assert {c for _s, c in _codes("cond-calcinosis-cutis")} == {"L94.2"}
    assert _matches("cond-calciphylaxis", "Calcific uremic arteriolopathy")
    assert not _matches("cond-calciphylaxis", "Calcinosis cutis")


def test_dialysis_set_holds_treatments_only() -> None:
    """§8 C5: no access, catheter, measurement, albumin dialysis or haemoperfusion codes."""
    removed = {"10848006", "180273006", "238316008", "238317004", "427053002", "439278006", "439976001", "90997"}
    codes = {c for _s, c in _codes("proc-dialysis")}
    assert not removed & codes
    assert {"302497006", "71192002", "714749008", "90935"} <= codes
    for vs_id in ("proc-dialysis", "proc-dialysis-peritoneal", "proc-crrt"):
        displays = [c["display"].lower() for inc in _includes(_load(VALUESET_DIR / f"{vs_id}.json"))
                    for c in inc["concept"]]
        assert not [d for d in displays if re.search(r"catheter|measurement|albumin|hemoperfusion", d)]


def test_peritoneal_and_crrt_sets_are_disjoint_subsets_of_dialysis() -> None:
    """§8.0: a PD or CRRT session is in both groups; every other dialysis code is intermittent."""
    dialysis, pd, crrt = _codes("proc-dialysis"), _codes("proc-dialysis-peritoneal"), _codes("proc-crrt")
    assert pd
    assert crrt
    assert pd <= dialysis
    assert crrt <= dialysis
    assert not pd & crrt
    assert ("http://snomed.info/sct", "302497006") not in pd | crrt  # haemodialysis stays intermittent


def test_binder_classes_split_the_general_one() -> None:
    """§8 C17: every Al/Mg binder code is in exactly one specific class; the general class is their union."""
    general, al, mg = _codes("med-al-mg-binder"), _codes("med-aluminium-binder"), _codes("med-magnesium-binder")
    assert al
    assert mg
    assert al | mg == general
    assert not al & mg
    assert {c for _s, c in al} >= {"612"}
    assert {c for _s, c in mg} >= {"6581", "6582", "29155"}
    for text, aluminium, magnesium in [("Aluminum Hydroxide 500 MG Oral Tablet", True, False),
                                       ("Magnesium Oxide 400 MG Oral Tablet", False, True),
                                       ("magnesium chloride 64 mg tablet", False, True),
                                       ("Milk of Magnesia", False, True),
                                       ("magnesium citrate oral solution", False, False),
                                       ("magnesium sulfate 2 g IV", False, False)]:
        assert _matches("med-aluminium-binder", text) is aluminium, text
        assert _matches("med-magnesium-binder", text) is magnesium, text
        assert _matches("med-al-mg-binder", text) is (aluminium or magnesium), text


@pytest.mark.parametrize("text", ["CRRT replacement fluid", "PrismaSol BGK 4/2.5", "Phoxillum BK4/2.5",
                                  "Dialysate calcium 2.5 mEq/L"])
def test_crrt_fluids_are_calcium_exclusions(text: str) -> None:
    """§8.0 C7: CRRT replacement fluids and dialysate never trigger R08/R09."""
    assert _matches("med-calcium-exclusions", text)
