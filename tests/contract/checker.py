"""The CDS Hooks 2.0 contract: JSON Schemas of the wire shapes plus the spec's FHIRPath invariants.

Invariant expressions are the spec's own (HL7/cds-hooks input/fsh/invariants/*.fsh), evaluated with fhirpathpy
on the element each one is anchored to. On top of the spec, the project rules: every card and suggestion has a
uuid (the sandbox only sends feedback for those), summaries stay under 140 characters, and no optional field
is null/""/[]/{} (spec "Use of JSON"; the one allowed empty value is ``"cards": []``). Card text a clinician
reads (summary and detail) carries no ``{...}`` annotation or unfilled placeholder, no "None"/"none" standing
in for a value, no raw code in place of a display name ("Condition 46177005") and no line twice (issue 13).
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from fhirpathpy import evaluate
from jsonschema import Draft202012Validator, FormatChecker

_SCHEMAS = Path(__file__).parent / "schemas"

# (invariant id, element it is anchored to, expression) — error-severity ones must hold; cds-resp-2 is a
# warning in the spec but we hold ourselves to it.
CARD_INVARIANTS = (
    ("cds-resp-1", "(selectionBehavior = 'at-most-one') implies suggestions.where(isRecommended).count() <= 1"),
    ("cds-resp-6", "suggestions.exists() implies selectionBehavior.exists()"),
    ("cds-resp-4", "overrideReasons.all(display.exists())"),
)
SUGGESTION_INVARIANTS = (("cds-resp-5", "actions.all(description.exists())"),)
ACTION_INVARIANTS = (("cds-resp-2", "(type = 'delete') implies (resourceId.exists() and resource.empty())"),)
LINK_INVARIANTS = (("cds-resp-3", "(type != 'smart') implies (appContext.empty())"),)
FEEDBACK_INVARIANTS = (
    ("cds-fb-1", "outcome = 'accepted' or outcome = 'overridden'"),
    ("cds-fb-2", "(outcome = 'accepted') implies acceptedSuggestions.exists()"),
)
OVERRIDE_REASON_INVARIANTS = (("cds-fb-3", "reason.exists() or userComment.exists()"),)
REQUEST_INVARIANTS = (("cds-r-1", "fhirAuthorization.exists() implies fhirServer.exists()"),)


# Card words (issue 13 item 3): what a clinician must never read in a summary or detail.
_ANNOTATION = re.compile(r"\{[^{}\n]*\}")  # UCUM annotations ("1 {pill}") and unfilled placeholders
_NONE_VALUE = re.compile(
    r"\bNone\b(?!\s+of\b)"                                   # Python's None printed as a value
    r"|[:=]\s*(?:\*\*)?\s*none\b"                              # "Route: none", "Dose = none"
    r"|\(\s*none\s*\)"                                        # "(none)"
    r"|\bnone\s+(?:mg|mmol|µmol|umol|pg|ng|g/dL|mEq|%)",       # "none mg/dL"
)
_RAW_CODE = re.compile(r"\b(?:Condition|Procedure|Observation|Medication(?:Request|Statement)?)\s+[A-Z]?\d[\w.-]*")


def card_text_problems(card: dict[str, Any]) -> list[str]:
    """What is wrong with the words of one card's summary and detail ([] when nothing is)."""
    problems: list[str] = []
    for field in ("summary", "detail"):
        text = card.get(field)
        if not isinstance(text, str):
            continue
        for pattern, what in ((_ANNOTATION, "a {...} annotation or placeholder"),
                              (_NONE_VALUE, '"None"/"none" as a value'),
                              (_RAW_CODE, "a raw code instead of a display name")):
            match = pattern.search(text)
            if match:
                problems.append(f"{field} contains {what}: {match.group(0)!r}")
    lines = [line.strip() for line in str(card.get("detail", "")).splitlines() if line.strip()]
    repeated = sorted({line for line in lines if lines.count(line) > 1})
    if repeated:
        problems.append(f"detail repeats a line: {repeated[0][:120]!r}")
    return problems


class ContractViolation(AssertionError):
    """A response or request breaks the CDS Hooks 2.0 contract."""


@cache
def _validator(name: str) -> Draft202012Validator:
    schema = json.loads((_SCHEMAS / f"{name}.json").read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FormatChecker())


def _schema(name: str, body: Any, where: str) -> None:
    errors = sorted(_validator(name).iter_errors(body), key=lambda e: list(e.path))
    if errors:
        details = "; ".join(f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message[:200]}" for e in errors[:5])
        raise ContractViolation(f"{where}: {name} schema violated: {details}")


def _invariants(element: dict[str, Any], invariants: tuple[tuple[str, str], ...], where: str) -> None:
    for invariant_id, expression in invariants:
        result = evaluate(element, expression)
        if result != [True]:
            raise ContractViolation(f"{where}: invariant {invariant_id} failed ({expression})")


def _no_empty_values(value: Any, path: str, *, allow_empty_cards: bool) -> None:
    if value is None or value == "" or value == [] or value == {}:
        if not (allow_empty_cards and path == "cards" and value == []):
            raise ContractViolation(f"{path}: null or empty value (spec 'Use of JSON': omit it instead)")
        return
    if isinstance(value, dict):
        for key, child in value.items():
            _no_empty_values(child, f"{path}.{key}" if path else key, allow_empty_cards=allow_empty_cards)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            _no_empty_values(child, f"{path}[{index}]", allow_empty_cards=allow_empty_cards)


def check_discovery(body: Any) -> None:
    """Discovery response: schema, unique ids, 2.0-legal prefetch tokens, no empty values."""
    _schema("discovery", body, "discovery")
    _no_empty_values(body, "", allow_empty_cards=False)
    ids = [s["id"] for s in body["services"]]
    if len(ids) != len(set(ids)):
        raise ContractViolation("discovery: service ids must be unique (the sandbox keys services by id)")
    for service in body["services"]:
        for key, template in service.get("prefetch", {}).items():
            for token in re.findall(r"\{\{(.*?)\}\}", template):
                name = token.strip()
                legal = (name.startswith("context.") and name.count(".") == 1) or name in (
                    "userPractitionerId", "userPractitionerRoleId", "userPatientId", "userRelatedPersonId")
                if not legal:
                    raise ContractViolation(f"discovery: prefetch {key}: token {{{{{name}}}}} is not legal in 2.0")


def check_hook_response(body: Any, *, project_rules: bool = True) -> None:
    """200 hook response: schema, every invariant on its element; with ``project_rules``, uuids everywhere and
    no empty values (the spec's own examples are checked with ``project_rules=False``)."""
    _schema("response", body, "response")
    if project_rules:
        _no_empty_values(body, "", allow_empty_cards=True)
    for i, card in enumerate(body["cards"]):
        where = f"cards[{i}]"
        _invariants(card, CARD_INVARIANTS, where)
        if project_rules and not card.get("uuid"):
            raise ContractViolation(f"{where}: card has no uuid (feedback needs it)")
        if len(card["summary"]) >= 140:
            raise ContractViolation(f"{where}: summary is {len(card['summary'])} characters (must be < 140)")
        if project_rules:
            problems = card_text_problems(card)
            if problems:
                raise ContractViolation(f"{where}: card words: " + "; ".join(problems))
        for j, suggestion in enumerate(card.get("suggestions", [])):
            _invariants(suggestion, SUGGESTION_INVARIANTS, f"{where}.suggestions[{j}]")
            if project_rules and not suggestion.get("uuid"):
                raise ContractViolation(f"{where}.suggestions[{j}]: suggestion has no uuid")
            for k, action in enumerate(suggestion.get("actions", [])):
                _invariants(action, ACTION_INVARIANTS, f"{where}.suggestions[{j}].actions[{k}]")
        for j, link in enumerate(card.get("links", [])):
            _invariants(link, LINK_INVARIANTS, f"{where}.links[{j}]")
    for k, action in enumerate(body.get("systemActions", [])):
        _invariants(action, ACTION_INVARIANTS, f"systemActions[{k}]")


def check_feedback_request(body: Any) -> None:
    """A feedback body we send (tests exercise valid ones): schema + cds-fb-1..3."""
    _schema("feedback", body, "feedback")
    for i, item in enumerate(body["feedback"]):
        _invariants(item, FEEDBACK_INVARIANTS, f"feedback[{i}]")
        if "overrideReason" in item:
            _invariants(item["overrideReason"], OVERRIDE_REASON_INVARIANTS, f"feedback[{i}].overrideReason")


def check_operation_outcome(body: Any, status: int) -> None:
    """Every non-2xx body is an OperationOutcome with a message a person can act on."""
    _schema("operation-outcome", body, f"HTTP {status} body")


_SERVICE_PATH = re.compile(r"^/cds-services/[^/]+$")
_FEEDBACK_PATH = re.compile(r"^/cds-services/[^/]+/feedback$")


def check_exchange(method: str, path: str, status: int, body_text: str) -> bool:
    """Check one response of our service; returns True when a contract applied to it."""
    if not path.startswith("/cds-services") or method in ("OPTIONS", "HEAD"):
        return False  # preflight and HEAD carry no body by definition
    if status == 401:
        # Bare 401 (spec 1.7: do not say why): body, if any, is a generic OperationOutcome.
        if body_text:
            check_operation_outcome(json.loads(body_text), status)
        return True
    if status >= 300:
        try:
            body = json.loads(body_text)
        except ValueError:
            raise ContractViolation(f"{method} {path}: HTTP {status} body is not JSON: {body_text[:200]!r}") from None
        check_operation_outcome(body, status)
        return True
    if method == "GET" and path.rstrip("/") == "/cds-services":
        check_discovery(json.loads(body_text))
    elif method == "POST" and _FEEDBACK_PATH.match(path):
        if body_text.strip():
            raise ContractViolation(f"{path}: feedback response should be a bare 200, got {body_text[:100]!r}")
    elif method == "POST" and _SERVICE_PATH.match(path):
        check_hook_response(json.loads(body_text))
    else:
        return False
    return True
