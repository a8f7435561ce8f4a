"""Settings: CDS_* variables are parsed, validated once, and bad values give a message naming the variable."""

import pytest

from cds_service.config import ConfigError, load_settings


def test_defaults_are_safe_for_production():
    settings = load_settings({})
    assert settings.dev is False
    assert settings.allowed_fhir_servers == ()
    assert settings.effective_database_url.startswith("sqlite:///")
    assert settings.effective_database_url.endswith("audit.sqlite3")


def test_environment_values_are_typed():
    settings = load_settings({
        "CDS_PORT": "9000", "CDS_DEV": "1", "CDS_ALLOWED_FHIR_SERVERS": "http://a.test/fhir, https://b.test/r4",
        "CDS_FHIR_READ_TIMEOUT_S": "1.5", "CDS_SILENT_RULES": "caxp-above-target",
        "CDS_DATABASE_URL": "postgresql+psycopg://u@127.0.0.1/test",
    })
    assert settings.port == 9000
    assert settings.dev is True
    assert settings.allowed_fhir_servers == ("http://a.test/fhir", "https://b.test/r4")
    assert settings.fhir_read_timeout_s == 1.5
    assert settings.silent_rules == ("caxp-above-target",)
    assert settings.effective_database_url == "postgresql+psycopg://u@127.0.0.1/test"


@pytest.mark.parametrize(("env", "fragment"), [
    ({"CDS_PORT": "eighty"}, "CDS_PORT"),
    ({"CDS_PORT": "70000"}, "CDS_PORT"),
    ({"CDS_DEV": "maybe"}, "CDS_DEV"),
    ({"CDS_FHIR_READ_TIMEOUT_S": "0"}, "CDS_FHIR_READ_TIMEOUT_S"),
    ({"CDS_ALLOWED_FHIR_SERVERS": "not a url"}, "CDS_ALLOWED_FHIR_SERVERS"),
    ({"CDS_ALLOWED_FHIR_SERVERS": "http://ehr.test/fhir"}, "https"),
    ({"CDS_PUBLIC_BASE_URL": "cds.example.org"}, "CDS_PUBLIC_BASE_URL"),
    ({"CDS_LOG_LEVEL": "LOUD"}, "CDS_LOG_LEVEL"),
])
def test_bad_values_name_the_variable(env, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_settings(env)


def test_http_fhir_server_allowed_only_in_dev():
    settings = load_settings({"CDS_DEV": "true", "CDS_ALLOWED_FHIR_SERVERS": "http://127.0.0.1:8090/fhir"})
    assert settings.allowed_fhir_servers == ("http://127.0.0.1:8090/fhir",)


def test_overrides_beat_environment_and_unknown_overrides_fail():
    assert load_settings({"CDS_PORT": "9000"}, port=9100).port == 9100
    with pytest.raises(ConfigError, match="unknown setting"):
        load_settings({}, no_such_setting=1)
