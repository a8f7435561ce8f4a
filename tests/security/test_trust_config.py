"""The trusted-issuers file is validated strictly; production refuses to start without a trusted issuer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cds_service.auth import RequestVerifier, load_trusted_issuers
from cds_service.config import ConfigError, load_settings
from tests.security.tokens import (
    JKU_ISSUER,
    JKU_URL,
    SANDBOX_ISS,
    jwks,
    make_key,
    sandbox_published_jwks,
    settings_for,
    write_issuers_file,
)

_EC_KEY = make_key("ES384", kid="k1")
_PUBLIC_JWK = _EC_KEY.public_jwk


def _with(**changes: Any) -> dict[str, Any]:
    return {**_PUBLIC_JWK, **changes}


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"iss": JKU_ISSUER}, "must be a JSON list"),
        (["https://ehr.example.org"], "entry 1: must be a JSON object"),
        ([{"jku": [JKU_URL]}], "'iss' must be a non-empty string"),
        ([{"iss": "", "jku": [JKU_URL]}], "'iss' must be a non-empty string"),
        ([{"iss": JKU_ISSUER}], "exactly one of 'jku'"),
        ([{"iss": JKU_ISSUER, "jku": [JKU_URL], "jwks": jwks(_EC_KEY)}], "exactly one of 'jku'"),
        ([{"iss": JKU_ISSUER, "jku": [JKU_URL], "tenant": ["a"]}], "unknown key(s) 'tenant'"),
        ([{"iss": JKU_ISSUER, "jku": JKU_URL}], "'jku' must be a non-empty list"),
        ([{"iss": JKU_ISSUER, "jku": []}], "'jku' must be a non-empty list"),
        ([{"iss": JKU_ISSUER, "jku": ["/.well-known/jwks.json"]}], "not an absolute http(s) URL"),
        ([{"iss": JKU_ISSUER, "jku": ["file:///etc/passwd"]}], "not an absolute http(s) URL"),
        ([{"iss": JKU_ISSUER, "jku": ["http://ehr.example.org/jwks.json"]}], "production requires https"),
        ([{"iss": JKU_ISSUER, "jku": [JKU_URL]}, {"iss": JKU_ISSUER, "jku": [JKU_URL]}], "listed twice"),
        ([{"iss": JKU_ISSUER, "jwks": {"keys": []}}], "at least one key"),
        ([{"iss": JKU_ISSUER, "jwks": [_PUBLIC_JWK]}], "must be a JWK Set object"),
        ([{"iss": JKU_ISSUER, "jwks": {"keys": [{k: v for k, v in _PUBLIC_JWK.items() if k != "kid"}]}}],
         "'kid' is required"),
        ([{"iss": JKU_ISSUER, "jwks": {"keys": [_PUBLIC_JWK, _PUBLIC_JWK]}}], "appears twice"),
        ([{"iss": JKU_ISSUER, "jwks": {"keys": [{"kty": "oct", "kid": "s", "k": "c2VjcmV0"}]}}],
         "no symmetric keys"),
        ([{"iss": JKU_ISSUER, "jwks": {"keys": [_with(d="AAAA")]}}], "private key member(s) d"),
        ([{"iss": JKU_ISSUER, "jwks": {"keys": [_with(use="enc")]}}], "'use' must be 'sig'"),
        ([{"iss": JKU_ISSUER, "jwks": {"keys": [_with(alg="HS256")]}}], "alg 'HS256' is not one of"),
        ([{"iss": JKU_ISSUER, "jwks": {"keys": [_with(x="not-base64-of-a-point")]}}],
         "not a usable public key"),
        ([{"iss": JKU_ISSUER, "jku": [JKU_URL], "tenants": []}], "'tenants' must be a non-empty list"),
        ([{"iss": JKU_ISSUER, "jku": [JKU_URL], "tenants": ["a", 3]}], "'tenants' must be a non-empty list"),
    ],
)
def test_malformed_issuers_file_is_a_clear_config_error(tmp_path: Path, entries: Any, message: str) -> None:
    path = write_issuers_file(tmp_path / "issuers.json", entries)
    with pytest.raises(ConfigError) as info:
        load_trusted_issuers(str(path), dev=False)
    assert message in str(info.value)
    assert str(path) in str(info.value)  # names the file


def test_not_json_is_a_clear_config_error(tmp_path: Path) -> None:
    path = tmp_path / "issuers.json"
    path.write_text("[{'iss': 'x'}]", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_trusted_issuers(str(path), dev=False)


def test_missing_file_is_a_clear_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file"):
        RequestVerifier.from_settings(settings_for(tmp_path / "nope.json"), None)


def test_http_jku_is_allowed_in_dev_for_local_trials(tmp_path: Path) -> None:
    path = write_issuers_file(tmp_path / "issuers.json",
                              [{"iss": "http://localhost:9000", "jku": ["http://127.0.0.1:9000/jwks"]}])
    (issuer,) = load_trusted_issuers(str(path), dev=True)
    assert issuer.jku == ("http://127.0.0.1:9000/jwks",)


def test_valid_file_is_loaded_with_tenants_and_inline_keys(tmp_path: Path) -> None:
    path = write_issuers_file(tmp_path / "issuers.json", [
        {"iss": JKU_ISSUER, "jku": [JKU_URL]},
        {"iss": "https://b.example.org", "jwks": jwks(_EC_KEY), "tenants": ["t1", "t2"]},
    ])
    first, second = load_trusted_issuers(str(path), dev=False)
    assert (first.iss, first.jku, first.keys, first.tenants) == (JKU_ISSUER, (JKU_URL,), None, None)
    assert second.keys is not None
    assert list(second.keys) == ["k1"]
    assert second.tenants == frozenset({"t1", "t2"})


def test_production_refuses_to_start_without_an_issuers_file() -> None:
    with pytest.raises(ConfigError, match="no trusted CDS client"):
        RequestVerifier.from_settings(settings_for(None), None)


def test_production_refuses_to_start_with_an_empty_issuer_list(tmp_path: Path) -> None:
    path = write_issuers_file(tmp_path / "issuers.json", [])
    with pytest.raises(ConfigError, match="no trusted CDS client"):
        RequestVerifier.from_settings(settings_for(path), None)


def test_production_refuses_to_start_without_a_public_base_url(tmp_path: Path) -> None:
    path = write_issuers_file(tmp_path / "issuers.json", [{"iss": JKU_ISSUER, "jku": [JKU_URL]}])
    with pytest.raises(ConfigError, match="CDS_PUBLIC_BASE_URL is required"):
        RequestVerifier.from_settings(settings_for(path, public_base_url=""), None)


def test_dev_mode_starts_without_issuers_and_logs_the_caveat(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="cds_service.auth"):
        RequestVerifier.from_settings(settings_for(None, dev=True, public_base_url=""), None)
    assert any("never run --dev with production data" in r.getMessage() for r in caplog.records)


def test_max_token_lifetime_is_read_from_the_environment() -> None:
    # Issue 16 item 6: CDS_JWT_MAX_LIFETIME_S, default 3600 s.
    assert load_settings(environ={"CDS_DEV": "1"}).jwt_max_lifetime_s == 3600
    assert load_settings(environ={"CDS_DEV": "1", "CDS_JWT_MAX_LIFETIME_S": "600"}).jwt_max_lifetime_s == 600


@pytest.mark.parametrize(("variable", "value"), [("CDS_JWT_MAX_LIFETIME_S", "0"), ("CDS_JWT_MAX_LIFETIME_S", "-5"),
                                                 ("CDS_JWT_LEEWAY_S", "-1")])
def test_a_non_positive_max_lifetime_or_negative_leeway_stops_start_up(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        load_settings(environ={"CDS_DEV": "1", variable: value})


def test_trusting_the_sandbox_issuer_outside_dev_logs_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Pinning the sandbox's published key is how the real sandbox is tried offline (README); its private key is
    # public, so outside --dev the service says so at start-up.
    path = write_issuers_file(tmp_path / "issuers.json", [{"iss": SANDBOX_ISS, "jwks": sandbox_published_jwks()}])
    with caplog.at_level("WARNING", logger="cds_service.auth"):
        RequestVerifier.from_settings(settings_for(path), None)
    assert any("sandbox issuer is trusted outside --dev" in r.getMessage() for r in caplog.records)
    caplog.clear()
    other = write_issuers_file(tmp_path / "other.json", [{"iss": JKU_ISSUER, "jku": [JKU_URL]}])
    with caplog.at_level("WARNING", logger="cds_service.auth"):
        RequestVerifier.from_settings(settings_for(other), None)
    assert not any("sandbox" in r.getMessage() for r in caplog.records)
