"""pytest plugin: a real FHIR R4 server for the whole test session (registered in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support.fhir_server import FhirTestServer, Resource

ResourceLoader = Callable[[list[Resource]], list[Resource]]


@pytest.fixture(scope="session")
def fhir_server() -> Iterator[FhirTestServer]:
    """One in-memory FHIR server (no latency, no token) shared by the session; stopped at the end.

    The data is shared too: give every test its own resource ids (e.g. with uuid4), or use
    ``fhir_patient_loader``, which removes what it loaded after the test.
    """
    server = FhirTestServer.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fhir_patient_loader(fhir_server: FhirTestServer) -> Iterator[ResourceLoader]:
    """A function that loads resources (PUT with their own ids) into ``fhir_server`` and returns them.

    Everything it loaded is deleted again after the test, so the session server stays small: Medplum's
    MemoryRepository scans every resource on each search (real-components.md A.5).
    """
    loaded: list[tuple[str, str]] = []

    def load(resources: list[Resource]) -> list[Resource]:
        fhir_server.load(resources)
        loaded.extend((resource["resourceType"], resource["id"]) for resource in resources)
        return resources

    yield load
    for resource_type, resource_id in reversed(loaded):
        fhir_server.delete(resource_type, resource_id)
