"""Turn a prefetch template into the relative URL the service itself GETs: tokens filled, every value encoded.

Issue 16 item 4. Discovery advertises the templates as the CDS Hooks 2.0 examples write them
(``code=http://loinc.org|2000-8``) and the EHR encodes them for its own fetch. When the service fetches, every
query value is percent-encoded (RFC 3986 2.1): ``http%3A%2F%2Floinc.org%7C2000-8``. Leaving ``:`` and ``/`` raw
is legal, but some real reverse proxies (the SMART launcher's among them) collapse the ``//`` of
``http://loinc.org`` in the request line, the search then matches nothing, and "no labs" looks like a real
answer. Only the FHIR OR separator ``,`` stays literal: it is search syntax between values, not part of one
(FHIR R4 search 3.1.1.3 "Joining multiple values").
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import quote, unquote

_TOKEN = re.compile(r"\{\{\s*([A-Za-z.]+)\s*\}\}")
# Path segments: type names, ids ([A-Za-z0-9-.], already unreserved), ``$operation`` and ``_history``.
_PATH_SAFE = "$"
# Search parameter names may carry a modifier (``code:not``) or a chain (``subject.name``).
_KEY_SAFE = ":$"
_VALUE_SAFE = ","

Lookup = Callable[[str], str | None]


def _fill(text: str, lookup: Lookup, safe: str) -> str | None:
    """``text`` with tokens replaced by their raw values, then encoded; None when a token has no value.

    The template's own literal text is decoded first (a template may already hold ``%7C``), so it is encoded
    exactly once; a token's value is inserted raw and encoded with it.
    """
    pieces: list[str] = []
    last = 0
    for match in _TOKEN.finditer(text):
        pieces.append(unquote(text[last:match.start()]))
        value = lookup(match.group(1))
        if value is None:
            return None
        pieces.append(value)
        last = match.end()
    pieces.append(unquote(text[last:]))
    return quote("".join(pieces), safe=safe)


def build_relative_url(template: str, lookup: Lookup) -> str | None:
    """The relative URL (``Type/id`` or ``Type?name=value&...``) for ``template``, percent-encoded.

    ``lookup`` gives a token's value (``context.patientId`` -> ``p1``) or None, which makes the whole result None
    (CDS Hooks 2.0: a prefetch template whose token has no value is not fetched).
    """
    path, has_query, query = template.partition("?")
    segments = [_fill(segment, lookup, _PATH_SAFE) for segment in path.split("/")]
    if any(segment is None for segment in segments):
        return None
    url = "/".join(segment or "" for segment in segments)
    if not has_query:
        return url
    pairs: list[str] = []
    for pair in query.split("&"):
        if not pair:
            continue
        name, has_value, value = pair.partition("=")
        encoded_name = _fill(name, lookup, _KEY_SAFE)
        encoded_value = _fill(value, lookup, _VALUE_SAFE)
        if encoded_name is None or encoded_value is None:
            return None
        pairs.append(f"{encoded_name}={encoded_value}" if has_value else encoded_name)
    return f"{url}?{'&'.join(pairs)}"
