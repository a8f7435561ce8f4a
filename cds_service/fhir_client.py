"""Read-only FHIR access to the CDS client's server, used when prefetch data is missing.

Safety properties (CDS Hooks 2.0 "FHIR Resource Access" and our hardening rules):
- only servers allowed by configuration are contacted, https outside --dev, checked BEFORE any request;
- every request has connect/read timeouts; idempotent GETs get a small retry budget (urllib3 Retry);
- the bearer token is sent only to the fhirServer's own origin: redirects are never followed automatically,
  and ``next`` links that leave the server's base URL are not followed;
- the token is never logged (the session is created per call and nothing logs headers).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from cds_service.config import Settings

log = logging.getLogger(__name__)

_ACCEPT = "application/fhir+json, application/json;q=0.9"
_MAX_RESPONSE_BYTES = 50 * 1024 * 1024


class FhirAccessError(Exception):
    """A fetch failed (network, timeout, non-2xx, malformed body); the message is safe to log.

    ``status`` is the FHIR server's HTTP status when it answered with an error, else None.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class FhirServerNotAllowed(Exception):
    """The request names a FHIR server this deployment may not call; nothing was sent."""


@dataclass(frozen=True)
class FetchResult:
    """The resources a search or read returned, and notes on anything not followed."""

    resources: list[dict[str, Any]]
    pages: int
    truncated: bool = False


def check_server_allowed(fhir_server: str, settings: Settings) -> None:
    """Raise FhirServerNotAllowed unless configuration permits calling ``fhir_server``."""
    parts = urlsplit(fhir_server)
    if parts.scheme != "https" and not settings.dev:
        # CDS Hooks 2.0: "The scheme MUST be https when production data is exchanged."
        raise FhirServerNotAllowed(
            f"fhirServer {fhir_server} is not https; production requires https (use --dev for local trials)"
        )
    allowed = settings.allowed_fhir_servers
    if not allowed and settings.dev:
        return  # --dev with no allowlist: any server, for the public sandbox and local trials.
    if not any(_within(fhir_server, prefix) for prefix in allowed):
        raise FhirServerNotAllowed(
            f"fhirServer {fhir_server} is not in CDS_ALLOWED_FHIR_SERVERS; ask the service operator to add it"
        )


def _within(url: str, prefix: str) -> bool:
    """True when ``url`` is ``prefix`` or below it (same scheme, host and port; path prefix on a segment)."""
    u, p = urlsplit(url), urlsplit(prefix)
    if (u.scheme, u.netloc.lower()) != (p.scheme, p.netloc.lower()):
        return False
    base = p.path.rstrip("/")
    return u.path == base or u.path.startswith(base + "/") or base == ""


def build_session(settings: Settings) -> requests.Session:
    """A session with a GET-only retry budget; redirects are handled by the caller, never auto-followed."""
    retry = Retry(
        total=settings.fhir_retries,
        connect=settings.fhir_retries,
        read=settings.fhir_retries,
        status=settings.fhir_retries,
        allowed_methods=frozenset({"GET"}),
        status_forcelist=(429, 502, 503, 504),
        backoff_factor=0.05,
        respect_retry_after_header=False,  # a long Retry-After would blow the ~500 ms budget of a hook call
        raise_on_status=False,
        redirect=0,
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry, pool_connections=4, pool_maxsize=16)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.max_redirects = 0
    return session


class FhirClient:
    """GETs against one FHIR base URL with an optional bearer token."""

    def __init__(self, base_url: str, access_token: str | None, settings: Settings,
                 session: requests.Session) -> None:
        self._base = base_url.rstrip("/")
        self._headers = {"Accept": _ACCEPT}
        if access_token:
            self._headers["Authorization"] = f"Bearer {access_token}"
        self._timeout = (settings.fhir_connect_timeout_s, settings.fhir_read_timeout_s)
        self._max_pages = settings.fhir_max_pages
        self._session = session

    def _get_json(self, url: str) -> dict[str, Any]:
        try:
            response = self._session.get(url, headers=self._headers, timeout=self._timeout,
                                         allow_redirects=False, stream=True)
        except requests.Timeout:
            raise FhirAccessError("FHIR server timed out") from None
        except requests.RequestException as exc:
            raise FhirAccessError(f"FHIR server unreachable ({type(exc).__name__})") from None
        with response:
            if 300 <= response.status_code < 400:
                # Never follow: a redirect could carry the bearer token to another host.
                raise FhirAccessError(f"FHIR server answered a redirect ({response.status_code}); not followed")
            if response.status_code >= 400:
                raise FhirAccessError(f"FHIR server answered HTTP {response.status_code}",
                                      status=response.status_code)
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > _MAX_RESPONSE_BYTES:
                raise FhirAccessError("FHIR response too large")
            raw = response.raw.read(_MAX_RESPONSE_BYTES + 1, decode_content=True)
            if len(raw) > _MAX_RESPONSE_BYTES:
                raise FhirAccessError("FHIR response too large")
        try:
            body = json.loads(raw)
        except ValueError:
            raise FhirAccessError("FHIR server returned a body that is not JSON") from None
        if not isinstance(body, dict):
            raise FhirAccessError("FHIR server returned JSON that is not a resource")
        return body

    def fetch(self, relative_query: str) -> FetchResult:
        """Run a read (``Type/id``) or search (``Type?...``), following same-server ``next`` links up to the cap."""
        body = self._get_json(f"{self._base}/{relative_query.lstrip('/')}")
        if body.get("resourceType") == "OperationOutcome":
            raise FhirAccessError("FHIR server returned an OperationOutcome instead of data")
        if body.get("resourceType") != "Bundle":
            return FetchResult(resources=[body], pages=1)
        return self._follow(next_link(body), bundle_resources(body), pages=1)

    def fetch_next_pages(self, next_url: str) -> FetchResult:
        """Continue a paged searchset whose first page came in prefetch (CDS Hooks 2.0 allows paged prefetch)."""
        return self._follow(next_url, [], pages=1)

    def _follow(self, next_url: str | None, resources: list[dict[str, Any]], pages: int) -> FetchResult:
        truncated = False
        while next_url:
            if not _within(next_url, self._base):
                # Hardening: a next link to another host would receive our token; stop here.
                log.warning("fhir_next_link_not_followed", extra={"reason": "other-origin"})
                truncated = True
                break
            if pages >= self._max_pages:
                truncated = True
                break
            body = self._get_json(next_url)
            if body.get("resourceType") != "Bundle":
                raise FhirAccessError("FHIR server returned a non-Bundle page")
            resources.extend(bundle_resources(body))
            pages += 1
            next_url = next_link(body)
        return FetchResult(resources=resources, pages=pages, truncated=truncated)


def bundle_resources(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """The resources of a Bundle's entries; OperationOutcome entries (search warnings) are not data."""
    entries = bundle.get("entry")
    if not isinstance(entries, list):
        return []
    # A search may include OperationOutcome entries (search.mode = outcome) with warnings: not data. Anything
    # else goes on, malformed or not, so the engine can skip it and record why. One comprehension: it runs over
    # every prefetched entry of every call (issue #7).
    return [resource for entry in entries
            if isinstance(entry, dict) and isinstance(resource := entry.get("resource"), dict)
            and resource.get("resourceType") != "OperationOutcome"]


def next_link(bundle: dict[str, Any]) -> str | None:
    """The URL of a Bundle's ``next`` page link, if any."""
    links = bundle.get("link")
    if not isinstance(links, list):
        return None
    for link in links:
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return str(link["url"])
    return None
