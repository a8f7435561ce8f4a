"""The byte-level depth check agrees with walking the parsed objects, whatever the strings hold (issue #7)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from cds_service.json_depth import depth_exceeds, exact_depth, structure_of

# Strings full of the bytes the check must see through: brackets, quotes, backslashes, escapes, non-ASCII.
TRICKY_TEXT = st.text(alphabet=st.sampled_from(list('{}[]"\\/ab\n\t\u00e9\u4e2d\U0001f600\u2028')), max_size=12)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False,
                    allow_infinity=False), TRICKY_TEXT)
DOCUMENTS = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(TRICKY_TEXT, inner, max_size=4)), max_leaves=60)


def _walk_depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_walk_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_walk_depth(v) for v in value), default=0)
    return 0


def _encodings(document: Any) -> list[bytes]:
    return [msgspec.json.encode(document), json.dumps(document).encode(), json.dumps(document, ensure_ascii=False,
            indent=1).encode()]


@settings(max_examples=400, deadline=None)
@given(DOCUMENTS)
def test_the_structure_read_from_bytes_has_the_depth_of_the_parsed_document(document: Any) -> None:
    for raw in _encodings(document):
        assert exact_depth(structure_of(raw)) == _walk_depth(document)


@settings(max_examples=300, deadline=None)
@given(DOCUMENTS, st.integers(1, 12))
def test_the_limit_decision_matches_the_depth_of_the_parsed_document(document: Any, limit: int) -> None:
    for raw in _encodings(document):
        assert depth_exceeds(raw, limit) == (_walk_depth(document) > limit)


def _mixed_nesting(depth: int, text: str) -> bytes:
    # Alternating objects and arrays (like FHIR), with a bracket-laden string at every level.
    opening, closing = [], []
    for level in range(depth):
        if level % 2:
            opening.append(f'[{json.dumps(text)},')
            closing.append("]")
        else:
            opening.append(f'{{"k{level}": {json.dumps(text)}, "next":')
            closing.append("}")
    return ("".join(opening) + "0" + "".join(reversed(closing))).encode()


def test_every_depth_around_the_limit_is_decided_exactly() -> None:
    # Depths between limit/2 and limit+2 are where the fast passes are ambiguous and the exact pass decides.
    for text in ("", '[{"}\\"]', "\u00e9]]]]"):
        for depth in range(1, 70):
            for raw in (_mixed_nesting(depth, text), b"[" * depth + b"]" * depth,
                        b'{"a":' * depth + b"1" + b"}" * depth):
                assert _walk_depth(msgspec.json.decode(raw)) == depth
                assert depth_exceeds(raw, 64) == (depth > 64), (depth, raw[:40])


def test_scalars_and_empty_containers() -> None:
    assert not depth_exceeds(b'"{[[["', 0)
    assert not depth_exceeds(b"5", 0)
    assert depth_exceeds(b"{}", 0)
    assert not depth_exceeds(b"{}", 1)
    assert depth_exceeds(b'[{"a": []}]', 2)
