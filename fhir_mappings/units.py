"""Per-analyte unit normalisation from the reviewed table in ``units.toml`` (clinical-rules.md 2.2).

``convert("calcium", 2.5, "mmol/L")`` -> 10.02 (mg/dL). An unknown unit raises ``UnknownUnitError``;
the caller excludes the value. Units are never guessed from magnitudes.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any


class UnknownUnitError(ValueError):
    """The analyte or the unit is not in the reviewed unit table."""


@dataclass(frozen=True)
class UnitRule:
    """How one accepted input unit maps to the analyte's canonical unit."""

    multiply: float = 1.0
    divide: float = 1.0

    def apply(self, value: float) -> float:
        """Convert ``value`` to the canonical unit."""
        return value * self.multiply / self.divide


@dataclass(frozen=True)
class AnalyteUnits:
    """Canonical unit plus the accepted input units (keys lower-cased) of one analyte."""

    canonical: str
    accept: dict[str, UnitRule]


def _parse_rule(analyte: str, unit: str, raw: Any) -> UnitRule:
    if isinstance(raw, bool) or not isinstance(raw, (int, float, dict)):
        raise ValueError(f"units.toml: {analyte}.{unit} must be a number or {{ divide = n }}")
    if isinstance(raw, dict):
        divisor = raw.get("divide")
        if set(raw) != {"divide"} or isinstance(divisor, bool) or not isinstance(divisor, (int, float)):
            raise ValueError(f"units.toml: {analyte}.{unit} table must be exactly {{ divide = n }}")
        if divisor <= 0:
            raise ValueError(f"units.toml: {analyte}.{unit} divisor must be > 0")
        return UnitRule(divide=float(divisor))
    if raw <= 0:
        raise ValueError(f"units.toml: {analyte}.{unit} factor must be > 0")
    return UnitRule(multiply=float(raw))


def parse_unit_table(text: str) -> dict[str, AnalyteUnits]:
    """Parse and validate a unit table in the ``units.toml`` format (raises ValueError)."""
    data = tomllib.loads(text)
    table: dict[str, AnalyteUnits] = {}
    for analyte, spec in data.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("canonical"), str):
            raise ValueError(f"units.toml: [{analyte}] needs a canonical unit")
        accept = spec.get("accept")
        if not isinstance(accept, dict) or not accept:
            raise ValueError(f"units.toml: [{analyte}] needs a non-empty accept table")
        rules = {unit.lower(): _parse_rule(analyte, unit, raw) for unit, raw in accept.items()}
        table[analyte] = AnalyteUnits(canonical=spec["canonical"], accept=rules)
    return table


@lru_cache(maxsize=1)
def unit_table() -> dict[str, AnalyteUnits]:
    """The packaged, reviewed unit table (read once per process)."""
    text = resources.files("fhir_mappings").joinpath("units.toml").read_text(encoding="utf-8")
    return parse_unit_table(text)


def canonical_unit(analyte: str) -> str:
    """The unit every rule threshold of ``analyte`` is expressed in."""
    try:
        return unit_table()[analyte].canonical
    except KeyError:
        raise UnknownUnitError(f"no unit table for analyte {analyte!r}") from None


def convert(analyte: str, value: float, code: str | None, unit: str | None = None) -> float:
    """Convert ``value`` reported in UCUM ``code`` (or display ``unit`` as fallback) to canonical.

    Matching is case-insensitive (section 2.2). Raises UnknownUnitError when neither matches.
    """
    rule = unit_rule(analyte, code, unit)
    if rule is None:
        if analyte not in unit_table():
            raise UnknownUnitError(f"no unit table for analyte {analyte!r}")
        raise UnknownUnitError(f"unit {code or unit!r} is not accepted for {analyte}")
    return rule.apply(value)


@lru_cache(maxsize=4096)
def unit_rule(analyte: str, code: str | None, unit: str | None) -> UnitRule | None:
    """The accepted rule for (analyte, UCUM code, display unit), or None; memoised because a record repeats the
    same few unit spellings for every result and reference range (BENCHMARKS.md, issue #7).

    ``convert`` is this plus ``rule.apply`` and the error; the extraction hot path calls it directly so that an
    unknown unit costs no exception.
    """
    spec = unit_table().get(analyte)
    if spec is None:
        return None
    for candidate in (code, unit):
        if isinstance(candidate, str) and candidate.strip():
            rule = spec.accept.get(candidate.strip().lower())
            if rule is not None:
                return rule
    return None
