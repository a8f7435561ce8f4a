"""Hook request bodies for the envelope validation tests: a valid order-select call, and bodies with one field
changed."""

from __future__ import annotations

import copy
from typing import Any

# A valid order-select call: one draft MedicationRequest, selected.
ORDER_SELECT: dict[str, Any] = {
    "hook": "order-select", "hookInstance": "3ab0e6d9-1f4c-4c4c-9f1d-0a5e9f1e7c11",
    "context": {"userId": "PractitionerRole/123", "patientId": "p1", "selections": ["MedicationRequest/m1"],
                "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": {
                    "resourceType": "MedicationRequest", "id": "m1", "status": "draft"}}]}},
}
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
