"""Rule thresholds and windows as named constants, each citing its source (clinical-rules.md).

Derived-state thresholds (hypercalcemia 10.2 / 12.0 mg/dL, phosphate 4.5 / 5.5 mg/dL, PTH ULN 65 and
9 x ULN, ...) live in ``fhir_mappings.states`` next to the state definitions that use them.
"""

from __future__ import annotations

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
R03_ACUTE_CAP_DAYS = 7        # CALCIPHYLAXIS_DX or TLS_ACTIVE: Ca/P within 7 days

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
