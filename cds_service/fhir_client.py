"""Read-only FHIR access to the CDS client's server, used when prefetch data is missing.

Safety properties (CDS Hooks 2.0 "FHIR Resource Access" and our hardening rules):
- only servers allowed by configuration are contacted, https outside --dev, checked BEFORE any request;
- every request has connect/read timeouts; idempotent GETs get a small retry budget (urllib3 Retry);
- the bearer token is sent only to the fhirServer's own origin: redirects are never followed automatically,
  and ``next`` links that leave the server's base URL are not followed;
- every URL is normalised before it is trusted (cds_service/url_policy.py, issue 16 item 3): a ``fhirServer`` or
  ``next`` link whose path changes under RFC 3986 normalisation (``..``, ``%2e%2e``, ``//``) is never requested;
- no cookie is ever stored or sent (issue 16 item 2): the session is shared by every user's calls, so a cookie
  one server set for one user's call would otherwise be replayed on the next user's call;
- the token is never logged (nothing logs headers).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from http.cookiejar import Cookie, DefaultCookiePolicy
from typing import Any
from urllib.request import Request

import requests
from requests.adapters import HTTPAdapter
from requests.cookies import RequestsCookieJar
from urllib3.util.retry import Retry

from cds_service.config import Settings
from cds_service.json_fetch import JsonFetchFailed, fetch_json
from cds_service.url_policy import FhirServerNotAllowed as FhirServerNotAllowed
from cds_service.url_policy import check_server_allowed as check_server_allowed
from cds_service.url_policy import within

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


@dataclass(frozen=True)
class FetchResult:
    """The resources a search or read returned, and notes on anything not followed."""

    resources: list[dict[str, Any]]
    pages: int
    truncated: bool = False


class _RefuseAllCookies(DefaultCookiePolicy):
    """A cookie policy that neither accepts a cookie from an answer nor returns one with a request."""

    def set_ok(self, cookie: Cookie, request: Request) -> bool:
        """Never store a cookie an answer sets."""
        return False

    def return_ok(self, cookie: Cookie, request: Request) -> bool:
        """Never send a stored cookie."""
        return False

    def domain_return_ok(self, domain: str, request: Request) -> bool:
        """No domain gets cookies."""
        return False

    def path_return_ok(self, path: str, request: Request) -> bool:
        """No path gets cookies."""
        return False


class NoCookieJar(RequestsCookieJar):
    """A jar that stays empty: ``Set-Cookie`` is ignored and nothing put in it by hand is kept (issue 16 item 2).

    The FHIR session is shared by every hook call and SMART request of the process, whoever the user; cookies
    have no role in FHIR REST or the OAuth token call, and a shared jar would replay one user's server session
    on another user's call. The refusing policy also covers requests' own copy of the jar per request.
    """

    def __init__(self) -> None:
        """An empty jar with the refuse-all policy."""
        super().__init__(policy=_RefuseAllCookies())

    def set_cookie(self, cookie: Cookie, *args: Any, **kwargs: Any) -> None:
        """Drop the cookie."""
        return None


def build_session(settings: Settings) -> requests.Session:
    """A session with a GET-only retry budget and no cookies; redirects are handled by the caller, never followed."""
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
    session.cookies = NoCookieJar()
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
        if not within(url, self._base):
            # Last check before the token leaves (issue 16 item 3): whatever built the URL, its normalised form
            # must stay below the allowed base, and its path must not change under normalisation.
            raise FhirAccessError("FHIR URL refused: it leaves the server's base or is not in normal form")
        try:
            reply = fetch_json(url, max_bytes=_MAX_RESPONSE_BYTES, timeout=self._timeout, headers=self._headers,
                               session=self._session)
        except JsonFetchFailed as exc:
            if exc.kind == "timeout":
                raise FhirAccessError("FHIR server timed out") from None
            if exc.kind == "too-large":
                raise FhirAccessError("FHIR response too large") from None
            raise FhirAccessError(f"FHIR server {exc}") from None
        if 300 <= reply.status < 400:
            # Never followed (json_fetch): a redirect could carry the bearer token to another host.
            raise FhirAccessError(f"FHIR server answered a redirect ({reply.status}); not followed")
        if reply.status >= 400:
            raise FhirAccessError(f"FHIR server answered HTTP {reply.status}", status=reply.status)
        if reply.body is None:
            raise FhirAccessError("FHIR server returned a body that is not JSON")
        body = reply.object()
        if body is None:
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
            if not within(next_url, self._base):
                # Hardening: a next link to another host, or one whose path changes under normalisation
                # (``..``, ``%2e%2e``, ``//``; issue 16 item 3), would carry our token elsewhere; stop here.
                log.warning("fhir_next_link_not_followed", extra={"reason": "other-origin-or-not-normal"})
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
