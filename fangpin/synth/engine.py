"""Quarter step of the synthetic world and the oracle's Monte-Carlo look-ahead.

A :class:`World` holds the hidden state (person and household arrays). Per quarter:

1. :func:`evolve` draws the quarter's shocks (deaths, illness, disability, accidents, job loss incl. a
   regional downturn, township disasters, failed farming projects, school drop-out, recoveries,
   social-assistance changes) and updates the hidden state;
2. :func:`derive` computes the household's true current income, rigid spending and distress;
3. :func:`event_probs` lists every department event that may be emitted, with its probability
   (incomplete coverage of real shocks plus many harmless events);
4. :func:`hazard` gives the probability that county staff newly identify the household this quarter.

The main simulation draws events and identifications from these; the oracle replicates the state
M times and runs the same functions H quarters ahead, integrating the detection step analytically.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fangpin.synth.model import (
    BENEFIT_GROWTH,
    CHRONIC,
    DIBAO_PP,
    DISAB_SUBSIDY,
    DISABLED,
    E_BIGOOP,
    E_DEATH,
    E_DIBAO_STOP,
    E_DISAB,
    E_DISASTER,
    E_DROP,
    E_HOSP,
    E_HOUSE,
    E_PROJECT,
    E_SERIOUS,
    E_TRAFFIC,
    E_UNEMP,
    FARM_WORK,
    HEALTHY,
    L_WEAK,
    LC_NONE,
    OTHER_AID,
    PENSION,
    PUBJOB,
    S_HIGH,
    S_HVOC,
    S_JUN,
    S_PRIM,
    S_VOC,
    SCHOOL_COST,
    SERIOUS,
    TEKUN_PP,
    W_COUNTY,
    W_NONE,
    W_OUT,
    W_PROV,
    WAGE_GROWTH,
    WAGE_MONTH,
    YULU,
    Rates,
    age_years,
    group_any,
    group_sum,
    household_labour_class,
    labour_code,
    school_stage,
)
from fangpin.synth.population import Geo

REL_HEAD, REL_SPOUSE = 0, 1


@dataclass
class World:
    p: dict  # person arrays
    h: dict  # household arrays
    geo: Geo
    rates: Rates
    reps: int = 1  # number of replicas stacked (oracle look-ahead)
    n0: int = 0  # households per replica
    cache: dict | None = None

    @property
    def n(self) -> int:
        return len(self.h["twp"])

    def replicate(self, m: int, keep_h: np.ndarray) -> World:
        """The state of households ``keep_h`` (and their members), stacked m times."""
        idx = np.nonzero(keep_h)[0]
        newpos = np.full(self.n, -1, np.int64)
        newpos[idx] = np.arange(len(idx))
        pmask = newpos[self.p["hh"]] >= 0
        k = len(idx)
        h = {key: np.tile(v[idx], (m,) + (1,) * (v.ndim - 1)) for key, v in self.h.items()}
        p = {key: np.tile(v[pmask], m) for key, v in self.p.items() if key != "hh"}
        base = newpos[self.p["hh"][pmask]]
        p["hh"] = (base[None, :] + (np.arange(m) * k)[:, None]).ravel()
        h["rep"] = np.repeat(np.arange(m), k)
        return World(p=p, h=h, geo=self.geo, rates=self.rates, reps=m, n0=k, cache=None)


def _ann2q(rate):
    """Quarterly probability from an annual one: 1-(1-r)^(1/4), second-order expansion."""
    r = np.minimum(rate, 0.9)
    return r * (0.25 + 0.09375 * r)


def evolve(w: World, s: int, rng: np.random.Generator, boost: float = 1.0) -> dict:
    """Draw quarter s's shocks and update the hidden state in place. Returns shock records.

    ``boost`` > 1 (oracle look-ahead only) draws the rare shocks (accident, serious illness,
    disability, job loss, township disaster, house damage, project failure) ``boost`` times more
    often and returns, per household, the log likelihood ratio ``lw`` of the path under the true
    rates (importance sampling: unbiased, far less variance for rare shocks). With boost == 1 the
    draws are exactly the plain ones and ``lw`` is 0."""
    R, p, h, geo = w.rates, w.p, w.h, w.geo
    n, P = w.n, len(p["hh"])
    hh = p["hh"]
    lw_p = np.zeros(P)
    lw_h = np.zeros(n)

    def draw(u, q, elig, lw):
        if boost == 1.0:
            return elig & (u < q)
        q = np.broadcast_to(np.asarray(q, float), u.shape)
        qb = np.maximum(np.minimum(q * boost, 0.5), q)
        x = u < qb
        pos = q > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            hit = np.where(pos, np.log(q / qb), 0.0)
            miss = np.log1p(-q) - np.log1p(-qb)
        lw += np.where(elig, np.where(x, hit, miss), 0.0)
        return elig & x & pos
    present = p["alive"] & (p["enter"] <= s)
    newborn = p["enter"] == s
    age = age_years(p["by"], p["bm"], s)
    rnd = rng.random((8, P), dtype=np.float32)
    # --- deaths ---
    q_death = R.mort_a * np.exp(R.mort_b * (age - 30)) * np.where(p["health"] == SERIOUS, R.mort_serious_mult, 1.0)
    acc = draw(rnd[0], _ann2q(R.accident_rate), present & (age >= 16) & (age <= 64), lw_p)
    acc_death = acc & (rnd[1] < 0.35)
    death = present & ((rnd[2] < _ann2q(q_death)) | acc_death) & ~newborn
    acc_dis = acc & ~acc_death & ~death
    # --- illness, disability, recovery ---
    alive_now = present & ~death
    serious_rate = (R.serious_base + R.serious_slope * np.maximum(age - 40, 0)) * np.where(
        p["health"] == CHRONIC, R.serious_chronic_mult, 1.0)
    onset = draw(rnd[3], _ann2q(serious_rate), alive_now & (p["health"] != SERIOUS) & (age >= 5), lw_p)
    dis_new = draw(rnd[4], _ann2q(R.disability_onset), alive_now & (p["health"] != DISABLED) & (age > 50), lw_p)
    dis_new = dis_new | acc_dis
    onset &= ~dis_new
    ill = p["health"] == SERIOUS
    p["ill_q"] = np.where(ill, np.minimum(p["ill_q"] + 1, 100), p["ill_q"]).astype(np.int8)
    recover = alive_now & ill & (p["ill_q"] >= 4) & (rnd[5] < R.serious_recover_q)
    chronic_new = alive_now & (p["health"] == HEALTHY) & (age > 45) & (rnd[6] < _ann2q(R.chronic_onset))
    oop_new = np.zeros(P)
    on_idx = np.nonzero(onset | (dis_new & acc_dis))[0]
    oop_new[on_idx] = np.exp(np.log(R.serious_oop_median) + R.serious_oop_sigma * rng.standard_normal(len(on_idx)))
    oop_new[on_idx] *= np.where(p["med_ins"][on_idx], 1.0, R.uninsured_oop_mult)
    # first-year cost of a serious illness, then a lower continuing cost
    p["oop"] = np.where(ill & (p["ill_q"] == 4), p["oop"] * 0.45, p["oop"])
    p["oop"] = np.where(onset, oop_new, p["oop"])
    p["oop"] = np.where(recover, R.chronic_oop, p["oop"])
    p["oop"] = np.where(chronic_new, R.chronic_oop * np.exp(0.5 * rnd[7] - 0.25), p["oop"])
    p["health"] = np.where(recover, CHRONIC, p["health"])
    p["health"] = np.where(chronic_new, CHRONIC, p["health"])
    p["health"] = np.where(onset, SERIOUS, p["health"])
    p["ill_q"] = np.where(onset, 0, p["ill_q"]).astype(np.int8)
    p["health"] = np.where(dis_new, DISABLED, p["health"]).astype(np.int8)
    p["oop"] = np.where(dis_new & acc_dis, p["oop"] + 0.5 * oop_new, p["oop"])
    p["alive"] = p["alive"] & ~death
    # --- work: job loss (regional downturn) and re-employment ---
    stage, _ = school_stage(p["by"], p["bm"], p["hs_track"], p["post_track"], p["dropped"], s)
    student = stage >= S_PRIM
    lab = labour_code(age, p["health"], p["disab_sev"], p["vigor"], p["skilled"], student)
    wt = work_type(w, lab, age, student)
    working = alive_now & (wt != W_NONE) & ~p["jobless"]
    loss_p = np.where(wt <= W_PROV, R.job_loss_migrant, R.job_loss_local)
    k = s - geo.downturn_quarter
    if 0 <= k < len(R.downturn_loss):
        hit = (h["cty"][hh] == geo.downturn_county) & (wt <= W_PROV)
        loss_p = np.where(hit, R.downturn_loss[k], loss_p)
    if s == R.shift_quarter and R.shift_job_loss > 0:  # injected job-loss wave (synth.shift)
        hit = (h["cty"][hh] == R.shift_county) & (wt <= W_PROV)
        loss_p = np.where(hit, np.maximum(R.shift_job_loss, loss_p), loss_p)
    r2 = rng.random((3, P), dtype=np.float32)
    job_loss = draw(r2[0], loss_p, working, lw_p)
    re_p = R.reemploy + R.reemploy_support * h["emp_support"][hh]
    reemp = p["jobless"] & (r2[1] < re_p)
    p["jobless"] = (p["jobless"] & ~reemp) | job_loss
    # --- school drop-out (poorer households) ---
    drop = alive_now & ((stage == S_JUN) | (stage == S_HIGH) | (stage == S_VOC)) & (h["z"][hh] > 0.8) & (r2[2] < R.dropout)
    p["dropped"] = p["dropped"] | drop
    # --- household shocks: township disasters, house damage, farming projects ---
    T = len(geo.township_names)
    season = R.season[s % 4]
    lw_t = np.zeros((w.reps, T))
    tdis = draw(rng.random((w.reps, T)), geo.exposure[None, :] * season, np.ones((w.reps, T), bool), lw_t)
    rep = h.get("rep", np.zeros(n, np.int64))
    twp_hit = tdis[rep, h["twp"]]
    rh = rng.random((4, n))
    affected = twp_hit & (rh[0] < geo.affected[h["twp"]])
    house = draw(rh[1], np.where(h["unsafe"], R.house_damage_unsafe, R.house_damage), affected, lw_h)
    slot = s % 4
    h["loss"][:, slot] = 0.0
    crop_loss = affected * h["farmland"] * h["yield_mu"] * (0.2 + 0.5 * rh[2])
    house_loss = house * np.exp(np.log(15_000) + 0.6 * rng.standard_normal(n))
    proj_fail = draw(rh[3], R.project_fail, h["has_proj"] & (h["livestock"] > 0), lw_h)
    proj_loss = proj_fail * (h["livestock"] * (1.0 + 2.0 * rh[2]))
    h["loss"][:, slot] = crop_loss + house_loss + proj_loss
    h["unsafe"] = (h["unsafe"] | house) & ~(h["repair_at"] == s)
    h["repair_at"] = np.where(house, s + 2 + (rh[3] * 4).astype(np.int32), h["repair_at"])
    h["livestock"] = np.where(proj_fail, 0.0, h["livestock"])
    restart = h["has_proj"] & (h["livestock"] == 0) & (h["t_proj"] == s - 4)
    h["livestock"] = np.where(restart, np.exp(np.log(4_000) + 0.6 * rh[1]), h["livestock"])
    # --- hidden income fluctuation ---
    h["u"] = R.income_ar * h["u"] + R.income_sd * rng.standard_normal(n)
    # --- shock memory for risk types ---
    h["t_ill"] = np.where(group_any(hh, onset, n), s, h["t_ill"])
    h["t_dis"] = np.where(group_any(hh, dis_new, n), s, h["t_dis"])
    h["t_acc"] = np.where(group_any(hh, acc, n), s, h["t_acc"])
    h["t_job"] = np.where(group_any(hh, job_loss, n), s, h["t_job"])
    h["t_death"] = np.where(group_any(hh, death & (age < 65), n), s, h["t_death"])
    h["t_disaster"] = np.where(affected, s, h["t_disaster"])
    h["t_proj"] = np.where(proj_fail, s, h["t_proj"])
    # --- head of household replaced when the head dies ---
    dead_head = death & (p["rel"] == REL_HEAD)
    if dead_head.any():
        need = group_any(hh, dead_head, n)
        cand = np.nonzero(p["alive"] & (p["enter"] <= s) & need[hh])[0]
        if len(cand):
            score = (p["rel"][cand] == REL_SPOUSE) * 1000 + age[cand]
            order = np.lexsort((-score, hh[cand]))
            c = cand[order]
            _, first = np.unique(hh[c], return_index=True)
            p["rel"][c[first]] = REL_HEAD
    w.cache = dict(s=s, age=age, stage=stage)
    lw = group_sum(hh, lw_p, n) + lw_h + lw_t[rep, h["twp"]] if boost != 1.0 else np.zeros(n)
    return dict(lw=lw, death=death, onset=onset, dis_new=dis_new, acc=acc, job_loss=job_loss, drop=drop,
                affected=affected, house=house, proj_fail=proj_fail, twp_hit=twp_hit,
                crop_loss=crop_loss, house_loss=house_loss, proj_loss=proj_loss, oop_new=oop_new)


def work_type(w: World, lab, age, student):
    """Work status from labour capacity and the person's (fixed) propensity to work away."""
    p, h, geo = w.p, w.h, w.geo
    ms = geo.migshare[h["twp"][p["hh"]]]
    mp = p["mig_pref"]
    able = (lab <= 1) & (age >= 16) & (age <= 64) & ~student
    weak = (lab == L_WEAK) & (age >= 16) & (age <= 69) & ~student
    wt = np.full(len(mp), W_NONE, np.int8)
    wt[able & (mp < ms + 0.7)] = W_COUNTY
    wt[able & (mp < ms)] = W_PROV
    wt[able & (mp < 0.55 * ms)] = W_OUT
    wt[weak & (mp < 0.35)] = W_COUNTY
    return wt


def derive(w: World, s: int, line: float) -> dict:
    """True current (annualised) income, rigid spending and distress of every household."""
    R, p, h = w.rates, w.p, w.h
    n = w.n
    hh = p["hh"]
    present = p["alive"] & (p["enter"] <= s)
    c = getattr(w, "cache", None)
    if c is not None and c["s"] == s:
        age = c["age"]
        stage, _ = school_stage(p["by"], p["bm"], p["hs_track"], p["post_track"], p["dropped"], s) \
            if p["dropped"].any() else (c["stage"], None)
    else:
        age = age_years(p["by"], p["bm"], s)
        stage, _ = school_stage(p["by"], p["bm"], p["hs_track"], p["post_track"], p["dropped"], s)
    student = stage >= S_PRIM
    lab = labour_code(age, p["health"], p["disab_sev"], p["vigor"], p["skilled"], student)
    wt = work_type(w, lab, age, student)
    wt = np.where(p["jobless"], W_NONE, wt)
    months = np.where(wt <= W_PROV, p["months_pref"], np.where(wt == W_COUNTY, 10, 0))
    growth = (1 + WAGE_GROWTH) ** ((s - 8088) / 4)  # 2022Q1 = 8088
    wage = WAGE_MONTH[wt] * months * p["wage_mult"] * growth * np.where(p["skilled"], 1.35, 1.0)
    wage = np.where(lab == L_WEAK, wage * 0.5, wage) * present
    nmem = np.bincount(hh, weights=present, minlength=n)
    lc = household_labour_class(np.where(present, lab, 4), hh, n)
    farm_adult = present & (lab <= L_WEAK) & (age >= 16) & (age <= 75) & (wt == W_NONE)
    farmer = group_any(hh, present & (lab <= L_WEAK) & (age >= 16) & (age <= 75), n)
    farm = h["farmland"] * h["yield_mu"] * growth
    # cash crops, livestock and odd jobs of adults farming at home (weak labour: half)
    farm_work = group_sum(hh, farm_adult * np.where(lab == L_WEAK, 0.5, 1.0), n) * FARM_WORK * growth
    biz_gross = np.where(farmer, farm, 0.0) + farm_work + h["livestock"] + h["biz_support"]
    biz_exp = np.where(farmer, 0.35 * farm, 0.0) + 0.45 * h["livestock"]
    prop = h["prop"] + np.where(farmer, 0.0, h["farmland"] * 300)
    old = present & (age >= 60)  # the basic pension is paid to every resident 60+
    dis = present & (p["health"] == DISABLED)
    voc = present & ((stage == S_VOC) | (stage == S_HVOC))
    bg = (1 + BENEFIT_GROWTH) ** ((s - 8088) / 4)
    trans = (group_sum(hh, old * PENSION * bg, n) + h["dibao"] * DIBAO_PP * bg * nmem + h["tekun"] * TEKUN_PP * bg
             + group_sum(hh, dis * DISAB_SUBSIDY, n) + (h["poor"] | h["mon"]) * group_sum(hh, voc * YULU, n)
             + h["remit"] + h["poor"] * 800.0 + (h["dibao"] | h["tekun"]) * OTHER_AID * bg * nmem)
    wage_hh = group_sum(hh, wage, n) + h["pubjob"] * PUBJOB
    eu = np.exp(h["u"])
    net = (wage_hh + biz_gross - biz_exp) * eu + prop + trans
    oop = group_sum(hh, p["oop"] * present, n) * np.where(h["med_assist"], 0.35, 1.0)
    school = group_sum(hh, SCHOOL_COST[stage] * present, n)
    losses = h["loss"].sum(axis=1)
    burden = oop + school + losses
    nn = np.maximum(nmem, 1)
    pc = net / nn
    pc_disp = (net - burden) / nn
    d_income = pc < line
    # a spending shock: rigid spending from a recent illness, accident, disaster, failed project or
    # a costly school stage takes a large share of income and leaves too little per person
    recent = ((s - h["t_ill"]) < 4) | ((s - h["t_acc"]) < 4) | ((s - h["t_disaster"]) < 4) | ((s - h["t_proj"]) < 4)
    sudden = recent | (school >= 3_500) | group_any(hh, present & (p["health"] == SERIOUS), n)
    d_spend = sudden & (pc_disp < line) & (burden >= R.burden_share * np.maximum(net, 1.0))
    alive_h = nmem > 0
    dibao_net = net - (h["dibao"] * DIBAO_PP * nmem + h["tekun"] * TEKUN_PP) * bg
    return dict(
        present=present, age=age, stage=stage, lab=lab, wt=wt, months=months, wage=wage,
        nmem=nmem, lc=lc, wage_hh=wage_hh * eu, biz_gross=biz_gross * eu, biz_exp=biz_exp * eu,
        prop=prop, trans=trans, net=net, pc=pc, oop=oop, school=school, losses=losses, burden=burden,
        pc_disp=pc_disp, d_income=d_income & alive_h, d_spend=d_spend & alive_h & ~d_income,
        distress=(d_income | d_spend) & alive_h, alive=alive_h, pc_excl=dibao_net / nn, line=line,
    )


def social_assistance(w: World, s: int, d: dict, rng: np.random.Generator) -> np.ndarray:
    """Half-yearly dibao review (Q2, Q4): low-income households without enough labour are taken in, those
    whose income rose are dropped. Returns the households whose dibao stopped."""
    h = w.h
    if s % 2 != 1:  # reviewed every half year (Q2, Q4)
        return np.zeros(w.n, bool)
    r = rng.random((2, w.n))
    low = d["alive"] & (d["pc_excl"] < 1.15 * d["line"]) & (d["lc"] >= 1)
    enter = ~h["dibao"] & ~h["tekun"] & low & (r[0] < np.where(d["lc"] == LC_NONE, 0.9, 0.6))
    stop = h["dibao"] & (d["pc_excl"] > 1.3 * d["line"]) & (r[1] < 0.6)
    h["dibao"] = (h["dibao"] | enter) & ~stop
    single_old = d["alive"] & (d["nmem"] == 1) & (d["lc"] == LC_NONE) & enter & (r[1] < 0.3)
    h["tekun"] = h["tekun"] | single_old
    h["dibao"] = h["dibao"] & ~h["tekun"]
    return stop


def event_probs(w: World, s: int, sh: dict, d: dict, stop: np.ndarray, rng: np.random.Generator,
                mc: bool = False) -> dict:
    """Every department event that may be emitted this quarter: person index, type, probability,
    amount. Real shocks are covered incompletely; harmless events (ordinary hospital stays, small
    bills, elderly deaths, minor disaster losses) are far more numerous."""
    R, p, _h = w.rates, w.p, w.h
    cov = R.coverage
    P = len(p["hh"])
    present = d["present"]
    head = _head_index(w, present)
    out_person, out_type, out_prob, out_amt = [], [], [], []

    def add(idx, etype, prob, amt):
        idx = np.asarray(idx)
        out_person.append(idx)
        out_type.append(np.full(len(idx), etype, np.int8))
        out_prob.append(np.broadcast_to(np.asarray(prob, float), idx.shape).copy())
        out_amt.append(np.broadcast_to(np.asarray(amt, float), idx.shape).copy())

    on = np.nonzero(sh["onset"])[0]
    add(on, E_HOSP, cov["serious_hosp"], np.round(sh["oop_new"][on] * 0.5))
    add(on, E_BIGOOP, cov["serious_bigoop"], np.round(sh["oop_new"][on] * 0.4))
    add(on, E_SERIOUS, cov["serious_flag"], np.nan)
    di = np.nonzero(sh["dis_new"])[0]
    add(di, E_DISAB, cov["disab"], np.nan)
    de = np.nonzero(sh["death"])[0]
    add(de, E_DEATH, cov["death"], np.nan)
    ac = np.nonzero(sh["acc"])[0]
    add(ac, E_TRAFFIC, cov["traffic"], np.nan)
    jl = np.nonzero(sh["job_loss"])[0]
    add(jl, E_UNEMP, cov["unemp"], np.nan)
    dr = np.nonzero(sh["drop"])[0]
    add(dr, E_DROP, cov["drop"], np.nan)
    hd = head
    ok = hd >= 0
    af = np.nonzero(sh["affected"] & ok)[0]
    add(hd[af], E_DISASTER, cov["disaster"], np.round(sh["crop_loss"][af]))
    minor = np.nonzero(sh["twp_hit"] & ~sh["affected"] & ok)[0]
    add(hd[minor], E_DISASTER, cov["disaster_minor"], np.round(rng.uniform(200, 1500, len(minor))))
    ho = np.nonzero(sh["house"] & ok)[0]
    add(hd[ho], E_HOUSE, cov["house"], np.round(sh["house_loss"][ho]))
    pf = np.nonzero(sh["proj_fail"] & ok)[0]
    add(hd[pf], E_PROJECT, cov["project"], np.round(sh["proj_loss"][pf]))
    st = np.nonzero(stop & ok)[0]
    add(hd[st], E_DIBAO_STOP, cov["dibao_stop"], np.nan)
    # harmless events (amounts below the "large bill" threshold of 5,000)
    age = d["age"]
    chronic = p["health"] == CHRONIC
    rate = R.hosp_base + R.hosp_chronic * chronic + R.hosp_old * (age >= 65)
    alive = present & p["alive"]
    rate = 1 - (1 - rate) * (1 - R.bigoop_chronic * chronic) * (1 - R.unemp_noise * ((age >= 18) & (age <= 60)))
    if mc:  # look-ahead: only the probability of an (other) signal matters, per person
        idx = np.nonzero(alive)[0]
        add(idx, E_HOSP, rate[idx], 0.0)
    else:
        r = rng.random(P)
        idx = np.nonzero(alive & (r < R.hosp_base + R.hosp_chronic * chronic + R.hosp_old * (age >= 65)))[0]
        add(idx, E_HOSP, 1.0, np.round(np.minimum(np.exp(np.log(1_200) + 0.6 * rng.standard_normal(len(idx))), 4_800)))
        ci = np.nonzero(alive & chronic & (rng.random(P) < R.bigoop_chronic))[0]
        add(ci, E_BIGOOP, 1.0, np.round(rng.uniform(800, 4_000, len(ci))))
        wi = np.nonzero(alive & (age >= 18) & (age <= 60) & (rng.random(P) < R.unemp_noise))[0]
        add(wi, E_UNEMP, 1.0, np.nan)
    ev = dict(person=np.concatenate(out_person).astype(np.int64), etype=np.concatenate(out_type),
              prob=np.concatenate(out_prob), amount=np.concatenate(out_amt))
    amt = np.nan_to_num(ev["amount"])
    ev["severe"] = (np.isin(ev["etype"], (E_SERIOUS, E_HOUSE, E_DEATH, E_DISASTER, E_DISAB))
                    | (((ev["etype"] == E_HOSP) | (ev["etype"] == E_BIGOOP)) & (amt >= 5_000)))
    # elderly deaths of people who were not earning are signals, but weak ones
    ev["severe"] &= ~((ev["etype"] == E_DEATH) & (d["age"][ev["person"]] >= 70))
    ev["severe"] &= ~((ev["etype"] == E_DISASTER) & (amt < 2_000))
    assert len(ev["person"]) == 0 or ev["person"].max() < P
    return ev


def _head_index(w: World, present):
    """Person index of each household's head (first present member if none is marked)."""
    p = w.p
    n = w.n
    head = np.full(n, -1, np.int64)
    idx = np.nonzero(present)[0][::-1]  # reversed so that the first member wins
    head[p["hh"][idx]] = idx
    hidx = np.nonzero(present & (p["rel"] == REL_HEAD))[0]
    head[p["hh"][hidx]] = hidx
    return head


def signal_probs(w: World, ev: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per household: probability of at least one severe / other department signal this quarter."""
    hh = w.p["hh"][ev["person"]]
    lq = np.log1p(-np.clip(ev["prob"], 0, 1 - 1e-12))
    sev = 1 - np.exp(np.bincount(hh, weights=np.where(ev["severe"], lq, 0.0), minlength=w.n))
    oth = 1 - np.exp(np.bincount(hh, weights=np.where(ev["severe"], 0.0, lq), minlength=w.n))
    return sev, oth


def clue_probs(w: World, s: int, d: dict, sev, oth):
    """Probability of a clue (warning that triggers a home visit) for distressed / other households."""
    R, h, geo = w.rates, w.h, w.geo
    a = geo.det[h["twp"]] * np.where(h["elim"], R.watch_eliminated, 1.0)
    verif = 1.0 if s % 4 == 3 else 0.0
    near = (d["pc"] < 1.2 * d["line"]).astype(float)
    c_d = 1 - (1 - a) * (1 - R.sig_severe * sev) * (1 - R.sig_other * oth) * (1 - R.verif_clue * verif)
    c_n = 1 - ((1 - R.clue_other_base * a / 0.2) * (1 - R.clue_other_severe * sev)
               * (1 - R.clue_other_signal * oth) * (1 - R.clue_other_near * verif * near))
    return c_d, c_n


def hazard(w: World, s: int, d: dict, sev, oth) -> np.ndarray:
    """Probability of being newly identified this quarter (for households not under monitoring)."""
    R = w.rates
    c_d, c_n = clue_probs(w, s, d, sev, oth)
    h = np.where(d["distress"], c_d * R.accept_distressed, c_n * R.accept_other)
    return np.where(d["alive"] & ~w.h["mon"], h, 0.0)


def oracle(w: World, t: int, horizon: int, draws: int, lines, rng: np.random.Generator,
           in_scope: np.ndarray, boost: float = 5.0) -> np.ndarray:
    """True probability of a new identification within t+1..t+horizon for the in-scope households,
    by Monte-Carlo over the next quarters' shocks with the simulation's own :func:`evolve`, and the
    detection step integrated analytically (Rao-Blackwellised) and rare shocks importance-sampled:
    P = mean over draws of sum_k W_k * prod_{j<k} (1 - hazard_j) * hazard_k, W_k the likelihood
    ratio of the path up to quarter k."""
    wr = w.replicate(draws, in_scope)
    surv = np.ones(wr.n)  # P(not identified so far | path)
    logw = np.zeros(wr.n)  # importance weight of the path so far
    total = np.zeros(wr.n)
    for k in range(1, horizon + 1):
        s = t + k
        sh = evolve(wr, s, rng, boost=boost)
        logw += sh["lw"]
        d = derive(wr, s, lines(s))
        stop = social_assistance(wr, s, d, rng)
        ev = event_probs(wr, s, sh, d, stop, rng, mc=True)
        sev, oth = signal_probs(wr, ev)
        hz = hazard(wr, s, d, sev, oth)
        total += np.exp(logw) * surv * hz  # first identification in quarter k
        surv *= 1 - hz
    prob = np.clip(total.reshape(draws, wr.n0).mean(axis=0), 0.0, 1.0)
    out = np.full(w.n, np.nan)
    out[np.nonzero(in_scope)[0]] = prob
    return out
