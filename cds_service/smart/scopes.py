"""The scopes the viewer asks for, and reading what the server granted (SMART v2 ``.rs``/``.r`` or v1 ``.read``).

SMART App Launch 2.0 "Scopes for requesting clinical data": v2 scopes use the ``cruds`` suffix; servers still on
v1 grant ``.read``. The viewer only reads, so either form is enough for a resource type.
"""

from __future__ import annotations

# Read-only access to what the rules use (the same resources as the patient-view prefetch).
READ_TYPES = ("Observation", "Condition", "Procedure", "MedicationRequest", "MedicationStatement", "ServiceRequest")
_V2_SUFFIX = {**{t: "rs" for t in READ_TYPES}, "Patient": "r"}


def requested_scopes(*, ehr_launch: bool, v1: bool) -> str:
    """The space-separated scope string for the authorize request.

    EHR launch asks for ``launch`` (the EHR supplies the patient); a standalone launch asks for
    ``launch/patient`` so the authorization server lets the user pick one.
    """
    scopes = ["launch" if ehr_launch else "launch/patient"]
    for resource_type, suffix in _V2_SUFFIX.items():
        scopes.append(f"patient/{resource_type}.{'read' if v1 else suffix}")
    scopes += ["openid", "fhirUser"]
    return " ".join(scopes)


def grants_read(granted: str, resource_type: str) -> bool:
    """Whether the granted scope string allows reading/searching ``resource_type`` for the patient.

    Accepts v2 (``patient/X.rs``, ``patient/X.r``, ``patient/*.rs``; any suffix containing ``r``) and v1
    (``patient/X.read``, ``patient/X.*``, ``patient/*.read``) forms; ``user/`` scopes also cover the patient.
    """
    for scope in granted.split():
        context, _, rest = scope.partition("/")
        if context not in ("patient", "user", "system") or "." not in rest:
            continue
        scope_type, _, permission = rest.partition(".")
        permission = permission.split("?", 1)[0]  # v2 granular scopes: patient/Observation.rs?category=...
        if scope_type not in (resource_type, "*"):
            continue
        if permission in ("read", "*") or (permission and set(permission) <= set("cruds") and "r" in permission):
            return True
    return False


def missing_read_grants(granted: str) -> list[str]:
    """Resource types the viewer needs but the granted scopes do not cover (shown as "not shared")."""
    return [t for t in (*READ_TYPES, "Patient") if not grants_read(granted, t)]
