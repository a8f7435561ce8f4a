"""FHIR validation of the resources the service writes from templates (issue #14), with fhir.resources' R4B models.

Cards carry FHIR resources in their suggestions -- ServiceRequests (lab orders, consults) and the calcium
gluconate MedicationRequest -- built from cards/templates.toml by cards/render.py; the audit export writes
AuditEvents (cds_service/audit/export.py). Both are checked against the R4B models (``fhir.resources.R4B``; the
package's default is R5, while EHRs speak R4, whose resources R4B keeps): the template-built resources once at
start-up, as part of the content check (``engine.check_content``: ``calcinosis-cds check-content``, app start-up),
and every exported AuditEvent, which is built with the model.

Never on the hook path: a hook call costs a few milliseconds and validating one resource about one, importing the
models about 0.3 s; the templates do not change while the service runs, so one check at start-up covers every
card it will send.
"""

from __future__ import annotations

from typing import Any

# fhir.resources and pydantic are imported inside the functions: modules that merely reference this one (the
# audit export) must not pay for them at import time.

# A rule and patient to render the suggestions with: only the suggestion resources are looked at, and they
# depend on the suggestion kind and the template text, not on the rule or the patient.
_EXAMPLE_PATIENT = "example"
_EXAMPLE_ORDER = "MedicationRequest/example"

# The models check structure, cardinality and datatypes but not value-set bindings, so the required bindings of
# the coded elements our suggestions set are checked here (FHIR R4/R4B value sets request-status, request-intent,
# medicationrequest-status, medicationrequest-intent).
_REQUEST_STATUS = frozenset({"draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"})
_REQUIRED_CODES: dict[str, dict[str, frozenset[str]]] = {
    "ServiceRequest": {
        "status": _REQUEST_STATUS,
        "intent": frozenset({"proposal", "plan", "directive", "order", "original-order", "reflex-order",
                             "filler-order", "instance-order", "option"}),
    },
    "MedicationRequest": {
        "status": frozenset({"active", "on-hold", "cancelled", "completed", "entered-in-error", "stopped", "draft",
                             "unknown"}),
        "intent": frozenset({"proposal", "plan", "order", "original-order", "reflex-order", "filler-order",
                             "instance-order", "option"}),
    },
}


def template_resources() -> list[tuple[str, dict[str, Any]]]:
    """(what it is, resource) for every resource a card suggestion can carry, built the way cards are: each lab
    order in [labs], each consult in [consults], and the calcium gluconate replacement."""
    from cards.render import CardRequest, SuggestionSpec, render_card, templates

    tpl = templates()
    label = next(iter(tpl.suggestions), "")
    specs: list[tuple[str, SuggestionSpec]] = [
        (f"lab order {code}", SuggestionSpec(kind="labs", label=label, labs=(code,))) for code in tpl.labs]
    specs += [(f"consult {specialty}", SuggestionSpec(kind="consult", label=label, specialty=specialty))
              for specialty in tpl.consults]
    specs.append(("calcium gluconate replacement",
                  SuggestionSpec(kind="replace-gluconate", label=label, order_ref=_EXAMPLE_ORDER)))
    rule_id = next(iter(tpl.rules))
    built: list[tuple[str, dict[str, Any]]] = []
    for what, spec in specs:
        card = render_card(CardRequest(rule_id=rule_id, indicator="warning", fields={}, suggestions=(spec,),
                                       patient_id=_EXAMPLE_PATIENT)).card
        resources = [action["resource"] for suggestion in card.get("suggestions", [])
                     for action in suggestion.get("actions", []) if "resource" in action]
        built += [(what, resource) for resource in resources]
    return built


def problems_of(resource: dict[str, Any]) -> list[str]:
    """Why ``resource`` is not a valid R4B resource of its resourceType; empty when it is."""
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    resource_type = resource.get("resourceType")
    try:
        model = get_fhir_model_class(str(resource_type))
    except (KeyError, ValueError):
        return [f"resourceType {resource_type!r} is not an R4B resource"]
    problems = [f"{element}: {resource.get(element)!r} is not in its required value set"
                for element, codes in _REQUIRED_CODES.get(str(resource_type), {}).items()
                if resource.get(element) not in codes]
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        problems += [f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()]
    return problems


def check_template_resources() -> list[str]:
    """Content-check problems: every template-built suggestion resource that is not valid R4B FHIR."""
    try:
        resources = template_resources()
    except Exception as exc:  # a template the renderer cannot use is reported by the template check itself
        return [f"cards/templates.toml: suggestion resources could not be built ({exc})"]
    if not resources:
        return ["cards/templates.toml: no suggestion resources to validate"]
    return [f"cards/templates.toml: {what} builds an invalid {resource.get('resourceType')}: {problem}"
            for what, resource in resources for problem in problems_of(resource)]


def audit_event_json(event: dict[str, Any]) -> str:
    """The AuditEvent built with the R4B model and serialised by it (FHIR JSON, no nulls); raises
    ``pydantic.ValidationError`` naming the element when ``event`` is not a valid AuditEvent."""
    from fhir.resources.R4B.auditevent import AuditEvent

    return AuditEvent.model_validate(event).model_dump_json(by_alias=True, exclude_none=True)
