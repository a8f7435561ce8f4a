"""Parse draft MedicationRequests from ``context.draftOrders`` (clinical-rules.md section 2.8).

Drug class by RxNorm code, else the value set's text patterns; route by code (``route-iv`` /
``route-not-iv``), else free text. A calcium or phosphate salt with **no route** that is an injectable
product is treated as IV and flagged ``route_inferred`` (US labels are IV-only; conservative).
Oral calcium never lands in the IV-calcium class. Sandbox drafts (no intent, single-object category,
no medication) are tolerated; unusable entries are recorded as skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from fhir_mappings import wire
from fhir_mappings.extract import classify_medication, codings_of, concept_text
from fhir_mappings.facts import DraftOrder, Skipped
from fhir_mappings.valuesets import CodeIndex

T = TypeVar("T")

IV_CALCIUM = "med-iv-calcium"
IV_PHOSPHATE = "med-iv-phosphate"
ORAL_CALCIUM = "med-oral-calcium"
EXCLUSION_CLASSES = ("med-thiosulfate", "med-calcium-exclusions")

# D: dose-form words in the product text. An oral form means "not injectable" when no route is given.
ORAL_FORM = re.compile(
    r"\b(oral|tablets?|tabs?|capsules?|caps|chewable|chew|by mouth|p\.?o\.?|gummy|gummies|effervescent)\b",
    re.IGNORECASE,
)
INJECTABLE_FORM = re.compile(
    r"\b(inject\w*|infusion|intraven\w*|vials?|syringes?|ampoules?|ampules?|premix\w*|parenteral|"
    r"i\.?v\.?|ivpb)\b",
    re.IGNORECASE,
)
CALCIUM_CHLORIDE = re.compile(r"\bcalcium\s+chloride\b", re.IGNORECASE)
# §8 C7 (D): a parenteral-nutrition admixture, by its name: generic words or the common three-chamber / premixed
# brands (Clinimix, Kabiven / Perikabiven / SMOFKabiven, Olimel, Nutriflex, ProcalAmine).
PARENTERAL_NUTRITION = re.compile(
    r"\b((total|peripheral|partial)\s+)?parenteral\s+nutrition\b|\b[TP]PN\b|^\s*PN\b|\bPN\s+(admixture|bag|solution)\b"
    r"|\bhyperalimentation\b|\bclinimix\b|\b(smof|peri)?kabiven\b|\bolimel\b|\bnutriflex\b|\bprocalamine\b",
    re.IGNORECASE,
)
MAGNESIUM_BINDER = "med-magnesium-binder"
ALUMINIUM_BINDER = "med-aluminium-binder"
AL_MG_BINDER = "med-al-mg-binder"
# A UCUM annotation such as "{pill}" or "{tbl}" is not a unit a clinician reads (issue 13: never "1 {pill}").
_UCUM_ANNOTATION = re.compile(r"\{[^{}]*\}")
# D: wording that documents central venous access (calcium chloride belongs on a central line).
CENTRAL_LINE = re.compile(r"\b(central(\s+(line|venous|vein))?|cvc|picc|port-?a-?cath)\b", re.IGNORECASE)


def _route_kind(request: Mapping[str, Any], index: CodeIndex) -> tuple[str, str]:
    """("iv" | "not-iv" | "unknown" | "none", route text as given) for a MedicationRequest."""
    dosages = request.get("dosageInstruction")
    items: list[Any] = dosages if isinstance(dosages, list) else [dosages] if isinstance(dosages, dict) else []
    route_present = False
    texts: list[str] = []
    dosage_texts: list[str] = []
    verdicts: set[str] = set()
    for dosage in items:
        if not isinstance(dosage, dict):
            continue
        route = dosage.get("route")
        if route is not None:
            route_present = True
            concept = wire.as_concept(route)
            for system, code, display in codings_of(concept):
                if index.contains("route-iv", system, code):
                    verdicts.add("iv")
                elif index.contains("route-not-iv", system, code):
                    verdicts.add("not-iv")
                if display:
                    texts.append(display)
            rtext = (concept_text(concept) if isinstance(route, dict) else route if isinstance(route, str)
                     else "")
            if rtext:
                texts.append(rtext)
        if isinstance(dosage.get("text"), str):
            dosage_texts.append(dosage["text"])
    # Shown on the card: each distinct route description once (coding display and route.text often repeat).
    joined = " | ".join(dict.fromkeys(t.strip() for t in texts if t.strip()))
    match_text = " | ".join([joined, *dosage_texts])
    if not verdicts and match_text.strip(" |"):
        if index.text_matches("route-iv", match_text):
            verdicts.add("iv")
        elif index.text_matches("route-not-iv", match_text):
            verdicts.add("not-iv")
    if "iv" in verdicts:
        return "iv", joined
    if "not-iv" in verdicts:
        return "not-iv", joined
    return ("unknown" if route_present else "none"), joined


def _dose_text(request: Mapping[str, Any]) -> str:
    """The first dosage as a clinician reads it: its text, else "value unit" of the first doseQuantity.

    UCUM annotations are dropped ("1 {pill}" -> "1"); a unit that is only an annotation falls back to the other
    spelling (``unit`` display vs ``code``) when that one is readable.
    """
    dosages = request.get("dosageInstruction")
    first = dosages[0] if isinstance(dosages, list) and dosages else dosages
    if not isinstance(first, dict):
        return ""
    dose_text = first.get("text")
    if isinstance(dose_text, str):
        return _without_annotations(dose_text)
    rates = first.get("doseAndRate")
    for dr in rates if isinstance(rates, list) else []:
        q = dr.get("doseQuantity") if isinstance(dr, dict) else None
        if isinstance(q, dict) and q.get("value") is not None and not isinstance(q.get("value"), (dict, list)):
            units = [_without_annotations(u) for u in (q.get("unit"), q.get("code")) if isinstance(u, str)]
            unit = next((u for u in units if u), "")
            return f"{_number_text(q.get('value'))} {unit}".strip()
    return ""


def _without_annotations(text: str) -> str:
    return " ".join(_UCUM_ANNOTATION.sub(" ", text).split())


def _number_text(value: object) -> str:
    """``1`` for 1.0, otherwise the value as given."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def _note_text(request: Mapping[str, Any]) -> str:
    notes = request.get("note")
    items = notes if isinstance(notes, list) else [notes]
    return " ".join(n["text"] for n in items if isinstance(n, dict) and isinstance(n.get("text"), str))


def parse_order(
    request: Mapping[str, Any],
    index: CodeIndex,
    selected: bool,
    medications: Mapping[str, Mapping[str, Any]] | None = None,
) -> DraftOrder:
    """Classify one draft MedicationRequest (class + route) per section 2.8."""
    typed = _typed(wire.MedicationRequest, {**request, "resourceType": "MedicationRequest"})
    known = {}
    for rid, medication in (medications or {}).items():
        found = _typed(wire.Medication, {**medication, "resourceType": "Medication"})
        if found is not None:
            known[rid] = found
    classes, name = classify_medication(typed, index, known) if typed is not None else (set(), "")
    route, route_text = _route_kind(request, index)
    product_text = name
    excluded = ""
    for exclusion in EXCLUSION_CLASSES:
        if exclusion in classes or (product_text and index.text_matches(exclusion, product_text)):
            excluded = exclusion
    inferred = False
    parenteral_nutrition = bool(PARENTERAL_NUTRITION.search(product_text))
    if excluded:
        classes = set()  # thiosulfate, dialysate, CRRT fluids, lock solutions: never R08/R09 (§2.8.4, §8.0 C7)
    else:
        oral_form = bool(ORAL_FORM.search(product_text))
        injectable_form = parenteral_nutrition or bool(INJECTABLE_FORM.search(product_text))
        for iv_class in (IV_CALCIUM, IV_PHOSPHATE):
            if iv_class not in classes:
                continue
            if route == "iv":
                continue
            # Section 2.8: a route-less injectable calcium/phosphate salt counts as IV ("route inferred").
            # Calcium gluconate/chloride are injectables unless the text names an oral form; phosphate
            # salts are also oral/rectal products, so they need injectable wording.
            injectable = not oral_form and (iv_class == IV_CALCIUM or injectable_form)
            if route == "none" and injectable:
                inferred = True
            else:
                classes.discard(iv_class)
        if ORAL_CALCIUM in classes and route == "iv":
            classes.discard(ORAL_CALCIUM)
        if route == "iv" or (injectable_form and not oral_form):
            # §8 C17: R21 covers oral binders and supplements; IV magnesium is out of scope.
            classes.discard(MAGNESIUM_BINDER)
            if ALUMINIUM_BINDER not in classes:
                classes.discard(AL_MG_BINDER)
    context_text = " ".join([route_text, _dose_text(request), _note_text(request)])
    return DraftOrder(
        resource_id=str(request.get("id") or ""),
        name=name,
        classes=frozenset(classes),
        route="iv" if inferred else route,
        route_inferred=inferred,
        route_text=route_text,
        dose_text=_dose_text(request),
        is_calcium_chloride=bool(CALCIUM_CHLORIDE.search(product_text)),
        central_line=bool(CENTRAL_LINE.search(context_text)),
        selected=selected,
        excluded_reason=excluded,
        is_parenteral_nutrition=parenteral_nutrition,
    )


def _typed(shape: type[T], resource: Mapping[str, Any]) -> T | None:
    """A draft's resource through the extraction's typed / tolerant reading (issue 18: one reading of FHIR)."""
    try:
        return wire.read(shape, resource)[0]
    except wire.Unreadable:
        return None


def _unwrap(entry: object) -> object:
    if isinstance(entry, dict) and "resourceType" not in entry and isinstance(entry.get("resource"), dict):
        return entry["resource"]
    return entry


def parse_draft_orders(
    draft_orders: Iterable[object], selections: Sequence[str], index: CodeIndex
) -> tuple[list[DraftOrder], list[Skipped]]:
    """All draft MedicationRequests, each marked selected (a trigger) or context.

    With no ``selections`` (order-sign), every draft MedicationRequest is a trigger.
    """
    wanted = {s.strip() for s in selections if isinstance(s, str)}
    resources = [_unwrap(e) for e in draft_orders]
    medications = {
        str(r["id"]): r
        for r in resources
        if isinstance(r, dict) and r.get("resourceType") == "Medication" and isinstance(r.get("id"), str)
    }
    orders: list[DraftOrder] = []
    skipped: list[Skipped] = []
    for res in resources:
        if not isinstance(res, dict):
            skipped.append(Skipped("unknown", "", "draft order is not a JSON object"))
            continue
        if res.get("resourceType") != "MedicationRequest":
            continue
        rid = res.get("id")
        if not isinstance(rid, str) or not rid:
            skipped.append(Skipped("MedicationRequest", "", "draft order has no id"))
            continue
        selected = not wanted or f"MedicationRequest/{rid}" in wanted or rid in wanted
        try:
            orders.append(parse_order(res, index, selected, medications))
        except Exception as exc:  # tolerate any malformed draft shape
            skipped.append(Skipped("MedicationRequest", rid, f"malformed {type(exc).__name__}"))
    return orders, skipped
