"""The one bounded JSON fetch every outbound call uses: FHIR reads, SMART discovery, the SMART token call, JWKS.

Why one function: each caller needs the same hardening and it was written four times (issue 17 item 5):
- the body is read through ``response.raw`` with a byte cap (a hostile or broken server cannot make us buffer
  an unbounded body); a declared ``Content-Length`` above the cap is refused before reading;
- redirects are never followed (a redirect could carry a bearer token, a code or a key fetch to another host);
- connect/read timeouts are always set by the caller;
- network failures raised while reading ``raw`` bypass requests' exception wrapping, so urllib3 and OSError
  failures are caught here too;
- the body is parsed by the service's one JSON parser (msgspec, as request bodies are; issue 18), which refuses
  what is not JSON (NaN, Infinity, lone surrogates) rather than reading it.
The caller decides what a status means; nothing here logs a header, token or body.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import msgspec
import requests
import urllib3

FailureKind = Literal["timeout", "unreachable", "too-large"]


class JsonFetchFailed(Exception):
    """No answer could be read: ``kind`` is "timeout", "unreachable" or "too-large"; the message is safe to log."""

    def __init__(self, kind: FailureKind, message: str) -> None:
        super().__init__(message)
        self.kind: FailureKind = kind


@dataclass(frozen=True)
class JsonReply:
    """The server's status and its body parsed as JSON (None when the body is empty or not JSON)."""

    status: int
    body: Any

    def object(self) -> dict[str, Any] | None:
        """The body when it is a JSON object, else None."""
        return self.body if isinstance(self.body, dict) else None


def fetch_json(url: str, *, max_bytes: int, timeout: tuple[float, float], headers: dict[str, str] | None = None,
               session: requests.Session | None = None, form: dict[str, str] | None = None) -> JsonReply:
    """GET ``url`` (POST ``form`` when given) without following redirects and read at most ``max_bytes``.

    Raises :class:`JsonFetchFailed` when the server cannot be reached, times out, or sends more than
    ``max_bytes``; any status is returned to the caller with whatever JSON body came with it.
    """
    method = "POST" if form is not None else "GET"
    send = session.request if session is not None else requests.request
    try:
        with send(method, url, data=form, headers=headers, timeout=timeout, allow_redirects=False,
                  stream=True) as response:
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise JsonFetchFailed("too-large", f"response larger than {max_bytes} bytes")
            raw = response.raw.read(max_bytes + 1, decode_content=True)
            status = response.status_code
    except (requests.Timeout, urllib3.exceptions.TimeoutError):
        raise JsonFetchFailed("timeout", "timed out") from None
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise JsonFetchFailed("unreachable", f"unreachable ({type(exc).__name__})") from None
    if len(raw) > max_bytes:
        raise JsonFetchFailed("too-large", f"response larger than {max_bytes} bytes")
    try:
        body = msgspec.json.decode(raw) if raw else None
    except (msgspec.MsgspecError, RecursionError):  # not JSON; RecursionError: nested past Python's limit
        body = None
    return JsonReply(status, body)
