"""Every conversion of the reviewed unit table (clinical-rules.md section 2.2)."""

from __future__ import annotations

import pytest

from fhir_mappings.units import UnknownUnitError, canonical_unit, convert, parse_unit_table

CASES = [
    ("calcium", 10.0, "mg/dL", 10.0),
    ("calcium", 2.5, "mmol/L", 10.02),
    ("calcium", 5.0, "mEq/L", 10.02),
    ("calcium", 100.0, "mg/L", 10.0),
    ("phosphate", 4.0, "mg/dL", 4.0),
    ("phosphate", 2.42, "mmol/L", 7.49474),
    ("phosphate", 45.0, "mg/L", 4.5),
    ("albumin", 3.8, "g/dL", 3.8),
    ("albumin", 38.0, "g/L", 3.8),
    ("pth", 300.0, "pg/mL", 300.0),
    ("pth", 300.0, "ng/L", 300.0),
    ("pth", 10.0, "pmol/L", 94.3),
    ("vitamin_d_25oh", 180.0, "ng/mL", 180.0),
    ("vitamin_d_25oh", 180.0, "ug/L", 180.0),
    ("vitamin_d_25oh", 374.4, "nmol/L", 150.0),
    ("vitamin_d_125", 60.0, "pg/mL", 60.0),
    ("vitamin_d_125", 60.0, "ng/L", 60.0),
    ("vitamin_d_125", 144.0, "pmol/L", 60.0),
    ("creatinine", 1.2, "mg/dL", 1.2),
    ("creatinine", 88.4, "umol/L", 1.0),
    ("urate", 8.0, "mg/dL", 8.0),
    ("urate", 475.84, "umol/L", 8.0),
    ("alp", 120.0, "U/L", 120.0),
    ("alp", 120.0, "[IU]/L", 120.0),
    ("egfr", 14.0, "mL/min/{1.73_m2}", 14.0),
    ("egfr", 14.0, "mL/min", 14.0),
    ("bmi", 34.0, "kg/m2", 34.0),
    ("potassium", 6.0, "mmol/L", 6.0),
    ("potassium", 6.0, "mEq/L", 6.0),
    ("bicarbonate", 31.0, "mmol/L", 31.0),
    ("bicarbonate", 31.0, "mEq/L", 31.0),
    ("pth", 60.0, "pmol/L", 565.8),         # §8 C8: LOINC 14866-8
    ("magnesium", 2.0, "mg/dL", 2.0),       # §8 C17
    ("magnesium", 0.7, "mmol/L", 1.7017),
    ("magnesium", 1.4, "mEq/L", 1.701),
]


@pytest.mark.parametrize(("analyte", "value", "unit", "expected"), CASES)
def test_conversion(analyte: str, value: float, unit: str, expected: float) -> None:
    assert convert(analyte, value, unit) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("unit", ["MG/DL", "mg/dl", "Mg/Dl"])
def test_unit_match_is_case_insensitive(unit: str) -> None:
    assert convert("calcium", 9.5, unit) == 9.5


def test_display_unit_is_the_fallback_for_a_missing_code() -> None:
    assert convert("calcium", 2.5, None, "mmol/l") == pytest.approx(10.02)
    assert convert("calcium", 2.5, "", "mmol/L") == pytest.approx(10.02)


@pytest.mark.parametrize(("analyte", "unit"), [
    ("calcium", "g/L"), ("calcium", None), ("phosphate", "meq/L"), ("egfr", "mL/s"), ("albumin", "%"),
    ("pth", "pg"), ("nonsense", "mg/dL"),
])
def test_unknown_unit_is_never_guessed(analyte: str, unit: str | None) -> None:
    with pytest.raises(UnknownUnitError):
        convert(analyte, 1.0, unit)


def test_caxp_si_product_matches_the_spec_factor() -> None:
    # section 2.2: mmol2/L2 x 12.41 = mg2/dL2; TP02 gives 75.1
    product = convert("calcium", 2.50, "mmol/L") * convert("phosphate", 2.42, "mmol/L")
    assert round(product, 1) == 75.1
    assert product == pytest.approx(2.50 * 2.42 * 12.41, rel=1e-3)


def test_canonical_units() -> None:
    assert canonical_unit("calcium") == "mg/dL"
    assert canonical_unit("vitamin_d_25oh") == "ng/mL"


@pytest.mark.parametrize("text", [
    '[calcium]\naccept = { "mg/dL" = 1 }',                      # no canonical
    '[calcium]\ncanonical = "mg/dL"\n[calcium.accept]\n',       # empty accept
    '[calcium]\ncanonical = "mg/dL"\n[calcium.accept]\n"x" = -1',
    '[calcium]\ncanonical = "mg/dL"\n[calcium.accept]\n"x" = { divide = 0 }',
    '[calcium]\ncanonical = "mg/dL"\n[calcium.accept]\n"x" = "ten"',
])
def test_malformed_unit_tables_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="units.toml"):
        parse_unit_table(text)
