"""Reading JSON request bodies safely at the edge: content type, size, depth, encoding.

UTF-8 bodies (the CDS Hooks norm) are parsed with orjson, a C parser: on the typical 260 KB prefetch it
builds the objects ~1.5x faster than the standard library, and it rejects NaN/Infinity, out-of-range numbers
and lone surrogates itself (BENCHMARKS.md, issue #7). A body that declares another charset is decoded and
parsed with the standard library, as before.
"""

from __future__ import annotations

import codecs
import json
from itertools import chain, compress, repeat
from operator import is_
from typing import Any

import orjson
from flask import Request

from cds_service.errors import InvalidRequest, ServiceError

# FHIR resources nest ~10-15 levels; 64 leaves room for real data while bounding recursive processing.
MAX_JSON_DEPTH = 64
_JSON_TYPES = ("application/json", "application/fhir+json")
_TOO_DEEP = f"JSON nesting is deeper than {MAX_JSON_DEPTH} levels"
# orjson's own nesting guard stops at 1024 levels ("depth limit exceeded"; "Recursion limit reached" before
# orjson 3.10); we answer with our 64-level message either way.
_ORJSON_DEPTH_ERRORS = ("depth limit", "recursion limit")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Iterative depth check (no recursion, so hostile nesting cannot exhaust the stack).

    Walks one nesting level at a time, and within a level only with C-level iterators (``map``, ``compress``,
    ``chain``): it runs on every hook call, and the per-child Python loop it replaces was the largest single
    cost of a typical call after the parser (BENCHMARKS.md, issue #7). A scan of the raw bytes for brackets
    outside strings was measured too and was slower (string stripping dominates). Parsed JSON holds exact
    ``dict`` and ``list`` objects only, so exact type tests suffice.
    """
    dicts: list[Any] = [value] if type(value) is dict else []
    lists: list[Any] = [value] if type(value) is list else []
    depth = 1
    while dicts or lists:
        if depth > limit:
            return True
        children = list(chain(chain.from_iterable(map(dict.values, dicts)), chain.from_iterable(lists)))
        kinds = list(map(type, children))
        dicts = list(compress(children, map(is_, kinds, repeat(dict))))
        lists = list(compress(children, map(is_, kinds, repeat(list))))
        depth += 1
    return False


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


def _parse_other_charset(raw: bytes, charset: str) -> Any:
    try:
        text = raw.decode(charset)
    except (UnicodeError, LookupError):  # UnicodeError: e.g. charset=undefined, idna (fuzz, issue #5)
        raise InvalidRequest("the request body is not valid UTF-8 text") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
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
    body = _parse_utf8(raw) if _is_utf8(charset) else _parse_other_charset(raw, charset)
    if _depth_exceeds(body, MAX_JSON_DEPTH):
        raise InvalidRequest(_TOO_DEEP)
    return body
