"""The synthetic test patients TP01-TP20 of clinical-rules.md section 5, as FHIR JSON."""

from __future__ import annotations

from typing import Any

from .builders import ICD10, IV, ORAL, SNOMED, cond, draft, infant, med, obs, patient, proc, when

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
    ("TP18", tp18, [("hypercalcemia", "info")]),
    ("TP19", tp19, [("caxp-high", "warning")]),
    ("TP20", tp20, [("hyperphosphatemia", "info")]),
]

__all__ = ["EXPECTED", "ICD10", "SNOMED", "when"]
