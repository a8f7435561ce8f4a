"""Which part of the service a py-spy sample belongs to (benchmarks/profile_load.py; issue #7).

Kept apart from the profiler's process handling so the charging rules are tested on their own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

# (component, substrings of a py-spy frame "function (file:line)"); the first component whose pattern matches
# the innermost frame wins, then the next frame outwards is tried. Order matters only where patterns overlap.
COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("audit log (write, alert-history read)", ("cds_service/audit/",)),
    # issue 18: the typed decode (msgspec, fhir_mappings/wire.py) is the parse of a hook body that fits
    ("JSON decode of the body (msgspec)", ("_decode (cds_service/http_json.py",
                                           "_prefetch_value (cds_service/http_json.py",
                                           "_typed_hook_body (cds_service/http_json.py", "fhir_mappings/wire.py")),
    ("JSON depth check (64 levels)", ("cds_service/json_depth.py",)),
    ("JSON body read (werkzeug stream)", ("read_json_body (cds_service/http_json.py",
                                          "read_hook_body (cds_service/http_json.py",
                                          "_body_bytes (cds_service/http_json.py", "get_data (werkzeug")),
    ("engine: FHIR -> facts (extract)", ("fhir_mappings/extract.py", "fhir_mappings/facts.py",
                                         "fhir_mappings/valuesets.py", "fhir_mappings/units.py",
                                         "fhir_mappings/orders.py", "fhir_mappings/datetimes.py")),
    ("engine: derived states, pairing", ("cds_service/rules/states.py", "fhir_mappings/pairing.py")),
    ("engine: rules", ("cds_service/rules/",)),
    ("cards: rendering", ("cards/render.py", "_to_card (cds_service/engine.py")),
    ("engine: glue", ("cds_service/engine.py",)),
    ("prefetch: Bundle flattening", ("cds_service/prefetch.py", "cds_service/fhir_client.py")),
    ("alert policy", ("cds_service/alert_policy.py",)),
    ("request validation (hook models)", ("cds_service/hook_models.py",)),
    ("hook handler glue", ("cds_service/hook_handler.py",)),
    ("request log + metrics", ("logging/", "pythonjsonlogger", "cds_service/metrics.py", "prometheus_client",
                               "cds_service/logging_setup.py")),
    # The production server's Python side (issue 16: granian's ASGI interface + cds_service/buffered_wsgi.py);
    # granian's own work is Rust, invisible to py-spy. gunicorn stays for the comparison rows.
    ("server (buffered_wsgi, granian, gunicorn)", ("cds_service/buffered_wsgi.py", "granian", "asyncio/",
                                                   "gunicorn/", "selectors.py", "socket.py")),
    ("app glue (api, auth, request hooks)", ("cds_service/",)),
    # What Flask.dispatch_request itself is charged with is the view's return: the parsed body and everything
    # built from it are freed there (reference counts reach zero), ~20,000 JSON values for the typical record.
    ("freeing the parsed body (end of view)", ("Flask.dispatch_request (",)),
    ("Flask + werkzeug (request, response)", ("flask/", "werkzeug/", "flask_cors/")),
)


def classify(frames: list[str]) -> str:
    """The component a stack (outermost frame first) is charged to: the innermost frame that matches one."""
    for frame in reversed(frames):
        for name, patterns in COMPONENTS:
            if any(pattern in frame for pattern in patterns):
                return name
    return "other (interpreter, threads)"


def component_shares(raw_lines: Iterable[str]) -> tuple[Counter[str], int]:
    """Samples per component from py-spy's ``raw`` output (collapsed stacks: ``frame;frame;... count``)."""
    shares: Counter[str] = Counter()
    total = 0
    for line in raw_lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        # The leading entries name the process and thread ("process 123:..."); the rest are frames.
        frames = [frame for frame in stack.split(";") if not frame.startswith(("process ", "thread "))]
        shares[classify(frames)] += int(count)
        total += int(count)
    return shares, total
