"""Request bodies parsed by the one edge parser (msgspec, issue 18) keep every 4xx of the standard-library parser
(issue #7), whatever charset they declare."""

from __future__ import annotations

import json

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from cds_service.errors import ServiceError
from cds_service.http_json import MAX_JSON_DEPTH, read_json_body


def _request(data: bytes, content_type: str = "application/json") -> Request:
    return Request(EnvironBuilder(method="POST", data=data, content_type=content_type).get_environ())


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _error(data: bytes, content_type: str = "application/json") -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        read_json_body(_request(data, content_type))
    return caught.value


def test_a_body_at_the_depth_limit_parses_and_one_level_more_is_refused() -> None:
    assert read_json_body(_request(_nested(MAX_JSON_DEPTH))) is not None
    error = _error(_nested(MAX_JSON_DEPTH + 1))
    assert error.status == 400
    assert "deeper than 64 levels" in str(error)


def test_the_depth_limit_holds_for_a_body_in_another_charset_too() -> None:
    body = b'{"t": "caf\xe9", "n": ' + _nested(MAX_JSON_DEPTH - 1) + b"}"
    assert read_json_body(_request(body, "application/json; charset=latin-1")) is not None
    deeper = b'{"t": "caf\xe9", "n": ' + _nested(MAX_JSON_DEPTH) + b"}"
    error = _error(deeper, "application/json; charset=latin-1")
    assert error.status == 400
    assert "deeper than 64 levels" in str(error)


def test_the_parsers_own_depth_limit_gets_the_same_message() -> None:
    error = _error(_nested(5000))  # msgspec stops at the recursion limit, before our walk could run
    assert error.status == 400
    assert "deeper than 64 levels" in str(error)


@pytest.mark.parametrize("data", [b"NaN", b"[Infinity]", b"-Infinity", b"1e400", b'"\\ud800"', b"{not json",
                                  b"\xef\xbb\xbf{}", b" "])
def test_invalid_json_is_a_400_that_says_so(data: bytes) -> None:
    error = _error(data)
    assert error.status == 400
    assert "not valid JSON" in str(error)


def test_invalid_utf8_and_empty_bodies_keep_their_messages() -> None:
    assert "UTF-8" in str(_error(b'{"a": "\xff"}'))
    assert "empty" in str(_error(b""))


def test_another_declared_charset_is_read_by_the_same_parser() -> None:
    body = {"hook": "patient-view", "text": "caf\u00e9"}
    data = json.dumps(body, ensure_ascii=False).encode("latin-1")
    assert read_json_body(_request(data, "application/json; charset=latin-1")) == body
    assert "not valid JSON" in str(_error(b"NaN", "application/json; charset=latin-1"))
    assert "UTF-8" in str(_error(b"{}", "application/json; charset=no-such-codec"))


def test_utf8_spellings_of_the_charset_are_read_without_transcoding() -> None:
    for charset in ("utf-8", "UTF-8", "utf8"):
        assert read_json_body(_request('{"a": "\u00e9"}'.encode(), f"application/json; charset={charset}")) == {
            "a": "\u00e9"}


def test_a_lone_surrogate_from_an_exotic_codec_is_a_400() -> None:
    assert b"+2AA-".decode("utf-7") == "\ud800"  # UTF-7 can spell a lone surrogate, which UTF-8 cannot hold
    error = _error(b'{"a": "+2AA-"}', "application/json; charset=utf-7")
    assert error.status == 400
    assert "UTF-8" in str(error)


def test_a_utf16_body_with_its_byte_order_mark_is_read() -> None:
    body = {"hook": "patient-view", "text": "caf\u00e9"}
    assert read_json_body(_request(json.dumps(body).encode("utf-16"), "application/json; charset=utf-16")) == body
