"""Which URLs the service may send a request (and a bearer token) to: normalisation, then the allowlist.

Issue 16 item 3. A URL is normalised as RFC 3986 section 6.2.2 says before it is compared with
``CDS_ALLOWED_FHIR_SERVERS``: scheme and host lower-cased, the scheme's default port dropped (6.2.3),
percent-encoded unreserved characters decoded (6.2.2.2: ``%2e`` is ``.``), dot segments removed (5.2.4). A URL
whose path CHANGES under that normalisation is refused outright rather than "fixed": ``/fhir/../admin`` is
``/admin`` to the HTTP library (urllib3 removes dot segments), to most servers, and to every proxy that decodes
``%2e`` first, so the only safe reading is none. For the same reason a path with an empty segment (``//``, which
some proxies collapse before resolving ``..``), an encoded ``/`` or ``\\`` (``%2F``, ``%5C``, which some servers
decode), a raw ``\\`` or a ``..;`` segment (servlet path parameters) is refused too.

Used for ``fhirServer`` (hook requests), ``next`` links (paging), the SMART ``iss`` and the SMART endpoints, and
as a last check on every URL the FHIR client requests.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from cds_service.config import Settings

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
# Encoded "/" and "\" (a server that decodes them before routing sees another path than we checked), and an
# encoded "%" (a double-encoded "%252e" is "." to a server that decodes twice).
_ENCODED_SEPARATOR = re.compile(r"%(2[Ff]|5[Cc]|25)")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class UnsafeUrl(ValueError):
    """A URL the service refuses to send a request to; the message says why and is safe to show."""


class FhirServerNotAllowed(Exception):
    """The request names a FHIR server this deployment may not call; nothing was sent."""


def decode_unreserved(path: str) -> str:
    """Decode percent-encoded unreserved characters (RFC 3986 6.2.2.2); other escapes keep upper-case hex."""
    def one(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else f"%{match.group(1).upper()}"

    return _PERCENT.sub(one, path)


def remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4 "Remove Dot Segments", as written (on a path already percent-normalised)."""
    source, output = path, ""
    while source:
        if source.startswith("../"):
            source = source[3:]
        elif source.startswith("./"):
            source = source[2:]
        elif source.startswith("/./"):
            source = "/" + source[3:]
        elif source == "/.":
            source = "/"
        elif source.startswith("/../"):
            source = "/" + source[4:]
            output = output[:output.rfind("/")] if "/" in output else ""
        elif source == "/..":
            source = "/"
            output = output[:output.rfind("/")] if "/" in output else ""
        elif source in (".", ".."):
            source = ""
        else:
            start = 1 if source.startswith("/") else 0
            end = source.find("/", start)
            end = len(source) if end < 0 else end
            output += source[:end]
            source = source[end:]
    return output


def path_problem(path: str) -> str | None:
    """Why ``path`` (as sent, before normalisation) cannot be trusted, or None when it is already normal."""
    if "\\" in path or _ENCODED_SEPARATOR.search(path):
        return "an encoded path separator (%2F, %5C), a backslash or a double-encoded character (%25)"
    decoded = decode_unreserved(path)
    segments = decoded.split("/")
    if any(segment.split(";", 1)[0] in (".", "..") for segment in segments):
        return "a dot segment (. or .., also written %2e)"
    if "" in segments[1:-1]:
        return "an empty path segment (//)"
    if remove_dot_segments(decoded) != decoded:  # pragma: no cover - the segment checks above catch every case
        return "a path that changes under normalisation"
    return None


def normalise(url: str) -> str:
    """The RFC 3986 normal form of an absolute http(s) URL whose path is already normal.

    Raises UnsafeUrl when the path changes under normalisation (see the module docstring) or the URL cannot be
    parsed. The query and fragment are kept as they are: a server's paging state is opaque.
    """
    if any(char <= " " or char == "\x7f" for char in url):
        # urlsplit silently drops tabs and newlines (WHATWG URL rules); a URL that needs that is refused.
        raise UnsafeUrl("it contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeUrl("it is not a valid URL") from None
    problem = path_problem(parts.path)
    if problem is not None:
        raise UnsafeUrl(f"its path contains {problem}; a URL must already be in normal form (RFC 3986 6.2.2)")
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal keeps its brackets
    netloc = host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    if parts.username is not None or parts.password is not None:
        netloc = "@" + netloc  # never matches an allowlist entry: credentials in a FHIR URL are refused
    return urlunsplit((scheme, netloc, decode_unreserved(parts.path), parts.query, parts.fragment))


def within(url: str, prefix: str) -> bool:
    """True when ``url`` is ``prefix`` or below it once both are normalised (a path prefix on a whole segment).

    A URL that cannot be normalised is never within anything.
    """
    try:
        u, p = urlsplit(normalise(url)), urlsplit(normalise(prefix))
    except UnsafeUrl:
        return False
    if (u.scheme, u.netloc) != (p.scheme, p.netloc):
        return False
    base = p.path.rstrip("/")
    return u.path == base or u.path.startswith(base + "/") or base == ""


def check_server_allowed(fhir_server: str, settings: Settings) -> None:
    """Raise FhirServerNotAllowed unless configuration permits calling ``fhir_server``.

    The URL is normalised first (issue 16 item 3): one whose path changes under normalisation is refused
    whatever the allowlist says, in --dev too.
    """
    try:
        normalise(fhir_server)
    except UnsafeUrl as exc:
        raise FhirServerNotAllowed(f"fhirServer {fhir_server[:200]} is refused: {exc}") from None
    parts = urlsplit(fhir_server)
    if parts.scheme != "https" and not settings.dev:
        # CDS Hooks 2.0: "The scheme MUST be https when production data is exchanged."
        raise FhirServerNotAllowed(
            f"fhirServer {fhir_server} is not https; production requires https (use --dev for local trials)"
        )
    allowed = settings.allowed_fhir_servers
    if not allowed and settings.dev:
        return  # --dev with no allowlist: any server, for the public sandbox and local trials.
    if not any(within(fhir_server, prefix) for prefix in allowed):
        raise FhirServerNotAllowed(
            f"fhirServer {fhir_server} is not in CDS_ALLOWED_FHIR_SERVERS; ask the service operator to add it"
        )
