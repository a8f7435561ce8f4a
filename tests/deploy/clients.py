"""A CDS client for the process-level tests: an inline-JWKS trusted issuer and signed calls over HTTP."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from tests.security.tokens import Signer, jwks, make_key, write_issuers_file

ISSUER = "https://ehr.deploy-test.example.org"
PATIENT_VIEW = "calcinosis-patient-view"


@dataclass
class CdsClient:
    """Signs a fresh ES384 JWT per call (aud = the public URL of the endpoint), like an EHR does."""

    public_base_url: str
    signer: Signer = field(default_factory=lambda: Signer(ISSUER, make_key("ES384")))
    tokens: list[str] = field(default_factory=list)

    def write_issuers_file(self, path: Path) -> Path:
        """The trusted-issuers file naming this client with its public key inline."""
        return write_issuers_file(path, [{"iss": ISSUER, "jwks": jwks(self.signer.key)}])

    def token(self, path: str) -> str:
        """A new JWT for the endpoint at ``path`` (remembered, so tests can grep logs for it)."""
        token = self.signer.token(self.public_base_url + path)
        self.tokens.append(token)
        return token

    def call(self, base_url: str, body: dict[str, Any], *, service: str = PATIENT_VIEW,
             token: str | None = None) -> requests.Response:
        """POST a hook call to the instance at ``base_url``."""
        path = f"/cds-services/{service}"
        jwt = token or self.token(path)
        return requests.post(base_url + path, json=body, headers={"Authorization": f"Bearer {jwt}"}, timeout=30)

    def override(self, base_url: str, card_uuid: str, *, service: str = PATIENT_VIEW,
                 comment: str = "patient already on a plan") -> requests.Response:
        """Feedback: the clinician overrode ``card_uuid`` now."""
        path = f"/cds-services/{service}/feedback"
        body = {"feedback": [{
            "card": card_uuid, "outcome": "overridden",
            "overrideReason": {"reason": {"code": "patient-aware", "system": "https://calcinosis-cds.org/override",
                                          "display": "Patient aware"}, "userComment": comment},
            "outcomeTimestamp": datetime.now(UTC).isoformat(),
        }]}
        return requests.post(base_url + path, json=body,
                             headers={"Authorization": f"Bearer {self.token(path)}"}, timeout=30)


    def dismiss(self, base_url: str, card_uuid: str, *, service: str = PATIENT_VIEW) -> requests.Response:
        """Feedback as the CDS Hooks sandbox's "Dismiss" sends it: overridden, no reason (issue 15)."""
        path = f"/cds-services/{service}/feedback"
        body = {"feedback": [{"card": card_uuid, "outcome": "overridden",
                              "outcomeTimestamp": datetime.now(UTC).isoformat()}]}
        return requests.post(base_url + path, json=body,
                             headers={"Authorization": f"Bearer {self.token(path)}"}, timeout=30)


def rule_of(card: dict[str, Any]) -> str:
    """The rule id a card came from (source.topic.code)."""
    return str(card["source"]["topic"]["code"])


def new_patient_id() -> str:
    """A patient id no other test uses, distinctive enough to grep logs for."""
    return f"pt-{uuid.uuid4().hex[:16]}"
