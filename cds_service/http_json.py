"""Reading JSON request bodies safely at the edge: content type, size, depth, encoding.

Every body is parsed by one parser, msgspec, in compiled code (issue 18). A hook call's body is decoded once:
``prefetch`` straight into the typed FHIR Structs of ``fhir_mappings.wire`` (fields nobody reads are skipped,
never built), the envelope fields into plain values (``read_hook_body``). Other bodies (feedback) are decoded
into plain values. A body that declares another charset is decoded to text, re-encoded as UTF-8 and read the
same way. msgspec refuses NaN/Infinity, numbers beyond a double and lone surrogates itself. The 64-level depth
limit is checked on the bytes once the parser has accepted them (msgspec's own limit is Python's recursion
limit, far above 64: reaching it is answered with the same message).
"""

from __future__ import annotations

import codecs
from typing import Any

import msgspec
from flask import Request

from cds_service.errors import InvalidRequest, ServiceError
from cds_service.json_depth import depth_exceeds
from fhir_mappings import wire

# FHIR resources nest ~10-15 levels; 64 leaves room for real data while bounding recursive processing.
MAX_JSON_DEPTH = 64
_JSON_TYPES = ("application/json", "application/fhir+json")
_TOO_DEEP = f"JSON nesting is deeper than {MAX_JSON_DEPTH} levels"
_NOT_TEXT = "the request body is not valid UTF-8 text"


def _is_utf8(charset: str) -> bool:
    try:
        return codecs.lookup(charset).name == "utf-8"
    except LookupError:
        return False


def _utf8_of(raw: bytes, charset: str) -> bytes:
    """The body as UTF-8 bytes: itself when it declares UTF-8 (checked), else decoded and re-encoded."""
    if _is_utf8(charset):
        try:
            raw.decode("utf-8")  # C-speed check (~15 us for 260 KB): invalid UTF-8 gets its own clear message
        except UnicodeError:
            raise InvalidRequest(_NOT_TEXT) from None
        return raw
    try:
        # UnicodeError: e.g. charset=undefined, idna (fuzz, issue #5), or a lone surrogate from an exotic codec.
        return raw.decode(charset).encode("utf-8")
    except (UnicodeError, LookupError):
        raise InvalidRequest(_NOT_TEXT) from None


def _decode(utf8: bytes) -> Any:
    """The body as plain Python values, or the 400 that says why it is not JSON."""
    try:
        return msgspec.json.decode(utf8)
    except RecursionError:
        raise InvalidRequest(_TOO_DEEP) from None
    except msgspec.MsgspecError as exc:  # DecodeError; ValidationError for a number beyond a double
        raise InvalidRequest(f"the request body is not valid JSON: {str(exc)[:120]}") from None


def _typed_hook_body(utf8: bytes) -> dict[str, Any] | None:
    """A hook body read in one typed decode (issue 18), or None when the plain decode must answer.

    ``prefetch`` is decoded straight into the typed FHIR Structs of ``fhir_mappings.wire``, the envelope fields
    into plain values. A prefetch value that does not fit the typed shape (another resource type, a field of
    another type) is decoded again on its own into plain values, and the other values stay typed. A body that is
    not JSON the parser takes returns None: the caller's plain decode of the whole body then gives the 400, so a
    hook call and any other call get the same answer for the same fault. One difference is deliberate: a number
    beyond a double (1e400) in a field the service never reads is skipped unread rather than refused (every
    field that is read still refuses it).
    """
    envelope: wire.HookEnvelope | wire.HookEnvelopeRawPrefetch
    prefetch: dict[str, Any] | None
    try:
        envelope = wire.decode_envelope(utf8)
        prefetch = envelope.prefetch
    except msgspec.ValidationError:  # a prefetch value that does not fit (or no JSON object at all)
        try:
            envelope = wire.decode_envelope_raw_prefetch(utf8)
            prefetch = None if envelope.prefetch is None else {
                key: _prefetch_value(value) for key, value in envelope.prefetch.items()}
        except (msgspec.MsgspecError, RecursionError):
            return None
    except (msgspec.DecodeError, RecursionError):
        return None
    body = {name: value for name in wire.ENVELOPE_FIELDS
            if (value := getattr(envelope, name)) is not msgspec.UNSET}
    if prefetch is not None:
        body["prefetch"] = prefetch
    return body


def _prefetch_value(value: msgspec.Raw) -> Any:
    """One prefetch value: typed FHIR when it fits, else plain values (raises msgspec's error when not JSON)."""
    try:
        return wire.decode_prefetch_value(value)
    except msgspec.ValidationError:
        return msgspec.json.decode(value)


def _body_bytes(request: Request) -> bytes:
    """The body of a JSON request, or the 415 / 413 / 400 that says why there is none."""
    if request.mimetype not in _JSON_TYPES:
        raise ServiceError(
            f"Content-Type must be application/json (got {request.mimetype or 'none'})",
            status=415, code="not-supported",
        )
    raw = request.get_data(cache=False)  # werkzeug enforces MAX_CONTENT_LENGTH here (413)
    if not raw:
        raise InvalidRequest("the request body is empty; send a JSON object")
    return raw


def read_json_body(request: Request) -> Any:
    """The parsed JSON body, or a 4xx ServiceError that says exactly what is wrong."""
    return _parse_body(_body_bytes(request), request, typed=False)


def read_hook_body(request: Request) -> Any:
    """A CDS Hooks call body: as ``read_json_body``, with ``prefetch`` decoded into typed FHIR when it fits
    (``fhir_mappings.wire``; issue 18). The same 4xx answers, the same depth limit."""
    return _parse_body(_body_bytes(request), request, typed=True)


def _parse_body(raw: bytes, request: Request, *, typed: bool) -> Any:
    utf8 = _utf8_of(raw, request.mimetype_params.get("charset", "utf-8"))
    body = _typed_hook_body(utf8) if typed else None
    if body is None:
        body = _decode(utf8)
    # Checked on the UTF-8 bytes once the parser has accepted them: a third of the cost of walking the objects.
    if depth_exceeds(utf8, MAX_JSON_DEPTH):
        raise InvalidRequest(_TOO_DEEP)
    return body
