"""The issue #7 short-cuts in card rendering answer exactly like the code they skip."""

from __future__ import annotations

import re
import string
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from cards.render import _escape_always, escape_text, placeholders, templates

_SPECIALS = list("\\`*_[]~|&<>\"' \t\n\r\x0b\x0c\x1c\x85\xa0\u2028\u3000") + ["  ", "a", "9", ".", "é", "Ca"]


@settings(max_examples=3000, deadline=None)
@given(st.one_of(st.lists(st.sampled_from(_SPECIALS), max_size=8).map("".join), st.text(max_size=12),
                 st.integers(), st.floats(allow_nan=False)))
def test_escape_text_short_cut_equals_the_full_escape(value: object) -> None:
    assert escape_text(value) == _escape_always(str(value))


def test_escape_text_short_cut_is_taken_and_skipped() -> None:
    assert escape_text("2025-06-13 08:00 UTC") == "2025-06-13 08:00 UTC"
    assert escape_text(9.5) == "9.5"
    assert escape_text(" a  b\n") == "a b"
    assert escape_text("<b>") == "&lt;b&gt;"


def test_regex_whitespace_is_str_split_whitespace() -> None:
    # The short-cut finds "whitespace other than a space" with the regex class \s; the full escape collapses what
    # str.split() splits on. They must be the same characters.
    regex = {chr(i) for i in range(sys.maxunicode + 1) if re.match(r"\s", chr(i))}
    split = {chr(i) for i in range(sys.maxunicode + 1) if len(f"a{chr(i)}b".split()) == 2}
    assert regex == split


def test_placeholders_memo_equals_a_fresh_parse() -> None:
    for rule in templates().rules.values():
        for key in ("summary", "detail"):
            template = str(rule.get(key, ""))
            fresh = [name for _l, name, _s, _c in string.Formatter().parse(template) if name]
            assert placeholders(template) == fresh
            placeholders(template).append("changed")  # callers get their own list
            assert placeholders(template) == fresh
