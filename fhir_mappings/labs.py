"""The lab kinds, from the one reviewed file ``labs.toml`` (issue 17 item 4: content identity as data).

A lab kind is the id of its value set (``lab-phosphate``). ``labs.toml`` says, per kind, which ``units.toml``
analyte it is, how cards name it and, when a card can suggest ordering it, which LOINC code the draft
ServiceRequest carries. Every table below is built from that file at import; nothing else in the service spells a
lab's identity (``tests/test_labs_data.py`` checks that), so adding a lab kind is one table in ``labs.toml`` plus
its value set.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class LabOrder:
    """What a card orders for a lab kind: the LOINC code, its display and the short name in a label."""

    code: str
    display: str
    short: str


@dataclass(frozen=True)
class LabKind:
    """One lab kind of ``labs.toml``."""

    kind: str          # value set id
    analyte: str       # units.toml analyte
    name: str          # value lines on cards
    label: str         # set-aside lines on cards (§8 C6/C18)
    order: LabOrder | None = None


_KIND_KEYS = {"analyte", "name", "label", "order"}
_ORDER_KEYS = {"code", "display", "short"}


def _text(where: str, raw: Any, key: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"labs.toml: {where} needs a non-empty {key}")
    return value


def parse_labs(text: str) -> dict[str, LabKind]:
    """Parse and validate a file in the ``labs.toml`` format (ValueError on an unknown or missing key, or a LOINC
    code ordered for two kinds)."""
    kinds: dict[str, LabKind] = {}
    codes: dict[str, str] = {}
    for kind, raw in tomllib.loads(text).items():
        if not isinstance(raw, dict) or set(raw) - _KIND_KEYS:
            raise ValueError(f"labs.toml: [{kind}] may hold only {sorted(_KIND_KEYS)}")
        order = None
        if "order" in raw:
            spec = raw["order"]
            if not isinstance(spec, dict) or set(spec) != _ORDER_KEYS:
                raise ValueError(f"labs.toml: [{kind}.order] must hold exactly {sorted(_ORDER_KEYS)}")
            where = f"[{kind}.order]"
            order = LabOrder(_text(where, spec, "code"), _text(where, spec, "display"), _text(where, spec, "short"))
            if order.code in codes:
                raise ValueError(f"labs.toml: {order.code} is ordered for both {codes[order.code]} and {kind}")
            codes[order.code] = kind
        where = f"[{kind}]"
        kinds[kind] = LabKind(kind, _text(where, raw, "analyte"), _text(where, raw, "name"), _text(where, raw, "label"),
                              order)
    return kinds


def _load() -> dict[str, LabKind]:
    return parse_labs(resources.files("fhir_mappings").joinpath("labs.toml").read_text(encoding="utf-8"))


def _analyte_labels(kinds: Mapping[str, LabKind]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for lab in kinds.values():
        labels.setdefault(lab.analyte, lab.label)   # an analyte is named as its first kind ("Calcium")
    return labels


# Read-only views: every consumer shares these tables, so none may change them for the others.
LABS: Mapping[str, LabKind] = MappingProxyType(_load())
KIND_ANALYTE: Mapping[str, str] = MappingProxyType({k: lab.analyte for k, lab in LABS.items()})  # units.toml analyte
KIND_NAME: Mapping[str, str] = MappingProxyType({k: lab.name for k, lab in LABS.items()})        # value-line name
KIND_LABEL: Mapping[str, str] = MappingProxyType({k: lab.label for k, lab in LABS.items()})      # set-aside label
ANALYTE_LABEL: Mapping[str, str] = MappingProxyType(_analyte_labels(LABS))  # analyte -> post-dialysis set-aside label
ORDER_CODE: Mapping[str, str] = MappingProxyType({k: lab.order.code for k, lab in LABS.items() if lab.order})
ORDERS: Mapping[str, LabOrder] = MappingProxyType({lab.order.code: lab.order for lab in LABS.values() if lab.order})
