"""Synthetic CKD-MBD cohort: FHIR R4 patients shaped like real dialysis, CKD and ordinary records (issue #7).

For demos, load tests, the benchmark and the real-FHIR tests. Three profiles:

- ``dialysis``: ESRD (N18.6) on hemodialysis three times a week; a monthly pre-dialysis panel (calcium,
  phosphate, albumin, potassium, creatinine, CO2, eGFR) drawn as ONE specimen, a mid-month calcium/phosphate/
  potassium draw, PTH and ALP quarterly, 25-OH vitamin D twice a year, BMI quarterly (KDIGO 2017 monitoring
  frequencies for G5D, clinical-rules.md section 2.6); binders, calcitriol, warfarin for some;
- ``ckd``: CKD stage 3 or 4, labs every three to six months;
- ``ordinary``: a yearly metabolic panel and everyday diagnoses.

Every code the rules look at comes from the value sets in ``fhir_mappings/valuesets`` (checked against
``fhir_mappings.valuesets.default_index`` at generation time), so the data exercises the rules. Each site
reports in US (mg/dL) or SI (mmol/L) units, with the LOINC that matches the unit's property.

Deterministic: the same seed, size and ``as_of`` date give byte-identical output (ids are stable too, so a
transaction of ``PUT Type/id`` entries can be loaded again and again). Dates are relative to ``as_of``
(default: today, UTC) so that recent labs stay recent for the rules. All data is fiction, tagged HTEST.
"""

from __future__ import annotations

import json
import math
import random
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

from fhir_mappings.datetimes import parse_datetime
from fhir_mappings.valuesets import ICD10CM, LOINC, RXNORM, SNOMED, default_index

Resource = dict[str, Any]

PROFILES = ("dialysis", "ckd", "ordinary")
# Share of each profile in a cohort (dialysis first: the population this service exists for).
_PROFILE_WEIGHTS = (0.45, 0.25, 0.30)
FORMATS = ("bundle", "ndjson")

UCUM = "http://unitsofmeasure.org"
CPT = "http://www.ama-assn.org/go/cpt"
_OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
_MRN_SYSTEM = "https://calcinosis-cds.org/fhir/synthetic-mrn"
# v3 ActReason HTEST "test health data": marks every resource as synthetic.
_SYNTHETIC_TAG = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HTEST",
                  "display": "test health data"}

MAX_PATIENTS = 100_000
# Medplum's FHIR router (the test server) allows at most 50 updates per transaction (fhir-router maxUpdates).
DEFAULT_MAX_ENTRIES = 50
MAX_YEARS = 60


class SynthError(ValueError):
    """Bad generator arguments, or a code the generator needs is missing from the value sets."""


@dataclass(frozen=True)
class SynthPatient:
    """One generated patient: its id, profile and every resource (Patient first, then dependants)."""

    id: str
    profile: str
    resources: list[Resource]

    def of_type(self, resource_type: str) -> list[Resource]:
        """The patient's resources of one type, in generation order."""
        return [r for r in self.resources if r["resourceType"] == resource_type]


# --- codes -------------------------------------------------------------------------------------------------
# (value set id, system, code) for every coded thing the rules read; the display comes from the value set file.
_LAB = {
    "ca_mass": ("lab-calcium-total", LOINC, "17861-6"),
    "ca_molar": ("lab-calcium-total", LOINC, "2000-8"),
    "p_mass": ("lab-phosphate", LOINC, "2777-1"),
    "p_molar": ("lab-phosphate", LOINC, "14879-1"),
    "albumin": ("lab-albumin", LOINC, "1751-7"),
    "pth": ("lab-pth", LOINC, "2731-8"),
    "potassium": ("lab-potassium", LOINC, "2823-3"),
    "creatinine": ("lab-creatinine", LOINC, "2160-0"),
    "co2": ("lab-bicarbonate", LOINC, "2028-9"),
    "egfr": ("lab-egfr", LOINC, "62238-1"),
    "alp": ("lab-alp", LOINC, "6768-6"),
    "vitd25": ("lab-vitamin-d-25oh", LOINC, "62292-8"),
    "bmi": ("lab-bmi", LOINC, "39156-5"),
}
_COND = {
    "esrd": ("cond-esrd", ICD10CM, "N18.6"),
    "dialysis_dependence": ("cond-dialysis-dependence", ICD10CM, "Z99.2"),
    "ckd3a": ("cond-ckd-stage-3", ICD10CM, "N18.31"),
    "ckd3b": ("cond-ckd-stage-3", ICD10CM, "N18.32"),
    "ckd4": ("cond-ckd-stage-4", ICD10CM, "N18.4"),
    "shpt_renal": ("cond-hyperparathyroidism", ICD10CM, "N25.81"),
    "diabetes_ckd": ("cond-diabetes", ICD10CM, "E11.22"),
    "diabetes": ("cond-diabetes", ICD10CM, "E11.9"),
    "obesity": ("cond-obesity", ICD10CM, "E66.9"),
}
# Displays for codes whose value set includes them through an is-a filter (no concept display in the file).
_FILTER_DISPLAYS = {
    "N18.31": "Chronic kidney disease, stage 3a",
    "N18.32": "Chronic kidney disease, stage 3b",
    "E11.22": "Type 2 diabetes mellitus with diabetic chronic kidney disease",
    "E11.9": "Type 2 diabetes mellitus without complications",
}
# Everyday diagnoses the rules do not read (ICD-10-CM FY2021 codes): realism and problem-list length only.
_COMORBIDITIES = (
    ("I10", "Essential (primary) hypertension"),
    ("E78.5", "Hyperlipidemia, unspecified"),
    ("I25.10", "Atherosclerotic heart disease of native coronary artery without angina pectoris"),
    ("I50.9", "Heart failure, unspecified"),
    ("I48.91", "Unspecified atrial fibrillation"),
    ("E87.5", "Hyperkalemia"),
    ("K21.9", "Gastro-esophageal reflux disease without esophagitis"),
    ("G47.33", "Obstructive sleep apnea (adult) (pediatric)"),
    ("I73.9", "Peripheral vascular disease, unspecified"),
    ("E55.9", "Vitamin D deficiency, unspecified"),
    ("F32.9", "Major depressive disorder, single episode, unspecified"),
    ("M10.9", "Gout, unspecified"),
    ("E03.9", "Hypothyroidism, unspecified"),
    ("J44.9", "Chronic obstructive pulmonary disease, unspecified"),
    ("L29.9", "Pruritus, unspecified"),
    ("Z87.891", "Personal history of nicotine dependence"),
    ("M81.0", "Age-related osteoporosis without current pathological fracture"),
    ("G62.9", "Polyneuropathy, unspecified"),
    ("H35.30", "Unspecified macular degeneration"),
    ("N40.0", "Benign prostatic hyperplasia without lower urinary tract symptoms"),
    ("E83.39", "Other disorders of phosphorus metabolism"),
    ("D64.9", "Anemia, unspecified"),
)
_DIALYSIS_SPECIFIC = (
    ("I12.0", "Hypertensive chronic kidney disease with stage 5 chronic kidney disease or end stage renal disease"),
    ("D63.1", "Anemia in chronic kidney disease"),
)
_CKD_SPECIFIC = (
    ("I12.9", "Hypertensive chronic kidney disease with stage 1 through stage 4 chronic kidney disease, or "
              "unspecified chronic kidney disease"),
)
# Resolved past problems: inactive history the rules must ignore.
_RESOLVED = (
    ("J18.9", "Pneumonia, unspecified organism"),
    ("N39.0", "Urinary tract infection, site not specified"),
    ("A41.9", "Sepsis, unspecified organism"),
    ("T82.868A", "Thrombosis due to vascular prosthetic devices, implants and grafts, initial encounter"),
)
_MED = {
    "calcium_acetate": ("med-oral-calcium", RXNORM, "197433"),
    "calcium_carbonate": ("med-oral-calcium", RXNORM, "282465"),
    "calcitriol": ("med-active-vitamin-d", RXNORM, "308867"),
    "cholecalciferol": ("med-vitamin-d", RXNORM, "199362"),
    "warfarin": ("med-warfarin", RXNORM, "855332"),
}
# Medicines the rules do not classify: text only, no code (no RxCUI was verified for them, and text-only
# entries are common in real feeds).
_TEXT_ONLY_MEDS = {
    "sevelamer": ("Sevelamer carbonate 800 MG Oral Tablet", "800 mg three times daily with meals"),
    "cinacalcet": ("Cinacalcet 30 MG Oral Tablet", "30 mg once daily"),
    "epoetin": ("Epoetin alfa injection (given at dialysis)", "per dialysis anemia protocol"),
    "amlodipine": ("Amlodipine 10 MG Oral Tablet", "10 mg once daily"),
    "atorvastatin": ("Atorvastatin 40 MG Oral Tablet", "40 mg once daily at night"),
    "metformin": ("Metformin 500 MG Oral Tablet", "500 mg twice daily"),
}
_HEMODIALYSIS = ("proc-dialysis", SNOMED, "302497006")
_HEMODIALYSIS_CPT = ("proc-dialysis", CPT, "90935")
_ORAL_ROUTE = ("route-not-iv", SNOMED, "26643006")

_GIVEN = {
    "female": ("Maria", "Aisha", "Elena", "Grace", "Mei", "Fatima", "Ingrid", "Rosa", "Hannah", "Priya"),
    "male": ("James", "Omar", "Lukas", "Diego", "Kenji", "Samuel", "Viktor", "Ahmed", "Noah", "Ravi"),
}
_FAMILY = ("Okafor", "Schmidt", "Garcia", "Nguyen", "Kowalski", "Haddad", "Johansson", "Rossi", "Tanaka",
           "Mensah", "Silva", "Novak", "Fischer", "Khan", "Moreau", "Brennan")


@cache
def _displays() -> dict[tuple[str, str], str]:
    """(system, code) -> display, from every value set file (the display the terminology data recorded)."""
    folder = Path(str(resources.files("fhir_mappings"))) / "valuesets"
    found: dict[tuple[str, str], str] = {}
    for path in sorted(folder.glob("*.json")):
        content = json.loads(path.read_text(encoding="utf-8"))
        for include in (content.get("compose") or {}).get("include") or []:
            for concept in include.get("concept") or []:
                display = concept.get("display")
                if isinstance(display, str) and display:
                    found.setdefault((include.get("system", ""), concept["code"]), display)
    return found


@cache
def check_codes() -> None:
    """Raise SynthError unless every coded item the generator emits is in the value set it is meant for."""
    index = default_index()
    missing = [
        f"{system}|{code} not in {valueset}"
        for table in (_LAB, _COND, _MED)
        for valueset, system, code in table.values()
        if not index.contains(valueset, system, code)
    ]
    missing += [
        f"{system}|{code} not in {valueset}"
        for valueset, system, code in (_HEMODIALYSIS, _HEMODIALYSIS_CPT, _ORAL_ROUTE)
        if not index.contains(valueset, system, code)
    ]
    if missing:
        raise SynthError("the synthetic generator's codes drifted from fhir_mappings/valuesets: "
                         + "; ".join(missing))


def _coding(entry: tuple[str, str, str]) -> dict[str, str]:
    _valueset, system, code = entry
    display = _displays().get((system, code)) or _FILTER_DISPLAYS.get(code)
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return coding


# --- time helpers ------------------------------------------------------------------------------------------

def _instant(day: date, hour: int, minute: int = 0) -> str:
    return datetime.combine(day, time(hour, minute), tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _later(instant: str, *, hours: int) -> str:
    parsed = parse_datetime(instant)  # the project's one FHIR timestamp parser (issue 17 item 5)
    if parsed is None:
        raise ValueError(f"not a FHIR instant: {instant!r}")
    return (parsed + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _hd_days(as_of: date, years: int, schedule: int) -> list[date]:
    """Hemodialysis session days, oldest first: Mon/Wed/Fri (schedule 0) or Tue/Thu/Sat (schedule 1)."""
    weekdays = {0, 2, 4} if schedule == 0 else {1, 3, 5}
    start = as_of - timedelta(days=365 * years)
    days = []
    day = start
    while day < as_of:  # the session of as_of itself has not happened yet
        if day.weekday() in weekdays:
            days.append(day)
        day += timedelta(days=1)
    return days


# --- the builder -------------------------------------------------------------------------------------------

class _PatientBuilder:
    """Builds one patient's resources with its own random stream (seeded by cohort seed and index)."""

    def __init__(self, seed: int, index: int, profile: str, years: int, as_of: date) -> None:
        # Not for security: a seeded PRNG is the point (same seed -> same cohort).
        self.rng = random.Random(f"calcinosis-synth:{seed}:{index}")  # noqa: S311
        self.profile = profile
        self.years = years
        self.as_of = as_of
        self.pid = f"syn{seed}-{index:05d}"
        self.resources: list[Resource] = []
        self._counters: dict[str, int] = {}
        self.si_units = self.rng.random() < 0.35  # this patient's lab reports in SI units
        self.ckd_stage = ""
        self.bmi = 0.0
        self.obese = False
        self.diabetic = False

    def _next_id(self, prefix: str) -> str:
        n = self._counters.get(prefix, 0) + 1
        self._counters[prefix] = n
        return f"{self.pid}-{prefix}{n}"

    def _subject(self) -> dict[str, str]:
        return {"reference": f"Patient/{self.pid}"}

    def _meta(self) -> dict[str, Any]:
        return {"tag": [dict(_SYNTHETIC_TAG)]}

    # patient

    def add_patient(self) -> None:
        rng = self.rng
        gender = rng.choice(("female", "male"))
        low, high = {"dialysis": (35, 85), "ckd": (45, 88), "ordinary": (18, 80)}[self.profile]
        age = rng.randint(low, high)
        birth = self.as_of - timedelta(days=int(age * 365.25) + rng.randint(10, 350))
        self.resources.append({
            "resourceType": "Patient",
            "id": self.pid,
            "meta": self._meta(),
            "identifier": [{"system": _MRN_SYSTEM, "value": f"MRN-{self.pid}"}],
            "name": [{"use": "official", "family": rng.choice(_FAMILY), "given": [rng.choice(_GIVEN[gender])]}],
            "gender": gender,
            "birthDate": birth.isoformat(),
        })

    # conditions

    def _condition(self, coding: dict[str, str], onset: date, *, active: bool = True,
                   extra: dict[str, str] | None = None) -> None:
        codings = [coding] + ([extra] if extra else [])
        resource: Resource = {
            "resourceType": "Condition",
            "id": self._next_id("cond"),
            "meta": self._meta(),
            "clinicalStatus": {"coding": [{"system": _CLINICAL, "code": "active" if active else "resolved"}]},
            "verificationStatus": {"coding": [{"system": _VERIFICATION, "code": "confirmed"}]},
            "category": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                "code": "problem-list-item"}]}],
            "code": {"coding": codings, "text": codings[0].get("display", codings[0]["code"])},
            "subject": self._subject(),
            "onsetDateTime": _instant(onset, 9),
            "recordedDate": _instant(onset, 10),
        }
        if not active:
            resource["abatementDateTime"] = _instant(onset + timedelta(days=self.rng.randint(7, 40)), 9)
        self.resources.append(resource)

    def _icd(self, code: str, display: str) -> dict[str, str]:
        return {"system": ICD10CM, "code": code, "display": display}

    def _past_day(self, max_days: int) -> date:
        return self.as_of - timedelta(days=self.rng.randint(30, max(31, max_days)))

    def add_conditions(self, dialysis_start: date | None) -> None:
        rng = self.rng
        span = 365 * (self.years + 5)
        if self.profile == "dialysis" and dialysis_start is not None:
            self._condition(_coding(_COND["esrd"]), dialysis_start,
                            extra={"system": SNOMED, "code": "46177005",
                                   "display": _displays().get((SNOMED, "46177005"), "End-stage renal disease")})
            self._condition(_coding(_COND["dialysis_dependence"]), dialysis_start)
            for code, display in _DIALYSIS_SPECIFIC:
                self._condition(self._icd(code, display), self._past_day(span))
            if rng.random() < 0.7:
                self._condition(_coding(_COND["shpt_renal"]), self._past_day(span))
            comorbid = rng.randint(8, 15)
        elif self.profile == "ckd":
            stage = rng.choice(("ckd3a", "ckd3b", "ckd4"))
            self.ckd_stage = stage
            self._condition(_coding(_COND[stage]), self._past_day(span))
            for code, display in _CKD_SPECIFIC:
                self._condition(self._icd(code, display), self._past_day(span))
            comorbid = rng.randint(3, 8)
        else:
            comorbid = rng.randint(0, 4)
        if rng.random() < (0.45 if self.profile != "ordinary" else 0.1):
            key = "diabetes_ckd" if self.profile != "ordinary" else "diabetes"
            self._condition(_coding(_COND[key]), self._past_day(span))
            self.diabetic = True
        else:
            self.diabetic = False
        if self.obese:
            self._condition(_coding(_COND["obesity"]), self._past_day(span))
        for code, display in rng.sample(_COMORBIDITIES, comorbid):
            self._condition(self._icd(code, display), self._past_day(span))
        for code, display in rng.sample(_RESOLVED, rng.randint(0, 2 if self.profile == "ordinary" else 4)):
            self._condition(self._icd(code, display), self._past_day(span), active=False)

    # medications

    def _medication(self, coding: dict[str, str] | None, text: str, dose: str, authored: date) -> None:
        concept: dict[str, Any] = {"text": text}
        if coding is not None:
            concept = {"coding": [coding], "text": text}
        self.resources.append({
            "resourceType": "MedicationRequest",
            "id": self._next_id("med"),
            "meta": self._meta(),
            "status": "active",
            "intent": "order",
            "medicationCodeableConcept": concept,
            "subject": self._subject(),
            "authoredOn": _instant(authored, 11),
            "dosageInstruction": [{"text": dose, "route": {"coding": [_coding(_ORAL_ROUTE)]}}],
        })

    def _coded_med(self, key: str, dose: str) -> None:
        coding = _coding(_MED[key])
        self._medication(coding, coding.get("display", key), dose, self._past_day(365 * self.years))

    def _text_med(self, key: str) -> None:
        text, dose = _TEXT_ONLY_MEDS[key]
        self._medication(None, text, dose, self._past_day(365 * self.years))

    def add_medications(self) -> None:
        rng = self.rng
        if self.profile == "dialysis":
            # Binder: calcium-based for about half, sevelamer for most of the rest (KDIGO 2017 restricts
            # calcium-based binders, so real units show both).
            if rng.random() < 0.5:
                self._coded_med("calcium_acetate", "1334 mg (2 tablets) three times daily with meals")
            elif rng.random() < 0.8:
                self._text_med("sevelamer")
            if rng.random() < 0.5:
                self._coded_med("calcitriol", "0.25 microgram once daily")
            if rng.random() < 0.25:
                self._text_med("cinacalcet")
            if rng.random() < 0.12:
                self._coded_med("warfarin", "5 mg once daily, adjusted to INR")
            self._text_med("epoetin")
            if rng.random() < 0.6:
                self._text_med("amlodipine")
        elif self.profile == "ckd":
            if self.ckd_stage == "ckd4" and rng.random() < 0.3:
                self._coded_med("calcitriol", "0.25 microgram once daily")
            if rng.random() < 0.3:
                self._coded_med("cholecalciferol", "1000 units once daily")
            if rng.random() < 0.15:
                self._coded_med("calcium_carbonate", "1250 mg twice daily")
            if rng.random() < 0.06:
                self._coded_med("warfarin", "5 mg once daily, adjusted to INR")
            self._text_med("amlodipine")
            if rng.random() < 0.6:
                self._text_med("atorvastatin")
        else:
            if rng.random() < 0.2:
                self._text_med("atorvastatin")
            if self.diabetic:
                self._text_med("metformin")
            if rng.random() < 0.1:
                self._coded_med("cholecalciferol", "1000 units once daily")

    # procedures

    def add_dialysis_sessions(self, session_days: list[date]) -> None:
        """One completed hemodialysis Procedure per session (4 h, from 07:30)."""
        for day in session_days:
            self.resources.append({
                "resourceType": "Procedure",
                "id": self._next_id("hd"),
                "meta": self._meta(),
                "status": "completed",
                "code": {"coding": [_coding(_HEMODIALYSIS), _coding(_HEMODIALYSIS_CPT)], "text": "Hemodialysis"},
                "subject": self._subject(),
                "performedPeriod": {"start": _instant(day, 7, 30), "end": _instant(day, 11, 30)},
            })

    # observations

    def _specimen(self, drawn: str) -> str:
        sid = self._next_id("spec")
        self.resources.append({
            "resourceType": "Specimen",
            "id": sid,
            "meta": self._meta(),
            "type": {"coding": [{"system": SNOMED, "code": "119364003", "display": "Serum specimen"}]},
            "subject": self._subject(),
            "collection": {"collectedDateTime": drawn},
        })
        return sid

    def _observation(self, lab: str, value: float, unit: str, drawn: str, specimen: str | None,
                     reference: tuple[float, float] | None, category: str = "laboratory") -> None:
        coding = _coding(_LAB[lab])
        resource: Resource = {
            "resourceType": "Observation",
            "id": self._next_id("obs"),
            "meta": self._meta(),
            "status": "final",
            "category": [{"coding": [{"system": _OBS_CATEGORY, "code": category}]}],
            "code": {"coding": [coding], "text": coding.get("display", lab)},
            "subject": self._subject(),
            "effectiveDateTime": drawn,
            "issued": _later(drawn, hours=5),
            "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
        }
        if specimen is not None:
            resource["specimen"] = {"reference": f"Specimen/{specimen}"}
        if reference is not None:
            resource["referenceRange"] = [{
                "low": {"value": reference[0], "unit": unit, "system": UCUM, "code": unit},
                "high": {"value": reference[1], "unit": unit, "system": UCUM, "code": unit},
            }]
        self.resources.append(resource)

    def _calcium(self, mg_dl: float, drawn: str, specimen: str | None) -> None:
        if self.si_units:
            self._observation("ca_molar", round(mg_dl / 4.008, 2), "mmol/L", drawn, specimen, (2.15, 2.55))
        else:
            self._observation("ca_mass", round(mg_dl, 1), "mg/dL", drawn, specimen, (8.6, 10.2))

    def _phosphate(self, mg_dl: float, drawn: str, specimen: str | None) -> None:
        if self.si_units:
            self._observation("p_molar", round(mg_dl / 3.097, 2), "mmol/L", drawn, specimen, (0.81, 1.45))
        else:
            self._observation("p_mass", round(mg_dl, 1), "mg/dL", drawn, specimen, (2.5, 4.5))

    def _albumin(self, g_dl: float, drawn: str, specimen: str | None) -> None:
        if self.si_units:
            self._observation("albumin", float(round(g_dl * 10)), "g/L", drawn, specimen, (35.0, 50.0))
        else:
            self._observation("albumin", round(g_dl, 1), "g/dL", drawn, specimen, (3.5, 5.0))

    def _pth(self, pg_ml: float, drawn: str, specimen: str | None) -> None:
        unit = "ng/L" if self.si_units else "pg/mL"  # numerically identical (units.toml)
        self._observation("pth", float(round(pg_ml)), unit, drawn, specimen, (15.0, 65.0))

    def _simple(self, lab: str, value: float, unit: str, drawn: str, specimen: str | None,
                reference: tuple[float, float] | None, digits: int = 1, category: str = "laboratory") -> None:
        self._observation(lab, round(value, digits), unit, drawn, specimen, reference, category)

    def _walk(self, mean: float, sd: float, low: float, high: float) -> float:
        return min(high, max(low, self.rng.gauss(mean, sd)))

    def add_dialysis_labs(self, session_days: list[date]) -> None:
        """Monthly full pre-dialysis panel + mid-month Ca/P/K; PTH and ALP quarterly; 25-OH D twice a year."""
        rng = self.rng
        ca_mean = self._walk(9.1, 0.45, 8.0, 10.4)
        p_mean = self._walk(5.6, 1.1, 3.6, 8.3)
        alb_mean = self._walk(3.7, 0.3, 2.8, 4.4)
        pth_mean = math.exp(rng.gauss(math.log(380), 0.55))
        bmi = self.bmi
        by_month: dict[tuple[int, int], list[date]] = {}
        for day in session_days:
            by_month.setdefault((day.year, day.month), []).append(day)
        # The month the history starts in is partial (its first session is not in the first week): no panel.
        months = [month for month in sorted(by_month) if by_month[month][0].day <= 7]
        for number, month in enumerate(months):
            days = by_month[month]
            first = days[0]
            drawn = _instant(first, 7, rng.randint(0, 25))
            spec = self._specimen(drawn)
            ca = self._walk(ca_mean, 0.45, 7.0, 12.5)
            self._calcium(ca, drawn, spec)
            self._phosphate(self._walk(p_mean, 0.9, 2.0, 11.0), drawn, spec)
            self._albumin(self._walk(alb_mean, 0.2, 2.2, 4.8), drawn, spec)
            self._simple("potassium", self._walk(4.9, 0.5, 3.2, 6.8), "mmol/L", drawn, spec, (3.5, 5.1))
            creat = self._walk(8.5, 1.5, 4.5, 14.0)
            self._simple("creatinine", creat, "mg/dL", drawn, spec, (0.6, 1.2), digits=2)
            self._simple("co2", self._walk(22.0, 2.0, 15.0, 29.0), "mmol/L", drawn, spec, (22.0, 29.0), digits=0)
            self._simple("egfr", self._walk(6.0, 1.5, 3.0, 12.0), "mL/min/{1.73_m2}", drawn, spec, None,
                         digits=0)
            if number % 3 == 0:
                self._pth(self._walk(pth_mean, pth_mean * 0.2, 40.0, 3000.0), drawn, spec)
                self._simple("alp", self._walk(120.0, 40.0, 40.0, 400.0), "U/L", drawn, spec, (40.0, 129.0),
                             digits=0)
                self._simple("bmi", self._walk(bmi, 0.4, 15.0, 60.0), "kg/m2", drawn, None, None,
                             category="vital-signs")
            if number % 6 == 0:
                self._simple("vitd25", self._walk(24.0, 8.0, 6.0, 90.0), "ng/mL", drawn, spec, (30.0, 100.0),
                             digits=0)
            mid = [d for d in days if d.day >= 14]
            if mid:
                drawn = _instant(mid[0], 7, rng.randint(0, 25))
                spec = self._specimen(drawn)
                self._calcium(self._walk(ca_mean, 0.45, 7.0, 12.5), drawn, spec)
                self._phosphate(self._walk(p_mean, 0.9, 2.0, 11.0), drawn, spec)
                self._simple("potassium", self._walk(4.9, 0.5, 3.2, 6.8), "mmol/L", drawn, spec, (3.5, 5.1))

    def add_clinic_labs(self, interval_days: int, *, with_pth: bool) -> None:
        """A metabolic panel every ``interval_days`` (one specimen), newest a few days before ``as_of``."""
        rng = self.rng
        if self.profile == "ckd":
            egfr_mean = {"ckd3a": 52.0, "ckd3b": 38.0, "ckd4": 22.0}[self.ckd_stage]
            creat_mean = {"ckd3a": 1.4, "ckd3b": 1.8, "ckd4": 2.9}[self.ckd_stage]
            p_mean = 4.0 if self.ckd_stage == "ckd4" else 3.6
        else:
            egfr_mean, creat_mean, p_mean = self._walk(92.0, 12.0, 65.0, 125.0), 0.9, 3.4
        day = self.as_of - timedelta(days=rng.randint(2, 20))
        start = self.as_of - timedelta(days=365 * self.years)
        draws = []
        while day >= start:
            draws.append(day)
            day -= timedelta(days=interval_days + rng.randint(-10, 10))
        for number, when in enumerate(reversed(draws)):
            drawn = _instant(when, 8, rng.randint(0, 50))
            spec = self._specimen(drawn)
            self._calcium(self._walk(9.4, 0.35, 8.0, 10.8), drawn, spec)
            self._albumin(self._walk(4.1, 0.25, 3.0, 5.0), drawn, spec)
            if self.profile == "ckd" or rng.random() < 0.3:
                self._phosphate(self._walk(p_mean, 0.5, 2.2, 6.5), drawn, spec)
            self._simple("potassium", self._walk(4.4, 0.4, 3.3, 6.0), "mmol/L", drawn, spec, (3.5, 5.1))
            self._simple("creatinine", self._walk(creat_mean, 0.15, 0.4, 6.0), "mg/dL", drawn, spec, (0.6, 1.2),
                         digits=2)
            self._simple("co2", self._walk(25.0, 2.0, 16.0, 31.0), "mmol/L", drawn, spec, (22.0, 29.0), digits=0)
            self._simple("egfr", self._walk(egfr_mean, 3.0, 10.0, 130.0), "mL/min/{1.73_m2}", drawn, spec, None,
                         digits=0)
            self._simple("alp", self._walk(80.0, 20.0, 35.0, 200.0), "U/L", drawn, spec, (40.0, 129.0), digits=0)
            if with_pth and number % 2 == 0:
                self._pth(self._walk(140.0, 50.0, 20.0, 600.0), drawn, spec)
            self._simple("bmi", self._walk(self.bmi, 0.4, 15.0, 60.0), "kg/m2", drawn, None, None,
                         category="vital-signs")

    def build(self) -> SynthPatient:
        rng = self.rng
        self.add_patient()
        self.bmi = self._walk(28.0, 5.0, 17.0, 45.0)
        self.obese = self.bmi >= 30.0
        if self.profile == "dialysis":
            dialysis_start = self.as_of - timedelta(days=365 * self.years + rng.randint(30, 900))
            sessions = _hd_days(self.as_of, self.years, rng.randint(0, 1))
            self.add_conditions(dialysis_start)
            self.add_medications()
            self.add_dialysis_sessions(sessions)
            self.add_dialysis_labs(sessions)
        elif self.profile == "ckd":
            self.add_conditions(None)
            self.add_medications()
            self.add_clinic_labs(90 if self.ckd_stage == "ckd4" else 180, with_pth=True)
        else:
            self.add_conditions(None)
            self.add_medications()
            self.add_clinic_labs(365, with_pth=False)
        return SynthPatient(id=self.pid, profile=self.profile, resources=self.resources)


# --- public API ----------------------------------------------------------------------------------------------

def check_arguments(patients: int, years: int, seed: int) -> None:
    """Raise SynthError (a message for the command line) when a size or the seed is out of range."""
    if not 1 <= patients <= MAX_PATIENTS:
        raise SynthError(f"--patients must be between 1 and {MAX_PATIENTS} (got {patients})")
    if not 1 <= years <= MAX_YEARS:
        raise SynthError(f"--years must be between 1 and {MAX_YEARS} (got {years})")
    if seed < 0:
        raise SynthError(f"--seed must be zero or positive (got {seed})")


def generate_patient(index: int, profile: str, *, years: int, seed: int, as_of: date | None = None) -> SynthPatient:
    """One patient of ``profile`` (dialysis, ckd or ordinary) with ``years`` of history up to ``as_of``."""
    if profile not in PROFILES:
        raise SynthError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    check_arguments(1, years, seed)
    check_codes()
    return _PatientBuilder(seed, index, profile, years, as_of or datetime.now(UTC).date()).build()


def iter_cohort(patients: int, years: int, seed: int, as_of: date | None = None) -> Iterator[SynthPatient]:
    """Generate ``patients`` patients lazily; profiles are drawn from the seed (about 45% dialysis)."""
    check_arguments(patients, years, seed)
    check_codes()
    day = as_of or datetime.now(UTC).date()
    chooser = random.Random(f"calcinosis-synth-profiles:{seed}")  # noqa: S311 - reproducible, not secret
    for index in range(patients):
        profile = chooser.choices(PROFILES, weights=_PROFILE_WEIGHTS)[0]
        yield _PatientBuilder(seed, index, profile, years, day).build()


def generate_cohort(patients: int, years: int, seed: int, as_of: date | None = None) -> list[SynthPatient]:
    """Generate the whole cohort in memory (see :func:`iter_cohort`)."""
    return list(iter_cohort(patients, years, seed, as_of))


def transaction_bundle(resources: Iterable[Resource]) -> Resource:
    """A FHIR transaction Bundle of ``PUT Type/id`` entries (idempotent: loading twice changes nothing)."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for r in resources
        ],
    }


def transaction_bundles(resources: Iterable[Resource], max_entries: int = DEFAULT_MAX_ENTRIES) -> list[Resource]:
    """The resources as consecutive transaction Bundles of at most ``max_entries`` entries (0: one Bundle).

    Order is kept (Patient first, each Specimen before the Observations that cite it). The Medplum test server
    refuses a transaction with more than 50 updates; HAPI and most production servers take far more.
    """
    items = list(resources)
    if max_entries <= 0 or len(items) <= max_entries:
        return [transaction_bundle(items)]
    return [transaction_bundle(items[start:start + max_entries]) for start in range(0, len(items), max_entries)]


def _dumps(value: Any, *, indent: int | None = None) -> str:
    # Fixed separators and key order (insertion order is deterministic): byte-identical output per seed.
    separators = (",", ": ") if indent else (",", ":")
    return json.dumps(value, ensure_ascii=False, indent=indent, separators=separators)


def write_cohort(cohort: Iterable[SynthPatient], fmt: str, out_dir: Path | None,
                 stream: TextIO | None = None, *, max_entries: int = DEFAULT_MAX_ENTRIES) -> list[Path]:
    """Write the cohort; returns the files written (none when writing to ``stream``).

    ``bundle``: transaction Bundles of at most ``max_entries`` PUT entries, ``<out>/<patient id>-<part>.json``
    (to a stream: one Bundle per line). ``ndjson``: one file per resource type, ``<out>/<Type>.ndjson`` (FHIR
    Bulk Data layout; to a stream: every resource, one per line).
    """
    if fmt not in FORMATS:
        raise SynthError(f"unknown format {fmt!r}; choose bundle or ndjson")
    if out_dir is None:
        target = stream or sys.stdout
        for patient in cohort:
            lines = (transaction_bundles(patient.resources, max_entries) if fmt == "bundle"
                     else patient.resources)
            for item in lines:
                target.write(_dumps(item) + "\n")
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if fmt == "bundle":
        for patient in cohort:
            for part, bundle in enumerate(transaction_bundles(patient.resources, max_entries), start=1):
                path = out_dir / f"{patient.id}-{part:03d}.json"
                path.write_text(_dumps(bundle, indent=1) + "\n", encoding="utf-8")
                written.append(path)
        return written
    handles: dict[str, TextIO] = {}
    try:
        for patient in cohort:
            for resource in patient.resources:
                kind = resource["resourceType"]
                if kind not in handles:
                    path = out_dir / f"{kind}.ndjson"
                    handles[kind] = path.open("w", encoding="utf-8")
                    written.append(path)
                handles[kind].write(_dumps(resource) + "\n")
    finally:
        for handle in handles.values():
            handle.close()
    return sorted(written)
