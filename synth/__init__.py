"""The synthetic CKD-MBD cohort generator: its own package beside the service (issue 17 item 5).

Nothing on the request path imports it: ``calcinosis-cds synth`` loads ``synth.cli`` only when that command
runs. It reads the service's terminology (``fhir_mappings``) so that its codes are the codes the rules look for.
The generator is ``synth.cohort``; its public names are re-exported here.
"""

from synth.cohort import (
    DEFAULT_MAX_ENTRIES,
    FORMATS,
    MAX_PATIENTS,
    MAX_YEARS,
    PROFILES,
    SynthError,
    SynthPatient,
    check_arguments,
    check_codes,
    generate_cohort,
    generate_patient,
    iter_cohort,
    transaction_bundle,
    transaction_bundles,
    write_cohort,
)

__all__ = [
    "DEFAULT_MAX_ENTRIES",
    "FORMATS",
    "MAX_PATIENTS",
    "MAX_YEARS",
    "PROFILES",
    "SynthError",
    "SynthPatient",
    "check_arguments",
    "check_codes",
    "generate_cohort",
    "generate_patient",
    "iter_cohort",
    "transaction_bundle",
    "transaction_bundles",
    "write_cohort",
]
