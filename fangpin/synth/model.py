"""The synthetic world: rates, codes and the hidden-state dynamics (vectorised numpy).

Everything here works on flat arrays: person arrays (length P, each person points to its household
through ``hh``) and household arrays (length N). The same functions run the main simulation and
the oracle's Monte-Carlo look-ahead (on the state replicated M times), so the oracle uses exactly
the simulation's own dynamics. Rates and their sources/assumptions are documented in
docs/synthetic-data.md; the numbers live in :class:`Rates`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fangpin.contract import LABOR_CLASS, LABOR_CLASSES, LABOR_SKILL

# ---- codes (indices into fangpin.contract value tuples) ---------------------------------------
HEALTHY, CHRONIC, SERIOUS, DISABLED = 0, 1, 2, 3  # contract.HEALTH
L_NORMAL, L_SKILLED, L_WEAK, L_LOST, L_NONE = 0, 1, 2, 3, 4  # contract.LABOR_SKILL
W_OUT, W_PROV, W_COUNTY, W_NONE = 0, 1, 2, 3  # contract.WORK_STATUS
# school stages: 0 not in school, 1 preschool, 2 primary, 3 junior, 4 senior high, 5 vocational
# secondary (中职), 6 higher vocational (高职高专), 7 university (本科及以上)
S_NONE, S_PRE, S_PRIM, S_JUN, S_HIGH, S_VOC, S_HVOC, S_UNI = range(8)
# household labour class (by best member): indices into contract.LABOR_CLASSES
LC_WITH, LC_WEAK, LC_NONE = (LABOR_CLASSES.index(c) for c in ("有劳动力", "弱劳动力", "无劳动力"))
# each 劳动技能 code's labour class (contract.LABOR_CLASS, the one mapping)
SKILL_CLASS = np.array([LABOR_CLASSES.index(LABOR_CLASS[s]) for s in LABOR_SKILL], dtype=np.int8)

# risk types, indices into contract.RISK_TYPES
R_ILL, R_DIS, R_EDU, R_DISASTER, R_ACCIDENT, R_PROJECT, R_JOB, R_LABOUR, R_HOUSE, R_WATER, R_OTHER = range(11)

# event types, indices into contract.EVENT_TYPES
E_HOSP, E_BIGOOP, E_SERIOUS, E_DISAB, E_HOUSE, E_DISASTER, E_TRAFFIC, E_UNEMP, E_DEATH, E_DROP, E_DIBAO_STOP, E_PROJECT = range(12)
# event type -> department index (contract.DEPARTMENTS: 医保 民政 残联 住建 应急管理 教育 人社 公安 卫健 农业农村)
EVENT_DEPT = np.array([0, 0, 8, 2, 3, 4, 7, 6, 7, 5, 1, 9], dtype=np.int8)
SEVERE_EVENTS = (E_SERIOUS, E_HOUSE, E_DEATH, E_DISASTER)


@dataclass(frozen=True)
class Rates:
    """Simulation rates. Annual rates are converted to quarterly inside the dynamics."""

    # mortality: annual q(age) = a * exp(b * (age - 30)), x serious illness multiplier
    mort_a: float = 0.0006
    mort_b: float = 0.085
    mort_serious_mult: float = 4.0
    # serious illness onset, annual: base + slope * max(age - 40, 0); x chronic multiplier
    serious_base: float = 0.003
    serious_slope: float = 0.0004
    serious_chronic_mult: float = 2.0
    serious_oop_median: float = 10_000.0  # compliant out-of-pocket in the first year (insured)
    serious_oop_sigma: float = 0.7
    uninsured_oop_mult: float = 2.0
    serious_recover_q: float = 0.25  # per quarter after the first year
    chronic_onset: float = 0.012  # annual, age > 45
    chronic_oop: float = 1_200.0
    disability_onset: float = 0.0015  # annual, age > 50, illness-related
    accident_rate: float = 0.0025  # annual, age 16-64: 65% disability, 35% death
    # migrant/local job loss per quarter, re-employment per quarter
    job_loss_migrant: float = 0.02
    job_loss_local: float = 0.01
    reemploy: float = 0.35
    reemploy_support: float = 0.25
    downturn_loss: tuple[float, float] = (0.22, 0.10)  # first and second quarter of the downturn
    # injected known shift (params synth.shift; -1: none): a job-loss wave in one county, one quarter
    shift_quarter: int = -1  # absolute quarter index
    shift_county: int = 0
    shift_job_loss: float = 0.0  # share of that county's migrant workers losing their job
    # township disasters: quarterly probability = exposure * season
    season: tuple[float, float, float, float] = (0.3, 1.0, 1.4, 0.3)
    house_damage: float = 0.05
    house_damage_unsafe: float = 0.25
    project_fail: float = 0.006  # per quarter for households with a farming project
    dropout: float = 0.004  # per quarter, junior/senior high students of low-income households
    income_ar: float = 0.80  # AR(1) of the hidden log-income fluctuation
    income_sd: float = 0.09  # its quarterly innovation
    # identification (clue -> verification)
    det_low: float = 0.05  # township base detection of distressed households, per quarter
    det_high: float = 0.22
    sig_severe: float = 0.45  # a severe department signal raises the clue probability
    sig_other: float = 0.12
    verif_clue: float = 0.30  # annual income verification (Q4) finds distress
    watch_eliminated: float = 1.5  # eliminated households are still watched
    accept_distressed: float = 0.92  # verification confirms a clue on a distressed household
    accept_other: float = 0.05  # ... on a household not in distress (self-application etc.)
    clue_other_base: float = 0.002  # clue rate of non-distressed households (scaled by township)
    clue_other_severe: float = 0.20
    clue_other_signal: float = 0.02
    clue_other_near: float = 0.15  # at verification, income within 20% above the line
    # elimination
    eliminate_q: float = 0.6  # per quarter once >= 2 quarters above the line
    # spending-shock distress: burden >= share of income and disposable per capita below line
    burden_share: float = 0.25
    # ledger lag: per quarter chance that a person's fields are re-synced outside verification
    person_sync: float = 0.10
    # harmless department events
    hosp_base: float = 0.010  # ordinary hospital stays, per person per quarter
    hosp_chronic: float = 0.035
    hosp_old: float = 0.010  # extra, age >= 65
    bigoop_chronic: float = 0.020
    unemp_noise: float = 0.0015
    ghost_share: float = 0.02  # events about people not in the ledger (moved away)
    coverage: dict = field(default_factory=lambda: {
        "serious_hosp": 0.70, "serious_bigoop": 0.55, "serious_flag": 0.40, "disab": 0.50,
        "death": 0.90, "traffic": 0.35, "disaster": 0.60, "house": 0.70, "unemp": 0.15,
        "project": 0.35, "drop": 0.80, "dibao_stop": 0.90, "disaster_minor": 0.12,
    })


SCHOOL_COST = np.array([0, 1_500, 600, 900, 3_500, 2_500, 6_000, 8_000], dtype=float)  # per year
WAGE_MONTH = np.array([4_600.0, 3_900.0, 2_900.0, 0.0])  # by work type, 2022 level
PENSION = 2_100.0  # basic pension, per person 60+ per year (2022 level)
BENEFIT_GROWTH = 0.06  # yearly rise of dibao, tekun and pension standards
DIBAO_PP = 5_400.0  # rural dibao per person per year (2022 level)
TEKUN_PP = 8_400.0
OTHER_AID = 1_500.0  # other aid of assisted households per person (临时救助, 高龄/残疾补贴, 分红)
DISAB_SUBSIDY = 1_200.0
YULU = 3_000.0  # 雨露计划 per vocational student per year
PUBJOB = 6_000.0  # public-welfare job per year
WAGE_GROWTH = 0.04  # per year
FARM_WORK = 9_000.0  # net-ish yearly earnings of an adult farming at home (cash crops, livestock, odd jobs)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def qdate(s: int) -> tuple[int, int]:
    """(year, month) of the end of absolute quarter index s."""
    return s // 4, (s % 4) * 3 + 3


def age_years(by, bm, s: int):
    y, m = qdate(s)
    return ((y * 12 + m) - (by.astype(np.int32) * 12 + bm)) // 12


def school_stage(by, bm, hs_track, post_track, dropped, s: int):
    """(stage, grade) at the end of quarter s, from birth date and the person's school tracks."""
    y, m = qdate(s)
    start_year = y if m >= 9 else y - 1
    entry = by.astype(np.int32) + 6 + (bm >= 9)
    grade = start_year - entry + 1
    stage = np.zeros(len(by), dtype=np.int8)
    age_m = (y * 12 + m) - (by.astype(np.int32) * 12 + bm)
    stage[(grade <= 0) & (age_m >= 36)] = S_PRE
    stage[(grade >= 1) & (grade <= 6)] = S_PRIM
    stage[(grade >= 7) & (grade <= 9)] = S_JUN
    sec = (grade >= 10) & (grade <= 12)
    stage[sec & (hs_track == 1)] = S_HIGH
    stage[sec & (hs_track == 2)] = S_VOC
    post = grade >= 13
    stage[post & (post_track == 1) & (grade <= 15)] = S_HVOC
    stage[post & (post_track == 2) & (grade <= 16)] = S_UNI
    stage[dropped] = S_NONE
    return stage, grade


def labour_code(age, health, disab_severe, vigor, skilled, student):
    """True labour capacity from age, health and the person's latent vigour (contract codes)."""
    lab = np.where(skilled, L_SKILLED, L_NORMAL).astype(np.int8)
    older = (age >= 60) & (age < 70)
    lab[older & (vigor < 0.6)] = L_WEAK
    lab[(health == CHRONIC) & ((age >= 50) | (vigor < 0.35))] = L_WEAK
    lab[(health == SERIOUS)] = L_LOST
    lab[(health == DISABLED) & disab_severe] = L_LOST
    lab[(health == DISABLED) & ~disab_severe & (lab < L_WEAK)] = L_WEAK
    # older people who still farm are recorded as weak labour; the very old, or old and seriously
    # ill or severely disabled, as no labour
    lab[(age >= 70) & (lab < L_WEAK)] = L_WEAK
    lab[(age < 16) | student | (age >= 76)] = L_NONE
    lab[(age >= 65) & (lab == L_LOST)] = L_NONE
    return lab


def household_labour_class(lab, hh, n):
    """Household class by its best member (contract.LABOR_CLASS of each member's 劳动技能)."""
    best = np.full(n, 9, dtype=np.int8)
    cls = SKILL_CLASS[lab]
    np.minimum.at(best, hh, cls)
    best[best == 9] = LC_NONE
    return best


def group_sum(hh, w, n):
    return np.bincount(hh, weights=w, minlength=n)


def group_any(hh, mask, n):
    return np.bincount(hh, weights=mask.astype(np.float64), minlength=n) > 0
