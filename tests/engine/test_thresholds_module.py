"""One clinical thresholds module (issue 17 item 2): every number cites its source; no conversion factor twice."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from cds_service.rules import thresholds
from fhir_mappings.units import convert

ROOT = Path(__file__).resolve().parents[2]


def test_calcium_factor_is_the_unit_tables() -> None:
    assert convert("calcium", 1.0, "mmol/L") == thresholds.CA_MG_PER_MMOL
    assert thresholds.LOW_IONIZED_MARKER_MG_DL == convert("calcium", 1.0, "mmol/L")


def test_no_calcium_factor_literal_outside_the_unit_table() -> None:
    for package in ("cds_service/rules", "fhir_mappings", "cards"):
        for path in (ROOT / package).rglob("*.py"):
            assert "4.008" not in path.read_text(encoding="utf-8").replace("x 4.008", ""), path


def test_fhir_mappings_holds_no_derived_states() -> None:
    assert not (ROOT / "fhir_mappings" / "states.py").exists()


def test_every_threshold_line_cites_its_source() -> None:
    """Each top-level numeric constant sits on a line with a comment, or under a comment heading its group."""
    source = (ROOT / "cds_service" / "rules" / "thresholds.py").read_text(encoding="utf-8").splitlines()
    uncited = []
    for node in ast.parse("\n".join(source)).body:
        if not isinstance(node, ast.Assign) or not any(isinstance(n, ast.Constant) and isinstance(n.value, float | int)
                                                       for n in ast.walk(node.value)):
            continue
        line = source[node.lineno - 1]
        above = source[node.lineno - 2] if node.lineno >= 2 else ""
        if "#" not in line and not above.lstrip().startswith("#") and not re.match(r"^\s+\"", line):
            uncited.append(line)
    assert not uncited, uncited
