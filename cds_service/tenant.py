"""The tenant that owns alert state: the calling client plus the EHR's FHIR base URL (issue 15 item 1).

Patient ids are unique only within one EHR, and one client (JWT ``iss`` + ``tenant`` claim) may front several
FHIR servers, so every read and write of alert state (override suppression, order-select dedup, the
parenteral-nutrition cap, the viewer's history, feedback) is keyed by (iss, tenant, normalised fhirServer).
Nothing crosses tenants. The key is stored on each hook-call record (``calls.tenant_key``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalise_fhir_base(url: str | None) -> str | None:
    """``fhirServer`` as a key: scheme and host lower-cased, the default port dropped, no trailing slash.

    The path is kept as sent (case included): EHRs put the tenant id in it (``/fhir/<tenant>/R4``). Query and
    fragment are not part of a base URL and are dropped. None (no fhirServer) stays None; an unparsable value
    is kept verbatim (it still keys its own tenant, never another's).
    """
    if url is None:
        return None
    text = url.strip()
    if not text:
        return None
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return text
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    # User info (``user:pass@``) is dropped: never part of a key, never stored.
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        host = f"{host}:{port}"
    return urlunsplit((scheme, host, parts.path.rstrip("/"), "", ""))


@dataclass(frozen=True)
class Tenant:
    """Who owns a piece of alert state: the client (``iss``, ``tenant`` claim) and the FHIR server."""

    client_iss: str | None
    client_tenant: str | None
    fhir_server: str | None  # normalised (normalise_fhir_base)

    @classmethod
    def of(cls, client_iss: str | None, client_tenant: str | None, fhir_server: str | None) -> Tenant:
        """The tenant of a call, normalising ``fhir_server`` as sent in the request."""
        return cls(client_iss, client_tenant, normalise_fhir_base(fhir_server))

    @property
    def key(self) -> str:
        """A fixed-length digest of the three parts: equal keys, same tenant (stored on every call)."""
        identity = json.dumps([self.client_iss, self.client_tenant, self.fhir_server], separators=(",", ":"))
        return hashlib.sha256(identity.encode("utf-8")).hexdigest()


def same_client(feedback_iss: str | None, feedback_tenant: str | None, card_iss: str | None,
                card_tenant: str | None) -> bool:
    """Whether feedback may act on a card: sent by the client whose call produced the card (item 2).

    Feedback without a client identity exists only in ``--dev`` without a JWT (outside dev every request is
    authenticated): it is matched by card uuid alone.
    """
    if feedback_iss is None:
        return True
    return feedback_iss == card_iss and feedback_tenant == card_tenant
