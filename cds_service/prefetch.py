"""Prefetch resolution, exactly as CDS Hooks 2.0 "Providing FHIR Resources to a CDS Service" says.

Per prefetch key:
- present with data            -> use it ("prefetch"); a paged Bundle's ``next`` pages are fetched when possible;
- present and ``null``         -> the client has no data: do not fetch ("null");
- absent, or an OperationOutcome (the client's way to report an error) -> fetch the template from fhirServer
  with the fhirAuthorization bearer token ("fetched"), or record "failed";
- a required key that cannot be obtained -> 412 Precondition Failed with an OperationOutcome.
Independent fetches run concurrently, under one overall deadline, so a slow server costs one round trip.

Several keys may search the same resource type (a code list split to keep URLs short, or the warfarin history
next to the active medications, cds_service/services.py): their results are merged in discovery order and a
resource that two of them return is kept once, so prefetched and fetched data give the same record.
"""

from __future__ import annotations

import logging
from concurrent.futures import Executor, Future, wait
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import requests

from cds_service.config import Settings
from cds_service.errors import InvalidRequest, PrefetchUnavailable
from cds_service.fhir_client import FetchResult, FhirAccessError, FhirClient, bundle_resources, next_link
from cds_service.fhir_query import build_relative_url
from cds_service.hook_models import HookRequest
from cds_service.metrics import record_fallback_outcome, timed_fallback_fetch
from cds_service.services import ServiceDefinition, resource_type_of
from cds_service.url_policy import FhirServerNotAllowed, check_server_allowed
from fhir_mappings import wire

log = logging.getLogger(__name__)

SOURCE_PREFETCH = "prefetch"
SOURCE_FETCHED = "fetched"
SOURCE_NULL = "null"
SOURCE_FAILED = "failed"
SOURCE_PARTIAL = "partial"  # some pages could not be had (page cap, other-origin next link, fetch error)

_ABSENT: dict[str, Any] = {"resourceType": "_absent"}  # sentinel: key not sent


@dataclass
class ResolvedData:
    """The FHIR resources gathered for one hook call, and where each prefetch key's data came from."""

    resources: dict[str, list[Any]] = field(default_factory=dict)  # typed Structs or JSON dicts (issue 18)
    sources: dict[str, str] = field(default_factory=dict)

    def all_resources(self) -> list[Any]:
        """Every resource from every key, in key order."""
        return [resource for key in self.resources for resource in self.resources[key]]


def render_template(template: str, request: HookRequest) -> str | None:
    """The relative URL the service GETs for ``template``: ``{{context.x}}`` tokens filled from the request
    context and every query value percent-encoded (issue 16 item 4, cds_service/fhir_query.py); None when a
    token has no value.

    Only root-level context fields are legal tokens in CDS Hooks 2.0 (FHIRPath tokens are 3.0-only).
    """
    def lookup(name: str) -> str | None:
        if not name.startswith("context.") or name.count(".") != 1:
            return None
        value: Any = request.context.get(name.split(".", 1)[1])
        return value if isinstance(value, str) and value else None

    return build_relative_url(template, lookup)


# A prefetch value is a typed Struct when the body decoded that way (issue 18), else a JSON dict.

def _is_operation_outcome(value: Any) -> bool:
    return wire.identity(value)[0] == "OperationOutcome"


def _flatten(value: Any) -> list[Any]:
    """A searchset Bundle's resources (OperationOutcome entries are search warnings, not data), or the resource."""
    if isinstance(value, wire.Bundle):
        return [entry.resource for entry in value.entry or ()
                if entry.resource is not None and not isinstance(entry.resource, wire.OperationOutcome)]
    return bundle_resources(value) if wire.identity(value)[0] == "Bundle" else [value]


def _next_link(value: Any) -> str | None:
    if isinstance(value, wire.Bundle):
        return next((link.url for link in value.link or () if link.relation == "next" and link.url is not None),
                    None)
    return next_link(value) if wire.identity(value)[0] == "Bundle" else None


def resolve_prefetch(service: ServiceDefinition, request: HookRequest, settings: Settings,
                     session: requests.Session, executor: Executor) -> ResolvedData:
    """Gather the data for ``service`` from prefetch and, where needed, from the client's FHIR server."""
    provided = request.prefetch or {}
    data = ResolvedData()
    to_fetch: dict[str, str] = {}      # key -> relative query
    continue_paging: dict[str, str] = {}  # key -> absolute next-page URL of a paged prefetch Bundle
    for spec in service.prefetch:
        if spec.key not in provided:
            value: Any = _ABSENT
        else:
            value = provided[spec.key]
        if value is None:
            data.resources[spec.key] = []
            data.sources[spec.key] = SOURCE_NULL
        elif value is not _ABSENT and not _is_operation_outcome(value):
            data.resources[spec.key] = _flatten(value)
            data.sources[spec.key] = SOURCE_PREFETCH
            next_url = _next_link(value)
            if next_url:
                continue_paging[spec.key] = next_url
        else:
            query = render_template(spec.template, request)
            if query is None:
                data.resources[spec.key] = []
                data.sources[spec.key] = SOURCE_FAILED
            else:
                to_fetch[spec.key] = query

    if to_fetch or continue_paging:
        _fetch_missing(data, to_fetch, continue_paging, request, settings, session, executor)
    _merge_in_key_order(data, service)

    unavailable = [spec.key for spec in service.prefetch
                   if spec.required and data.sources.get(spec.key) == SOURCE_FAILED]
    if unavailable:
        where = "no fhirServer was given" if request.fhir_server is None else "the FHIR server could not supply it"
        raise PrefetchUnavailable(
            f"Required data is missing: prefetch key(s) {', '.join(unavailable)} were not prefetched and {where}. "
            "Send the prefetch advertised by GET /cds-services, or fhirServer with fhirAuthorization."
        )
    return data


def _merge_in_key_order(data: ResolvedData, service: ServiceDefinition) -> None:
    """Put the keys in discovery order, and keep once a resource that two keys of one resource type returned.

    Fetched keys arrive after prefetched ones; discovery order makes the record the same either way. Only
    types searched by more than one key are checked, so the common single-key types cost nothing.
    """
    shared = _shared_type_keys(service)
    seen: set[tuple[str, str]] = set()
    ordered: dict[str, list[Any]] = {}
    for spec in service.prefetch:
        if spec.key not in data.resources:
            continue
        resources = data.resources[spec.key]
        if spec.key in shared:
            kept = []
            for resource in resources:
                rtype, rid = wire.identity(resource)
                if rid is not None and rtype is not None:
                    if (rtype, rid) in seen:
                        continue
                    seen.add((rtype, rid))
                kept.append(resource)
            resources = kept
        ordered[spec.key] = resources
    data.resources = ordered


@cache
def _shared_type_keys(service: ServiceDefinition) -> frozenset[str]:
    """The keys of ``service`` whose resource type another key searches too (fixed per service)."""
    by_type: dict[str, list[str]] = {}
    for spec in service.prefetch:
        by_type.setdefault(resource_type_of(spec.template), []).append(spec.key)
    return frozenset(key for keys in by_type.values() if len(keys) > 1 for key in keys)


def _fetch_missing(data: ResolvedData, to_fetch: dict[str, str], continue_paging: dict[str, str],
                   request: HookRequest, settings: Settings, session: requests.Session,
                   executor: Executor) -> None:
    if request.fhir_server is None:
        for key in to_fetch:
            data.resources[key] = []
            data.sources[key] = SOURCE_FAILED
        for key in continue_paging:
            data.sources[key] = SOURCE_PARTIAL
        return
    try:
        check_server_allowed(request.fhir_server, settings)
    except FhirServerNotAllowed as exc:
        # A clear 4xx and no request leaves the service.
        raise InvalidRequest(str(exc), status=400, code="forbidden", expression=["fhirServer"],
                             audit_code="fhir-server-not-allowed") from None
    token = request.fhir_authorization.access_token if request.fhir_authorization else None
    client = FhirClient(request.fhir_server, token, settings, session)
    futures: dict[str, Future[FetchResult]] = {
        key: executor.submit(timed_fallback_fetch, "query", client.fetch, query) for key, query in to_fetch.items()
    }
    page_futures: dict[str, Future[FetchResult]] = {
        key: executor.submit(timed_fallback_fetch, "next_pages", client.fetch_next_pages, url)
        for key, url in continue_paging.items()
    }
    wait([*futures.values(), *page_futures.values()], timeout=settings.fhir_total_timeout_s)
    for key, future in futures.items():
        result = _result_or_none(future, key, "query")
        if result is None:
            data.resources[key] = []
            data.sources[key] = SOURCE_FAILED
        else:
            data.resources[key] = result.resources
            data.sources[key] = SOURCE_PARTIAL if result.truncated else SOURCE_FETCHED
    for key, future in page_futures.items():
        result = _result_or_none(future, key, "next_pages")
        if result is None or result.truncated:
            data.sources[key] = SOURCE_PARTIAL
        if result is not None:
            data.resources[key].extend(result.resources)


def _result_or_none(future: Future[FetchResult], key: str, kind: str) -> FetchResult | None:
    if not future.done():
        future.cancel()
        log.warning("prefetch_fetch_deadline", extra={"prefetch_key": key})
        record_fallback_outcome(kind, "deadline")
        return None
    try:
        result = future.result()
    except FhirAccessError as exc:
        log.warning("prefetch_fetch_failed", extra={"prefetch_key": key, "reason": str(exc)})
        record_fallback_outcome(kind, "error")
        return None
    record_fallback_outcome(kind, "truncated" if result.truncated else "ok")
    return result
