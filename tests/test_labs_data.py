"""fhir_mappings/labs.toml is the one source of a lab kind's identity (issue 17 item 4).

Each table the service reads a lab's analyte, names or orderable code from is built from the file, and no source
file spells them a second time (the literals that used to be repeated in the rules, the extractor and the card
templates are gone).
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

from cards.blocks import lab_name
from cards.render import parse_templates, render_card, templates
from fhir_mappings import extract, labs
from fhir_mappings.units import unit_table
from fhir_mappings.valuesets import LAB_VALUESETS, LOINC, default_index
from findings import SuggestionSpec

ROOT = Path(__file__).resolve().parents[1]
FILE = tomllib.loads((ROOT / "fhir_mappings" / "labs.toml").read_text(encoding="utf-8"))


def test_every_lab_value_set_is_a_kind_with_a_known_analyte() -> None:
    assert list(labs.LABS) == list(FILE)
    assert set(labs.LABS) == set(LAB_VALUESETS)
    assert {lab.analyte for lab in labs.LABS.values()} <= set(unit_table())


@pytest.mark.parametrize("kind", sorted(FILE))
def test_every_table_says_what_the_file_says(kind: str) -> None:
    raw = FILE[kind]
    assert extract.KIND_ANALYTE[kind] == raw["analyte"]
    assert extract.KIND_LABEL[kind] == raw["label"]
    assert lab_name(kind) == raw["name"]
    order = raw.get("order")
    assert labs.ORDER_CODE.get(kind) == (order["code"] if order else None)
    if order:
        # The code a card orders is one the service reads back as this kind (a member of its value set).
        assert default_index().contains(kind, LOINC, order["code"]), order["code"]
        assert templates().labs[order["code"]] == order["display"]
        assert templates().lab_short[order["code"]] == order["short"]


def test_the_extractor_and_cards_share_the_tables() -> None:
    assert extract.KIND_ANALYTE is labs.KIND_ANALYTE
    assert extract.KIND_LABEL is labs.KIND_LABEL
    assert set(templates().labs) == set(labs.ORDERS)


def test_the_rules_order_codes_come_from_the_file() -> None:
    from cds_service.rules import patient_view as pv

    by_name = {"ALBUMIN": "lab-albumin", "IONIZED": "lab-calcium-ionized", "CALCIUM": "lab-calcium-total",
               "PHOSPHATE": "lab-phosphate", "PTH": "lab-pth", "ALP": "lab-alp", "VITD25": "lab-vitamin-d-25oh",
               "VITD125": "lab-vitamin-d-125", "POTASSIUM": "lab-potassium"}
    assert {name: getattr(pv, name) for name in by_name} == {n: FILE[k]["order"]["code"] for n, k in by_name.items()}


def test_a_suggested_lab_is_named_and_coded_from_the_file() -> None:
    spec = SuggestionSpec(kind="labs", label="order_albumin", labs=(labs.ORDER_CODE["lab-albumin"],
                                                                     labs.ORDER_CODE["lab-calcium-ionized"]))
    card = render_card_for(spec)
    (suggestion,) = card["suggestions"]
    assert suggestion["label"] == "Order albumin, ionized calcium to interpret calcium"
    coding = suggestion["actions"][0]["resource"]["code"]["coding"][0]
    assert coding == {"system": LOINC, "code": "1751-7", "display": FILE["lab-albumin"]["order"]["display"]}


def render_card_for(spec: SuggestionSpec) -> dict[str, object]:
    """A caxp-high card carrying only ``spec`` (the label and the ServiceRequest are what is checked)."""
    from cards.render import CardRequest

    return render_card(CardRequest(rule_id="caxp-high", indicator="info", fields={}, suggestions=[spec])).card


def test_the_card_templates_may_not_name_labs_again() -> None:
    with pytest.raises(ValueError, match="labs.toml"):
        parse_templates('[labs]\n"1751-7" = "Albumin"\n')
    with pytest.raises(ValueError, match="labs.toml"):
        parse_templates('[meta.lab_short]\n"1751-7" = "albumin"\n')


def test_the_file_is_checked_when_loaded() -> None:
    with pytest.raises(ValueError, match="non-empty name"):
        labs.parse_labs('[lab-x]\nanalyte = "calcium"\nlabel = "X"\n')
    with pytest.raises(ValueError, match="may hold only"):
        labs.parse_labs('[lab-x]\nanalyte = "calcium"\nname = "X"\nlabel = "X"\nloinc = "1-1"\n')
    with pytest.raises(ValueError, match="ordered for both"):
        labs.parse_labs('[a]\nanalyte = "c"\nname = "A"\nlabel = "A"\n[a.order]\ncode = "1-1"\ndisplay = "A"\n'
                        'short = "a"\n[b]\nanalyte = "c"\nname = "B"\nlabel = "B"\n[b.order]\ncode = "1-1"\n'
                        'display = "B"\nshort = "b"\n')


def test_no_source_file_spells_a_lab_identity_again() -> None:
    """No other service source holds an orderable LOINC code of labs.toml, or a table from lab kinds or analytes to
    strings (what KIND_ANALYTE, KIND_LABEL, ANALYTE_NAMES and the post-dialysis labels were). The value sets hold the
    codes a kind reads; the cohort generator (synth/) writes test data with codes of its own."""
    codes = set(labs.ORDERS)
    keys = set(labs.LABS) | {lab.analyte for lab in labs.LABS.values()}
    offenders = []
    for package in ("cds_service", "cards", "fhir_mappings", "findings"):
        for path in (ROOT / package).rglob("*"):
            if path.suffix not in (".py", ".toml") or path.name == "labs.toml":
                continue
            text = path.read_text(encoding="utf-8")
            offenders += [f"{path.relative_to(ROOT)}: LOINC {code}" for code in sorted(codes)
                          if re.search(rf"""["']{re.escape(code)}["']""", text)]
            if path.suffix == ".py":
                for node in ast.walk(ast.parse(text)):
                    if (isinstance(node, ast.Dict) and len(node.keys) >= 3
                            and all(isinstance(k, ast.Constant) and k.value in keys for k in node.keys)
                            and all(isinstance(v, ast.Constant) and isinstance(v.value, str) for v in node.values)):
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: a table of lab names")
    assert offenders == []
