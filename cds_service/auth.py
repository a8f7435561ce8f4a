"""CDS client authentication: verify the bearer JWT an EHR sends with every CDS Hooks request.

Implements CDS Hooks 2.0 "Trusting CDS Clients" (cds-hooks-2.0.md section 1.7) and the validation procedure of
the CDS Hooks best-practices page: issuer allowlist, exact ``aud``, ``exp``/``iat`` with clock-skew leeway,
tenant allowlist, signature against a key on record (pinned: a token's ``jku`` is then ignored and never
fetched) or from an allowlisted ``jku``, a bounded token lifetime, and ``jti`` replay protection. Every failure
raises :class:`AuthenticationFailed`; the HTTP layer answers a bare 401 and the reason goes only to the log (never
the token). Only public PyJWT APIs are used.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, Protocol
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt import PyJWK

from cds_service.config import ConfigError, Settings
from cds_service.json_fetch import JsonFetchFailed, fetch_json

logger = logging.getLogger(__name__)

# CDS Hooks 2.0: alg SHALL NOT be "none" nor symmetric; ES384 and RS384 are RECOMMENDED. This is the exact
# set the project accepts (issue #5); everything else is rejected before any key is looked up.
ALLOWED_ALGORITHMS: frozenset[str] = frozenset(
    {"ES384", "RS384", "ES256", "RS256", "ES512", "RS512", "PS384"}
)
_EC_CURVE_BY_ALG = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
# CDS Hooks 2.0 "Trusting CDS Clients": iss, aud, exp, iat and jti are REQUIRED. There is no sub since 1.0
# (cds-hooks-2.0.md, 2.0 deltas: "A service must not require sub"), so it is not in this list.
_REQUIRED_CLAIMS = ["iss", "aud", "exp", "iat", "jti"]

# The public CDS Hooks sandbox (cds-hooks-2.0.md section 2.1 "JWT"). Its private key is committed to a public
# repository, so trusting it is equivalent to no authentication: only ever added in --dev.
SANDBOX_ISSUER = "https://sandbox.cds-hooks.org"
SANDBOX_JKU = "https://sandbox.cds-hooks.org/.well-known/jwks.json"

# Real client JWTs are a few hundred bytes to a few KB; anything far larger is hostile or broken.
MAX_TOKEN_CHARS = 16_384
# A JWK Set is a few KB; cap what we read from a jku so a misbehaving endpoint cannot exhaust memory.
MAX_JWKS_BYTES = 256 * 1024
_LOG_VALUE_CHARS = 120
_PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_ENTRY_KEYS = frozenset({"iss", "jku", "jwks", "tenants"})


@dataclass(frozen=True)
class ClientIdentity:
    """The verified CDS client behind a request (safe to log and audit: no token)."""

    iss: str
    tenant: str | None
    jti: str
    kid: str


class AuthenticationFailed(Exception):
    """Raised with a reason for the log only; the HTTP layer answers a bare 401 (with CORS headers)."""


class ReplayGuard(Protocol):
    """Remembers processed ``jti`` values until the token expires (shared by all workers and instances)."""

    def remember_jti(self, iss: str, jti: str, expires_at: datetime) -> bool:
        """Record ``(iss, jti)``; return False if it was seen before (a replay)."""
        ...


@dataclass(frozen=True)
class VerificationKey:
    """A client's public key with the ``alg`` its JWK declares (None when the JWK declares none)."""

    key: PyJWK
    declared_alg: str | None


@dataclass(frozen=True)
class TrustedIssuer:
    """One entry of the trusted-issuers file: where this issuer's public keys come from, and its tenants."""

    iss: str
    jku: tuple[str, ...] = ()
    # Keys pinned out of band, by kid (spec: "If there is no jku, the JWK Set is exchanged out of band"). When
    # set, they are the only keys of this issuer: a token's jku header is ignored and never fetched.
    keys: Mapping[str, VerificationKey] | None = None
    tenants: frozenset[str] | None = None


# ----------------------------------------------------------------------------------------------------
# Trusted-issuers file
# ----------------------------------------------------------------------------------------------------


def load_trusted_issuers(path: str, *, dev: bool) -> list[TrustedIssuer]:
    """Read and strictly validate the JSON trusted-issuers file at ``path``.

    The file is a JSON list of ``{"iss": ..., "jku": [urls]}`` or ``{"iss": ..., "jwks": {JWK Set}}`` objects,
    each optionally with ``"tenants": [...]``. Raises ConfigError naming the file, the entry and the fix.
    ``jku`` URLs must be https unless ``dev`` (a local JWKS server during trials).
    """
    where = f"CDS_TRUSTED_ISSUERS_FILE={path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read the file ({exc.__class__.__name__}: {exc})") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(raw, list):
        raise ConfigError(
            f'{where}: must be a JSON list of issuer objects such as [{{"iss": ..., "jku": [...]}}]'
        )
    issuers: list[TrustedIssuer] = []
    seen: set[str] = set()
    for index, entry in enumerate(raw, start=1):
        issuer = _parse_issuer_entry(entry, f"{where}: entry {index}", dev=dev)
        if issuer.iss in seen:
            raise ConfigError(
                f"{where}: entry {index}: iss {issuer.iss!r} is listed twice; merge the entries"
            )
        seen.add(issuer.iss)
        issuers.append(issuer)
    return issuers


def _parse_issuer_entry(entry: Any, where: str, *, dev: bool) -> TrustedIssuer:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a JSON object with 'iss' and either 'jku' or 'jwks'")
    unknown = set(entry) - _ENTRY_KEYS
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(sorted(map(repr, unknown)))}; "
            "allowed: iss, jku, jwks, tenants"
        )
    iss = entry.get("iss")
    if not isinstance(iss, str) or not iss.strip():
        raise ConfigError(
            f"{where}: 'iss' must be a non-empty string (the issuer URI the EHR puts in its JWTs)"
        )
    where = f"{where} (iss {iss!r})"
    has_jku, has_jwks = "jku" in entry, "jwks" in entry
    if has_jku == has_jwks:
        raise ConfigError(
            f"{where}: give exactly one of 'jku' (list of JWKS URLs) or 'jwks' (inline JWK Set)"
        )
    jku: tuple[str, ...] = ()
    keys: dict[str, VerificationKey] | None = None
    if has_jku:
        jku = _parse_jku_list(entry["jku"], where, dev=dev)
    else:
        keys = _parse_inline_jwks(entry["jwks"], where)
    tenants: frozenset[str] | None = None
    if "tenants" in entry:
        value = entry["tenants"]
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(t, str) and t.strip() for t in value)
        ):
            raise ConfigError(
                f"{where}: 'tenants' must be a non-empty list of non-empty strings (or omitted)"
            )
        tenants = frozenset(value)
    return TrustedIssuer(iss=iss, jku=jku, keys=keys, tenants=tenants)


def _parse_jku_list(value: Any, where: str, *, dev: bool) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: 'jku' must be a non-empty list of JWKS URLs")
    urls: list[str] = []
    for url in value:
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
            raise ConfigError(f"{where}: jku {url!r} is not an absolute http(s) URL without a fragment")
        if parts.scheme == "http" and not dev:
            raise ConfigError(
                f"{where}: jku {url!r} is http; production requires https (CDS Hooks 2.0: all data over TLS)"
            )
        urls.append(url)
    return tuple(urls)


def _parse_inline_jwks(value: Any, where: str) -> dict[str, VerificationKey]:
    if not isinstance(value, dict) or not isinstance(value.get("keys"), list) or not value["keys"]:
        raise ConfigError(
            f'{where}: \'jwks\' must be a JWK Set object {{"keys": [...]}} with at least one key'
        )
    keys: dict[str, VerificationKey] = {}
    for number, jwk in enumerate(value["keys"], start=1):
        key_where = f"{where}: jwks key {number}"
        if not isinstance(jwk, dict):
            raise ConfigError(f"{key_where}: must be a JSON object (a JWK)")
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid:
            raise ConfigError(f"{key_where}: 'kid' is required (CDS Hooks 2.0: the JWT header names its kid)")
        if kid in keys:
            raise ConfigError(f"{key_where}: kid {kid!r} appears twice")
        if jwk.get("kty") not in ("EC", "RSA"):
            raise ConfigError(f"{key_where} (kid {kid!r}): kty must be EC or RSA (no symmetric keys)")
        private = _PRIVATE_JWK_MEMBERS & set(jwk)
        if private:
            raise ConfigError(
                f"{key_where} (kid {kid!r}): contains private key member(s) {', '.join(sorted(private))}; "
                "put only the PUBLIC key here"
            )
        if "use" in jwk and jwk["use"] != "sig":
            raise ConfigError(f"{key_where} (kid {kid!r}): 'use' must be 'sig'")
        if "alg" in jwk and jwk["alg"] not in ALLOWED_ALGORITHMS:
            raise ConfigError(
                f"{key_where} (kid {kid!r}): alg {jwk['alg']!r} is not one of "
                f"{', '.join(sorted(ALLOWED_ALGORITHMS))}"
            )
        try:
            keys[kid] = _verification_key(jwk)
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise ConfigError(f"{key_where} (kid {kid!r}): not a usable public key ({exc})") from None
    return keys


def _verification_key(jwk: Mapping[str, Any]) -> VerificationKey:
    """Build the key of one public JWK; raises PyJWTError/ValueError/TypeError when it is not usable."""
    declared = jwk.get("alg")
    return VerificationKey(key=PyJWK(dict(jwk)), declared_alg=declared if isinstance(declared, str) else None)


# ----------------------------------------------------------------------------------------------------
# JWKS fetching and in-process replay fallback
# ----------------------------------------------------------------------------------------------------


class _JwksFetchFailed(Exception):
    """The allowlisted JWKS endpoint could not be read (the reason is for the log)."""


class _AllowlistedJwks:
    """The cached JWK Set of one allowlisted ``jku``, fetched through ``requests`` (timeouts, no redirects, size cap).

    The set is cached for ``lifespan_s``; a kid not in it triggers one refresh, at most once per ``cooldown_s``
    since the last successful fetch, so key rotation is picked up without letting random kids make us hammer the
    EHR's JWKS endpoint (best practices: "a cached, rotating JWKS fetched from an allowlisted jku").
    """

    def __init__(
        self, uri: str, *, timeout: tuple[float, float], lifespan_s: float, cooldown_s: float
    ) -> None:
        self.uri = uri
        self._timeout = timeout
        self._lifespan_s = lifespan_s
        self._cooldown_s = cooldown_s
        self._keys: dict[str, VerificationKey] = {}
        self._fetched_at: float | None = None
        # One fetch at a time per URL: concurrent requests wait for it instead of each fetching.
        self._lock = threading.Lock()

    def key(self, kid: str) -> VerificationKey | None:
        """The key for ``kid`` (None when the endpoint does not list it); raises _JwksFetchFailed."""
        with self._lock:
            now = time.monotonic()
            if self._fetched_at is None or now - self._fetched_at >= self._lifespan_s:
                self._refresh()
            found = self._keys.get(kid)
            if found is None and self._fetched_at is not None and now - self._fetched_at >= self._cooldown_s:
                self._refresh()
                found = self._keys.get(kid)
            return found

    def _refresh(self) -> None:
        # On failure the previous set stays unused (expired or missing the kid): the request is refused, as with
        # no cache; the next request tries again.
        self._keys = _signing_keys(self._fetch())
        self._fetched_at = time.monotonic()

    def _fetch(self) -> Any:
        try:
            # No redirects (json_fetch): a redirect could move the fetch to a host nobody allowlisted.
            reply = fetch_json(self.uri, max_bytes=MAX_JWKS_BYTES, timeout=self._timeout,
                               headers={"Accept": "application/json"})
        except JsonFetchFailed as exc:
            if exc.kind == "too-large":
                raise _JwksFetchFailed(f"JWKS document larger than {MAX_JWKS_BYTES} bytes") from None
            raise _JwksFetchFailed(f"JWKS endpoint {exc}") from None
        if reply.status != 200:
            raise _JwksFetchFailed(f"JWKS endpoint answered HTTP {reply.status}")
        if reply.body is None:
            raise _JwksFetchFailed("JWKS endpoint did not return JSON")
        return reply.body


def _signing_keys(document: Any) -> dict[str, VerificationKey]:
    """The usable signing keys of a fetched JWK Set, by kid; unusable entries are skipped (as JOSE libraries do)."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise _JwksFetchFailed("JWKS endpoint did not return a JWK Set object")
    keys: dict[str, VerificationKey] = {}
    for jwk in document["keys"]:
        if (
            not isinstance(jwk, dict)
            or not isinstance(jwk.get("kid"), str)
            or jwk.get("use") not in (None, "sig")
            or jwk.get("kty") not in ("EC", "RSA")
            or _PRIVATE_JWK_MEMBERS & set(jwk)
            or jwk["kid"] in keys
        ):
            continue
        try:
            keys[jwk["kid"]] = _verification_key(jwk)
        except (jwt.PyJWTError, ValueError, TypeError):
            continue
    return keys


class _LocalJtiCache:
    """Bounded in-process memory of (iss, jti) until expiry: the fallback when the shared guard is down."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._entries: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._max_entries = max_entries
        self._lock = threading.Lock()

    def remember(self, iss: str, jti: str, expires_at: datetime) -> bool:
        """Record the jti; False if it is already remembered and not yet expired."""
        now = datetime.now(UTC).timestamp()
        key = (iss, jti)
        with self._lock:
            expiry = self._entries.get(key)
            if expiry is not None and expiry > now:
                return False
            self._entries[key] = expires_at.timestamp()
            self._entries.move_to_end(key)
            if len(self._entries) > self._max_entries:
                for stale in [k for k, exp in self._entries.items() if exp <= now]:
                    del self._entries[stale]
                while len(self._entries) > self._max_entries:
                    self._entries.popitem(last=False)
            return True


# ----------------------------------------------------------------------------------------------------
# The verifier
# ----------------------------------------------------------------------------------------------------


def _loggable(value: Any) -> str:
    """Render an attacker-controlled header/claim value safely for a log line (repr, truncated)."""
    text = repr(value)
    return text if len(text) <= _LOG_VALUE_CHARS else text[:_LOG_VALUE_CHARS] + "..."


class _Failure(Exception):
    """Internal: a verification failure with whatever context is known so far."""


class RequestVerifier:
    """Verifies ``Authorization: Bearer <JWT>`` headers against the trusted issuers."""

    def __init__(
        self,
        issuers: Iterable[TrustedIssuer],
        *,
        dev: bool,
        leeway_s: int,
        replay_guard: ReplayGuard | None,
        max_lifetime_s: int = 3600,
        jwks_timeout_s: tuple[float, float] = (3.0, 5.0),
        jwks_cache_lifespan_s: float = 300.0,
        jwks_refresh_cooldown_s: float = 15.0,
    ) -> None:
        """Build a verifier; use :meth:`from_settings` in the service."""
        self._issuers = {issuer.iss: issuer for issuer in issuers}
        self._dev = dev
        self._leeway_s = leeway_s
        self._max_lifetime_s = max_lifetime_s
        self._replay_guard = replay_guard
        self._local_jtis = _LocalJtiCache()
        # One cached key set per allowlisted jku URL, created up front: a URL that is not allowlisted never
        # gets one, so it can never be fetched.
        self._jwks = {
            url: _AllowlistedJwks(url, timeout=jwks_timeout_s, lifespan_s=jwks_cache_lifespan_s,
                                  cooldown_s=jwks_refresh_cooldown_s)
            for issuer in self._issuers.values()
            for url in issuer.jku
        }

    @classmethod
    def from_settings(cls, settings: Settings, replay_guard: ReplayGuard | None) -> RequestVerifier:
        """Load ``settings.trusted_issuers_file`` and build the verifier.

        Raises ConfigError when the file is malformed, or outside --dev when there is no trusted issuer or no
        CDS_PUBLIC_BASE_URL (the service then refuses to start). In --dev the public sandbox issuer is added.
        """
        issuers = load_trusted_issuers(settings.trusted_issuers_file, dev=settings.dev) \
            if settings.trusted_issuers_file else []
        if settings.dev:
            if not any(issuer.iss == SANDBOX_ISSUER for issuer in issuers):
                issuers.append(TrustedIssuer(iss=SANDBOX_ISSUER, jku=(SANDBOX_JKU,)))
            logger.warning(
                "dev mode: requests without a JWT are accepted and the public CDS Hooks sandbox issuer is "
                "trusted (its private key is public); never run --dev with production data"
            )
        else:
            if not issuers:
                raise ConfigError(
                    "no trusted CDS client: set CDS_TRUSTED_ISSUERS_FILE to a JSON list of "
                    '{"iss": ..., "jku": [...]} entries (production requires JWT authentication; '
                    "use --dev only for local trials)"
                )
            if not settings.public_base_url:
                raise ConfigError(
                    "CDS_PUBLIC_BASE_URL is required outside --dev: the JWT 'aud' claim is checked "
                    "against it (e.g. https://cds.example.org)"
                )
            if replay_guard is None:
                logger.warning("no shared jti store (audit disabled): replay protection is per process only")
            if any(issuer.iss == SANDBOX_ISSUER for issuer in issuers):
                logger.warning(
                    "the public CDS Hooks sandbox issuer is trusted outside --dev: its private key is public, so "
                    "anyone can sign as it; use this only for trials without production data"
                )
        logger.info("trusting %d CDS client issuer(s): %s", len(issuers),
                    ", ".join(_loggable(issuer.iss) for issuer in issuers))
        return cls(issuers, dev=settings.dev, leeway_s=settings.jwt_leeway_s, replay_guard=replay_guard,
                   max_lifetime_s=settings.jwt_max_lifetime_s)

    def verify(self, authorization_header: str | None, audience: str) -> ClientIdentity | None:
        """Verify the Authorization header for a request to the endpoint URL ``audience``.

        Returns None only in dev mode with no Authorization header; otherwise the verified identity.
        Raises AuthenticationFailed (reason in the message, never the token) on any failure.
        """
        if authorization_header is None:
            if self._dev:
                return None
            self._fail("no Authorization header", {})
        context: dict[str, Any] = {}
        try:
            return self._verify_token(_bearer_token(authorization_header), audience, context)
        except _Failure as failure:
            self._fail(str(failure), context)
        except jwt.PyJWTError as exc:
            self._fail(f"{exc.__class__.__name__}: {exc}", context)
        except (ValueError, TypeError, KeyError, OverflowError) as exc:
            # Hostile input must never become a 500; PyJWT/cryptography raise these on odd structures.
            self._fail(f"malformed token ({exc.__class__.__name__})", context)

    def _fail(self, reason: str, context: Mapping[str, Any]) -> NoReturn:
        details = " ".join(
            f"{name}={_loggable(context[name])}" for name in ("iss", "kid", "jti") if name in context
        )
        logger.warning("CDS client authentication failed: %s%s", reason, f" ({details})" if details else "")
        raise AuthenticationFailed(reason)

    def _verify_token(self, token: str, audience: str, context: dict[str, Any]) -> ClientIdentity:
        header = jwt.get_unverified_header(token)
        alg, kid = header.get("alg"), header.get("kid")
        if kid is not None:
            context["kid"] = kid
        # The alg allowlist comes BEFORE any key lookup: "none" and HMAC never reach a key.
        if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
            raise _Failure(f"alg {_loggable(alg)} not allowed")
        if not isinstance(kid, str) or not kid:
            raise _Failure("header kid missing")
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.upper() != "JWT"):
            raise _Failure(f"typ {_loggable(typ)} is not JWT")
        unverified = jwt.decode(token, options={"verify_signature": False})
        iss = unverified.get("iss")
        if "iss" in unverified:
            context["iss"] = iss
        if "jti" in unverified:
            context["jti"] = unverified["jti"]
        if not isinstance(iss, str) or iss not in self._issuers:
            raise _Failure("iss not trusted")
        issuer = self._issuers[iss]
        key = self._signing_key(issuer, header, kid)
        _check_key_matches_alg(key, alg)
        claims = jwt.decode(
            token,
            key=key.key.key,
            algorithms=[alg],
            audience=audience,
            issuer=iss,
            leeway=self._leeway_s,
            options={"require": _REQUIRED_CLAIMS, "verify_iat": True, "verify_jti": True,
                     "enforce_minimum_key_length": True},
        )
        self._check_lifetime(claims)
        jti = claims["jti"]
        if not isinstance(jti, str) or not jti:
            raise _Failure("jti must be a non-empty string")
        tenant = claims.get("tenant")
        if tenant is not None and not isinstance(tenant, str):
            raise _Failure("tenant is not a string")
        if issuer.tenants is not None and tenant not in issuer.tenants:
            raise _Failure(f"tenant {_loggable(tenant)} not allowed for this issuer")
        self._check_replay(iss, jti, claims["exp"])
        logger.debug("CDS client authenticated: iss=%s kid=%s jti=%s", _loggable(iss), _loggable(kid),
                     _loggable(jti))
        return ClientIdentity(iss=iss, tenant=tenant, jti=jti, kid=kid)

    def _signing_key(self, issuer: TrustedIssuer, header: Mapping[str, Any], kid: str) -> VerificationKey:
        jku = header.get("jku")
        if issuer.keys is not None:
            # Keys pinned out of band are this issuer's only keys, whatever the header's jku says: clients such
            # as the CDS Hooks sandbox always send their public jku, and a pinned key must still work offline
            # (issue 16 item 5). The jku is never fetched, so it cannot add a key or cause a request.
            key = issuer.keys.get(kid)
            if key is None:
                raise _Failure("unknown kid")
            return key
        if jku is not None:
            if not isinstance(jku, str) or jku not in issuer.jku:
                raise _Failure(f"jku {_loggable(jku)} not allowlisted for this issuer (not fetched)")
            urls: tuple[str, ...] = (jku,)
        else:
            urls = issuer.jku
        last_error = "unknown kid"
        for url in urls:
            try:
                found = self._jwks[url].key(kid)
            except _JwksFetchFailed as exc:
                last_error = f"JWKS fetch failed: {exc}"
                continue
            if found is not None:
                return found
            last_error = "unknown kid (no usable key for it at the allowlisted jku)"
        raise _Failure(last_error)

    def _check_lifetime(self, claims: Mapping[str, Any]) -> None:
        """Refuse tokens that live longer than CDS_JWT_MAX_LIFETIME_S (issue 16 item 6).

        PyJWT has already refused an ``exp`` more than the leeway in the past, so bounding ``exp - iat`` also
        bounds the age of ``iat``: no token is accepted more than max lifetime + leeway after it was issued, and
        the jti store only has to remember a jti that long (best practices: "for the maximum token lifetime").
        """
        # Python ints are exact at any size, so a hostile exp such as 10**400 is just a long lifetime here.
        lifetime = _numeric_date(claims, "exp") - _numeric_date(claims, "iat")
        if lifetime <= 0:
            raise _Failure(f"token lifetime (exp - iat) of {_loggable(lifetime)} s is not positive")
        if lifetime > self._max_lifetime_s:
            raise _Failure(f"token lifetime (exp - iat) of {_loggable(lifetime)} s exceeds "
                           f"CDS_JWT_MAX_LIFETIME_S={self._max_lifetime_s}")

    def _check_replay(self, iss: str, jti: str, exp: Any) -> None:
        # Remember the jti for as long as the token could still be accepted (exp + leeway), per the
        # best-practices rule "store processed jtis for the maximum token lifetime".
        expires_at = datetime.fromtimestamp(int(exp) + self._leeway_s, UTC)
        new_locally = self._local_jtis.remember(iss, jti, expires_at)
        if self._replay_guard is None:
            if not new_locally:
                raise _Failure("jti replayed")
            return
        try:
            new = self._replay_guard.remember_jti(iss, jti, expires_at)
        except Exception as exc:  # any store failure: decision support must not stop (brief, issue #5)
            logger.warning(
                "shared jti store unavailable (%s); replay check falls back to this process only",
                exc.__class__.__name__,
            )
            new = new_locally
        if not new:
            raise _Failure("jti replayed")


def _bearer_token(authorization_header: str) -> str:
    scheme, _, token = authorization_header.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise _Failure("Authorization scheme is not Bearer")
    token = token.strip()
    if not token:
        raise _Failure("empty bearer token")
    if len(token) > MAX_TOKEN_CHARS:
        raise _Failure(f"token longer than {MAX_TOKEN_CHARS} characters")
    return token


def _numeric_date(claims: Mapping[str, Any], name: str) -> int | float:
    """The claim as an RFC 7519 NumericDate: a finite JSON number (PyJWT alone also takes the string "17...")."""
    value = claims[name]
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (isinstance(value, float) and not math.isfinite(value))
    ):
        raise _Failure(f"{name} is not a NumericDate (a JSON number of seconds)")
    return value


def _check_key_matches_alg(key: VerificationKey, alg: str) -> None:
    """Refuse a key whose type (or declared alg) does not fit the token's alg (no algorithm confusion)."""
    if key.declared_alg is not None and key.declared_alg != alg:
        raise _Failure(f"token alg {alg} does not match the key's alg {_loggable(key.declared_alg)}")
    public_key = key.key.key
    if alg.startswith("ES"):
        if (
            not isinstance(public_key, ec.EllipticCurvePublicKey)
            or public_key.curve.name != _EC_CURVE_BY_ALG[alg]
        ):
            raise _Failure(f"key for kid is not an EC key on the curve {alg} requires")
    elif not isinstance(public_key, rsa.RSAPublicKey):
        raise _Failure(f"key for kid is not an RSA key as {alg} requires")
