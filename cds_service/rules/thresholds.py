"""Rule thresholds and windows as named constants, each citing its source (clinical-rules.md).

Derived-state thresholds (hypercalcemia 10.2 / 12.0 mg/dL, phosphate 4.5 / 5.5 mg/dL, PTH ULN 65 and
9 x ULN, ...) live in ``fhir_mappings.states`` next to the state definitions that use them.
"""

from __future__ import annotations

from datetime import timedelta

# Ca x P (section 2.5.6)
CAXP_SEED_THRESHOLD = 70.0    # seed 000 (Pathophysiology, Laboratory Studies): "exceeds 70" -> strictly >
CAXP_KDOQI_TARGET = 55.0      # KDOQI 2003 guideline 6.5: keep Ca x P < 55, so >= 55 fails the target
CAXP_MIN_AGE_YEARS = 13.0     # section 2.5.7 (D + KDOQI paediatric guideline 7)

# Recency windows in days (section 2.6; design choices D anchored to KDIGO 2017 monitoring)
CURRENT_DAYS = 30             # full severity
DOWNWEIGHT_DAYS = 90          # 31-90 days: indicator lowered one level; > 90 days: stale
ORDER_DAYS = 7                # order-select: pairs/results count when <= 7 days old
ORDER_IONIZED_DAYS = 3        # order-select: ionized calcium <= 72 h
PTH_CURRENT_DAYS = 180        # KDIGO G5/5D: PTH every 3-6 months
VITAMIN_D_DAYS = 180          # section 2.6: 25-OH D current for 180 days
ALP_DAYS = 365                # KDIGO: ALP every 12 months (R01 suggestion)
PTH_RECENT_DAYS = 30          # R04/R06/R22: "no PTH within 30 days"
R22_WINDOW_DAYS = 7           # R22: Ca, ALP and P within 7 days
TLS_LABS_DAYS = 1             # R15: monitoring labs "if none in 24 h" (D)

# R03 missing-lab windows (section 2.6 table, upper end of the KDIGO ranges, D)
R03_WINDOWS = {
    "G5D": (90, 180),
    "G5": (90, 180),
    "G4": (180, 365),
}
R03_ACUTE_CAP_DAYS = 7        # TLS_ACTIVE, or CALCIPHYLAXIS_DX with onset <= 90 days: Ca/P within 7 days (§8 C12)
R03_CALCIPHYLAXIS_RECENT_DAYS = 90   # §8 C12: a calciphylaxis diagnosis is "recent" for 90 days
R03_CALCIPHYLAXIS_DAYS = 90   # §8 C12 details: older calciphylaxis without a CKD-stage window
R03_CALCINOSIS_CUTIS_DAYS = 365   # §8 C12: calcinosis cutis without CKD G4+: Ca/P once a year

# Age limits (§8 C11)
INFANT_AGE_YEARS = 1.0        # under 1 year only R04 at total Ca >= 12.0 mg/dL fires on patient-view

# R05 in CKD G5D (§8.0 / C1 alert-volume gate, D)
PHOSPHATE_SINGLE_G5D = 7.0    # one pre-dialysis P >= 7.0 mg/dL, or the last two > 5.5 mg/dL
LOW_CALCIUM_PAIR_WINDOW = timedelta(hours=24)   # §8 C1: low calcium same specimen or <= 24 h from the P

# Vitamin D (R13/R14; Mayo 25HDN "> 80 toxicity possible, most toxic cases > 150"; ARUP "> 150")
VITD_POSSIBLE_EXCESS = 80.0
VITD_TOXIC = 150.0

# R04 / R08 / R09
ALBUMIN_IONIZED_ADVICE = 3.0  # R04: suggest ionized Ca when albumin < 3.0 g/dL
PHOSPHATE_LOW_DEFAULT = 2.5   # R22: phosphate below lab LLN, default 2.5 mg/dL (D)
BICARBONATE_HIGH = 30.0       # R17: total CO2 / bicarbonate > 30 mmol/L (D)
EGFR_REDUCED = 60.0           # R17: eGFR < 60; R19: eGFR >= 60 means "no CKD"
R19_MIN_AGE, R19_MAX_AGE = 2.0, 25.0   # R19 (S-weak + D): onset 1st-2nd decade
R19_SPAN_DAYS = 30            # R19: >= 2 high phosphate results >= 30 days apart

# R08 / R09 (§8.0 critical; §8 C2 markers; §8 C3)
CRITICAL_PAIR_HOURS = 48       # §8.0: the pair's later draw <= 48 h before NOW for a critical card
INDICATION_POTASSIUM = 6.0     # §8 C2: K >= 6.0 mmol/L within 24 h (hyperkalemia: IV calcium indicated)
MARKER_POTASSIUM_DAYS = 1
MARKER_IONIZED_DAYS = 1        # §8 C2/C3: ionized Ca < 1.0 mmol/L means within 24 h
LOW_IONIZED_MARKER_MG_DL = 1.0 * 4.008   # ionized 1.0 mmol/L in mg/dL (x 4.008, section 2.2)
LOW_CALCIUM_MARKER_MG_DL = 7.5  # §8 C2: corrected/total Ca < 7.5 mg/dL within 72 h
HYPOPHOSPHATEMIA_DAYS = 3       # §8 C3: the most recent pre-dialysis phosphate within 72 h
HYPOPHOSPHATEMIA_MG_DL = 2.5    # §8 C3 (0.81 mmol/L is only its rounded SI value)
SEVERE_HYPOPHOSPHATEMIA_MG_DL = 1.0   # §8 C3: P < 1.0 mg/dL -> "severe hypophosphatemia"

# R21 (§8 C17)
AKI_RECENT_DAYS = 30            # AKI N17.x with onset <= 30 days
MAGNESIUM_DAYS = 30             # "latest serum Mg" = within 30 days
MAGNESIUM_LLN_MG_DL = 1.7       # default range 1.7-2.4 mg/dL when the lab gives none (D)
MAGNESIUM_ULN_MG_DL = 2.4

# R24 (§8 C16)
WARFARIN_HISTORY_DAYS = 90      # no warfarin of any status within 90 days (inpatient warfarin is re-ordered daily)
R24_MINERAL_DAYS = 90           # R07 mineral abnormality within 90 days
