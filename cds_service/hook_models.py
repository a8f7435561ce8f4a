"""Validation of the CDS Hooks 2.0 envelope at the edge: hook requests and feedback.

Validation is strict where the spec says REQUIRED and lenient where real clients differ: unknown fields and
``extension`` are accepted and ignored (spec "Extensions"; HAPI once rejected them, hapi-fhir PR #6274), and
FHIR content inside ``prefetch``/``draftOrders`` is not validated here — ``prefetch`` arrives decoded into typed
Structs when it fits them (``cds_service.http_json.read_hook_body``), else as raw JSON, and ``fhir_mappings``
reads it per resource, tolerantly (the sandbox sends drafts without ``intent`` and Bundles without ``type``).

A hook call's envelope is declared once, as msgspec Structs (issue 18 item 1): ``msgspec.convert`` checks the
parsed body (whichever edge reader parsed it) against them, and its first error is answered in this module's words
(``_validation_error``). Only what a type cannot say is code, run on the typed values: the expected hook, the URL
policy for ``fhirServer``, invariant cds-r-1, id and reference patterns, whitespace-only text, the prefetch values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit

import msgspec

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
_T = TypeVar("_T")

# --- the envelope's shape, declared once (issue 18 item 1) -----------------------------------------------------
# msgspec.convert validates the parsed body against these Structs; ``_validation_error`` turns its first error
# into this module's OperationOutcome messages. What a type cannot say (URL policy, reference patterns, the
# cds-r-1 invariant, the expected hook) is checked in ``parse_hook_request`` on the typed values.
# A whitespace-only string is refused in code (``_text``): Meta(pattern=r"\S") says it too, but costs ~0.6 us a
# field (msgspec calls back into Python's re), more than the whole envelope check otherwise (issue 18 item 1).
_Text = Annotated[str, msgspec.Meta(min_length=1, max_length=_MAX_ID_TEXT)]


class FhirAuthorization(msgspec.Struct, frozen=True, gc=False):
    """``fhirAuthorization``: a bearer token scoped to this service; transient, never logged or stored."""

    access_token: Annotated[str, msgspec.Meta(min_length=1, max_length=16384)]
    token_type: _Text
    expires_in: int  # msgspec refuses a bool (and a float) for an int, as the spec's "integer" means
    scope: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    subject: _Text
    patient: _Text | None = None

    def __repr__(self) -> str:
        """Every field but the token: a repr may end up in a log line."""
        return (f"FhirAuthorization(token_type={self.token_type!r}, expires_in={self.expires_in!r}, "
                f"scope={self.scope!r}, subject={self.subject!r}, patient={self.patient!r})")


class _PatientViewContext(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    patientId: _Text  # noqa: N815 - the spec's names, here and below
    userId: _Text  # noqa: N815
    encounterId: _Text | None = None  # noqa: N815


class _OrderSignContext(_PatientViewContext, frozen=True, gc=False, kw_only=True):
    # Raw FHIR JSON, read tolerantly (module docstring): only "an object" is declared here.
    draftOrders: dict[str, Any]  # noqa: N815


class _OrderSelectContext(_OrderSignContext, frozen=True, gc=False, kw_only=True):
    selections: Annotated[list[str], msgspec.Meta(min_length=1)]


class _Hook(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    # Read first, alone: a call to the wrong service says so before anything else is judged.
    hook: _Text


class _Head(_Hook, frozen=True, gc=False, kw_only=True):
    # Read second: the server a token would be sent to is judged before the token (cds-r-1).
    hookInstance: _Text  # noqa: N815
    fhirServer: Annotated[str, msgspec.Meta(max_length=2048)] | None = None  # noqa: N815


class _Envelope(_Head, frozen=True, gc=False, kw_only=True):
    fhirAuthorization: FhirAuthorization | None = None  # noqa: N815
    # ``prefetch`` is checked in code: its values are JSON dicts or typed ``wire`` Structs (``read_hook_body``),
    # a union msgspec cannot declare, and declaring only the dict would copy it on every call.
    context: _PatientViewContext  # narrowed per hook below


class _OrderSignEnvelope(_Envelope, frozen=True, gc=False, kw_only=True):
    context: _OrderSignContext


class _OrderSelectEnvelope(_Envelope, frozen=True, gc=False, kw_only=True):
    context: _OrderSelectContext


_ENVELOPES: dict[str, type[_Envelope]] = {
    "patient-view": _Envelope, "order-select": _OrderSelectEnvelope, "order-sign": _OrderSignEnvelope,
}

# Where one message stands for every way a field can be wrong (missing, null, wrong type, too long).
_FIELD_MESSAGES = {
    "": "request body must be a JSON object",
    "context": "context must be a JSON object",
    "fhirServer": "fhirServer must be a URL string",
    "fhirAuthorization": "fhirAuthorization must be a JSON object",  # optional: only its type can be wrong
    "fhirAuthorization.expires_in": "fhirAuthorization.expires_in is required and must be an integer (seconds)",
    "context.selections": "context.selections is required for order-select: a non-empty array of Type/id "
                          "references into draftOrders",
    "context.draftOrders": "context.draftOrders is required: a FHIR Bundle of the draft orders",
}
# msgspec's messages: "<what> - at `$.path`" ("- at" is left out at the root), "Object missing required field
# `name`", "Expected `str` of length <= N", "Expected `str`, got `null`".
_AT = re.compile(r"(?P<what>.*?)(?: - at `\$\.?(?P<path>[^`]*)`)?", re.DOTALL)
_MISSING = re.compile(r"Object missing required field `(?P<field>[^`]+)`")
_TOO_LONG = re.compile(r"Expected `str` of length <= (?P<limit>\d+)")
_SELECTION_ITEM = re.compile(r"context\.selections\[\d+\]")
# Built once: ``dict | wire.Resource`` in the loop made a new union object per prefetch key.
_PREFETCH_VALUE = (dict, wire.Resource)


def _validation_error(exc: msgspec.ValidationError) -> InvalidRequest:
    """The OperationOutcome for msgspec's first validation error, in this module's words."""
    at = _AT.fullmatch(str(exc))
    what, path = (at.group("what"), at.group("path") or "") if at else (str(exc), "")
    missing = _MISSING.fullmatch(what)
    if missing:
        path = f"{path}.{missing.group('field')}" if path else missing.group("field")
    if path in _FIELD_MESSAGES:
        return InvalidRequest(_FIELD_MESSAGES[path], expression=[path or "request body"])
    if _SELECTION_ITEM.fullmatch(path):
        return InvalidRequest(f"{path} must be a Type/id reference", expression=[path])
    # A string field. null is "missing" (a JSON null is no value).
    if missing or what.endswith("got `null`"):
        return InvalidRequest(f"{path} is required", expression=[path])
    too_long = _TOO_LONG.fullmatch(what)
    if too_long:
        return InvalidRequest(f"{path} is longer than {too_long.group('limit')} characters", expression=[path])
    return InvalidRequest(f"{path} must be a non-empty string", expression=[path])


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


def _check_fhir_server(raw: str) -> str:
    """The URL policy for ``fhirServer`` (a string of at most 2048 characters by declaration)."""
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


def _check_selections(selections: list[str]) -> tuple[str, ...]:
    for index, item in enumerate(selections):
        match = _REFERENCE.fullmatch(item)
        if match is None or match.group(2) in _DOT_SEGMENTS:
            path = f"context.selections[{index}]"
            raise InvalidRequest(f"{path} must be a Type/id reference", expression=[path])
    return tuple(selections)


def _check_draft_orders(draft_orders: dict[str, Any]) -> dict[str, Any]:
    # Lenient: the sandbox and the spec examples omit Bundle.type; we only need resourceType and entries.
    if draft_orders.get("resourceType") != "Bundle":
        raise InvalidRequest("context.draftOrders must be a FHIR Bundle (resourceType 'Bundle')",
                             expression=["context.draftOrders.resourceType"])
    if not isinstance(draft_orders.get("entry", []), list):
        raise InvalidRequest("context.draftOrders.entry must be an array", expression=["context.draftOrders.entry"])
    return draft_orders


def _convert(body: Any, shape: type[_T]) -> _T:
    """``body`` as ``shape``, or the InvalidRequest for its first validation error."""
    try:
        return msgspec.convert(body, shape)
    except msgspec.ValidationError as exc:
        raise _validation_error(exc) from None


def _text(value: str, path: str) -> str:
    """``value`` unless it is whitespace only (declared _Text is already a non-empty string)."""
    if value.isspace():
        raise InvalidRequest(f"{path} must be a non-empty string", expression=[path])
    return value


def _check_hook(hook: str, expected_hook: str) -> str:
    if _text(hook, "hook") != expected_hook:
        raise InvalidRequest(f"this service answers the '{expected_hook}' hook, but the request is for "
                             f"'{hook[:64]}'", expression=["hook"])
    return hook


def _check_head(head: _Head, body: dict[str, Any]) -> str | None:
    """The checked ``fhirServer`` (or None) once ``hookInstance``, ``fhirServer`` and cds-r-1 hold."""
    _text(head.hookInstance, "hookInstance")
    fhir_server = None if head.fhirServer is None else _check_fhir_server(head.fhirServer)
    # Invariant cds-r-1: fhirAuthorization implies fhirServer (a null one is absent), judged before the token.
    if fhir_server is None and body.get("fhirAuthorization") is not None:
        raise InvalidRequest("fhirServer is required when fhirAuthorization is sent (CDS Hooks cds-r-1)",
                             expression=["fhirServer"])
    return fhir_server


def _check_authorization(authorization: FhirAuthorization) -> FhirAuthorization:
    where = "fhirAuthorization"
    _text(authorization.access_token, f"{where}.access_token")
    if _text(authorization.token_type, f"{where}.token_type").lower() != "bearer":
        raise InvalidRequest("fhirAuthorization.token_type must be 'Bearer'", expression=[f"{where}.token_type"])
    _text(authorization.scope, f"{where}.scope")
    _text(authorization.subject, f"{where}.subject")
    if authorization.patient is not None:
        _text(authorization.patient, f"{where}.patient")
    return msgspec.structs.replace(authorization, token_type="Bearer")  # noqa: S106 - the OAuth type name


def parse_hook_request(body: Any, expected_hook: str) -> HookRequest:
    """Validate a hook call body for the service bound to ``expected_hook``; raise InvalidRequest (400).

    The shape is declared by the Structs above and checked by msgspec; the checks below are those a type cannot
    express, run on the typed values in the order the messages were always given.
    """
    shape = _ENVELOPES[expected_hook]
    try:
        envelope = msgspec.convert(body, shape)
    except msgspec.ValidationError:
        # msgspec names the first fault in body order (a missing field after those present). A faulty body is
        # read again in steps, so that it is answered about the fault it always was: a call to the wrong hook
        # first, then hookInstance and fhirServer, then the rest (the rarely taken path: no cost to valid calls).
        _check_hook(_convert(body, _Hook).hook, expected_hook)
        _check_head(_convert(body, _Head), body)
        envelope = _convert(body, shape)  # raises
    hook = _check_hook(envelope.hook, expected_hook)
    fhir_server = _check_head(envelope, body)
    authorization = envelope.fhirAuthorization
    if authorization is not None:
        authorization = _check_authorization(authorization)
    context = envelope.context
    if not is_fhir_id(_text(context.patientId, "context.patientId")):
        raise InvalidRequest("context.patientId must be a FHIR resource id ([A-Za-z0-9-.], up to 64)",
                             expression=["context.patientId"])
    _check_reference(_text(context.userId, "context.userId"), "context.userId", _USER_TYPES[expected_hook])
    if context.encounterId is not None and not is_fhir_id(_text(context.encounterId, "context.encounterId")):
        raise InvalidRequest("context.encounterId must be a FHIR resource id", expression=["context.encounterId"])
    prefetch = body.get("prefetch")
    if prefetch is not None and not isinstance(prefetch, dict):
        raise InvalidRequest("prefetch must be a JSON object", expression=["prefetch"])
    for key, value in (prefetch or {}).items():
        # A dict (untyped reading) or a typed FHIR Struct (``read_hook_body`` decoded it; issue 18).
        if value is not None and not isinstance(value, _PREFETCH_VALUE):
            raise InvalidRequest(f"prefetch.{key[:64]} must be a FHIR resource, Bundle or null",
                                 expression=[f"prefetch.{key[:64]}"])
    draft_orders = None
    selections: tuple[str, ...] = ()
    if isinstance(context, _OrderSignContext):
        draft_orders = _check_draft_orders(context.draftOrders)
        if isinstance(context, _OrderSelectContext):
            selections = _check_selections(context.selections)
    return HookRequest(
        hook=hook, hook_instance=envelope.hookInstance, context=body["context"], patient_id=context.patientId,
        user_id=context.userId, encounter_id=context.encounterId, fhir_server=fhir_server,
        fhir_authorization=authorization, prefetch=prefetch, selections=selections,
        draft_orders=draft_orders,
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
