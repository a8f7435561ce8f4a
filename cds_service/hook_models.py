"""Validation of the CDS Hooks 2.0 envelope at the edge: hook requests and feedback.

Validation is strict where the spec says REQUIRED and lenient where real clients differ: unknown fields and
``extension`` are accepted and ignored (spec "Extensions"; HAPI once rejected them, hapi-fhir PR #6274), and
FHIR content inside ``prefetch``/``draftOrders`` is not validated here — ``prefetch`` arrives decoded into typed
Structs when it fits them (``cds_service.http_json.read_hook_body``), else as raw JSON, and ``fhir_mappings``
reads it per resource, tolerantly (the sandbox sends drafts without ``intent`` and Bundles without ``type``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from cds_service.errors import InvalidRequest
from cds_service.url_policy import UnsafeUrl, normalise
from fhir_mappings import wire

# Hook context requirements (CDS Hooks Library, hookVersion 1.0). userId types per hook.
_USER_TYPES = {
    "patient-view": ("Practitioner", "PractitionerRole", "Patient", "RelatedPerson"),
    "order-select": ("Practitioner", "PractitionerRole"),
    "order-sign": ("Practitioner", "PractitionerRole"),
}
SUPPORTED_HOOKS = tuple(_USER_TYPES)

# FHIR id: [A-Za-z0-9\-\.]{1,64}; references are Type/id (library invariant ord-1). Always matched with
# re.fullmatch (issue 16 item 9): with re.match, "$" also matches before a final newline, so "p1\n" was an id.
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_REFERENCE = re.compile(r"([A-Z][A-Za-z]{1,63})/([A-Za-z0-9\-.]{1,64})")
# "." and ".." fit the FHIR id alphabet but are dot segments in a URL path: "Patient/.." is the server's base.
_DOT_SEGMENTS = frozenset({".", ".."})
_MAX_ID_TEXT = 256


@dataclass(frozen=True)
class FhirAuthorization:
    """``fhirAuthorization``: a bearer token scoped to this service; transient, never logged or stored."""

    access_token: str = field(repr=False)
    token_type: str
    expires_in: int
    scope: str
    subject: str
    patient: str | None = None


@dataclass(frozen=True)
class HookRequest:
    """A validated hook call. ``prefetch`` values are typed FHIR (``fhir_mappings.wire``) when the body decoded
    that way, else raw FHIR JSON, as ``draft_orders`` always is."""

    hook: str
    hook_instance: str
    context: dict[str, Any]
    patient_id: str
    user_id: str
    encounter_id: str | None
    fhir_server: str | None
    fhir_authorization: FhirAuthorization | None = field(repr=False)
    prefetch: dict[str, Any] | None  # values: dict | wire.PrefetchValue | None
    selections: tuple[str, ...] = ()
    draft_orders: dict[str, Any] | None = None


@dataclass(frozen=True)
class FeedbackItem:
    """One validated feedback entry (CDS Hooks 2.0 "Feedback")."""

    card: str
    outcome: str
    outcome_timestamp: datetime
    accepted_suggestions: tuple[str, ...] = ()
    override_code: str | None = None
    override_system: str | None = None
    override_display: str | None = None
    override_comment: str | None = None


def is_fhir_id(value: str) -> bool:
    """True when ``value`` is exactly a FHIR id (whole-string match) and not a URL dot segment."""
    return _FHIR_ID.fullmatch(value) is not None and value not in _DOT_SEGMENTS


def _require_object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequest(f"{where} must be a JSON object", expression=[where])
    return value


def _require_string(obj: dict[str, Any], key: str, where: str, *, max_len: int = _MAX_ID_TEXT) -> str:
    value = obj.get(key)
    path = f"{where}.{key}" if where else key
    if value is None:
        raise InvalidRequest(f"{path} is required", expression=[path])
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(f"{path} must be a non-empty string", expression=[path])
    if len(value) > max_len:
        raise InvalidRequest(f"{path} is longer than {max_len} characters", expression=[path])
    return value


def _optional_string(obj: dict[str, Any], key: str, where: str, *, max_len: int = _MAX_ID_TEXT) -> str | None:
    if obj.get(key) is None:
        return None
    return _require_string(obj, key, where, max_len=max_len)


def _check_reference(value: str, path: str, allowed_types: tuple[str, ...]) -> None:
    match = _REFERENCE.fullmatch(value)
    if not match or match.group(1) not in allowed_types or match.group(2) in _DOT_SEGMENTS:
        raise InvalidRequest(
            f"{path} must be a reference of the form Type/id with Type one of {', '.join(allowed_types)}; "
            f"got {value[:80]!r}",
            expression=[path],
        )


def _parse_fhir_authorization(raw: Any) -> FhirAuthorization:
    obj = _require_object(raw, "fhirAuthorization")
    token = _require_string(obj, "access_token", "fhirAuthorization", max_len=16384)
    token_type = _require_string(obj, "token_type", "fhirAuthorization")
    if token_type.lower() != "bearer":
        raise InvalidRequest("fhirAuthorization.token_type must be 'Bearer'",
                             expression=["fhirAuthorization.token_type"])
    expires_in = obj.get("expires_in")
    if isinstance(expires_in, bool) or not isinstance(expires_in, int):
        raise InvalidRequest("fhirAuthorization.expires_in is required and must be an integer (seconds)",
                             expression=["fhirAuthorization.expires_in"])
    return FhirAuthorization(
        access_token=token,
        token_type="Bearer",  # noqa: S106 - the OAuth token type name, not a secret
        expires_in=expires_in,
        scope=_require_string(obj, "scope", "fhirAuthorization", max_len=4096),
        subject=_require_string(obj, "subject", "fhirAuthorization"),
        patient=_optional_string(obj, "patient", "fhirAuthorization"),
    )


def _parse_fhir_server(raw: Any) -> str:
    if not isinstance(raw, str) or len(raw) > 2048:
        raise InvalidRequest("fhirServer must be a URL string", expression=["fhirServer"])
    try:
        parts = urlsplit(raw)
        port = parts.port  # raises ValueError for a non-numeric or out-of-range port
    except ValueError:  # e.g. "https://[::1" (unbalanced IPv6 bracket); found by tests/security/test_fuzz.py
        raise InvalidRequest("fhirServer is not a valid URL", expression=["fhirServer"]) from None
    if (parts.scheme not in ("http", "https") or not parts.netloc or parts.username or parts.password
            or port == 0):
        raise InvalidRequest("fhirServer must be an absolute http(s) base URL without credentials",
                             expression=["fhirServer"])
    try:
        # Normalised before it is trusted (issue 16 item 3): "https://allowed/fhir/../admin" is "/admin" to the
        # HTTP library, so a path that changes under RFC 3986 normalisation is refused, never "fixed".
        normalise(raw.rstrip("/"))
    except UnsafeUrl as exc:
        raise InvalidRequest(f"fhirServer is refused: {exc}", expression=["fhirServer"]) from None
    return raw.rstrip("/")


def _parse_selections(context: dict[str, Any]) -> tuple[str, ...]:
    raw = context.get("selections")
    if not isinstance(raw, list) or not raw:
        raise InvalidRequest("context.selections is required for order-select: a non-empty array of "
                             "Type/id references into draftOrders", expression=["context.selections"])
    selections = []
    for index, item in enumerate(raw):
        path = f"context.selections[{index}]"
        match = _REFERENCE.fullmatch(item) if isinstance(item, str) else None
        if match is None or match.group(2) in _DOT_SEGMENTS:
            raise InvalidRequest(f"{path} must be a Type/id reference", expression=[path])
        selections.append(item)
    return tuple(selections)


def _parse_draft_orders(context: dict[str, Any]) -> dict[str, Any]:
    raw = context.get("draftOrders")
    if not isinstance(raw, dict):
        raise InvalidRequest("context.draftOrders is required: a FHIR Bundle of the draft orders",
                             expression=["context.draftOrders"])
    # Lenient: the sandbox and the spec examples omit Bundle.type; we only need resourceType and entries.
    if raw.get("resourceType") != "Bundle":
        raise InvalidRequest("context.draftOrders must be a FHIR Bundle (resourceType 'Bundle')",
                             expression=["context.draftOrders.resourceType"])
    entries = raw.get("entry", [])
    if not isinstance(entries, list):
        raise InvalidRequest("context.draftOrders.entry must be an array", expression=["context.draftOrders.entry"])
    return raw


def parse_hook_request(body: Any, expected_hook: str) -> HookRequest:
    """Validate a hook call body for the service bound to ``expected_hook``; raise InvalidRequest (400)."""
    obj = _require_object(body, "request body")
    hook = _require_string(obj, "hook", "")
    if hook != expected_hook:
        raise InvalidRequest(f"this service answers the '{expected_hook}' hook, but the request is for "
                             f"'{hook[:64]}'", expression=["hook"])
    hook_instance = _require_string(obj, "hookInstance", "")
    fhir_server = _parse_fhir_server(obj["fhirServer"]) if obj.get("fhirServer") is not None else None
    fhir_authorization = None
    if obj.get("fhirAuthorization") is not None:
        # Invariant cds-r-1: fhirAuthorization implies fhirServer.
        if fhir_server is None:
            raise InvalidRequest("fhirServer is required when fhirAuthorization is sent (CDS Hooks cds-r-1)",
                                 expression=["fhirServer"])
        fhir_authorization = _parse_fhir_authorization(obj["fhirAuthorization"])
    context = _require_object(obj.get("context"), "context")
    patient_id = _require_string(context, "patientId", "context")
    if not is_fhir_id(patient_id):
        raise InvalidRequest("context.patientId must be a FHIR resource id ([A-Za-z0-9-.], up to 64)",
                             expression=["context.patientId"])
    user_id = _require_string(context, "userId", "context")
    _check_reference(user_id, "context.userId", _USER_TYPES[expected_hook])
    encounter_id = _optional_string(context, "encounterId", "context")
    if encounter_id is not None and not is_fhir_id(encounter_id):
        raise InvalidRequest("context.encounterId must be a FHIR resource id", expression=["context.encounterId"])
    prefetch = obj.get("prefetch")
    if prefetch is not None:
        prefetch = _require_object(prefetch, "prefetch")
        for key, value in prefetch.items():
            # A dict (untyped reading) or a typed FHIR Struct (``read_hook_body`` decoded it; issue 18).
            if value is not None and not isinstance(value, dict | wire.Resource):
                raise InvalidRequest(f"prefetch.{key[:64]} must be a FHIR resource, Bundle or null",
                                     expression=[f"prefetch.{key[:64]}"])
    selections: tuple[str, ...] = ()
    draft_orders = None
    if expected_hook in ("order-select", "order-sign"):
        draft_orders = _parse_draft_orders(context)
        if expected_hook == "order-select":
            selections = _parse_selections(context)
    return HookRequest(
        hook=hook, hook_instance=hook_instance, context=context, patient_id=patient_id, user_id=user_id,
        encounter_id=encounter_id, fhir_server=fhir_server, fhir_authorization=fhir_authorization,
        prefetch=prefetch, selections=selections, draft_orders=draft_orders,
    )


def parse_timestamp(value: Any, path: str) -> datetime:
    """Parse an RFC 3339 timestamp with a zone (CDS Hooks feedback ``outcomeTimestamp``)."""
    if not isinstance(value, str) or len(value) > 64:
        raise InvalidRequest(f"{path} must be an ISO 8601 / RFC 3339 date-time string", expression=[path])
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"{path} is not a valid date-time: {value[:40]!r}", expression=[path]) from None
    if parsed.tzinfo is None:
        raise InvalidRequest(f"{path} must include a time zone (e.g. 2025-06-15T12:00:00Z)", expression=[path])
    return parsed.astimezone(UTC)


def _parse_feedback_item(raw: Any, index: int) -> FeedbackItem:
    where = f"feedback[{index}]"
    obj = _require_object(raw, where)
    card = _require_string(obj, "card", where)
    outcome = _require_string(obj, "outcome", where)
    if outcome not in ("accepted", "overridden"):  # invariant cds-fb-1
        raise InvalidRequest(f"{where}.outcome must be 'accepted' or 'overridden'", expression=[f"{where}.outcome"])
    timestamp = parse_timestamp(obj.get("outcomeTimestamp"), f"{where}.outcomeTimestamp")
    accepted: list[str] = []
    raw_accepted = obj.get("acceptedSuggestions")
    if outcome == "accepted":  # invariant cds-fb-2
        if not isinstance(raw_accepted, list) or not raw_accepted:
            raise InvalidRequest(f"{where}.acceptedSuggestions is required when outcome is 'accepted'",
                                 expression=[f"{where}.acceptedSuggestions"])
    if raw_accepted is not None:
        if not isinstance(raw_accepted, list):
            raise InvalidRequest(f"{where}.acceptedSuggestions must be an array",
                                 expression=[f"{where}.acceptedSuggestions"])
        for j, suggestion in enumerate(raw_accepted):
            accepted.append(_require_string(_require_object(suggestion, f"{where}.acceptedSuggestions[{j}]"),
                                            "id", f"{where}.acceptedSuggestions[{j}]"))
    code = system = display = comment = None
    if obj.get("overrideReason") is not None:
        reason_obj = _require_object(obj["overrideReason"], f"{where}.overrideReason")
        reason = reason_obj.get("reason")
        comment = _optional_string(reason_obj, "userComment", f"{where}.overrideReason", max_len=4000)
        if reason is not None:
            coding = _require_object(reason, f"{where}.overrideReason.reason")
            code = _require_string(coding, "code", f"{where}.overrideReason.reason")
            system = _optional_string(coding, "system", f"{where}.overrideReason.reason", max_len=1024)
            display = _optional_string(coding, "display", f"{where}.overrideReason.reason", max_len=1024)
        elif comment is None:  # invariant cds-fb-3
            raise InvalidRequest(f"{where}.overrideReason needs a reason, a userComment, or both",
                                 expression=[f"{where}.overrideReason"])
    return FeedbackItem(card=card, outcome=outcome, outcome_timestamp=timestamp,
                        accepted_suggestions=tuple(accepted), override_code=code, override_system=system,
                        override_display=display, override_comment=comment)


def parse_feedback(body: Any) -> list[FeedbackItem]:
    """Validate a feedback POST body ``{"feedback": [...]}``; raise InvalidRequest (400)."""
    obj = _require_object(body, "request body")
    items = obj.get("feedback")
    if not isinstance(items, list) or not items:
        raise InvalidRequest("feedback is required: a non-empty array of feedback entries", expression=["feedback"])
    if len(items) > 500:
        raise InvalidRequest("at most 500 feedback entries per request", expression=["feedback"])
    return [_parse_feedback_item(item, index) for index, item in enumerate(items)]
