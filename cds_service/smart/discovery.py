"""SMART endpoint discovery: ``{iss}/.well-known/smart-configuration``, else the CapabilityStatement.

SMART App Launch 2.0 "Discovery of Server Capabilities and Configuration": the well-known document is the
required mechanism; the ``oauth-uris`` extension on ``CapabilityStatement.rest.security`` is the STU1
mechanism older servers still use, so it is the fallback.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

from cds_service.config import Settings
from cds_service.json_fetch import JsonFetchFailed, fetch_json
from cds_service.smart.errors import DiscoveryFailed
from cds_service.url_policy import path_problem

log = logging.getLogger(__name__)

OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
_MAX_BYTES = 1024 * 1024
_ACCEPT = "application/json, application/fhir+json;q=0.9"


@dataclass(frozen=True)
class SmartEndpoints:
    """Where to send the user (authorize) and the code (token), and what the server says it supports."""

    authorization_endpoint: str
    token_endpoint: str
    capabilities: frozenset[str] = field(default_factory=frozenset)
    scopes_supported: frozenset[str] = field(default_factory=frozenset)
    source: str = "smart-configuration"  # or "capability-statement"

    @property
    def v1_only(self) -> bool:
        """The server advertises SMART v1 scopes (``.read``) and not v2 (``.rs``)."""
        if "permission-v2" in self.capabilities:
            return False
        if "permission-v1" in self.capabilities:
            return True
        if self.source == "capability-statement":
            return True  # the oauth-uris extension is the STU1 (v1) mechanism
        return any(scope.endswith(".read") for scope in self.scopes_supported) and not any(
            scope.endswith(".rs") or scope.endswith(".r") for scope in self.scopes_supported
        )


def discover(iss: str, settings: Settings, session: requests.Session) -> SmartEndpoints:
    """Find the OAuth endpoints of ``iss`` (already checked against the FHIR-server policy).

    Raises DiscoveryFailed when neither mechanism yields a usable authorize and token endpoint.
    """
    base = iss.rstrip("/")
    well_known = _get_json(f"{base}/.well-known/smart-configuration", settings, session)
    if well_known is not None:
        endpoints = _from_well_known(well_known, settings)
        if endpoints is not None:
            return endpoints
    metadata = _get_json(f"{base}/metadata", settings, session)
    if metadata is not None:
        endpoints = _from_capability_statement(metadata, settings)
        if endpoints is not None:
            return endpoints
    raise DiscoveryFailed(
        f"{base} publishes no SMART configuration: neither /.well-known/smart-configuration nor the "
        "CapabilityStatement's oauth-uris extension names an authorize and a token endpoint. Ask the EHR "
        "administrator whether SMART on FHIR is enabled for this server."
    )


def _get_json(url: str, settings: Settings, session: requests.Session) -> dict[str, Any] | None:
    """GET a small JSON document; None on any failure (logged without the body)."""
    try:
        reply = fetch_json(url, max_bytes=_MAX_BYTES, headers={"Accept": _ACCEPT}, session=session,
                           timeout=(settings.fhir_connect_timeout_s, settings.fhir_read_timeout_s))
    except JsonFetchFailed as exc:
        log.warning("smart_discovery_unreachable", extra={"error_type": exc.kind})
        return None
    if reply.status != 200:
        log.info("smart_discovery_status", extra={"status": reply.status})
        return None
    return reply.object()


def _endpoint(value: Any, settings: Settings) -> str | None:
    """An absolute endpoint URL; https outside --dev (the code and verifier travel to it)."""
    if not isinstance(value, str):
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
        return None
    if parts.scheme != "https" and not settings.dev:
        return None
    if path_problem(parts.path) is not None:
        return None  # "/a/../token" is another endpoint to the HTTP library than it reads (issue 16 item 3)
    return value


def _strings(value: Any) -> frozenset[str]:
    return frozenset(v for v in value if isinstance(v, str)) if isinstance(value, list) else frozenset()


def _from_well_known(body: dict[str, Any], settings: Settings) -> SmartEndpoints | None:
    authorize = _endpoint(body.get("authorization_endpoint"), settings)
    token = _endpoint(body.get("token_endpoint"), settings)
    if authorize is None or token is None:
        return None
    return SmartEndpoints(authorize, token, _strings(body.get("capabilities")),
                          _strings(body.get("scopes_supported")), "smart-configuration")


def _from_capability_statement(body: dict[str, Any], settings: Settings) -> SmartEndpoints | None:
    if body.get("resourceType") != "CapabilityStatement":
        return None
    rests = body.get("rest")
    for rest in rests if isinstance(rests, list) else []:
        security = rest.get("security") if isinstance(rest, dict) else None
        extensions = security.get("extension") if isinstance(security, dict) else None
        for extension in extensions if isinstance(extensions, list) else []:
            if not isinstance(extension, dict) or extension.get("url") != OAUTH_URIS:
                continue
            uris = {sub.get("url"): sub.get("valueUri") for sub in extension.get("extension") or []
                    if isinstance(sub, dict)}
            authorize = _endpoint(uris.get("authorize"), settings)
            token = _endpoint(uris.get("token"), settings)
            if authorize is not None and token is not None:
                return SmartEndpoints(authorize, token, source="capability-statement")
    return None
