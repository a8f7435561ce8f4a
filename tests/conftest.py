"""Shared test configuration: the real FHIR server fixtures and the CDS Hooks contract on every response."""

pytest_plugins = ["tests.support.fhir_fixtures", "tests.contract.plugin"]
