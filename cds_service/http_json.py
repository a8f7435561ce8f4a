"""Reading JSON request bodies safely at the edge: content type, size, depth, encoding.

UTF-8 bodies (the CDS Hooks norm) are parsed with orjson, a C parser: on the typical 260 KB prefetch it
builds the objects ~1.5x faster than the standard library, and it rejects NaN/Infinity, out-of-range numbers
and lone surrogates itself (BENCHMARKS.md, issue #7). A hook call's body is first decoded once with msgspec,
its prefetch straight into typed FHIR Structs (``read_hook_body``, issue 18); whatever that reading does not
take goes through orjson as before. A body that declares another charset is decoded and parsed with the
standard library, as before. The 64-level depth limit is checked on the bytes whichever parser read them
(msgspec's own limit is Python's recursion limit, far above 64).
"""

from __future__ import annotations

import codecs
import json
from typing import Any

import msgspec
import orjson
from flask import Request

from cds_service.errors import InvalidRequest, ServiceError
from cds_service.json_depth import depth_exceeds
from fhir_mappings import wire

# FHIR resources nest ~10-15 levels; 64 leaves room for real data while bounding recursive processing.
MAX_JSON_DEPTH = 64
_JSON_TYPES = ("application/json", "application/fhir+json")
_TOO_DEEP = f"JSON nesting is deeper than {MAX_JSON_DEPTH} levels"
# orjson's own nesting guard stops at 1024 levels ("depth limit exceeded"; "Recursion limit reached" before
# orjson 3.10); we answer with our 64-level message either way.
_ORJSON_DEPTH_ERRORS = ("depth limit", "recursion limit")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _is_utf8(charset: str) -> bool:
    try:
        return codecs.lookup(charset).name == "utf-8"
    except LookupError:
        return False


def _parse_utf8(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        message = str(exc)
        if any(marker in message.lower() for marker in _ORJSON_DEPTH_ERRORS):
            raise InvalidRequest(_TOO_DEEP) from None
        raise InvalidRequest(f"the request body is not valid JSON: {message[:120]}") from None


def _parse_other_charset(raw: bytes, charset: str) -> tuple[Any, str]:
    """The parsed body and its decoded text."""
    try:
        text = raw.decode(charset)
    except (UnicodeError, LookupError):  # UnicodeError: e.g. charset=undefined, idna (fuzz, issue #5)
        raise InvalidRequest("the request body is not valid UTF-8 text") from None
    try:
        return json.loads(text, parse_constant=_reject_constant), text
    except RecursionError:
        raise InvalidRequest(_TOO_DEEP) from None
    except ValueError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {str(exc)[:120]}") from None


def _typed_hook_body(raw: bytes) -> dict[str, Any] | None:
    """A hook body read in one typed decode (issue 18), or None when the untyped reading must decide.

    msgspec decodes the body once: ``prefetch`` straight into the typed FHIR Structs of ``fhir_mappings.wire``
    (fields nobody reads are skipped, never built), the small envelope fields as raw bytes, which orjson then
    parses, so their values and every validation message are those of the untyped path. A prefetch value that
    does not fit the typed shape (another resource type, a field of another type) is read on its own, untyped,
    and the other values stay typed. Anything else this reading does not take as it is (invalid JSON, a number
    orjson would refuse) returns None, and the caller parses the whole body untyped, with exactly the answers
    of before. One difference is deliberate: a number beyond a double (1e400) in a field the service never
    reads is skipped unread rather than refused (every field that is read still refuses it).
    """
    envelope: wire.HookEnvelope | wire.HookEnvelopeRawPrefetch
    prefetch: dict[str, Any] | None
    try:
        envelope = wire.decode_envelope(raw)
        prefetch = envelope.prefetch
    except msgspec.ValidationError:
        try:
            envelope = wire.decode_envelope_raw_prefetch(raw)
        except (msgspec.DecodeError, RecursionError):
            return None
        values: dict[str, Any] = {}
        for key, value in (envelope.prefetch or {}).items():
            try:
                values[key] = wire.decode_prefetch_value(value)
            except (msgspec.DecodeError, RecursionError):
                try:
                    values[key] = orjson.loads(memoryview(value))
                except orjson.JSONDecodeError:
                    return None
        prefetch = None if envelope.prefetch is None else values
    except (msgspec.DecodeError, RecursionError):
        return None
    body: dict[str, Any] = {}
    try:
        for name in wire.ENVELOPE_FIELDS:
            value = getattr(envelope, name)
            if value:
                body[name] = orjson.loads(memoryview(value))  # a view of the body: no copy
    except orjson.JSONDecodeError:
        return None
    if prefetch is not None:
        body["prefetch"] = prefetch
    return body


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
    charset = request.mimetype_params.get("charset", "utf-8")
    if _is_utf8(charset):
        try:
            raw.decode("utf-8")  # C-speed check (~15 us for 260 KB): invalid UTF-8 gets its own clear message
        except UnicodeError:
            raise InvalidRequest("the request body is not valid UTF-8 text") from None
        body = _typed_hook_body(raw) if typed else None
        if body is None:
            body = _parse_utf8(raw)
        utf8 = raw
    else:
        body, text = _parse_other_charset(raw, charset)
        # Surrogates (only possible from exotic codecs) become non-ASCII bytes; the bracket structure is unchanged.
        utf8 = text.encode("utf-8", "surrogatepass")
    # Checked on the UTF-8 bytes once the parser has accepted them: a third of the cost of walking the objects.
    if depth_exceeds(utf8, MAX_JSON_DEPTH):
        raise InvalidRequest(_TOO_DEEP)
    return body
