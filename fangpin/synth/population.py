"""Initial population: geography, households and members (vectorised, from the setup RNG stream).

The set-up depends only on (seed, households, geography sizes, start quarter), never on the number
of quarters generated, so a longer run reproduces a shorter one exactly (prefix stability).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fangpin.contract import RELATIONS
from fangpin.synth import names as nm
from fangpin.synth.model import (
    CHRONIC,
    DISABLED,
    HEALTHY,
    SERIOUS,
    Rates,
)

REL = {r: i for i, r in enumerate(RELATIONS)}
NEWBORN_HORIZON = 64  # quarters after the burn-in start for which births are pre-drawn
BURN_IN = 8  # quarters simulated before the first exported quarter (monitoring began 2020)


@dataclass
class Geo:
    county_names: list[str]
    county_codes: np.ndarray  # (C,) int, 6-digit administrative codes
    township_names: list[str]  # (T,)
    township_county: np.ndarray  # (T,)
    township_codes: np.ndarray  # (T,) 3-digit code within the county
    village_names: list[str]  # (V,)
    village_township: np.ndarray  # (V,)
    det: np.ndarray  # (T,) base quarterly detection probability of distressed households
    exposure: np.ndarray  # (T,) disaster exposure (quarterly probability before season)
    migshare: np.ndarray  # (T,) share of able workers working away
    affected: np.ndarray  # (T,) share of households hit when a disaster strikes
    remote: np.ndarray  # (T,) mean road distance (km)
    level: np.ndarray  # (T,) local income level multiplier
    minority: np.ndarray  # (T,) share of minority households
    minority_group: np.ndarray  # (T,) index into names.ETHNIC_GROUPS
    downturn_county: int
    downturn_quarter: int  # absolute quarter index


def make_geo(rng: np.random.Generator, counties: int, townships: int, villages: int, start_idx: int) -> Geo:
    C, T, _V = counties, counties * townships, counties * townships * villages
    cnames = nm.place_names(rng, C, "县")
    tnames: list[str] = []
    for _ in range(C):  # township names unique within a county
        tnames += nm.place_names(rng, townships, "镇")
    vnames: list[str] = []
    for _ in range(T):
        vnames += nm.place_names(rng, villages, "村")
    codes = 522620 + 1 + np.arange(C)  # fictitious county codes in one prefecture
    tcodes = np.concatenate([np.sort(rng.choice(np.arange(1, 130), townships, replace=False)) for _ in range(C)])
    tcounty = np.repeat(np.arange(C), townships)
    mixed = rng.random(T) < 0.3  # ~30% of townships have a sizeable minority population
    minority = np.where(mixed, rng.uniform(0.2, 0.7, T), rng.uniform(0.0, 0.03, T))
    group = rng.integers(1, len(nm.ETHNIC_GROUPS), C)[tcounty]
    return Geo(
        county_names=cnames, county_codes=codes, township_names=tnames, township_county=tcounty,
        township_codes=tcodes, village_names=vnames, village_township=np.repeat(np.arange(T), villages),
        det=rng.uniform(Rates.det_low, Rates.det_high, T),
        exposure=rng.uniform(0.02, 0.12, T),
        migshare=rng.uniform(0.35, 0.75, T),
        affected=rng.uniform(0.25, 0.6, T),
        remote=rng.uniform(0.5, 5.0, T),
        level=np.exp(rng.normal(0.0, 0.10, T)),
        minority=minority, minority_group=group,
        downturn_county=int(rng.integers(0, C)),
        downturn_quarter=int(start_idx + rng.integers(1, 7)),
    )


def _slots(rng, n):
    """Household composition as 10 candidate slots: head, spouse, 3 children, daughter-in-law,
    2 grandchildren, father, mother. Returns (present[n,10], age[n,10], female[n,10], rel[n,10])."""
    head_age = np.clip(rng.normal(53, 13, n), 22, 90).round()
    age = np.zeros((n, 10))
    present = np.zeros((n, 10), bool)
    female = np.zeros((n, 10), bool)
    rel = np.zeros((n, 10), np.int16)
    present[:, 0] = True
    age[:, 0] = head_age
    female[:, 0] = rng.random(n) < 0.12
    rel[:, 0] = REL["户主"]
    present[:, 1] = rng.random(n) < np.where(head_age < 70, 0.88, 0.62)
    age[:, 1] = np.clip(head_age + rng.normal(-2, 3, n), 18, 95).round()
    female[:, 1] = ~female[:, 0]
    rel[:, 1] = REL["配偶"]
    # children living in the household
    u = rng.random(n)
    nkids = np.where(head_age < 35, (u > 0.3).astype(int) + (u > 0.7),
                     np.where(head_age < 56, (u > 0.1).astype(int) + (u > 0.4) + (u > 0.85),
                              (u > 0.45).astype(int) + (u > 0.8)))
    for k in range(3):
        a = head_age - rng.uniform(22, 34, n) - 2.5 * k
        present[:, 2 + k] = (nkids > k) & (a >= 0)
        age[:, 2 + k] = np.maximum(a, 0).round()
        female[:, 2 + k] = rng.random(n) < 0.47
    # stem family: married son with his wife and children
    stem = (head_age >= 50) & present[:, 2] & (age[:, 2] >= 22) & (rng.random(n) < 0.45)
    female[stem, 2] = False
    present[:, 5] = stem
    age[:, 5] = np.clip(age[:, 2] + rng.normal(-1, 2, n), 18, 80).round()
    female[:, 5] = True
    for k in range(2):
        a = age[:, 2] - rng.uniform(21, 32, n) - 3 * k
        present[:, 6 + k] = stem & (a >= 0) & (rng.random(n) < (0.8 if k == 0 else 0.45))
        age[:, 6 + k] = np.maximum(a, 0).round()
        female[:, 6 + k] = rng.random(n) < 0.47
    # parents of the head
    par = (head_age < 56) & (rng.random(n) < 0.28)
    pa = head_age + rng.uniform(23, 32, n)
    present[:, 8] = par & (pa < 92) & (rng.random(n) < 0.6)
    present[:, 9] = par & (pa < 95)
    age[:, 8] = pa.round()
    age[:, 9] = (pa - 2).round()
    female[:, 9] = True
    for k in range(2, 5):
        rel[:, k] = np.where(female[:, k], REL["之女"], REL["之子"])
    rel[:, 5] = REL["之儿媳"]
    for k in (6, 7):
        rel[:, k] = np.where(female[:, k], REL["之孙女"], REL["之孙子"])
    rel[:, 8] = REL["之父"]
    rel[:, 9] = REL["之母"]
    return present, age, female, rel


def make_population(rng: np.random.Generator, n: int, geo: Geo, s0: int) -> tuple[dict, dict]:
    """Households (dict of arrays, length n) and persons (dict of arrays), state at quarter s0."""
    len(geo.township_names)
    V = len(geo.village_names)
    y0 = s0 // 4
    vil = np.sort(rng.integers(0, V, n)).astype(np.int32)
    twp = geo.village_township[vil].astype(np.int32)
    z = rng.normal(0, 1, n)  # latent poverty propensity (hidden)
    poor = rng.random(n) < 1 / (1 + np.exp(-(1.5 * z - 1.45)))
    minority = rng.random(n) < geo.minority[twp]
    h = dict(
        twp=twp, vil=vil, cty=geo.township_county[twp].astype(np.int32), z=z, poor=poor,
        eth=np.where(minority, geo.minority_group[twp], 0).astype(np.int8),
        farmland=np.round(np.clip(rng.gamma(3.0, 0.8, n) * (1.0 - 0.1 * z), 0.2, 15), 1),
        road=np.round(np.clip(rng.gamma(2.0, geo.remote[twp] / 2), 0.1, 25), 1),
        unsafe=rng.random(n) < 0.008 + 0.01 * (z > 1),
        water_ok=~(rng.random(n) < 0.006 * (1 + geo.remote[twp] / 3)),
        yield_mu=rng.uniform(900, 1_800, n) * geo.level[twp],
        has_proj=rng.random(n) < 0.35,
        # support from children living elsewhere (赡养), larger and more common for older heads
        remit=0.0,
        prop=rng.uniform(80, 450, n).round(),
        u=rng.normal(0, Rates.income_sd / np.sqrt(1 - Rates.income_ar**2), n),
        dibao=np.zeros(n, bool), tekun=np.zeros(n, bool),
        loss=np.zeros((n, 4)),
        t_ill=np.full(n, -99, np.int32), t_dis=np.full(n, -99, np.int32), t_disaster=np.full(n, -99, np.int32),
        t_acc=np.full(n, -99, np.int32), t_proj=np.full(n, -99, np.int32), t_job=np.full(n, -99, np.int32),
        t_death=np.full(n, -99, np.int32), repair_at=np.full(n, -99, np.int32),
        mon=np.zeros(n, bool), mon_since=np.zeros(n, np.int32), mon_cat=np.zeros(n, np.int8),
        risks=np.full((n, 5), -1, np.int8), elim=np.zeros(n, bool), elim_at=np.zeros(n, np.int32),
        elim_mode=np.zeros(n, np.int8), above=np.zeros(n, np.int8), ever=np.zeros(n, bool),
        sup=np.zeros((n, 9), np.int8), pubjob=np.zeros(n, bool), med_assist=np.zeros(n, bool),
        emp_support=np.zeros(n, bool), biz_support=np.zeros(n),
    )
    h["livestock"] = np.where(h["has_proj"], rng.lognormal(np.log(5_000), 0.7, n), 0.0)
    present, age, female, rel = _slots(rng, n)
    old_head = np.clip((age[:, 0] - 50) / 20, 0, 1)
    h["remit"] = np.where(rng.random(n) < 0.45 + 0.45 * old_head,
                          rng.lognormal(np.log(3_000 + 4_000 * old_head), 0.6, n), 0.0) * np.exp(-0.2 * z)
    hh_of = np.repeat(np.arange(n, dtype=np.int32)[:, None], 10, axis=1)
    sel = present.ravel()
    hh = hh_of.ravel()[sel]
    age_p = age.ravel()[sel]
    fem = female.ravel()[sel]
    relp = rel.ravel()[sel].astype(np.int8)
    z[hh]
    # newborns, pre-drawn for a fixed horizon (independent of how many quarters are exported)
    mother = present[:, 1] & female[:, 1] & (age[:, 1] < 40) | (present[:, 5] & (age[:, 5] < 40))
    nb_q = np.where(mother, rng.integers(1, NEWBORN_HORIZON, n), -1)
    nb = mother & (rng.random(n) < 1 - np.exp(-0.06 * NEWBORN_HORIZON / 4 / 3))  # ~0.06/yr for 1/3 of the span
    nb_hh = np.nonzero(nb)[0].astype(np.int32)
    nb_s = (s0 + nb_q[nb]).astype(np.int32)
    nb_f = rng.random(len(nb_hh)) < 0.48
    grand = present[nb_hh, 5]
    nb_rel = np.where(grand, np.where(nb_f, REL["之孙女"], REL["之孙子"]),
                      np.where(nb_f, REL["之女"], REL["之子"])).astype(np.int8)
    P0, Pn = len(hh), len(nb_hh)
    hh_all = np.concatenate([hh, nb_hh])
    order = np.argsort(hh_all, kind="stable")
    # birth dates: existing persons from their age at s0; newborns inside their birth quarter
    by0 = (y0 - age_p - (rng.random(P0) < 0.5)).astype(np.int16)
    bm0 = rng.integers(1, 13, P0).astype(np.int8)
    nb_by = (nb_s // 4).astype(np.int16)
    nb_bm = ((nb_s % 4) * 3 + 1 + rng.integers(0, 3, Pn)).astype(np.int8)
    P = P0 + Pn
    p = dict(
        hh=hh_all, by=np.concatenate([by0, nb_by]), bm=np.concatenate([bm0, nb_bm]),
        bd=rng.integers(1, 29, P).astype(np.int8), female=np.concatenate([fem, nb_f]),
        rel=np.concatenate([relp, nb_rel]),
        enter=np.concatenate([np.full(P0, -1, np.int32), nb_s]),
    )
    p = {k: v[order] for k, v in p.items()}
    zz = z[p["hh"]]
    byr = p["by"].astype(np.int32)
    agep = y0 - byr
    p["eth"] = h["eth"][p["hh"]].copy()
    spouse_other = (p["rel"] == REL["配偶"]) & (rng.random(P) < 0.15)
    p["eth"][spouse_other] = np.where(geo.minority[h["twp"][p["hh"][spouse_other]]] > 0.1,
                                      geo.minority_group[h["twp"][p["hh"][spouse_other]]], 0)
    # education by birth cohort and household poverty
    e = rng.normal(0, 1, P) - 0.4 * zz + (byr - 1965) / 15
    p["edu"] = np.digitize(e, [-1.6, -0.5, 0.7, 1.4, 1.9]).astype(np.int8)
    hs = rng.random(P)
    p["hs_track"] = np.where(hs < 0.55 - 0.08 * zz, 1, np.where(hs < 0.9 - 0.03 * zz, 2, 0)).astype(np.int8)
    ps = rng.random(P)
    p["post_track"] = np.where(p["hs_track"] == 1, np.where(ps < 0.45, 2, np.where(ps < 0.8, 1, 0)),
                               np.where(p["hs_track"] == 2, np.where(ps < 0.3, 1, 0), 0)).astype(np.int8)
    p["dropped"] = np.zeros(P, bool)
    # health by age and household poverty
    r = rng.random(P)
    pc = np.clip(0.04 + 0.006 * np.maximum(agep - 30, 0) + 0.03 * zz, 0, 0.7)
    ps_ = np.clip(0.004 + 0.0002 * agep + 0.004 * (zz > 1), 0, 0.05)
    pd_ = np.clip(0.015 + 0.0004 * agep + 0.012 * zz, 0, 0.2)
    health = np.full(P, HEALTHY, np.int8)
    health[r < pc] = CHRONIC
    health[(r >= pc) & (r < pc + pd_)] = DISABLED
    health[(r >= pc + pd_) & (r < pc + pd_ + ps_)] = SERIOUS
    p["health"] = health
    p["disab_sev"] = rng.random(P) < 0.6
    p["vigor"] = rng.random(P)
    p["skilled"] = rng.random(P) < np.clip(0.28 - 0.1 * zz, 0.02, 0.6)
    p["mig_pref"] = np.clip(rng.random(P) + 0.12 * zz + 0.012 * np.maximum(agep - 35, 0), 0, 1.5)
    p["wage_mult"] = rng.lognormal(0, 0.25, P) * np.exp(-0.08 * zz)
    p["months_pref"] = rng.integers(8, 12, P).astype(np.int8)
    p["jobless"] = rng.random(P) < 0.03
    p["ill_q"] = np.where(health == SERIOUS, rng.integers(0, 8, P), -1).astype(np.int8)
    p["med_ins"] = rng.random(P) < 0.955
    p["pen_ins"] = (agep >= 16) & (rng.random(P) < 0.88)
    oop = np.zeros(P)
    oop[health == CHRONIC] = rng.lognormal(np.log(Rates.chronic_oop), 0.5, (health == CHRONIC).sum())
    oop[health == SERIOUS] = rng.lognormal(np.log(Rates.serious_oop_median * 0.5), 0.6, (health == SERIOUS).sum())
    p["oop"] = oop
    p["alive"] = np.ones(P, bool)
    p["surname"] = np.zeros(P, np.int16)
    return h, p
