"""Draft order parsing (clinical-rules.md section 2.8) and the order-hook rules."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_mappings.orders import IV_CALCIUM, IV_PHOSPHATE, ORAL_CALCIUM, parse_draft_orders, parse_order
from fhir_mappings.valuesets import default_index

from .builders import IV, ORAL, RXNORM, SUBCUT, V3_ROUTE, cond, draft, obs, outcome, patient, proc, run


def parse(resource: dict[str, Any]) -> Any:
    return parse_order(resource, default_index(), selected=True)


@pytest.mark.parametrize(("resource", "iv_calcium", "inferred"), [
    (draft("a", "Calcium gluconate 1 g in 100 mL", route=IV), True, False),
    (draft("b", "Calcium Chloride 100 MG/ML Injectable Solution"), True, True),      # TP11: no route
    (draft("c", "calcium chloride 1 g"), True, True),
    (draft("d", "Calcium gluconate 500 MG Oral Tablet"), False, False),              # oral form, no route
    (draft("e", "Calcium gluconate 1 g", route=ORAL), False, False),
    (draft("f", "Calcium gluconate 1 g", route=(V3_ROUTE, "IVPUSH")), True, False),
    (draft("g", "Calcium gluconate 1 g", route=(V3_ROUTE, "IVFLUSH")), False, False),  # not an administration
    (draft("h", "Calcium gluconate 1 g", route_text="IV push over 10 min"), True, False),
    (draft("i", "Calcium gluconate 1 g", route_text="by mouth"), False, False),
    (draft("j", None, route=IV) | {"medicationCodeableConcept": {"coding": [{"system": RXNORM,
                                                                              "code": "1668250"}]}}, True, False),
])
def test_iv_calcium_classification(resource: dict[str, Any], iv_calcium: bool, inferred: bool) -> None:
    order = parse(resource)
    assert (IV_CALCIUM in order.classes) is iv_calcium
    assert order.route_inferred is inferred


def test_oral_calcium_is_never_iv_calcium() -> None:
    order = parse(draft("x", "Calcium Carbonate 1250 MG Oral Tablet", route=ORAL))
    assert ORAL_CALCIUM in order.classes
    assert IV_CALCIUM not in order.classes


@pytest.mark.parametrize(("resource", "iv_phosphate"), [
    (draft("a", "Sodium phosphate 15 mmol", route=IV), True),
    (draft("b", "Potassium Phosphates Injection 3 mmol/mL"), True),   # injectable wording, no route
    (draft("c", "Sodium phosphate"), False),                           # no route, no injectable wording
    (draft("d", "Sodium phosphate oral solution"), False),
])
def test_iv_phosphate_classification(resource: dict[str, Any], iv_phosphate: bool) -> None:
    assert (IV_PHOSPHATE in parse(resource).classes) is iv_phosphate


@pytest.mark.parametrize("text", [
    "Sodium thiosulfate 25 g IV", "Calcium chloride dialysate 2.5 mEq/L", "Lactated Ringer's with calcium chloride",
    "Heparin lock solution calcium", "Calcium chloride ophthalmic",
])
def test_exclusions(text: str) -> None:
    order = parse(draft("x", text, route=IV))
    assert order.classes == frozenset()
    assert order.excluded_reason


def test_parenteral_nutrition_admixture_is_both_classes() -> None:
    order = parse(draft("pn", "PN: calcium gluconate 10 mEq + potassium phosphate 15 mmol", route=IV))
    assert {IV_CALCIUM, IV_PHOSPHATE} <= order.classes


def test_central_line_context_detected() -> None:
    order = parse(draft("x", "Calcium chloride 1 g", route=IV, dose="1 g via central line over 10 min"))
    assert order.is_calcium_chloride
    assert order.central_line


def test_sandbox_shaped_drafts_are_tolerated() -> None:
    drafts = [
        draft("s1", "Calcium gluconate 1 g", sandbox=True),                 # no intent, single-object category
        draft("s2", None, sandbox=True),                                    # no medication at all
        {"resource": draft("s3", "Calcium chloride 1 g")},                  # a Bundle entry wrapper
        {"resourceType": "MedicationRequest", "status": "draft"},           # no id
        "not a resource",
        {"resourceType": "NutritionOrder", "id": "n1"},
    ]
    orders, skipped = parse_draft_orders(drafts, [], default_index())
    by_id = {o.resource_id: o for o in orders}
    assert IV_CALCIUM in by_id["s1"].classes
    assert by_id["s2"].classes == frozenset()
    assert IV_CALCIUM in by_id["s3"].classes
    assert {s.reason for s in skipped} == {"draft order has no id", "draft order is not a JSON object"}


def _g5d_high() -> list[dict[str, Any]]:
    return [cond("N18.6"), proc("302497006", 1), obs("ca", 9.75, 1, specimen="s"), obs("p", 8.0, 1, specimen="s")]


def test_sandbox_draft_through_the_engine_fires() -> None:
    result = run(patient(64), _g5d_high(), "order-select", [draft("sb", "Calcium gluconate 1 g", sandbox=True)])
    assert outcome(result) == [("iv-calcium-order", "critical")]
    assert "route inferred as IV" in result.cards[0].card["detail"]


def test_oral_calcium_gluconate_never_fires_iv_calcium_order() -> None:
    result = run(patient(64), _g5d_high(), "order-select", [draft("o", "Calcium gluconate 500 MG Oral Tablet")])
    assert "iv-calcium-order" not in [r for r, _ in outcome(result)]


def test_unselected_drafts_are_context_only() -> None:
    drafts = [draft("a", "Calcium gluconate 1 g", route=IV), draft("b", "Acetaminophen 500 mg", route=ORAL)]
    assert outcome(run(patient(64), _g5d_high(), "order-select", drafts, ["MedicationRequest/b"])) == []
    assert outcome(run(patient(64), _g5d_high(), "order-select", drafts, ["MedicationRequest/a"])) == [
        ("iv-calcium-order", "critical")]


def test_order_sign_without_selections_evaluates_every_draft() -> None:
    result = run(patient(64), _g5d_high(), "order-sign", [draft("a", "Calcium gluconate 1 g", route=IV)], [])
    assert outcome(result) == [("iv-calcium-order", "critical")]


def test_order_hooks_return_only_order_cards() -> None:
    result = run(patient(64), _g5d_high(), "order-select", [draft("z", "Acetaminophen 500 mg", route=ORAL)])
    assert outcome(result) == []   # the patient-view R01 card is never repeated on order-select


def test_nadroparin_info_in_dialysis() -> None:
    result = run(patient(64), _g5d_high(), "order-select", [draft("n", "Nadroparin calcium 2850 IU", route=SUBCUT)])
    assert outcome(result) == [("calcium-heparin-order", "info")]


def test_al_mg_binder_needs_ckd() -> None:
    binder = [draft("m", "Magnesium hydroxide 400 mg", route=ORAL)]
    assert outcome(run(patient(64), _g5d_high(), "order-select", binder)) == [("al-mg-binder-order", "info")]
    assert outcome(run(patient(64), [obs("egfr", 90, 2)], "order-select", binder)) == []


def test_iv_phosphate_critical_with_hyperphosphatemia() -> None:
    result = run(patient(64), _g5d_high(), "order-select", [draft("p", "Sodium phosphate 15 mmol", route=IV)])
    assert outcome(result) == [("iv-phosphate-order", "critical")]


def test_g4_without_recent_labs_is_t3_info() -> None:
    resources = [cond("N18.4"), obs("ca", 9.0, 20), obs("p", 4.0, 20)]
    result = run(patient(70), resources, "order-select", [draft("c", "Calcium gluconate 1 g", route=IV)])
    assert outcome(result) == [("iv-calcium-order", "info")]


# --- revision 2 (clinical-rules.md §8): PN, CRRT fluids, binders, names, doses, routes -----------------------------

@pytest.mark.parametrize(("text", "is_pn"), [
    ("Parenteral nutrition admixture: amino acids 5%, dextrose 15%, calcium gluconate 10 mEq", True),
    ("PN: calcium gluconate 10 mEq + potassium phosphate 15 mmol", True),
    ("TPN with potassium phosphate 15 mmol", True),
    ("Clinimix E 5/15 with calcium", True),
    ("SmofKabiven peripheral", True),
    ("Olimel N9E", True),
    ("Calcium gluconate 1 g in 100 mL", False),
    ("Sodium phosphates 15 mmol in 250 mL", False),
])
def test_parenteral_nutrition_is_flagged(text: str, is_pn: bool) -> None:
    """§8 C7: a PN admixture is flagged (the rules cap its card); its calcium/phosphate classes are kept."""
    order = parse(draft("pn", text, route=IV))
    assert order.is_parenteral_nutrition is is_pn
    assert not order.excluded_reason


def test_route_less_pn_with_phosphate_is_iv_phosphate() -> None:
    order = parse(draft("pn", "TPN with potassium phosphate 15 mmol"))
    assert IV_PHOSPHATE in order.classes
    assert order.route_inferred


@pytest.mark.parametrize("text", [
    "Prismasol BGK 4/2.5 replacement fluid 5000 mL", "Phoxillum BK4/2.5 5000 mL", "CRRT replacement fluid with calcium",
    "Dialysate calcium chloride 3 mEq/L",
])
def test_crrt_fluids_never_trigger_r08_r09(text: str) -> None:
    """§8.0 C7: CRRT replacement fluids and dialysate are excluded, with a reason."""
    order = parse(draft("f", text, route=IV))
    assert order.classes == frozenset()
    assert order.excluded_reason == "med-calcium-exclusions"


@pytest.mark.parametrize(("resource", "classes"), [
    (draft("a", "Aluminum Hydroxide 500 MG Oral Tablet", code="243449", route=ORAL),
     {"med-al-mg-binder", "med-aluminium-binder"}),
    (draft("b", "Magnesium Oxide 400 MG Oral Tablet", code="198741", route=ORAL),
     {"med-al-mg-binder", "med-magnesium-binder"}),
    (draft("c", "magnesium chloride 64 mg delayed-release tablet", route=ORAL),
     {"med-al-mg-binder", "med-magnesium-binder"}),
    (draft("d", "aluminum hydroxide / magnesium hydroxide suspension", route=ORAL),
     {"med-al-mg-binder", "med-aluminium-binder", "med-magnesium-binder"}),
    (draft("e", "Magnesium sulfate 2 g in 50 mL", route=IV), set()),
    (draft("f", "Magnesium chloride 200 mg/mL injection", route=IV), set()),
    (draft("g", None, route=ORAL) | {"medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "6582"}]}},
     {"med-al-mg-binder", "med-magnesium-binder"}),
])
def test_binder_classes(resource: dict[str, Any], classes: set[str]) -> None:
    """§8 C17: the general Al/Mg class plus the specific one; IV magnesium is out of scope."""
    assert parse(resource).classes == classes


def test_coded_draft_without_text_is_named_by_its_display() -> None:
    coded = draft("n", None, route=ORAL) | {"medicationCodeableConcept": {"coding": [{"system": RXNORM,
                                                                                      "code": "198741"}]}}
    assert parse(coded).name == "Magnesium Oxide 400 MG Oral Tablet"


def _with_dose(quantity: dict[str, Any]) -> dict[str, Any]:
    resource = draft("q", "Calcium carbonate 500 mg", route=ORAL)
    resource["dosageInstruction"][0]["doseAndRate"] = [{"doseQuantity": quantity}]
    return resource


@pytest.mark.parametrize(("quantity", "text"), [
    ({"value": 1, "unit": "{pill}", "code": "{pill}"}, "1"),
    ({"value": 1.0, "unit": "pill", "code": "{pill}"}, "1 pill"),
    ({"value": 2, "code": "{tbl}"}, "2"),
    ({"value": 0.5, "unit": "g", "code": "g"}, "0.5 g"),
    ({"value": 10, "unit": "mL", "code": "mL"}, "10 mL"),
])
def test_dose_text_never_shows_ucum_annotations(quantity: dict[str, Any], text: str) -> None:
    assert parse(_with_dose(quantity)).dose_text == text


def test_dose_free_text_loses_annotations() -> None:
    assert parse(draft("t", "Calcium carbonate 500 mg", dose="1 {pill} twice daily")).dose_text == "1 twice daily"


def test_route_text_is_empty_without_a_route() -> None:
    order = parse(draft("r", "Calcium gluconate 1 g"))
    assert order.route_text == ""
    assert order.route == "iv"  # inferred for an injectable salt
    assert parse(draft("r2", "Acetaminophen 500 mg")).route_text == ""


def test_every_draft_is_a_trigger_without_selections() -> None:
    """§8.0: on order-sign there are no selections; every draft MedicationRequest is a trigger."""
    drafts = [draft("a", "Calcium gluconate 1 g", route=IV), draft("b", "Warfarin 5 mg", route=ORAL)]
    orders, _ = parse_draft_orders(drafts, [], default_index())
    assert [o.selected for o in orders] == [True, True]
    orders, _ = parse_draft_orders(drafts, ["MedicationRequest/b"], default_index())
    assert [o.selected for o in orders] == [False, True]
