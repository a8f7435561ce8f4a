"""How deeply a JSON document nests, read from its raw UTF-8 bytes with C-speed byte operations (issue #7).

The edge refuses bodies nested deeper than 64 levels (``http_json.MAX_JSON_DEPTH``). Walking the parsed objects to
check that cost ~0.85 ms on a typical 260 KB prefetch, as much as parsing it; this module gets the same answer
from the bytes in ~0.25 ms (BENCHMARKS.md). It relies on the document being valid JSON (msgspec has accepted it
first) and UTF-8 (no byte of a multi-byte character is ASCII, so every ``{ } [ ] " \\`` byte is JSON syntax or an
ASCII character of a string):

1. drop every escape (a backslash and the byte after it), so no quote left is inside a string by escape;
2. keep only the bytes ``{ } [ ] "``;
3. drop the strings: every ``""`` pair (the quotes alternate open/close; removing two adjacent ones keeps that,
   merging two strings at worst), then any string still holding a bracket;
4. what is left is the bracket structure; each pass of "drop every adjacent ``{}``, then every adjacent ``[]``"
   (``bytes.replace``, no rescan) removes one or two levels from every branch.

So when the structure is gone after ``p`` passes the depth is between ``p`` and ``2p``: at most ``limit / 2``
passes proves it is within the limit, more than ``limit`` passes proves it is not, and the rare case in between
is settled exactly by a regex pass that removes exactly one level (all empty pairs at once).
"""

from __future__ import annotations

import re

_NOT_STRUCTURE = bytes(byte for byte in range(256) if byte not in b'{}[]"')
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_STRING = re.compile(rb'"[^"]*"')
_EMPTY_PAIR = re.compile(rb"\{\}|\[\]")


def structure_of(raw: bytes) -> bytes:
    """The brackets of valid UTF-8 JSON ``raw`` outside strings, in order (e.g. ``{[{}{}]}``)."""
    if b"\\" in raw:
        raw = _ESCAPE.sub(b"", raw)
    brackets = raw.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in brackets:
        brackets = _STRING.sub(b"", brackets)
    return brackets


def depth_exceeds(raw: bytes, limit: int) -> bool:
    """True when valid UTF-8 JSON ``raw`` nests containers more than ``limit`` levels deep (root = level 1)."""
    structure = structure_of(raw)
    remaining = structure
    passes = 0
    while remaining:
        if passes >= limit:
            return True  # each pass removed at least one level, and some are still there
        remaining = remaining.replace(b"{}", b"").replace(b"[]", b"")
        passes += 1
    if 2 * passes <= limit:
        return False  # each pass removed at most two levels
    return exact_depth(structure) > limit


def exact_depth(structure: bytes) -> int:
    """The nesting depth of a bracket structure from :func:`structure_of` (one level removed per pass)."""
    depth = 0
    while structure:
        structure = _EMPTY_PAIR.sub(b"", structure)
        depth += 1
    return depth
