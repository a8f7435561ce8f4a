"""Reading JSON request bodies safely at the edge: content type, size, depth, encoding.

UTF-8 bodies (the CDS Hooks norm) are parsed with orjson, a C parser: on the typical 260 KB prefetch it
builds the objects ~1.5x faster than the standard library, and it rejects NaN/Infinity, out-of-range numbers
and lone surrogates itself (BENCHMARKS.md, issue #7). A body that declares another charset is decoded and
parsed with the standard library, as before.
"""

from __future__ import annotations

import codecs
import json
from typing import Any

import orjson
from flask import Request

from cds_service.errors import InvalidRequest, ServiceError
from cds_service.json_depth import depth_exceeds

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
        raw.decode("utf-8")  # C-speed check (~15 us for 260 KB) so invalid UTF-8 gets its own clear message
    except UnicodeError:
        raise InvalidRequest("the request body is not valid UTF-8 text") from None
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


def read_json_body(request: Request) -> Any:
    """The parsed JSON body, or a 4xx ServiceError that says exactly what is wrong."""
    if request.mimetype not in _JSON_TYPES:
        raise ServiceError(
            f"Content-Type must be application/json (got {request.mimetype or 'none'})",
            status=415, code="not-supported",
        )
    raw = request.get_data(cache=False)  # werkzeug enforces MAX_CONTENT_LENGTH here (413)
    if not raw:
        raise InvalidRequest("the request body is empty; send a JSON object")
    charset = request.mimetype_params.get("charset", "utf-8")
    if _is_utf8(charset):
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
