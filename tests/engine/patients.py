"""The synthetic test patients of clinical-rules.md as FHIR JSON: TP01-TP20 (section 5) and TP21-TP33 (§8.4).

``EXPECTED`` (TP01-TP20) drives test_test_patients.py; ``EXPECTED_R2`` adds the §8.4 patients with their §8
conditions and drives test_revision2_patients.py together with the amended TP10/TP12 (``AMENDED``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .builders import (
    ICD10,
    IV,
    ORAL,
    PD_CATHETER_REMOVAL,
    SNOMED,
    al_hydroxide_draft,
    ca_chloride,
    cond,
    draft,
    infant,
    iv_gluconate,
    iv_sodium_phosphate,
    med,
    mg_oxide_draft,
    obs,
    patient,
    proc,
    ref_range,
    warfarin_draft,
    when,
)

Case = dict[str, Any]


def tp01(unit_ca: str | None = None, ca: float = 10.0, p: float = 7.5, unit_p: str | None = None) -> Case:
    return {
        "patient": patient(58, "male"),
        "resources": [
            cond("N18.6"),
            proc("302497006", days=2),
            obs("ca", ca, 2, specimen="s1", unit=unit_ca),
            obs("p", p, 2, specimen="s1", unit=unit_p),
            obs("alb", 3.8, 2, specimen="s1"),
        ],
    }


def tp02() -> Case:
    return {
        "patient": patient(58, "male"),
        "resources": [
            cond("N18.6"),
            proc("302497006", days=2),
            obs("ca_si", 2.50, 2, specimen="s1"),
            obs("p_si", 2.42, 2, specimen="s1"),
            obs("alb", 3.8, 2, specimen="s1"),
        ],
    }


def tp03(warfarin: bool = False) -> Case:
    resources = [
        cond("N18.6"),
        cond("Z99.2"),
        obs("ca", 10.0, 1, specimen="s1"),
        obs("p", 7.0, 1, specimen="s1"),
        obs("alb", 4.0, 1, specimen="s1"),
        obs("pth", 300, 60, ref=(15, 65)),
        obs("bmi", 27, 10),
    ]
    if warfarin:
        resources.append(med("Warfarin Sodium 5 MG Oral Tablet", code="855332"))
    return {"patient": patient(66, "female"), "resources": resources}


def tp04() -> Case:
    return {
        "patient": patient(45, "male"),
        "resources": [
            obs("egfr", 92, 3),
            cond("D86.0"),
            obs("ca", 11.0, 3, specimen="s1"),
            obs("p", 6.8, 3, specimen="s1"),
        ],
    }


def tp05() -> Case:
    return {
        "patient": patient(72, "female"),
        "resources": [
            cond("N18.6"),
            cond("Z99.2"),
            obs("ca", 9.9, 120, specimen="s1"),
            obs("p", 8.1, 120, specimen="s1"),
            obs("pth", 250, 150),
        ],
    }


def tp06(bad_status: str = "entered-in-error") -> Case:
    return {
        "patient": patient(60, "male"),
        "resources": [
            cond("N18.6"),
            proc("302497006", days=3),
            obs("p", 8.5, 1, status=bad_status),
            obs("p", 4.8, 3, specimen="s1"),
            obs("ca", 9.2, 3, specimen="s1"),
            obs("pth", 300, 60),
            obs("alb", 3.9, 3, specimen="s1"),
        ],
    }


def tp07(esrd_verification: str = "refuted") -> Case:
    return {
        "patient": patient(50, "female"),
        "resources": [
            cond("N18.6", verification=esrd_verification),
            cond("M33.10", clinical="resolved"),
            obs("egfr", 85, 2),
            obs("ca", 9.5, 1, specimen="s1"),
            obs("p", 4.0, 1, specimen="s1"),
        ],
        "hook": "order-select",
        "drafts": [draft("rx7", "Calcium gluconate 1 g in 100 mL", route=IV)],
    }


def tp08() -> Case:
    return {
        "patient": patient(70, "male"),
        "resources": [
            cond("N18.6"),
            proc("302497006", days=2),
            obs("ca", 9.6, 2, specimen="s1"),
            obs("p", 7.5, 2, specimen="s1"),
        ],
        "hook": "order-select",
        "drafts": [draft("rx8", "Calcium Carbonate 1250 MG Oral Tablet", route=ORAL)],
    }


def tp09() -> Case:
    return {
        "patient": patient(45, "female"),
        "resources": [
            obs("egfr", 95, 0),
            obs("ca", 8.0, 0, specimen="s1"),
            obs("p", 3.2, 0, specimen="s1"),
            obs("alb", 4.0, 0, specimen="s1"),
        ],
        "hook": "order-select",
        "drafts": [draft("rx9", "Calcium gluconate 2 g", route=IV, dose="2 g IV over 1 hour")],
    }


def tp10() -> Case:
    return {
        "patient": patient(64, "male"),
        "resources": [
            cond("N18.6"),
            proc("302497006", days=1),
            obs("ca", 9.75, 1, specimen="s1"),
            obs("p", 8.0, 1, specimen="s1"),
            obs("k", 5.1, 1, specimen="s1"),
        ],
        "hook": "order-select",
        "drafts": [draft("rx10", "Calcium gluconate 1 g", route=IV)],
    }


def tp11() -> Case:
    return {
        "patient": patient(55, "female"),
        "resources": [
            cond("N18.6"),
            proc("302497006", days=2),
            obs("ca", 9.2, 1, specimen="s1"),
            obs("p", 6.5, 1, specimen="s1"),
        ],
        "hook": "order-select",
        "drafts": [draft("rx11", "Calcium Chloride 100 MG/ML Injectable Solution")],
    }


def tp12() -> Case:
    return {
        "patient": patient(38, "male"),
        "resources": [
            cond("C83.30", text="Diffuse large B-cell lymphoma"),
            cond("E88.3", recorded_days=1),
            obs("p", 6.8, 0, specimen="s1"),
            obs("ca", 6.9, 0, specimen="s1"),
            obs("urate", 9.2, 0, specimen="s1"),
            obs("k", 5.4, 0, specimen="s1"),
        ],
        "hook": "order-select",
        "drafts": [draft("rx12", "Calcium gluconate 1 g", route=IV)],
    }


def tp13() -> Case:
    return {
        "patient": patient(69, "female"),
        "resources": [
            cond("N18.6"),
            proc("302497006", days=1),
            obs("ca", 11.8, 1, specimen="s1"),
            obs("p", 2.0, 1, specimen="s1"),
            obs("alb", 3.9, 1, specimen="s1"),
        ],
        "hook": "order-select",
        "drafts": [draft("rx13", "Sodium phosphate 15 mmol in 250 mL", route=IV)],
    }


def tp14() -> Case:
    return {
        "patient": patient(62, "female"),
        "resources": [
            cond("N18.6"),
            proc("302497006", days=2),
            med("Warfarin Sodium 5 MG Oral Tablet", code="855332"),
            obs("bmi", 34, 10),
            cond("E11.22"),
            obs("ca", 9.8, 3, specimen="s1"),
            obs("p", 7.4, 3, specimen="s1"),
            obs("pth", 900, 30, ref=(15, 65)),
            obs("alb", 3.3, 3, specimen="s1"),
        ],
    }


def tp15() -> Case:
    return {
        "patient": patient(12, "female"),
        "resources": [
            cond("M33.00"),
            obs("ca", 9.6, 5, specimen="s1"),
            obs("p", 5.2, 5, specimen="s1", ref=(3.3, 5.8)),
            obs("alb", 4.2, 5, specimen="s1"),
        ],
    }


def tp16() -> Case:
    return {
        "patient": infant(3, "male"),
        "resources": [
            obs("ca", 10.4, 1, specimen="s1", ref=(8.8, 11.0)),
            obs("p", 6.9, 1, specimen="s1", ref=(4.8, 8.2)),
        ],
    }


def tp17(hook: str = "patient-view") -> Case:
    case: Case = {
        "patient": patient(51, "female"),
        "resources": [
            obs("egfr", 70, 5),
            obs("vitd", 180, 5),
            obs("ca", 12.4, 1, specimen="s1"),
            obs("alb", 4.0, 1, specimen="s1"),
            obs("p", 4.5, 1, specimen="s1"),
            med("Cholecalciferol 50000 UNT Oral Capsule"),
        ],
        "hook": hook,
    }
    if hook != "patient-view":
        case["drafts"] = [draft("rx17", "Cholecalciferol 50,000 IU", route=ORAL)]
    return case


def tp18() -> Case:
    return {
        "patient": patient(74, "male"),
        "resources": [
            cond("N18.4"),
            obs("ca", 9.8, 2, specimen="s1"),
            obs("alb", 2.0, 2, specimen="s1"),
            obs("p", 5.0, 2, specimen="s1"),
            obs("pth", 120, 90),
        ],
    }


def tp19() -> Case:
    return {
        "patient": patient(59, "male"),
        "resources": [
            cond("N18.6"),
            proc("302497006", days=2),
            obs("ca", 9.0, 1, specimen="s1"),
            obs("p", 10.0, 1, specimen="s1", comparator=">"),
        ],
    }


def tp20() -> Case:
    return {
        "patient": patient(67, "male"),
        "resources": [
            cond("N18.6"),
            cond("Z99.2"),
            obs("ca", 9.0, at="2025-06-12T08:00:00Z"),
            obs("p", 8.0, at="2025-06-14T20:00:00Z"),
            obs("pth", 250, 40),
        ],
    }


# Section 5: (case id, builder, expected [(rule id, indicator)] in returned order)
EXPECTED: list[tuple[str, Any, list[tuple[str, str]]]] = [
    ("TP01", tp01, [("caxp-high", "warning")]),
    ("TP02", tp02, [("caxp-high", "warning")]),
    ("TP03", tp03, [("caxp-above-target", "info")]),
    ("TP03b", lambda: tp03(warfarin=True), [("calciphylaxis-risk", "warning"), ("caxp-above-target", "info")]),
    ("TP04", tp04, [("caxp-high", "warning")]),
    ("TP05", tp05, [("mineral-labs-due", "info")]),
    ("TP06", tp06, []),
    ("TP07", tp07, []),
    ("TP08", tp08, [("oral-calcium-order", "info")]),
    ("TP09", tp09, []),
    ("TP10", tp10, [("iv-calcium-order", "critical")]),
    ("TP11", tp11, [("iv-calcium-order", "warning")]),
    ("TP12", tp12, [("iv-calcium-order", "warning")]),
    ("TP13", tp13, [("iv-phosphate-order", "warning")]),
    ("TP14", tp14, [("caxp-high", "warning"), ("calciphylaxis-risk", "warning")]),
    ("TP15", tp15, []),
    ("TP16", tp16, []),
    ("TP17", tp17, [("hypercalcemia", "warning"), ("vitamin-d-excess", "warning")]),
    ("TP17-order", lambda: tp17("order-select"), [("vitamin-d-order", "warning")]),
    # TP18: P 5.0 > 4.5 in CKD G4 with Ca x P 49 -> R05 reported as well (§8 C1: whenever R01/R02 did not fire)
    ("TP18", tp18, [("hypercalcemia", "info"), ("hyperphosphatemia", "info")]),
    ("TP19", tp19, [("caxp-high", "warning")]),
    ("TP20", tp20, [("hyperphosphatemia", "info")]),
]


# --- §8.4: revision-2 test patients TP21-TP33 (all dated relative to NOW) -------------------------------------


def tp21() -> Case:
    """No CKD; Ca 9.5 & P 6.2 same specimen d-1 (Ca x P 58.9): R05 must not be lost (C1)."""
    return {
        "patient": patient(52, "female"),
        "resources": [
            obs("egfr", 92, 1),
            obs("ca", 9.5, 1, specimen="s1"),
            obs("p", 6.2, 1, specimen="s1"),
            obs("alb", 4.0, 1, specimen="s1"),
        ],
    }


def _hd_g5d() -> list[dict[str, Any]]:
    """N18.6 plus a haemodialysis session two days ago (labs at d-1 are outside its post-dialysis window)."""
    return [cond("N18.6"), proc("302497006", days=2)]


def tp22(k: float = 7.1, k_hours: float = 3, k_kind: str = "k") -> Case:
    """G5D male, Ca x P 76.3, K 7.1 mmol/L 3 h ago; IV calcium gluconate: likely indicated (C2)."""
    return {
        "patient": patient(61, "male"),
        "resources": [
            *_hd_g5d(),
            obs("ca", 10.6, 1, specimen="s1"),
            obs("p", 7.2, 1, specimen="s1"),
            obs(k_kind, k, 0, hours=k_hours),
        ],
        "hook": "order-select",
        "drafts": [iv_gluconate("rx22")],
    }


def tp23() -> Case:
    """G5D, Ca 9.0 & P 4.0 d-1; calcium chloride with no route: Replace first, no separate Remove (C2/C14)."""
    return {
        "patient": patient(57, "female"),
        "resources": [*_hd_g5d(), obs("ca", 9.0, 1, specimen="s1"), obs("p", 4.0, 1, specimen="s1")],
        "hook": "order-select",
        "drafts": [ca_chloride("rx23")],
    }


def tp24(p: float = 1.0) -> Case:
    """G5D, P 1.0 mg/dL & Ca 8.9 d-1; IV sodium phosphates: hypophosphatemia recognised (C3)."""
    return {
        "patient": patient(66, "male"),
        "resources": [*_hd_g5d(), obs("p", p, 1, specimen="s1"), obs("ca", 8.9, 1, specimen="s1")],
        "hook": "order-select",
        "drafts": [iv_sodium_phosphate("rx24")],
    }


def tp25() -> Case:
    """CREST (M34.1) + calcinosis cutis (L94.2), no CKD; IV calcium: info naming calcinosis cutis (C4)."""
    return {
        "patient": patient(58, "female"),
        "resources": [
            cond("M34.1"),
            cond("L94.2"),
            obs("egfr", 88, 10),
            obs("ca", 9.4, 10, specimen="s1"),
            obs("p", 3.6, 10, specimen="s1"),
        ],
        "hook": "order-select",
        "drafts": [iv_gluconate("rx25")],
    }


def tp26(extra: list[dict[str, Any]] | None = None) -> Case:
    """Kidney transplant (Z94.0 d-400) with a stale Z99.2 (onset 6 years ago) and no dialysis for 2 years (C5)."""
    return {
        "patient": patient(49, "male"),
        "resources": [
            cond("Z94.0", recorded_days=400),
            cond("Z99.2", onset_days=6 * 365),
            proc("302497006", days=2 * 365 + 10),
            obs("bmi", 26, 30),
            obs("egfr", 48, 5),
            obs("ca", 10.8, 5, specimen="s1"),
            obs("p", 3.4, 5, specimen="s1"),
            obs("alb", 4.0, 5, specimen="s1"),
            *(extra or []),
        ],
    }


def tp27(with_pth: bool = True) -> Case:
    """G5D with PTH 60 pmol/L (LOINC 14866-8) d-30: PTH is present, so no R03 (C8)."""
    resources = [*_hd_g5d(), obs("ca", 9.2, 1, specimen="s1"), obs("p", 5.0, 1, specimen="s1"),
                 obs("alb", 4.0, 1, specimen="s1")]
    if with_pth:
        resources.append(obs("pth_si", 60, 30))
    return {"patient": patient(63, "male"), "resources": resources}


def tp28(interpretation: str | None = None) -> Case:
    """Age 3 years, Ca 10.8 & P 6.5 d-1 with adult reference ranges and no age band (C11)."""
    return {
        "patient": patient(3, "female"),
        "resources": [
            obs("ca", 10.8, 1, specimen="s1", ranges=[ref_range(8.4, 10.2, "mg/dL")], interpretation=interpretation),
            obs("p", 6.5, 1, specimen="s1", ranges=[ref_range(2.5, 4.5, "mg/dL")], interpretation=interpretation),
        ],
    }


def tp29(history: list[dict[str, Any]] | None = None) -> Case:
    """G5D, Ca 10.6 & P 7.2 d-1, no warfarin ever; warfarin 5 mg oral draft: R24 (C16)."""
    return {
        "patient": patient(70, "female"),
        "resources": [*_hd_g5d(), obs("ca", 10.6, 1, specimen="s1"), obs("p", 7.2, 1, specimen="s1"),
                      *(history or [])],
        "hook": "order-select",
        "drafts": [warfarin_draft("rx29")],
    }


def tp30() -> Case:
    """CKD 3b (N18.32) with eGFR 38 d-20; aluminium hydroxide oral: R21 info (C17)."""
    return {
        "patient": patient(68, "male"),
        "resources": [cond("N18.32"), obs("egfr", 38, 20)],
        "hook": "order-select",
        "drafts": [al_hydroxide_draft("rx30")],
    }


def tp31() -> Case:
    """No CKD, Ca 10.4 & P 7.2 d-1 plus a second calcium dated 9999-12-31: skipped, not fatal (C6)."""
    return {
        "patient": patient(47, "male"),
        "resources": [
            obs("egfr", 95, 1),
            obs("ca", 10.4, 1, specimen="s1"),
            obs("p", 7.2, 1, specimen="s1"),
            obs("alb", 4.0, 1, specimen="s1"),
            obs("ca", 9.1, at="9999-12-31T00:00:00Z", oid="ca-future"),
        ],
    }


def tp32() -> Case:
    """CKD 3b, eGFR 40, Ca 10.7 & P 5.1 d-10; only Procedure: removal of a PD catheter d-10 (C5)."""
    return {
        "patient": patient(59, "female"),
        "resources": [
            cond("N18.32"),
            obs("egfr", 40, 10),
            obs("ca", 10.7, 10, specimen="s1"),
            obs("p", 5.1, 10, specimen="s1"),
            proc(PD_CATHETER_REMOVAL, days=10, display="Removal of peritoneal dialysis catheter"),
        ],
    }


def tp33(mg: float = 1.4) -> Case:
    """Kidney transplant on tacrolimus, CKD 3a (eGFR 52), Mg 1.4 mg/dL below LLN d-3; magnesium oxide (C17)."""
    return {
        "patient": patient(45, "female"),
        "resources": [
            cond("Z94.0", recorded_days=900),
            cond("N18.31"),
            med("Tacrolimus 1 MG Oral Capsule"),
            obs("egfr", 52, 3),
            obs("egfr", 55, 120),
            obs("mg", mg, 3, ref=(1.7, 2.4)),
        ],
        "hook": "order-select",
        "drafts": [mg_oxide_draft("rx33")],
    }


@dataclass(frozen=True)
class R2Case:
    """A §8.4 expectation: the exact (rule id, indicator) set plus the §8 conditions that go with it."""

    case_id: str
    build: Any
    expected: list[tuple[str, str]]
    # (rule id, indicator) pairs that may also appear (§8.4 "acceptable")
    allowed: list[tuple[str, str]] = field(default_factory=list)
    no_delete: bool = False              # no suggestion of any card has a delete action
    no_remove_only: bool = False         # no suggestion that only deletes (a Replace may delete + create)
    first_is_replace: bool = False       # the first suggestion is delete + create (chloride -> gluconate)
    forbidden_anywhere: tuple[str, ...] = ()   # words absent from every card (case-insensitive)
    forbidden_in_summary: tuple[str, ...] = ()
    summary_patterns: tuple[str, ...] = ()     # regexes every card summary must match (case-insensitive)
    detail_patterns: tuple[str, ...] = ()      # regexes some card detail must match (case-insensitive)


# §8.4 table. "exactly one card" in §8.4 is expressed by a one-element ``expected`` with no ``allowed``.
EXPECTED_R2: list[R2Case] = [
    R2Case("TP21", tp21, [("hyperphosphatemia", "info")]),
    R2Case("TP22", tp22, [("iv-calcium-order", "info")], no_delete=True,
           summary_patterns=(r"\b(K|potassium)\s*7\.1",)),
    R2Case("TP23", tp23, [("iv-calcium-order", "warning")], no_remove_only=True, first_is_replace=True),
    R2Case("TP24", tp24, [("iv-phosphate-order", "info")], no_delete=True,
           forbidden_in_summary=("hyperphosphatemia",), summary_patterns=(r"hypophosphatemia",)),
    R2Case("TP25", tp25, [("iv-calcium-order", "info")], forbidden_anywhere=("calciphylaxis",),
           summary_patterns=(r"calcinosis cutis",)),
    R2Case("TP26", tp26, [("hypercalcemia", "info")], forbidden_anywhere=("dialysis",)),
    R2Case("TP27", tp27, []),
    R2Case("TP28", tp28, [], allowed=[("hypercalcemia", "info")]),
    R2Case("TP29", tp29, [("warfarin-calciphylaxis-risk", "warning")], no_delete=True),
    R2Case("TP30", tp30, [("al-mg-binder-order", "info")]),
    R2Case("TP31", tp31, [("caxp-high", "warning")], detail_patterns=(r"ignored",)),
    R2Case("TP32", tp32, [("hypercalcemia", "info"), ("hyperphosphatemia", "info")],
           forbidden_anywhere=("dialysis",)),
    R2Case("TP33", tp33, []),
]

__all__ = ["EXPECTED", "EXPECTED_R2", "ICD10", "IV", "ORAL", "SNOMED", "R2Case", "draft", "when"]
