"""Hook request bodies with one field changed, for the envelope validation tests."""

from __future__ import annotations

import copy
from typing import Any

DELETE = object()  # as ``value`` of ``mutated``: remove the field instead of setting it


def mutated(base: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A deep copy of ``base`` with the field at ``path`` set to ``value`` (or removed, for ``DELETE``)."""
    body = copy.deepcopy(base)
    target = body
    for key in path[:-1]:
        target = target[key]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return body
