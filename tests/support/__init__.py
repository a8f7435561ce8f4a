"""Test support code: the real FHIR server harness and its pytest fixtures."""
