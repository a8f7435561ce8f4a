"""The evidence fingerprint of a card: which versions of which source resources made it fire (issue 15 item 4).

An override suppresses a card only while the same evidence drives it: each card records the source resources
its evidence names (``resource_id``, e.g. ``Observation/123``; a Ca x P pair names both results) with their
``meta.versionId`` and ``meta.lastUpdated``. A newer result (another resource id) or a corrected one (another
version) gives another fingerprint, so the card is shown again at once. Read from the resources the call was
answered from: the typed Structs of the edge's decode (issue 18) or the JSON of a FHIR server's answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fhir_mappings import wire

_SEPARATOR = "|"


def evidence_references(evidence: Iterable[Mapping[str, Any]]) -> set[str]:
    """The ``Type/id`` references an evidence list names (comma-joined pairs split)."""
    found: set[str] = set()
    for item in evidence:
        raw = item.get("resource_id") if isinstance(item, Mapping) else None
        if not isinstance(raw, str):
            continue
        found.update(part.strip() for part in raw.split(",") if part.strip())
    return found


def resource_versions(resources: Iterable[Any], wanted: set[str]) -> dict[str, tuple[str, str]]:
    """``Type/id`` -> (meta.versionId, meta.lastUpdated) ("" when absent) for the resources in ``wanted``.

    Read from the resources as the call received them: typed Structs carry ``meta`` from the edge's one decode
    (issue 18), so nothing is parsed again; a JSON dict (FHIR server answer) is read as it is.
    """
    versions: dict[str, tuple[str, str]] = {}
    if not wanted:
        return versions
    for resource in resources:
        rtype, rid = wire.identity(resource)  # (None, None) for what is neither a typed resource nor a dict
        if rtype is None or rid is None:
            continue
        reference = f"{rtype}/{rid}"
        if reference not in wanted or reference in versions:
            continue
        versions[reference] = wire.version_of(resource)
    return versions


def fingerprint(evidence: Sequence[Mapping[str, Any]], versions: Mapping[str, tuple[str, str]]) -> list[str]:
    """Sorted ``Type/id|versionId|lastUpdated`` entries, one per source resource of ``evidence``."""
    entries = []
    for reference in sorted(evidence_references(evidence)):
        version, updated = versions.get(reference, ("", ""))
        entries.append(_SEPARATOR.join((reference, version, updated)))
    return entries


def override_codes(card: Mapping[str, Any]) -> list[str]:
    """The ``system|code`` of each override reason the card offered (CDS Hooks 2.0 Card.overrideReasons)."""
    codes = []
    for coding in card.get("overrideReasons") or []:
        if isinstance(coding, dict) and isinstance(coding.get("code"), str):
            system = coding.get("system") if isinstance(coding.get("system"), str) else ""
            codes.append(f"{system}{_SEPARATOR}{coding['code']}")
    return codes


def is_offered_reason(code: str | None, system: str | None, offered: Iterable[str]) -> bool:
    """Whether a feedback ``overrideReason.reason`` is one of the card's offered codes (system checked if sent)."""
    if not code:
        return False
    for entry in offered:
        offered_system, _, offered_code = entry.rpartition(_SEPARATOR)
        if offered_code == code and (not system or system == offered_system):
            return True
    return False
