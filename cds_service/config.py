"""Typed service settings read from ``CDS_*`` environment variables, validated once at start-up.

Every ``calcinosis-cds serve`` flag has an environment equivalent, and the app factory reads the
same settings, so any WSGI server (``cds_service:create_app()``) and the CLI behave identically.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message says which and how to fix it."""


def _default_data_dir() -> str:
    # XDG data dir: the embedded SQLite audit log and its spool survive restarts without set-up.
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "calcinosis-cds")


@dataclass(frozen=True)
class Settings:
    """All runtime configuration. Field ``x`` is read from ``CDS_X``."""

    host: str = "127.0.0.1"
    port: int = 8080
    dev: bool = False
    # The public URL of this service as EHRs call it (JWT ``aud`` is checked against it, never
    # against the Host header; CDS Hooks 2.0 "Trusting CDS Clients").
    public_base_url: str = ""
    data_dir: str = field(default_factory=_default_data_dir)
    database_url: str = ""  # "" -> sqlite file in data_dir
    audit_enabled: bool = True
    # The audit hash chain's HMAC key (issue 15 item 6; cds_service/audit/keys.py): required outside --dev, never
    # logged (repr=False keeps it out of any printed Settings). Retired keys: one per line in the keys file.
    audit_chain_key: str = field(default="", repr=False)
    audit_chain_keys_file: str = ""
    # FHIR access (prefetch fallback). Prefixes; empty = none allowed outside --dev.
    allowed_fhir_servers: tuple[str, ...] = ()
    fhir_connect_timeout_s: float = 2.0
    fhir_read_timeout_s: float = 5.0
    fhir_retries: int = 1
    fhir_max_pages: int = 5
    # Upper bound on all fallback fetches of one hook call together: a slow EHR gives 412, never a hang.
    fhir_total_timeout_s: float = 8.0
    # Client authentication (CDS Hooks 2.0 section "Trusting CDS Clients").
    trusted_issuers_file: str = ""
    jwt_leeway_s: int = 60
    # Longest accepted client-JWT lifetime (exp - iat); with the leeway it also bounds the age of iat (issue 16).
    jwt_max_lifetime_s: int = 3600
    admin_token: str = ""
    cors_origins: tuple[str, ...] = ("*",)
    max_request_bytes: int = 5 * 1024 * 1024
    log_level: str = "INFO"
    # Clinical content switches (clinical-rules.md section 3: R16/R19 off by default).
    include_preliminary: bool = False
    ctd_info_card: bool = False
    tumoral_calcinosis_rule: bool = False
    silent_rules: tuple[str, ...] = ()
    suppress_overridden_hours: float = 24.0
    # Whose alerts an override with a reason suppresses (issue 15 item 4): "user" (the user the card was shown
    # to) or "tenant" (everyone of that EHR tenant).
    suppress_scope: str = "user"
    order_dedup_minutes: float = 30.0
    # SMART on FHIR viewer (issue #6): public client id registered with the EHR, and the FHIR server a
    # standalone launch uses when /smart/launch is opened without ?iss=.
    smart_client_id: str = "calcinosis-cds"
    smart_default_iss: str = ""
    # EHR origins allowed to embed the viewer in an iframe side panel (CSP frame-ancestors). Empty = not
    # frameable; when set, the session cookie becomes SameSite=None; Secure so it reaches the cross-site frame.
    smart_frame_ancestors: tuple[str, ...] = ()

    @property
    def effective_database_url(self) -> str:
        """The SQLAlchemy URL of the audit database (embedded SQLite file by default)."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{Path(self.data_dir) / 'audit.sqlite3'}"

    @property
    def spool_dir(self) -> Path:
        """Where audit records wait when the database is unavailable."""
        return Path(self.data_dir) / "spool"


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"CDS_{name.upper()}={raw!r} is not a boolean; use 1/0, true/false, yes/no or on/off")


def _parse_value(name: str, annotation: str, raw: str) -> Any:
    if annotation == "bool":
        return _parse_bool(name, raw)
    if annotation == "int":
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"CDS_{name.upper()}={raw!r} is not a whole number") from None
    if annotation == "float":
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"CDS_{name.upper()}={raw!r} is not a number") from None
    if annotation.startswith("tuple"):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build and validate settings from ``CDS_*`` variables, then apply keyword overrides.

    Raises ConfigError with a message naming the variable when a value is malformed.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(Settings):
        key = f"CDS_{f.name.upper()}"
        if key in env:
            values[f.name] = _parse_value(f.name, str(f.type), env[key])
    settings = replace(Settings(), **values)
    if overrides:
        unknown = set(overrides) - {f.name for f in fields(Settings)}
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        settings = replace(settings, **overrides)
    validate(settings)
    return settings


def validate(settings: Settings) -> None:
    """Check cross-field rules once at start-up; raise ConfigError with an actionable message."""
    if not 0 < settings.port < 65536:
        raise ConfigError(f"CDS_PORT={settings.port} is outside 1-65535")
    for prefix in settings.allowed_fhir_servers:
        parts = urlsplit(prefix)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(
                f"CDS_ALLOWED_FHIR_SERVERS entry {prefix!r} is not an absolute http(s) URL prefix"
            )
        if parts.scheme == "http" and not settings.dev:
            raise ConfigError(
                f"CDS_ALLOWED_FHIR_SERVERS entry {prefix!r} is http; production requires https "
                "(CDS Hooks 2.0: fhirServer MUST be https for production data). Use --dev for local trials."
            )
    if settings.public_base_url:
        parts = urlsplit(settings.public_base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ConfigError(
                f"CDS_PUBLIC_BASE_URL={settings.public_base_url!r} must be an absolute URL such as "
                "https://cds.example.org (no query or fragment)"
            )
    for name in ("fhir_connect_timeout_s", "fhir_read_timeout_s", "fhir_total_timeout_s"):
        if getattr(settings, name) <= 0:
            raise ConfigError(f"CDS_{name.upper()} must be greater than 0")
    if settings.fhir_retries < 0 or settings.fhir_max_pages < 1:
        raise ConfigError("CDS_FHIR_RETRIES must be >= 0 and CDS_FHIR_MAX_PAGES >= 1")
    if settings.jwt_leeway_s < 0 or settings.jwt_max_lifetime_s < 1:
        raise ConfigError("CDS_JWT_LEEWAY_S must be >= 0 and CDS_JWT_MAX_LIFETIME_S >= 1 (seconds)")
    if settings.max_request_bytes < 1024:
        raise ConfigError("CDS_MAX_REQUEST_BYTES must be at least 1024")
    if settings.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(f"CDS_LOG_LEVEL={settings.log_level!r} is not a logging level")
    for origin in settings.smart_frame_ancestors:
        parts = urlsplit(origin)
        if (parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/")
                or parts.query or parts.fragment):
            raise ConfigError(f"CDS_SMART_FRAME_ANCESTORS entry {origin!r} must be an origin such as "
                              "https://ehr.example.org (scheme and host, no path)")
        if parts.scheme == "http" and not settings.dev:
            raise ConfigError(f"CDS_SMART_FRAME_ANCESTORS entry {origin!r} must be https outside --dev")
    if settings.suppress_scope not in ("user", "tenant"):
        raise ConfigError(f"CDS_SUPPRESS_SCOPE={settings.suppress_scope!r} must be 'user' or 'tenant'")
    if settings.suppress_overridden_hours < 0 or settings.order_dedup_minutes < 0:
        raise ConfigError("CDS_SUPPRESS_OVERRIDDEN_HOURS and CDS_ORDER_DEDUP_MINUTES must be >= 0")
