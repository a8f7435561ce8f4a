"""Every clinical threshold and window of the rules and derived states, each citing its source at its line.

One module (issue 17 item 2): the derived states (``states.py``) and the rules read their numbers here. Unit
conversion factors are not repeated: the calcium factor comes from the reviewed ``fhir_mappings/units.toml``.
"""

from __future__ import annotations

from datetime import timedelta

from fhir_mappings.units import unit_rule


def _calcium_mg_dl_per_mmol_l() -> float:
    """mg/dL per mmol/L of calcium, as the reviewed unit table converts it (section 2.2: x 4.008)."""
    rule = unit_rule("calcium", "mmol/L", None)
    if rule is None or rule.divide != 1.0:
        raise ValueError("fhir_mappings/units.toml: calcium needs a mmol/L factor")
    return rule.multiply


# --- derived states (section 2.7; revision 2 in section 8) -----------------------------------------------
CA_MG_PER_MMOL = _calcium_mg_dl_per_mmol_l()   # section 2.2 (units.toml: x 40.078 g/mol / 10)
HYPERCALCEMIA_MG_DL = 10.2          # KDOQI 2003 guideline 6.3 (2.54 mmol/L); section 2.7
MODERATE_HYPERCALCEMIA_MG_DL = 12.0  # §8 C10: moderate >= 12.0 (R04 warning, R08/R09 threshold)
SEVERE_HYPERCALCEMIA_MG_DL = 14.0   # §8 C10: severe >= 14.0
HYPOCALCEMIA_MG_DL = 8.4            # section R23 default lower limit (D)
IONIZED_HIGH_MG_DL = 1.32 * CA_MG_PER_MMOL   # UnityPoint ionized Ca range 1.12-1.32 mmol/L; section 2.4
IONIZED_LOW_MG_DL = 1.12 * CA_MG_PER_MMOL    # UnityPoint ionized Ca lower limit 1.12 mmol/L; section 2.4
IONIZED_MODERATE_MG_DL = 1.6 * CA_MG_PER_MMOL  # §8 C10: ionized moderate >= 1.6 mmol/L (D)
IONIZED_SEVERE_MG_DL = 2.0 * CA_MG_PER_MMOL    # §8 C10: ionized severe >= 2.0 mmol/L (D)
PAYNE_FACTOR = 0.8                  # Payne, BMJ 1973: Ca + 0.8 x (4.0 - albumin); section 2.3
PAYNE_NORMAL_ALBUMIN = 4.0          # Payne, BMJ 1973: normal albumin 4.0 g/dL; section 2.3
ALBUMIN_PAIR_WINDOW = timedelta(hours=24)   # section 2.3 (D)
IONIZED_PAIR_WINDOW = timedelta(hours=24)   # section 2.3 preference order
PHOSPHATE_HIGH_MG_DL = 4.5          # adults, 1.45 mmol/L; section 2.7 HYPERPHOSPHATEMIA
PHOSPHATE_TARGET_G5_MG_DL = 5.5     # KDOQI 2003 stage-5 target 3.5-5.5 mg/dL; section 2.7
PTH_DEFAULT_ULN = 65.0              # ARUP/Mayo intact PTH 15-65 pg/mL; section 2.7
PTH_MARKED_MULTIPLE = 9.0           # KDIGO 2017 G5D iPTH ~2-9 x ULN; section 2.7
HYPOALBUMINEMIA_G_DL = 3.5          # section 2.7 (D; calciphylaxis co-factor only)
OBESITY_BMI = 30.0                  # section 2.7 OBESE
BMI_WINDOW = timedelta(days=365)    # section 2.7 OBESE: BMI >= 30 within 365 days
DIALYSIS_PROCEDURE_WINDOW = timedelta(days=30)   # section 2.1 (D); §8 C5: dated sessions only
POST_DIALYSIS_WINDOW = timedelta(hours=6)        # §8.0 / C18: start < t <= end + 6 h is post-dialysis
CRRT_ACTIVE_WINDOW = timedelta(hours=24)         # §8.0 C2/C7: CRRT in progress or ended within 24 h
PARATHYROIDECTOMY_WINDOW = timedelta(days=30)    # §8 C2: hungry bone after parathyroidectomy
EGFR_WINDOW = timedelta(days=365)                # section 2.6
EGFR_SUSTAINED = timedelta(days=90)              # KDIGO 2012 chronicity; section 2.7
EGFR_G5, EGFR_G4, EGFR_G3 = 15.0, 30.0, 60.0     # KDIGO 2012 GFR categories
TLS_DX_WINDOW = timedelta(days=14)               # section 2.7 TLS_ACTIVE (D)
TLS_LAB_WINDOW = timedelta(hours=24)             # modified Cairo-Bishop: >= 2 within 24 h
TLS_LAB_RECENCY = timedelta(days=7)              # D: lab TLS only counts while current
TLS_PHOSPHATE_ADULT, TLS_PHOSPHATE_CHILD = 4.5, 6.5  # Cairo-Bishop (Howard et al., NEJM 2011)
TLS_CALCIUM_LOW = 7.0               # section 2.7 TLS_ACTIVE (modified Cairo-Bishop): corrected Ca <= 7.0
TLS_URATE = 8.0                     # section 2.7 TLS_ACTIVE: urate >= 8.0 mg/dL (adults)
TLS_POTASSIUM = 6.0                 # section 2.7 TLS_ACTIVE: K >= 6.0 mmol/L
ADULT_AGE = 18.0                    # Cairo-Bishop adult/child phosphate limit (section 2.7 TLS_ACTIVE)
ALBUMIN_WINDOW = timedelta(days=90)              # D: albumin co-factor must be current

# --- rules -----------------------------------------------------------------------------------------------

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
VITD_TOXIC = 150.0            # Mayo 25HDN / ARUP: "> 150" toxic (R13/R14)

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
MARKER_POTASSIUM_DAYS = 1      # §8 C2: the K marker counts within 24 h
MARKER_IONIZED_DAYS = 1        # §8 C2/C3: ionized Ca < 1.0 mmol/L means within 24 h
LOW_IONIZED_MARKER_MG_DL = 1.0 * CA_MG_PER_MMOL   # ionized 1.0 mmol/L in mg/dL (section 2.2)
LOW_CALCIUM_MARKER_MG_DL = 7.5  # §8 C2: corrected/total Ca < 7.5 mg/dL within 72 h
HYPOPHOSPHATEMIA_DAYS = 3       # §8 C3: the most recent pre-dialysis phosphate within 72 h
HYPOPHOSPHATEMIA_MG_DL = 2.5    # §8 C3 (0.81 mmol/L is only its rounded SI value)
SEVERE_HYPOPHOSPHATEMIA_MG_DL = 1.0   # §8 C3: P < 1.0 mg/dL -> "severe hypophosphatemia"

# R21 (§8 C17)
AKI_RECENT_DAYS = 30            # AKI N17.x with onset <= 30 days
MAGNESIUM_DAYS = 30             # "latest serum Mg" = within 30 days
MAGNESIUM_LLN_MG_DL = 1.7       # default range 1.7-2.4 mg/dL when the lab gives none (D)
MAGNESIUM_ULN_MG_DL = 2.4       # §8 C17: default upper limit 2.4 mg/dL (D)

# R24 (§8 C16)
WARFARIN_HISTORY_DAYS = 90      # no warfarin of any status within 90 days (inpatient warfarin is re-ordered daily)
