"""Inputs of the extraction golden test (``test_extract_equivalence.py``, issue #7).

A broad, deterministic set of records: the section 5 test patients and the variants other engine tests build,
the DSTU2 / CDS Hooks sandbox shapes those tests use, ~60 synthetic patients from ``synth`` (all
three profiles, several seeds, mg/dL and mmol/L labs) and hand-made malformed resources (wrong types
everywhere, missing fields, strings for numbers, lists where objects belong). Every builder call here is
deterministic: ids come from a counter reset by ``golden_cases`` and dates are relative to ``NOW``.
"""

from __future__ import annotations

import copy
import functools
import gzip
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from synth import PROFILES, generate_patient

from . import builders
from .builders import (
    ICD10,
    IV,
    LOINC,
    NOW,
    ORAL,
    RXNORM,
    SNOMED,
    SUBCUT,
    V3_ROUTE,
    al_hydroxide_draft,
    cond,
    crrt_fluid,
    draft,
    infant,
    med,
    mg_oxide_draft,
    mg_sulfate_iv,
    obs,
    patient,
    pn_admixture,
    proc,
    ref_range,
    service_request,
    when,
)
from .patients import EXPECTED, EXPECTED_R2, tp01, tp06, tp07

PATIENT_VIEW = "patient-view"
ORDER_SELECT = "order-select"
ORDER_SIGN = "order-sign"
ALL_OPTIONS = {"include_preliminary": True, "ctd_info_card": True, "tumoral_calcinosis_rule": True,
               "links_base_url": "https://cds.example.org"}
SPEC_FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "spec"


@dataclass
class GoldenCase:
    """One record evaluated for one or more hooks with one set of engine options."""

    case_id: str
    patient: Any
    resources: list[Any]
    hooks: tuple[str, ...] = (PATIENT_VIEW,)
    drafts: list[Any] = field(default_factory=list)
    selections: list[Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    now: datetime = NOW


# --- helpers ----------------------------------------------------------------------------------------------------

def _q(value: Any, unit: Any = "mg/dL", code: Any = "mg/dL") -> dict[str, Any]:
    quantity: dict[str, Any] = {"value": value}
    if unit is not None:
        quantity["unit"] = unit
    if code is not None:
        quantity["code"] = code
    return quantity


def _raw_obs(oid: Any, **fields: Any) -> dict[str, Any]:
    """A calcium Observation with every field overridable (``None`` removes the field)."""
    res: dict[str, Any] = {
        "resourceType": "Observation", "id": oid, "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "17861-6"}]},
        "effectiveDateTime": when(2), "valueQuantity": _q(9.4),
    }
    for key, value in fields.items():
        if value is None:
            res.pop(key, None)
        else:
            res[key] = value
    return res


def _raw_cond(cid: Any, **fields: Any) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Condition", "id": cid,
        "code": {"coding": [{"system": ICD10, "code": "N18.6"}]},
        "clinicalStatus": {"coding": [{"code": "active"}]},
        "verificationStatus": {"coding": [{"code": "confirmed"}]},
    }
    for key, value in fields.items():
        if value is None:
            res.pop(key, None)
        else:
            res[key] = value
    return res


def _raw_proc(pid: Any, **fields: Any) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Procedure", "id": pid, "status": "completed",
        "code": {"coding": [{"system": SNOMED, "code": "302497006"}]},
        "performedDateTime": when(3),
    }
    for key, value in fields.items():
        if value is None:
            res.pop(key, None)
        else:
            res[key] = value
    return res


def _pair(ca: float, p: float, days: float = 1, **kw: Any) -> list[dict[str, Any]]:
    return [obs("ca", ca, days, specimen="s1", **kw), obs("p", p, days, specimen="s1", **kw),
            obs("alb", 4.0, days, specimen="s1")]


# --- groups of cases ---------------------------------------------------------------------------------------------

def _section5_cases() -> list[GoldenCase]:
    cases = []
    for case_id, build, _expected in EXPECTED:
        case = build()
        hook = case.get("hook", PATIENT_VIEW)
        hooks = (hook,) if hook == PATIENT_VIEW else (hook, ORDER_SIGN, PATIENT_VIEW)
        cases.append(GoldenCase(case_id, case["patient"], case["resources"], hooks, case.get("drafts", [])))
        cases.append(GoldenCase(case_id + "+options", case["patient"], case["resources"], hooks,
                                case.get("drafts", []), options=ALL_OPTIONS))
    variants = {
        "TP01-lower-case-units": tp01(unit_ca="mg/dl", ca=10.02, p=7.495, unit_p="mg/dl"),
        "TP01-si": tp01(unit_ca="mmol/L", ca=2.5, p=2.42, unit_p="mmol/L"),
        "TP06-preliminary": tp06(bad_status="preliminary"),
        "TP06-amended": tp06(bad_status="amended"),
        "TP07-provisional": tp07(esrd_verification="provisional"),
        "TP07-unconfirmed": tp07(esrd_verification="unconfirmed"),
    }
    for case_id, case in variants.items():
        hook = case.get("hook", PATIENT_VIEW)
        cases.append(GoldenCase(case_id, case["patient"], case["resources"], (hook, PATIENT_VIEW),
                                case.get("drafts", [])))
        cases.append(GoldenCase(case_id + "+preliminary", case["patient"], case["resources"], (hook,),
                                case.get("drafts", []), options={"include_preliminary": True}))
    return cases


def _boundary_cases() -> list[GoldenCase]:
    """The scenarios of test_boundaries.py and the other engine tests (both sides of each threshold)."""
    g5d = [cond("N18.6"), proc("302497006", days=40)]
    out: list[GoldenCase] = []
    for ca, p in ((10.0, 7.0), (10.0, 7.001), (10.0, 5.5), (10.0, 5.49)):
        out.append(GoldenCase(f"caxp-{ca}-{p}", patient(60), g5d + _pair(ca, p) + [obs("pth", 200, 30)]))
    for days in (30, 31, 89.9, 91):
        out.append(GoldenCase(f"pair-age-{days}", patient(50), _pair(10.0, 7.5, days)))
    for age in (12, 13):
        out.append(GoldenCase(f"age-{age}", patient(age), _pair(10.0, 7.5)))
    out.append(GoldenCase("child-own-range", patient(10), [
        obs("ca", 10.9, 1, specimen="s1", ref=(8.8, 10.8)), obs("p", 6.9, 1, specimen="s1", ref=(4.0, 6.5)),
        obs("alb", 4.0, 1, specimen="s1")]))
    for hours in (23, 25, 47, 49):
        out.append(GoldenCase(f"pair-gap-{hours}h", patient(60), g5d + [
            obs("ca", 10.0, 1, specimen="a"), obs("p", 8.0, 1, hours=hours, specimen="b"),
            obs("alb", 4.0, 1, specimen="a")], (PATIENT_VIEW, ORDER_SELECT), [draft("rx", "Calcium gluconate 1 g",
                                                                                   route=IV)]))
    out.append(GoldenCase("dialysis-between", patient(60), [
        cond("N18.6"), proc("302497006", days=1.5), obs("ca", 10.0, 2, specimen="a"),
        obs("p", 8.0, 1, specimen="b")]))
    for ca in (10.2, 10.21, 12.0, 11.99, 8.39):
        out.append(GoldenCase(f"calcium-{ca}", patient(60), [obs("ca", ca, 1, specimen="s1"),
                                                            obs("alb", 4.0, 1, specimen="s1")]))
    out.append(GoldenCase("corrected-calcium", patient(60), [
        obs("ca", 9.9, 1, specimen="s1"), obs("alb", 2.5, 1, specimen="s1"), obs("ca_corr", 2.7, 1, specimen="s1")]))
    out.append(GoldenCase("ionized-calcium", patient(60), [
        obs("ica", 1.45, 1), obs("ca", 9.9, 1, specimen="s1"), obs("ca_blood", 10.5, 3)]))
    for p in (4.5, 4.51, 5.5, 5.51):
        out.append(GoldenCase(f"phosphate-{p}", patient(60), g5d + [obs("p", p, 1), obs("pth", 100, 20)]))
    for pth in (585, 586, 100):
        out.append(GoldenCase(f"pth-{pth}", patient(60), g5d + _pair(9.0, 4.0) + [obs("pth", pth, 20, ref=(15, 65))]))
    for vitd, unit in ((150, None), (151, None), (375, "nmol/L"), (376, "nmol/l"), (100, "ug/L")):
        out.append(GoldenCase(f"vitd-{vitd}-{unit}", patient(60), [
            obs("vitd", vitd, 5, unit=unit), obs("ca", 10.5, 1, specimen="s1"), obs("alb", 4.0, 1, specimen="s1")],
            (PATIENT_VIEW, ORDER_SELECT), [draft("rxd", "Cholecalciferol 50,000 IU", route=ORAL)]))
    out.append(GoldenCase("vitd-dialysis", patient(60), g5d + [obs("vitd", 160, 5)] + _pair(9.0, 4.0)))
    for days in (179, 181):
        out.append(GoldenCase(f"r03-pth-{days}", patient(60), g5d + _pair(9.0, 4.0, 5) + [obs("pth", 200, days)]))
    for days in (89, 91):
        out.append(GoldenCase(f"r03-pair-{days}", patient(60), g5d + _pair(9.0, 4.0, days) + [obs("pth", 200, 20)]))
    for extra_id, extra in (("none", []), ("diabetes", [cond("E11.9")]), ("obese", [obs("bmi", 31, 20)]),
                            ("warfarin", [med("warfarin 5 mg", code="855332")]),
                            ("low-albumin", [obs("alb", 3.0, 2)])):
        out.append(GoldenCase(f"r07-{extra_id}", patient(60, "female"),
                              g5d + _pair(9.0, 7.0) + [obs("pth", 200, 20)] + extra))
    for first in (89, 91):
        out.append(GoldenCase(f"egfr-g4-{first}", patient(60), [obs("egfr", 25, first), obs("egfr", 24, 1)],
                              (ORDER_SELECT, PATIENT_VIEW), [draft("rx", "Aluminum hydroxide 320 MG Oral Tablet")]))
    out.append(GoldenCase("egfr-g3-g5", patient(60), [obs("egfr", 14, 200), obs("egfr", 12, 100),
                                                      obs("egfr", 13, 1), obs("egfr", 50, 400)]))
    out.append(GoldenCase("tls-labs", patient(45), [
        cond("C90.00"), obs("p", 6.8, 0.5), obs("ca", 6.5, 0.5), obs("urate", 9.0, 0.4), obs("k", 6.5, 0.3)],
        (PATIENT_VIEW, ORDER_SELECT), [draft("rx", "Calcium gluconate 1 g", route=IV)]))
    out.append(GoldenCase("tls-child", infant(40), [
        cond("C91.00"), obs("p", 6.6, 0.5), obs("urate", 9.0, 0.4)]))
    out.append(GoldenCase("milk-alkali", patient(70, "female"), [
        obs("ca", 12.5, 1, specimen="s1"), obs("alb", 4.0, 1, specimen="s1"), obs("bicarb", 34, 1),
        obs("egfr", 40, 1), med("Calcium Carbonate 1250 MG Oral Tablet", code="318076"),
        med("Sodium bicarbonate 650 MG Oral Tablet", rtype="MedicationStatement"), cond("N17.9")]))
    out.append(GoldenCase("documented-calcinosis", patient(50, "female"), [
        cond("L94.2"), cond("M34.9"), cond("M32.9", text="Systemic lupus"), cond("D86.9"),
        cond("E21.0"), cond("E67.3"), cond("M88.9"), cond("Z94.0"), cond("Z94.1"), cond("E66.9"),
        cond("C50.919", text="Breast cancer"), obs("alp", 300, 5), obs("vitd125", 90, 5),
        _raw_obs("creatinine", code={"coding": [{"system": LOINC, "code": "2160-0"}]}, valueQuantity=_q(3.2)),
        obs("ca", 10.8, 1, specimen="s1"), obs("p", 5.0, 1, specimen="s1")],
        (PATIENT_VIEW, ORDER_SELECT), [draft("rx", "Calcium Carbonate 1250 MG Oral Tablet", route=ORAL),
                                       draft("rx2", "Magnesium hydroxide 400 mg", route=ORAL)],
        options=ALL_OPTIONS))
    out.append(GoldenCase("heparin-nadroparin", patient(66), [cond("N18.6"), proc("302497006", 1)] + _pair(9.5, 6.0),
                          (ORDER_SELECT, ORDER_SIGN), [draft("n1", "nadroparin 2850 IU", route=SUBCUT),
                                                       draft("n2", "Calcium gluconate 1 g", route=IV)],
                          selections=["MedicationRequest/n1"]))
    out.append(GoldenCase("order-sign-no-selections", patient(66), [cond("N18.6")] + _pair(9.5, 7.5),
                          (ORDER_SIGN,), [draft("a", "Calcium gluconate 1 g", route=IV),
                                          draft("b", "Sodium phosphate 15 mmol", route=IV)], selections=[]))
    orders = [
        draft("a", "Calcium gluconate 1 g in 100 mL", route=IV),
        draft("b", "Calcium Chloride 100 MG/ML Injectable Solution"),
        draft("c", "Calcium gluconate 500 MG Oral Tablet"),
        draft("f", "Calcium gluconate 1 g", route=(V3_ROUTE, "IVPUSH")),
        draft("g", "Calcium gluconate 1 g", route=(V3_ROUTE, "IVFLUSH")),
        draft("h", "Calcium gluconate 1 g", route_text="IV push over 10 min"),
        draft("i", "Calcium gluconate 1 g", route_text="by mouth"),
        draft("j", None, route=IV) | {"medicationCodeableConcept": {"coding": [{"system": RXNORM,
                                                                                 "code": "1668250"}]}},
        draft("k", "Potassium Phosphates Injection 3 mmol/mL"),
        draft("l", "Sodium thiosulfate 25 g IV", route=IV),
        draft("m", "Calcium chloride dialysate 2.5 mEq/L", route=IV),
        draft("n", "PN: calcium gluconate 10 mEq + potassium phosphate 15 mmol", route=IV),
        draft("o", "Calcium chloride 1 g", route=IV, dose="1 g via central line over 10 min"),
        draft("s1", "Calcium gluconate 1 g", sandbox=True),
        draft("s2", None, sandbox=True),
        {"resource": draft("s3", "Calcium chloride 1 g")},
        {"resourceType": "MedicationRequest", "status": "draft"},
        "not a resource",
        {"resourceType": "NutritionOrder", "id": "n1"},
        draft("x", "Calcitriol 0.25 MCG Oral Capsule", code="1293437"),
        draft("y", "Ergocalciferol 50000 UNT", dose="weekly"),
    ]
    ids = [f"MedicationRequest/{o['id']}" for o in orders if isinstance(o, dict) and "id" in o]
    out.append(GoldenCase("all-order-shapes", patient(64), [cond("N18.6"), proc("302497006", 1)] + _pair(9.75, 8.0),
                          (ORDER_SELECT, ORDER_SIGN), orders, selections=ids + ["Nope/1", 7]))
    out.append(GoldenCase("all-order-shapes-g4", patient(64), [cond("N18.4")] + _pair(9.0, 4.0, 200),
                          (ORDER_SELECT,), orders, selections=ids[::2]))
    return out


def _spec_fixture_cases() -> list[GoldenCase]:
    """The CDS Hooks spec examples: DSTU2 MedicationOrder / NutritionOrder drafts, an R4 order-sign context."""
    out = []
    for name, hook in (("order-select-context-dstu2", ORDER_SELECT), ("order-sign-context-r4", ORDER_SIGN)):
        data = json.loads((SPEC_FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
        context = data.get("context", data)
        drafts = [e.get("resource") for e in context["draftOrders"]["entry"]]
        out.append(GoldenCase(f"spec-{name}", patient(64), [cond("N18.6"), proc("302497006", 1)] + _pair(9.75, 8.0),
                              (hook,), drafts, selections=context.get("selections", [])))
    request = json.loads((SPEC_FIXTURES / "patient-view-request.json").read_text(encoding="utf-8"))
    out.append(GoldenCase("spec-patient-view", request["prefetch"]["patientToGreet"], []))
    return out


def _dstu2_and_sandbox_cases() -> list[GoldenCase]:
    esrd = {"resourceType": "Condition", "id": "d2", "code": {"coding": [
        {"system": ICD10, "code": "N18.6"}]},
        "clinicalStatus": "active", "verificationStatus": "confirmed", "dateRecorded": "2020-01-01"}
    dstu2_obs = {"resourceType": "Observation", "id": "d2obs", "status": "final",
                 "code": {"coding": [{"system": "urn:oid:2.16.840.1.113883.6.1", "code": "2777-1"}]},
                 "effectiveDateTime": when(1), "valueQuantity": {"value": 8.0, "units": "mg/dL", "code": "mg/dL"},
                 "specimen": {"reference": "Specimen/s"}}
    dstu2_med = {"resourceType": "MedicationOrder", "id": "mo1", "status": "active",
                 "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "855332"}],
                                               "text": "Warfarin"}}
    return [
        GoldenCase("dstu2-condition", patient(60), [esrd, obs("ca", 9.75, 1, specimen="s"), dstu2_obs, dstu2_med],
                   (ORDER_SELECT, PATIENT_VIEW), [draft("rx", "Calcium gluconate 1 g", route=IV)]),
        GoldenCase("sandbox-draft", patient(64), [cond("N18.6"), proc("302497006", 1), obs("ca", 9.75, 1, specimen="s"),
                                                  obs("p", 8.0, 1, specimen="s")],
                   (ORDER_SELECT,), [draft("sb", "Calcium gluconate 1 g", sandbox=True)]),
        GoldenCase("hostile-names", patient(60), [cond("N18.6"), proc("302497006", 1), obs("ca", 9.75, 1, specimen="s"),
                                                  obs("p", 8.0, 1, specimen="s")],
                   (ORDER_SELECT,), [draft("rx", '<img src=x onerror=alert(1)> **bold** [c](javascript:x) '
                                            '`code` | calcium gluconate', route=IV)]),
        GoldenCase("no-patient", None, [obs("ca", 10.0, 1, specimen="s"), obs("p", 7.5, 1, specimen="s")]),
        GoldenCase("patient-in-resources", None, [patient(60, pid="inres"), obs("ca", 10.0, 1, specimen="s"),
                                                  obs("p", 7.5, 1, specimen="s")]),
        GoldenCase("five-hundred-observations", patient(60), [cond("N18.6"), proc("302497006", 1)] + [
            obs(("ca", "p", "alb", "egfr", "k")[i % 5], 5.0 + (i % 7), (i // 5) % 700, specimen=f"s{i // 5}")
            for i in range(500)] + [{"resourceType": "Observation", "id": f"x{i}", "status": "final",
                                     "code": {"coding": [{"system": LOINC, "code": "8867-4"}]}} for i in range(20)]),
    ]


def _malformed_observations() -> list[Any]:
    ca = {"system": LOINC, "code": "17861-6", "display": "Calcium"}
    return [
        "garbage", 42, None, [], {"id": "x"}, {"resourceType": 7, "id": "rt-int"}, {"resourceType": "Observation"},
        _raw_obs("ok"),
        _raw_obs(17, code={"coding": [ca]}),                                     # id not a string
        _raw_obs("code-str", code="17861-6"),
        _raw_obs("code-list", code=[{"coding": [ca]}]),
        _raw_obs("code-bare-coding", code={"system": LOINC, "code": "17861-6"}),
        _raw_obs("code-bare-plus-coding", code={"system": LOINC, "code": "2777-1", "coding": [ca]}),
        _raw_obs("coding-dict", code={"coding": ca}),
        _raw_obs("coding-str", code={"coding": "nope"}),
        _raw_obs("coding-items-odd",
                 code={"coding": [None, "x", 5, {"code": 17861}, {"system": 5, "code": "17861-6"}]}),
        _raw_obs("coding-oid", code={"coding": [{"system": "urn:oid:2.16.840.1.113883.6.1", "code": " 17861-6 "}]}),
        _raw_obs("coding-no-system", code={"coding": [{"code": "17861-6"}]}),
        _raw_obs("coding-two-kinds", code={"coding": [{"system": LOINC, "code": "8867-4"}, ca,
                                                      {"system": LOINC, "code": "49765-1"}]}),
        _raw_obs("coding-si-and-mass", code={"coding": [{"system": LOINC, "code": "2000-8"}, ca]},
                 valueQuantity=_q(2.4, "mmol/L", "mmol/L")),
        _raw_obs("coding-unhashable", code={"coding": [{"system": {"a": 1}, "code": "17861-6"}, ca]}),
        _raw_obs("coding-code-list", code={"coding": [{"system": LOINC, "code": ["17861-6"]}]}),
        _raw_obs("status-missing", status=None),
        _raw_obs("status-upper", status="FINAL"),
        _raw_obs("status-space", status=" final"),
        _raw_obs("status-list", status=["final"]),
        _raw_obs("status-cc", status={"coding": [{"code": "final"}]}),
        _raw_obs("status-amended", status="amended"),
        _raw_obs("status-corrected", status="corrected"),
        _raw_obs("status-preliminary", status="preliminary"),
        _raw_obs("status-eie", status="entered-in-error"),
        _raw_obs("dar", dataAbsentReason={"text": "error"}),
        _raw_obs("dar-false", dataAbsentReason=False),
        _raw_obs("vq-missing", valueQuantity=None, valueString="9.4"),
        _raw_obs("vq-list", valueQuantity=[_q(9.4)]),
        _raw_obs("vq-str", valueQuantity="9.4 mg/dL"),
        _raw_obs("vq-number", valueQuantity=9.4),
        _raw_obs("value-str", valueQuantity=_q("9.4")),
        _raw_obs("value-bool", valueQuantity=_q(True)),
        _raw_obs("value-none", valueQuantity=_q(None)),
        _raw_obs("value-int", valueQuantity=_q(9)),
        _raw_obs("value-huge-int", valueQuantity=_q(10 ** 400)),
        _raw_obs("value-negative", valueQuantity=_q(-1.5)),
        _raw_obs("value-zero", valueQuantity=_q(0)),
        _raw_obs("value-tiny", valueQuantity=_q(1e-300)),
        _raw_obs("value-big", valueQuantity=_q(1.7e308, "mmol/L", "mmol/L")),
        _raw_obs("unit-code-int", valueQuantity=_q(9.4, "mg/dL", 5)),
        _raw_obs("unit-text-only", valueQuantity=_q(9.4, "MG/DL", None)),
        _raw_obs("unit-code-only", valueQuantity=_q(2.3, None, "mmol/L")),
        _raw_obs("unit-none", valueQuantity=_q(9.4, None, None)),
        _raw_obs("unit-blank-code", valueQuantity=_q(9.4, "mg/dL", "  ")),
        _raw_obs("unit-bad-code-good-text", valueQuantity=_q(9.4, "mg/dL", "furlongs")),
        _raw_obs("unit-unknown", valueQuantity=_q(9.4, "furlongs", "furlongs")),
        _raw_obs("unit-unknown-text", valueQuantity=_q(9.4, "furlongs", None)),
        _raw_obs("unit-list", valueQuantity=_q(9.4, ["mg/dL"], ["mg/dL"])),
        _raw_obs("comparator-gt", valueQuantity=_q(9.4) | {"comparator": ">"}),
        _raw_obs("comparator-le", valueQuantity=_q(9.4) | {"comparator": "<="}),
        _raw_obs("comparator-odd", valueQuantity=_q(9.4) | {"comparator": "~"}),
        _raw_obs("comparator-list", valueQuantity=_q(9.4) | {"comparator": [">"]}),
        _raw_obs("time-int", effectiveDateTime=20250613),
        _raw_obs("time-bad-month", effectiveDateTime="2025-13-01"),
        _raw_obs("time-year", effectiveDateTime="2025"),
        _raw_obs("time-month", effectiveDateTime="2025-06"),
        _raw_obs("time-date", effectiveDateTime="2025-06-13"),
        _raw_obs("time-fraction", effectiveDateTime="2025-06-13T08:00:00.123Z"),
        _raw_obs("time-offset", effectiveDateTime="2025-06-13T08:00:00+05:30"),
        _raw_obs("time-neg-offset", effectiveDateTime="2025-06-13T23:30:00-05:00"),
        _raw_obs("time-no-zone", effectiveDateTime="2025-06-13T08:00:00"),
        _raw_obs("time-no-seconds", effectiveDateTime="2025-06-13T08:00Z"),
        _raw_obs("time-space", effectiveDateTime=" 2025-06-13T08:00:00Z "),
        _raw_obs("time-feb-30", effectiveDateTime="2024-02-30"),
        _raw_obs("time-24h", effectiveDateTime="2025-06-13T24:00:00Z"),
        _raw_obs("period-end", effectiveDateTime=None, effectivePeriod={"start": when(3), "end": when(2)}),
        _raw_obs("period-start", effectiveDateTime=None, effectivePeriod={"start": when(3)}),
        _raw_obs("period-bad-end", effectiveDateTime=None, effectivePeriod={"start": when(3), "end": 5}),
        _raw_obs("period-list", effectiveDateTime=None, effectivePeriod=[{"start": when(3)}]),
        _raw_obs("instant", effectiveDateTime=None, effectiveInstant=when(4)),
        _raw_obs("bad-dt-good-instant", effectiveDateTime="nope", effectiveInstant=when(4)),
        _raw_obs("issued-only", effectiveDateTime=None, issued=when(1)),
        _raw_obs("issued-bad", effectiveDateTime=None, issued="yesterday"),
        _raw_obs("no-time", effectiveDateTime=None),
        _raw_obs("range-dict", referenceRange={"low": _q(8.6), "high": _q(10.2)}),
        _raw_obs("range-list-odd", referenceRange=[None, "x", {"low": _q(8.6), "high": _q(10.2)}]),
        _raw_obs("range-low-only", referenceRange=[{"low": _q(8.6)}]),
        _raw_obs("range-high-str", referenceRange=[{"low": _q(8.6), "high": _q("10.2")}]),
        _raw_obs("range-high-bool", referenceRange=[{"high": _q(True)}]),
        _raw_obs("range-bare-bounds", referenceRange=[{"low": {"value": 8.6}, "high": {"value": 10}}]),
        _raw_obs("range-bare-bounds-si", valueQuantity=_q(2.3, "mmol/L", "mmol/L"),
                 referenceRange=[{"low": {"value": 2.15}, "high": {"value": 2.55}}]),
        _raw_obs("range-other-unit", referenceRange=[{"low": _q(2.15, "mmol/L", "mmol/L"),
                                                      "high": _q(2.55, None, "MMOL/L")}]),
        _raw_obs("range-unknown-unit", referenceRange=[{"low": _q(8.6, "furlongs", "furlongs"),
                                                        "high": _q(10.2, "mg/dL", None)}]),
        _raw_obs("range-bound-list", referenceRange=[{"low": [_q(8.6)], "high": "10.2"}]),
        _raw_obs("range-applies-to", referenceRange=[{"low": _q(1.0), "appliesTo": [{"text": "women"}]},
                                                     {"low": _q(8.0), "high": _q(10.0)}]),
        _raw_obs("range-only-applies-to", referenceRange=[{"low": _q(1.0), "appliesTo": [{"text": "women"}]}]),
        _raw_obs("range-age", referenceRange=[
            {"low": _q(9.0), "high": _q(11.0), "age": {"low": {"value": 0}, "high": {"value": 17}}},
            {"low": _q(8.6), "high": _q(10.2), "age": {"low": {"value": 18}}},
            {"low": _q(1.0), "high": _q(2.0)}]),
        _raw_obs("range-age-odd", referenceRange=[
            {"low": _q(9.0), "age": {"low": "zero", "high": {"value": "x"}}},
            {"low": _q(8.0), "age": []}, {"low": _q(7.0), "age": None}]),
        _raw_obs("range-age-no-match", referenceRange=[
            {"low": _q(9.0), "age": {"low": {"value": 100}}}, {"high": _q(10.0)}]),
        _raw_obs("range-int", referenceRange=5),
        _raw_obs("range-str", referenceRange="8.6-10.2"),
        _raw_obs("range-two", referenceRange=[{"low": _q(8.6), "high": _q(10.2)}, {"low": _q(1.0)}]),
        _raw_obs("range-low-int", referenceRange=[{"low": _q(8), "high": _q(10.2)}]),
        _raw_obs("range-huge-int", referenceRange=[{"low": _q(10 ** 400), "high": _q(10.2)}]),
        _raw_obs("range-bound-no-code", referenceRange=[{"low": _q(8.6, "mg/dL", None), "high": _q(10.2)}]),
        _raw_obs("range-bound-no-unit", referenceRange=[{"low": _q(8.6, None, "mg/dL"), "high": _q(10.2)}]),
        _raw_obs("range-age-none", referenceRange=[{"low": _q(8.6), "high": _q(10.2), "age": None}]),
        _raw_obs("range-applies-to-empty", referenceRange=[{"low": _q(8.6), "high": _q(10.2), "appliesTo": []}]),
        _raw_obs("range-empty", referenceRange=[]),
        _raw_obs("range-empty-dict", referenceRange=[{}]),
        _raw_obs("specimen-str", specimen="Specimen/s1"),
        _raw_obs("id-missing", id=None),
        _raw_obs("id-list", id=["a"]),
        _raw_obs("vq-no-code-key", valueQuantity={"value": 9.4, "unit": "mg/dL"}),
        _raw_obs("vq-no-unit-key", valueQuantity={"value": 9.4, "code": "mg/dL"}),
        _raw_obs("vq-no-value-key", valueQuantity={"unit": "mg/dL", "code": "mg/dL"}),
        _raw_obs("vq-empty-units", valueQuantity=_q(9.4, "", "")),
        _raw_obs("status-none-vq-list", status=None, valueQuantity=[1]),
        _raw_obs("status-eie-vq-str", status="entered-in-error", valueQuantity="x"),
        _raw_obs("dar-and-bad-vq", dataAbsentReason={"text": "x"}, valueQuantity="x"),
        {**_raw_obs("dar-none"), "dataAbsentReason": None, "specimen": None, "referenceRange": None},
        _raw_obs("time-and-period", effectivePeriod={"end": when(9)}),
        _raw_obs("bad-time-and-period", effectiveDateTime="bad", effectivePeriod={"end": when(9)}),
        _raw_obs("bad-time-and-issued", effectiveDateTime="2025-02-30T08:00:00Z", issued=when(1)),
        _raw_obs("specimen-ref-int", specimen={"reference": 5}),
        _raw_obs("specimen-ok", specimen={"reference": "Specimen/s9"}),
        _raw_obs("irrelevant-code", code={"coding": [{"system": LOINC, "code": "8867-4"}]}, valueQuantity="junk"),
        _raw_obs("pth-si", code={"coding": [{"system": LOINC, "code": "2731-8"}]},
                 valueQuantity=_q(30.0, "pmol/L", "pmol/L"), referenceRange=[{"high": _q(6.9, "pmol/L", "pmol/L")}]),
        _raw_obs("albumin-g-l", code={"coding": [{"system": LOINC, "code": "1751-7"}]},
                 valueQuantity=_q(38, "g/L", "g/L")),
        _raw_obs("egfr-odd-unit", code={"coding": [{"system": LOINC, "code": "33914-3"}]},
                 valueQuantity=_q(12, "mL/min/1.73m2", None)),
        {"resourceType": "DiagnosticReport", "id": "dr1", "result": [
            {"reference": "Observation/ok"}, {"reference": "Observation/specimen-ok"}, "x", {"reference": 5}]},
        {"resourceType": "DiagnosticReport", "id": "dr2", "result": [{"reference": "Observation/ok"}]},
        {"resourceType": "DiagnosticReport", "id": "dr3", "result": "Observation/ok"},
        {"resourceType": "Specimen", "id": "s1"},
    ]


def _malformed_others() -> list[Any]:
    return [
        _raw_cond("c-ok"),
        _raw_cond("c-code-str", code="N18.6"),
        _raw_cond("c-code-list", code=[{"coding": [{"system": ICD10, "code": "N18.6"}]}]),
        _raw_cond("c-code-none", code=None),
        _raw_cond("c-text-calciphylaxis", code={"text": "Calcific uremic arteriolopathy of the leg"}),
        _raw_cond("c-display-calciphylaxis", code={"coding": [{"system": "http://local", "code": "x",
                                                               "display": "CALCIPHYLAXIS"}]}),
        _raw_cond("c-icd-undotted", code={"coding": [{"system": ICD10, "code": "n186"}]}),
        _raw_cond("c-icd-oid", code={"coding": [{"system": "urn:oid:2.16.840.1.113883.6.90", "code": "E11.65"}]}),
        _raw_cond("c-snomed", code={"coding": [{"system": SNOMED, "code": "46177005"}], "text": "  "}),
        _raw_cond("c-clinical-str", clinicalStatus="Active"),
        _raw_cond("c-clinical-odd", clinicalStatus="foo"),
        _raw_cond("c-clinical-resolved", clinicalStatus={"coding": [{"code": "resolved"}]}),
        _raw_cond("c-clinical-missing", clinicalStatus=None),
        _raw_cond("c-clinical-list", clinicalStatus=[{"coding": [{"code": "active"}]}]),
        _raw_cond("c-clinical-int", clinicalStatus=1),
        _raw_cond("c-verification-str", verificationStatus="provisional"),
        _raw_cond("c-verification-refuted", verificationStatus={"coding": [{"code": "refuted"}]}),
        _raw_cond("c-verification-missing", verificationStatus=None),
        _raw_cond("c-verification-odd", verificationStatus={"coding": "x"}),
        _raw_cond("c-abated-bool", abatementBoolean=True),
        _raw_cond("c-abated-false", abatementBoolean=False),
        _raw_cond("c-abated-past", abatementDateTime=when(10)),
        _raw_cond("c-abated-future", abatementDateTime=when(-10)),
        _raw_cond("c-abated-bad", abatementDateTime="soon"),
        _raw_cond("c-abated-period", abatementPeriod={"start": when(20)}),
        _raw_cond("c-abated-string", abatementString="in childhood"),
        _raw_cond("c-onset", onsetDateTime=when(100), recordedDate=when(50)),
        _raw_cond("c-onset-period", onsetPeriod={"start": when(300)}, recordedDate="bad"),
        _raw_cond("c-tls-old", code={"coding": [{"system": ICD10, "code": "E88.3"}]}, onsetDateTime=when(30)),
        _raw_cond("c-tls-recent-recorded", code={"coding": [{"system": ICD10, "code": "E88.3"}]},
                  onsetDateTime=when(30), recordedDate=when(2)),
        _raw_cond("c-bare-plus-coding", code={"system": ICD10, "code": "N18.6", "display": "ESRD (bare)",
                                              "coding": [{"system": SNOMED, "code": "46177005", "display": "ESRD"}]}),
        {"resourceType": "Condition", "id": "c-bare"},
        _raw_proc("p-ok"),
        _raw_proc("p-two-codings", code={"coding": [{"system": SNOMED, "code": "302497006", "display": "HD"},
                                                    {"system": "http://www.ama-assn.org/go/cpt", "code": "90935"}],
                                         "text": "Hemodialysis"}),
        _raw_proc("p-cpt-only", code={"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "90935"}]}),
        _raw_proc("p-in-progress", status="in-progress"),
        _raw_proc("p-not-done", status="not-done"),
        _raw_proc("p-status-missing", status=None),
        _raw_proc("p-status-cc", status={"coding": [{"code": "completed"}]}),
        _raw_proc("p-code-str", code="302497006"),
        _raw_proc("p-code-bare", code={"system": SNOMED, "code": "302497006"}),
        _raw_proc("p-code-bare-plus-coding", code={"system": SNOMED, "code": "70536003", "display": "bare",
                                                   "coding": [{"system": SNOMED, "code": "302497006"}]}),
        _raw_proc("p-period", performedDateTime=None, performedPeriod={"start": when(5), "end": when(4.8)}),
        _raw_proc("p-period-start", performedDateTime=None, performedPeriod={"start": when(5)}),
        _raw_proc("p-period-list", performedDateTime=None, performedPeriod=[{"start": when(5)}]),
        _raw_proc("p-no-time", performedDateTime=None),
        _raw_proc("p-bad-time", performedDateTime="last week"),
        _raw_proc("p-transplant", code={"coding": [{"system": SNOMED, "code": "70536003"}]}),
        _raw_proc(None, code={"coding": [{"system": SNOMED, "code": "302497006"}]}),
        _raw_proc("p-irrelevant", code={"coding": [{"system": SNOMED, "code": "80146002"}]}),
        {"resourceType": "Procedure", "id": "p-bare"},
        {"resourceType": "Medication", "id": "m1", "code": {"coding": [{"system": RXNORM, "code": "855332"}]}},
        {"resourceType": "Medication", "code": {"text": "no id"}},
        {"resourceType": "Medication", "id": "m2", "code": {"text": "combo"}, "ingredient": [
            {"itemCodeableConcept": {"text": "calcium carbonate 500 mg"}}, "junk", {"itemReference": {}}]},
        {"resourceType": "MedicationRequest", "id": "mr-ref", "status": "active", "intent": "order",
         "medicationReference": {"reference": "Medication/m1", "display": "Coumadin"}},
        {"resourceType": "MedicationRequest", "id": "mr-ref-ingredients", "status": "active", "intent": "plan",
         "medicationReference": {"reference": "Medication/m2"}},
        {"resourceType": "MedicationRequest", "id": "mr-contained", "status": "on-hold", "intent": "original-order",
         "medicationReference": {"reference": "#c1"},
         "contained": [{"resourceType": "Medication", "id": "c1", "code": {"text": "Calcitriol 0.25 mcg"}}, "x"]},
        {"resourceType": "MedicationRequest", "id": "mr-contained-odd", "status": "active",
         "medicationReference": {"reference": "#c1"}, "contained": "junk"},
        {"resourceType": "MedicationRequest", "id": "mr-proposal", "status": "active", "intent": "proposal",
         "medicationCodeableConcept": {"text": "warfarin"}},
        {"resourceType": "MedicationRequest", "id": "mr-stopped", "status": "stopped", "intent": "order",
         "medicationCodeableConcept": {"text": "warfarin"}},
        {"resourceType": "MedicationRequest", "id": "mr-text", "status": "active", "intent": "order",
         "medicationCodeableConcept": {"text": "Aluminium hydroxide suspension"}},
        {"resourceType": "MedicationRequest", "id": "mr-concept-list", "status": "active",
         "medicationCodeableConcept": [{"text": "warfarin"}]},
        {"resourceType": "MedicationOrder", "id": "mo-dstu2", "status": "active",
         "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "855332", "display": "Warfarin"}]}},
        {"resourceType": "MedicationStatement", "id": "ms-active", "status": "active",
         "medicationCodeableConcept": {"text": "Calcium carbonate 1250 mg"}},
        {"resourceType": "MedicationStatement", "id": "ms-completed", "status": "completed",
         "medicationCodeableConcept": {"text": "Calcium carbonate 1250 mg"}},
        {"resourceType": "MedicationStatement", "id": "ms-bicarb", "status": "active",
         "medicationCodeableConcept": {"text": "sodium bicarbonate 650 mg"}},
    ]


def _malformed_cases() -> list[GoldenCase]:
    observations = _malformed_observations()
    others = _malformed_others()
    odd_patients: list[tuple[str, Any]] = [
        ("adult", patient(60, "female")), ("child", infant(20)), ("none", None), ("not-a-dict", "nope"),
        ("bad-birth", {"resourceType": "Patient", "id": 5, "birthDate": "1960-13-45", "gender": 1}),
        ("partial-birth", {"resourceType": "Patient", "id": "pb", "birthDate": "1960", "gender": "other"}),
        ("leap-birth", {"resourceType": "Patient", "id": "lp", "birthDate": "1960-02-29", "gender": "male"}),
    ]
    out = []
    for name, pt in odd_patients:
        out.append(GoldenCase(f"malformed-{name}", pt, observations + others, (PATIENT_VIEW, ORDER_SELECT),
                              [draft("rx", "Calcium gluconate 1 g", route=IV)]))
    out.append(GoldenCase("malformed+preliminary", patient(60), observations + others, (PATIENT_VIEW,),
                          options={"include_preliminary": True}))
    # Each malformed resource on its own next to a valid pair, so one bad resource never hides another.
    for i, bad in enumerate(observations + others):
        out.append(GoldenCase(f"single-{i}", patient(60), [bad, *_pair(10.0, 7.5)]))
    # Whole-record shapes that are wrong (the record itself, not a resource).
    out.append(GoldenCase("record-not-a-list", patient(60), {"not": "a list"}, (ORDER_SELECT,),  # type: ignore[arg-type]
                          "nope", selections="MedicationRequest/x"))  # type: ignore[arg-type]
    out.append(GoldenCase("record-tuple", patient(60), tuple(_pair(10.0, 7.5)), (PATIENT_VIEW,)))  # type: ignore[arg-type]
    out.append(GoldenCase("unknown-hook", patient(60), _pair(10.0, 7.5), ("encounter-start",)))
    return out


def _revision2_cases() -> list[GoldenCase]:
    """The §8.4 patients TP21-TP33 and one record with every revision-2 extraction shape (clinical-rules.md §8)."""
    out = []
    for r2 in EXPECTED_R2:
        case = r2.build()
        hook = case.get("hook", PATIENT_VIEW)
        hooks = (hook,) if hook == PATIENT_VIEW else (hook, ORDER_SIGN, PATIENT_VIEW)
        out.append(GoldenCase(r2.case_id, case["patient"], case["resources"], hooks, case.get("drafts", [])))
    noon = datetime(2025, 6, 15, 12, tzinfo=NOW.tzinfo)
    nan_obs = obs("egfr", 60, 1)
    nan_obs["valueQuantity"]["value"] = float("nan")
    undated_cond = cond("N18.6")
    undated_cond["onsetDateTime"] = "9999-12-31T23:59:59-14:00"
    statement = med("Warfarin 5 mg", "11289", status="completed", rtype="MedicationStatement")
    statement["effectivePeriod"] = {"start": when(40), "end": when(20)}
    extraction = [
        # §8 C6: implausible values of every checked analyte, non-finite numbers, future and ancient dates
        obs("ca", 25.1, 1), obs("ca", 25.0, 1), obs("ica", 5.01, 1), obs("p", 0.09, 1), obs("alb", 8.1, 1),
        obs("pth", 10_001, 1), obs("pth_si", 1061, 1), obs("k", 12.1, 1), obs("mg", 0.19, 1), obs("vitd", 1000.1, 1),
        obs("ca_si", 1e308, 1), nan_obs, obs("ca", 9.4, at=(noon + timedelta(hours=25)).isoformat()),
        obs("ca", 9.4, at="1899-12-31"), obs("p", 4.1, at=(noon + timedelta(hours=23)).isoformat()),
        # §8 C8, C17, §8.0 specimen exceptions, C11 interpretation and age bands
        obs("pth_si", 60, 30), obs("mg_si", 0.7, 3), obs("mg", 2.6, 3, unit="mEq/L"), obs("k_blood", 6.1, hours=2),
        obs("p", 6.5, 1, interpretation="H", ranges=[ref_range(2.5, 4.5, "mg/dL"),
                                                    ref_range(4.5, 8.3, "mg/dL", age=(0, 11, "mo"))]),
        # §8.0 procedure dates; §8 C5 value sets; C2 parathyroidectomy; C2/C7 ServiceRequests
        proc("302497006", 2), proc("302497006", period=(when(5), when(5, hours=-4.5))),
        proc("714749008", status="in-progress", period=(when(1), None)), proc("71192002", 3),
        proc("10848006", 3), proc("90997", 3, system="http://www.ama-assn.org/go/cpt"),
        proc("13629008", 7, display="Parathyroidectomy"), proc("302497006", performed_string="in 2019"),
        service_request("714749008"), service_request("714749008", status="revoked"),
        # §8 C4, C5 conditions; §8.0 condition dates
        cond("L94.2"), cond("T86.11", onset_days=20), cond("N17.9", onset_days=5), cond("46177005", SNOMED),
        undated_cond,
        # §8.0 C16 medication history
        med("Warfarin 5 mg", "11289", status="stopped", authored_days=60), statement,
        med("Warfarin 5 mg", "11289", status="entered-in-error", authored_days=1),
    ]
    quantity_draft = draft("rx-pill", "Calcium carbonate 500 mg", route=ORAL)
    quantity_draft["dosageInstruction"][0]["doseAndRate"] = [{"doseQuantity": {"value": 1, "unit": "{pill}"}}]
    drafts = [
        pn_admixture("rx-pn"), crrt_fluid("rx-crrt"), al_hydroxide_draft("rx-al"), mg_oxide_draft("rx-mg"),
        draft("rx-mgcl", "magnesium chloride 64 mg tablet", route=ORAL), mg_sulfate_iv("rx-mgso4"),
        quantity_draft, draft("rx-coded", None, route=ORAL) | {"medicationCodeableConcept": {
            "coding": [{"system": RXNORM, "code": "198741"}]}},
    ]
    out.append(GoldenCase("r2-extraction", infant(6), extraction, (PATIENT_VIEW, ORDER_SELECT, ORDER_SIGN), drafts))
    out.append(GoldenCase("r2-extraction-adult", patient(60), extraction, (PATIENT_VIEW,)))
    return out


def _synthetic_cases() -> list[GoldenCase]:
    """~60 synthetic patients: every profile, several seeds, mg/dL and mmol/L (about a third are SI)."""
    as_of = date(2025, 6, 15)
    out = []
    for seed, profile, index in itertools.product((1, 7, 2025), PROFILES, range(7)):
        years = 2 if index == 0 else 1
        synth = generate_patient(index, profile, years=years, seed=seed, as_of=as_of)
        resources = [r for r in synth.resources if r["resourceType"] != "Patient"]
        pt: dict[str, Any] | None = next(r for r in synth.resources if r["resourceType"] == "Patient")
        hooks = (PATIENT_VIEW, ORDER_SELECT) if index % 3 == 0 else (PATIENT_VIEW,)
        drafts = [{"resourceType": "MedicationRequest", "id": "iv-ca", "status": "draft", "intent": "order",
                   "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "1668250"}]},
                   "dosageInstruction": [{"route": {"coding": [{"system": SNOMED, "code": "47625008"}]}}]}]
        if index == 1:  # the Patient among the resources instead of in prefetch
            pt, resources = None, synth.resources
        out.append(GoldenCase(f"synth-{seed}-{profile}-{index}", pt, resources, hooks, drafts,
                              now=NOW + timedelta(hours=index)))
    return out


def golden_cases() -> list[GoldenCase]:
    """Every golden case, built deterministically (resource ids restart at 1 on every call)."""
    saved = builders._ids
    builders._ids = itertools.count(1)
    try:
        cases = (_section5_cases() + _boundary_cases() + _spec_fixture_cases() + _dstu2_and_sandbox_cases()
                 + _malformed_cases() + _revision2_cases() + _synthetic_cases())
    finally:
        builders._ids = saved
    seen: set[str] = set()
    for case in cases:
        if case.case_id in seen:
            raise AssertionError(f"duplicate golden case id {case.case_id}")
        seen.add(case.case_id)
    # The engine must never change its input: every case gets its own copy.
    return [copy.deepcopy(case) for case in cases]


# --- the golden files (tests/engine/golden_*.json.gz): one reader and one writer for every golden test -------


@functools.cache
def cases_by_id() -> dict[str, GoldenCase]:
    """Every golden case by its id (built once per test run)."""
    return {case.case_id: case for case in golden_cases()}


def read_golden(path: Path, fmt: int) -> dict[str, Any]:
    """The recorded answers by case id ({} when the file does not exist yet)."""
    if not path.exists():
        return {}
    with gzip.open(path, "rt", encoding="utf-8") as stream:
        data = json.load(stream)
    assert data.get("format") == fmt
    return dict(data["cases"])


def write_golden(path: Path, fmt: int, answer: Callable[[GoldenCase], Any]) -> None:
    """Record ``answer(case)`` for every case: one line per case, gzip without a timestamp (stable bytes)."""
    lines = [f"{json.dumps(case_id)}: {json.dumps(answer(case), sort_keys=True, separators=(',', ':'))}"
             for case_id, case in cases_by_id().items()]
    body = ",\n".join(lines)
    text = f'{{"format": {fmt}, "cases": {{\n{body}\n}}}}\n'
    with path.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as stream:
        stream.write(text.encode("utf-8"))
