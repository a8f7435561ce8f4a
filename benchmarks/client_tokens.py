"""Signed CDS client JWTs for the authenticated benchmark scenario (production mode, no ``CDS_DEV``).

An EHR signs a fresh JWT with its own ``jti`` for every hook call (CDS Hooks 2.0 "Trusting CDS Clients"), and the
service verifies the signature and records the ``jti`` against replay before it answers. wrk cannot sign, so the
tokens are signed here before each wrk run, one file per wrk thread (``benchmarks/post.lua`` sends each once).
The key is generated per run; nothing secret is written outside the run's temporary directory.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

ISSUER = "https://bench-ehr.example.org"
ALGORITHM = "ES384"  # what the CDS Hooks sandbox signs with
LIFETIME_S = 300


class ClientTokens:
    """One throwaway EHR signing key and the trusted-issuers file that makes the service accept it."""

    def __init__(self, work: Path) -> None:
        self._key = ec.generate_private_key(ec.SECP384R1())
        self._kid = str(uuid.uuid4())
        public = json.loads(jwt.get_algorithm_by_name(ALGORITHM).to_jwk(self._key.public_key()))
        self.issuers_file = work / "trusted-issuers.json"
        self.issuers_file.write_text(json.dumps(
            [{"iss": ISSUER, "jwks": {"keys": [{**public, "kid": self._kid, "alg": ALGORITHM, "use": "sig"}]}}]),
            encoding="utf-8")

    def token(self, audience: str) -> str:
        """A fresh JWT for one call to the endpoint URL ``audience``."""
        now = int(time.time())
        claims: dict[str, Any] = {"iss": ISSUER, "aud": audience, "iat": now, "exp": now + LIFETIME_S,
                                  "jti": str(uuid.uuid4())}
        return jwt.encode(claims, self._key, algorithm=ALGORITHM,
                          headers={"kid": self._kid, "typ": "JWT"})

    def write(self, prefix: Path, audience: str, threads: int, per_thread: int) -> None:
        """``<prefix>.1`` .. ``<prefix>.<threads>``: ``per_thread`` distinct tokens each, one per line."""
        for thread in range(1, threads + 1):
            lines = [self.token(audience) for _ in range(per_thread)]
            Path(f"{prefix}.{thread}").write_text("\n".join(lines) + "\n", encoding="ascii")
