"""Reading JSON request bodies safely at the edge: content type, size, depth, encoding."""

from __future__ import annotations

import json
from typing import Any

from flask import Request

from cds_service.errors import InvalidRequest, ServiceError

# FHIR resources nest ~10-15 levels; 64 leaves room for real data while bounding recursive processing.
MAX_JSON_DEPTH = 64
_JSON_TYPES = ("application/json", "application/fhir+json")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Iterative depth check (no recursion, so hostile nesting cannot exhaust the stack).

    Walks one nesting level at a time and keeps only containers: on a typical prefetch this is ~3x faster than
    a (node, depth) stack, and it ran on every hook call (BENCHMARKS.md profile, issue #7).
    """
    level: list[Any] = [value] if isinstance(value, (dict, list)) else []
    depth = 1
    while level:
        if depth > limit:
            return True
        deeper: list[Any] = []
        for node in level:
            for child in node.values() if isinstance(node, dict) else node:
                if isinstance(child, (dict, list)):
                    deeper.append(child)
        level = deeper
        depth += 1
    return False


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
    try:
        text = raw.decode(request.mimetype_params.get("charset", "utf-8"))
    except (UnicodeError, LookupError):  # UnicodeError: e.g. charset=undefined, idna (fuzz, issue #5)
        raise InvalidRequest("the request body is not valid UTF-8 text") from None
    try:
        body = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise InvalidRequest(f"JSON nesting is deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {str(exc)[:120]}") from None
    if _depth_exceeds(body, MAX_JSON_DEPTH):
        raise InvalidRequest(f"JSON nesting is deeper than {MAX_JSON_DEPTH} levels")
    return body
