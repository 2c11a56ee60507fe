"""Run the simulation: set-up, burn-in, quarter steps, identification, elimination, ledger updates.

Randomness: one numpy ``SeedSequence(seed, spawn_key=(stream, quarter_index))`` per purpose and
absolute quarter, so quarter t's draws never depend on how many quarters are generated (prefix
stability) and the oracle's look-ahead never disturbs the main simulation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from fangpin.synth import engine as E
from fangpin.synth import names as nm
from fangpin.synth.model import (
    CHRONIC,
    DISABLED,
    LC_NONE,
    LC_WEAK,
    LC_WITH,
    R_ACCIDENT,
    R_DIS,
    R_DISASTER,
    R_EDU,
    R_HOUSE,
    R_ILL,
    R_JOB,
    R_LABOUR,
    R_OTHER,
    R_PROJECT,
    R_WATER,
    S_HVOC,
    S_VOC,
    SERIOUS,
    Rates,
)
from fangpin.synth.population import BURN_IN, REL, make_geo, make_population

STREAM_SETUP, STREAM_MAIN, STREAM_ORACLE = 0, 1, 2
STREAM_PROVINCE, STREAM_COUNTY_SEED = 3, 4  # a province generated county by county (write.generate_by_county)
_W = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2])
_CHECK = np.frombuffer(b"10X98765432", dtype=np.uint8)

# support measure texts (index 1.. into each list; 0 = blank), columns in contract.SUPPORT_HEADERS order
SUPPORT_TEXT = (
    ("", "产业奖补", "发展养殖", "到户产业项目"),  # 产业帮扶
    ("", "务工交通补助", "技能培训", "就业推荐"),  # 就业帮扶
    ("", "护林员", "保洁员", "护路员"),  # 公益岗位帮扶
    ("", "城乡居民基本医疗保险个人缴费补贴", "大病救助", "家庭医生签约服务"),  # 健康帮扶
    ("", "雨露计划", "助学金"),  # 教育帮扶
    ("", "低保", "低保、残疾人补贴", "特困供养"),  # 综合保障
    ("", "小额信贷",),  # 金融帮扶
    ("", "结对帮扶", "慈善救助"),  # 社会帮扶
    ("", "易地扶贫搬迁",),  # 搬迁
)


def rng_for(seed: int, stream: int, s: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream, s)))


def make_ids(region: np.ndarray, by, bm, bd, seq) -> np.ndarray:
    """18-character resident IDs (GB 11643) with a valid check character, vectorised."""
    n = len(region)
    digits = np.zeros((n, 17), np.int64)
    for k, (val, width) in enumerate(((region, 6), (by, 4), (bm, 2), (bd, 2), (seq, 3))):
        off = sum(w_ for _, w_ in ((region, 6), (by, 4), (bm, 2), (bd, 2), (seq, 3))[:k])
        v = np.asarray(val, np.int64)
        for j in range(width):
            digits[:, off + j] = (v // 10 ** (width - 1 - j)) % 10
    arr = np.zeros((n, 18), np.uint8)
    arr[:, :17] = digits + 48
    arr[:, 17] = _CHECK[(digits @ _W) % 11]
    return arr.view("S18").ravel().astype(str)


@dataclass
class QuarterOut:
    s: int
    persons: np.ndarray  # person indices in the snapshot
    d: dict
    events: dict  # emitted events of the quarter
    oracle: np.ndarray | None
    in_scope: np.ndarray
    stats: dict


@dataclass(frozen=True)
class CountyOf:
    """One county of a province simulated on its own (``write.generate_by_county``): its name and
    code come from the province, so they are unique across the province's counties, and so does
    the one regional downturn (``downturn``: this county has it)."""

    name: str
    code: int
    downturn: bool
    downturn_quarter: int


@dataclass
class Simulation:
    seed: int
    households: int
    start_idx: int
    lines: Callable[[int], float]
    counties: int = 3
    townships: int = 8
    villages: int = 12
    horizon: int = 2
    oracle_draws: int = 24
    rates: Rates = field(default_factory=Rates)
    county: CountyOf | None = None  # one county of a province (then counties == 1)

    def setup(self) -> None:
        rng = rng_for(self.seed, STREAM_SETUP, 0)
        self.s0 = self.start_idx - BURN_IN
        geo = make_geo(rng, self.counties, self.townships, self.villages, self.start_idx)
        if self.county is not None:
            c = self.county
            geo = replace(geo, county_names=[c.name], county_codes=np.array([c.code]),
                          downturn_county=0 if c.downturn else -1, downturn_quarter=c.downturn_quarter)
        h, p = make_population(rng, self.households, geo, self.s0)
        self.w = E.World(p=p, h=h, geo=geo, rates=self.rates, n0=self.households)
        self._identity(rng)
        n, P = self.households, len(p["hh"])
        self.L = dict(pc=np.zeros(n), wage=np.zeros(n), biz=np.zeros(n), prop=np.zeros(n),
                      trans=np.zeros(n), exp=np.zeros(n), oop=np.zeros(n), unsafe=np.zeros(n, bool),
                      water=np.ones(n, bool), health=np.zeros(P, np.int8), lab=np.zeros(P, np.int8),
                      work=np.zeros(P, np.int8), months=np.zeros(P, np.int8))
        # initial state: the monitoring mechanism starts (2020); households in distress at s0 are
        # identified with a probability, dibao for low-income households without labour
        s = self.s0
        d = E.derive(self.w, s, self.lines(s))
        hw = self.w.h
        low = d["alive"] & (d["pc_excl"] < 1.3 * d["line"]) & (d["lc"] >= LC_WEAK)
        hw["dibao"] = low & (rng.random(n) < 0.85)
        hw["tekun"] = low & (d["nmem"] == 1) & (d["lc"] == LC_NONE) & (rng.random(n) < 0.4)
        hw["dibao"] &= ~hw["tekun"]
        d = E.derive(self.w, s, self.lines(s))
        ident = d["distress"] & (rng.random(n) < 0.6)
        self._identify(ident, d, s, rng)
        self._sync_income(np.ones(n, bool), d)
        self._sync_persons(np.ones(P, bool), d)

    def _identity(self, rng) -> None:
        """Names, ID numbers and household numbers (fixed for the whole run)."""
        p, h, geo = self.w.p, self.w.h, self.w.geo
        P, n = len(p["hh"]), self.households
        sur_h = rng.choice(len(nm.SURNAMES), size=n, p=nm.SURNAME_WEIGHTS)
        own = np.isin(p["rel"], [REL[r] for r in ("户主", "之子", "之女", "之孙子", "之孙女", "之父")])
        sur = np.where(own, sur_h[p["hh"]], rng.choice(len(nm.SURNAMES), size=P, p=nm.SURNAME_WEIGHTS))
        self.names = nm.person_names(rng, sur, p["female"])
        region = geo.county_codes[h["cty"][p["hh"]]]
        key_base = region.astype(np.int64) * 10**11 + p["by"].astype(np.int64) * 10**7 + p["bm"].astype(np.int64) * 10**5 + p["bd"].astype(np.int64) * 10**3
        seq = rng.integers(0, 500, P) * 2 + (~p["female"]).astype(int)
        for _ in range(20):  # resolve the rare duplicate (same county, birth date, sequence)
            key = key_base + seq
            _, first, counts = np.unique(key, return_index=True, return_counts=True)
            dup = np.ones(P, bool)
            dup[first] = False
            if not dup.any():
                break
            seq[dup] = rng.integers(0, 500, dup.sum()) * 2 + (~p["female"][dup]).astype(int)
        self.ids = make_ids(region, p["by"], p["bm"], p["bd"], seq)
        self.birth = np.char.add(np.char.add(np.char.add(p["by"].astype(str), "-"),
                                             np.char.add(np.char.zfill(p["bm"].astype(str), 2), "-")),
                                 np.char.zfill(p["bd"].astype(str), 2))
        tcode = geo.township_codes[h["twp"]]
        self.hh_ids = np.char.add(np.char.add(geo.county_codes[h["cty"]].astype(str),
                                              np.char.zfill(tcode.astype(str), 3)),
                                  np.char.zfill(np.arange(n).astype(str), 6))
        self.region_codes = geo.county_codes

    # ---- identification, support, elimination ------------------------------------------------
    def _risks(self, sel: np.ndarray, d: dict, s: int) -> np.ndarray:
        """Up to five risk types per selected household, from its actual shocks and conditions,
        strongest first (as a cadre would record them)."""
        h, p = self.w.h, self.w.p
        n = self.w.n
        hh = p["hh"]
        pres = d["present"]
        serious = E.group_any(hh, pres & (p["health"] == SERIOUS), n)
        disabled = E.group_any(hh, pres & (p["health"] == DISABLED), n)
        recent = lambda t: (s - t) < 4  # noqa: E731
        score = np.zeros((n, 11))
        score[:, R_ILL] = (serious * 3 + d["oop"] / 4000) * ((d["oop"] >= 3000) | serious)
        score[:, R_DIS] = disabled * (2.5 + 2 * recent(h["t_dis"]))
        score[:, R_EDU] = (d["school"] / 2500) * (d["school"] >= 4000)
        score[:, R_DISASTER] = recent(h["t_disaster"]) * (1 + h["loss"].sum(1) / 5000)
        score[:, R_ACCIDENT] = recent(h["t_acc"]) * 4.5
        score[:, R_PROJECT] = recent(h["t_proj"]) * 3.5
        score[:, R_JOB] = (recent(h["t_job"]) | E.group_any(hh, pres & p["jobless"], n)) * 3.2
        score[:, R_LABOUR] = np.where(d["lc"] == LC_NONE, 3.0, np.where(d["lc"] == LC_WEAK, 2.2, 0.0))
        score[:, R_HOUSE] = h["unsafe"] * 2.0
        score[:, R_WATER] = ~h["water_ok"] * 1.5
        score = score[sel]
        score += 0.3 * np.random.default_rng(s).random(score.shape) * (score > 0)
        order = np.argsort(-score, axis=1)[:, :5]
        top = np.take_along_axis(score, order, axis=1)
        out = np.where(top > 0, order, -1).astype(np.int8)
        out[(out[:, 0] == -1), 0] = R_OTHER
        keep = np.arange(5)[None, :] < np.where(top[:, 2] > 2.5, 3, 2)[:, None] + (top[:, 3] > 3.5)[:, None]
        return np.where(keep, out, -1).astype(np.int8)

    def _identify(self, ident: np.ndarray, d: dict, s: int, rng) -> None:
        h = self.w.h
        n = self.w.n
        if not ident.any():
            return
        y, q = s // 4, s % 4
        month = q * 3 + 1 + rng.integers(0, 3, n)
        h["mon_since"] = np.where(ident, y * 100 + month, h["mon_since"])
        cat = np.where(d["d_spend"] & ~d["d_income"], 3, np.where(h["poor"], 1, 2))
        h["mon_cat"] = np.where(ident, cat, h["mon_cat"]).astype(np.int8)
        h["risks"][ident] = self._risks(ident, d, s)
        h["mon"] |= ident
        h["elim"] &= ~ident
        h["elim_at"] = np.where(ident, 0, h["elim_at"])
        h["elim_mode"] = np.where(ident, 0, h["elim_mode"]).astype(np.int8)
        h["above"] = np.where(ident, 0, h["above"]).astype(np.int8)
        h["ever"] |= ident
        self._support(ident, d, s, rng)

    def _support(self, sel: np.ndarray, d: dict, s: int, rng) -> None:
        """Support measures by labour class (缺什么补什么, Pinggui)."""
        h, p = self.w.h, self.w.p
        n = self.w.n
        hh = p["hh"]
        r = rng.random((8, n))
        pick = lambda k: 1 + rng.integers(0, len(SUPPORT_TEXT[k]) - 1, n)  # noqa: E731
        lc = d["lc"]
        sup = h["sup"]
        none, weak, withl = sel & (lc == LC_NONE), sel & (lc == LC_WEAK), sel & (lc == LC_WITH)
        new_dibao = none & ~h["tekun"] & (r[0] < 0.8)
        h["dibao"] |= new_dibao
        disabled = E.group_any(hh, d["present"] & (p["health"] == DISABLED), n)
        social = np.where(h["tekun"], 3, np.where(disabled, 2, 1))
        sup[:, 5] = np.where(sel & (h["dibao"] | h["tekun"]), social, sup[:, 5])
        pub = (weak & (r[1] < 0.6)) | (withl & (r[1] < 0.3))
        h["pubjob"] |= pub
        sup[:, 2] = np.where(pub, pick(2), sup[:, 2])
        ind = (weak & (r[2] < 0.4)) | (withl & (r[2] < 0.3))
        h["biz_support"] = np.where(ind, h["biz_support"] + 3_000, h["biz_support"])
        sup[:, 0] = np.where(ind, pick(0), sup[:, 0])
        emp = withl & (r[3] < 0.7)
        h["emp_support"] |= emp
        sup[:, 1] = np.where(emp, pick(1), sup[:, 1])
        ill = E.group_any(hh, d["present"] & ((p["health"] == SERIOUS) | (p["health"] == CHRONIC)), n)
        med = sel & ill & (r[4] < 0.85)
        h["med_assist"] |= med
        sup[:, 3] = np.where(med, pick(3), sup[:, 3])
        voc = E.group_any(hh, d["present"] & ((d["stage"] == S_VOC) | (d["stage"] == S_HVOC)), n)
        sup[:, 4] = np.where(sel & voc, 1, sup[:, 4])
        fin = withl & (r[5] < 0.12)
        h["biz_support"] = np.where(fin, h["biz_support"] + 1_500, h["biz_support"])
        sup[:, 6] = np.where(fin, 1, sup[:, 6])
        sup[:, 7] = np.where(sel & (r[6] < 0.25), pick(7), sup[:, 7])
        h["repair_at"] = np.where(sel & h["unsafe"], s + 1, h["repair_at"])
        h["water_ok"] |= sel & (r[7] < 0.7)

    def _eliminate(self, d: dict, s: int, rng, mon_before: np.ndarray) -> np.ndarray:
        h = self.w.h
        n = self.w.n
        above = ~d["distress"] & d["alive"]
        h["above"] = np.where(mon_before, np.where(above, h["above"] + 1, 0), h["above"]).astype(np.int8)
        # no-labour households whose income is above the line only thanks to 低保/特困 depend on
        # social protection: they are not marked eliminated (domain.md)
        protected = (d["lc"] == LC_NONE) & (h["dibao"] | h["tekun"]) & (d["pc_excl"] < d["line"])
        r = rng.random((3, n))
        elim = mon_before & (h["above"] >= 2) & ~protected & (r[0] < self.rates.eliminate_q)
        y, q = s // 4, s % 4
        h["mon"] &= ~elim
        h["elim"] |= elim
        h["elim_at"] = np.where(elim, y * 100 + q * 3 + 1 + (r[1] * 3).astype(int), h["elim_at"])
        helped = h["pubjob"] | h["emp_support"] | (h["biz_support"] > 0) | h["med_assist"] | h["dibao"]
        h["elim_mode"] = np.where(elim, np.where(helped & (r[2] < 0.9), 1, 2), h["elim_mode"]).astype(np.int8)
        end = elim & (r[2] < 0.5)
        h["pubjob"] &= ~end
        h["emp_support"] &= ~elim
        h["med_assist"] &= ~elim
        h["biz_support"] = np.where(elim, h["biz_support"] * 0.5, h["biz_support"])
        # households that died out leave monitoring
        h["mon"] &= d["alive"]
        return elim

    # ---- ledger (what county staff have recorded) --------------------------------------------
    def _sync_income(self, sel: np.ndarray, d: dict) -> None:
        L = self.L
        L["wage"] = np.where(sel, np.round(d["wage_hh"]), L["wage"])
        L["biz"] = np.where(sel, np.round(d["biz_gross"]), L["biz"])
        L["prop"] = np.where(sel, np.round(d["prop"]), L["prop"])
        L["trans"] = np.where(sel, np.round(d["trans"]), L["trans"])
        L["exp"] = np.where(sel, np.round(d["biz_exp"]), L["exp"])
        L["oop"] = np.where(sel, np.round(d["oop"]), L["oop"])
        L["pc"] = np.where(sel, np.round(d["net"] / np.maximum(d["nmem"], 1), 2), L["pc"])
        L["unsafe"] = np.where(sel, self.w.h["unsafe"], L["unsafe"])
        L["water"] = np.where(sel, self.w.h["water_ok"], L["water"])

    def _sync_persons(self, sel: np.ndarray, d: dict) -> None:
        L = self.L
        L["health"] = np.where(sel, self.w.p["health"], L["health"])
        L["lab"] = np.where(sel, d["lab"], L["lab"])
        L["work"] = np.where(sel, d["wt"], L["work"])
        L["months"] = np.where(sel, d["months"], L["months"])

    # ---- the quarter step ----------------------------------------------------------------------
    def step(self, s: int, want_oracle: bool) -> QuarterOut:
        w, R = self.w, self.rates
        h, p = w.h, w.p
        n, P = w.n, len(p["hh"])
        rng = rng_for(self.seed, STREAM_MAIN, s)
        line = self.lines(s)
        sh = E.evolve(w, s, rng)
        d = E.derive(w, s, line)
        stop = E.social_assistance(w, s, d, rng)
        ev = E.event_probs(w, s, sh, d, stop, rng)
        emitted = rng.random(len(ev["prob"])) < ev["prob"]
        ev = {k: v[emitted] for k, v in ev.items()}
        ev_hh = p["hh"][ev["person"]]
        sev = np.bincount(ev_hh, weights=ev["severe"], minlength=n) > 0
        oth = np.bincount(ev_hh, weights=~ev["severe"], minlength=n) > 0
        c_d, c_n = E.clue_probs(w, s, d, sev.astype(float), oth.astype(float))
        in_scope_before = d["alive"] & ~h["mon"]
        r = rng.random((2, n))
        clue = in_scope_before & (r[0] < np.where(d["distress"], c_d, c_n))
        ident = clue & (r[1] < np.where(d["distress"], R.accept_distressed, R.accept_other))
        reident = ident & h["ever"]
        mon_before = h["mon"] & d["alive"]
        lc_new = d["lc"][ident]
        risk1_new = None
        self._identify(ident, d, s, rng)
        risk1_new = h["risks"][ident, 0].copy()
        elim = self._eliminate(d, s, rng, mon_before)
        # ledger: annual verification in Q4 for everyone, quarterly for monitored households,
        # at identification; person fields with a lag
        verif = s % 4 == 3
        # an injected job-loss wave (synth.shift) is followed by a county-wide check (集中排查)
        # that records the hit county's households at once
        swept = (h["cty"] == R.shift_county) if (s == R.shift_quarter and R.shift_job_loss > 0) else np.zeros(n, bool)
        self._sync_income(np.full(n, verif) | h["mon"] | ident | swept, d)
        evp = np.zeros(P, bool)
        evp[ev["person"]] = True
        psel = (np.full(P, verif) | (h["mon"] | ident | swept)[p["hh"]] | (rng.random(P) < R.person_sync)
                | (evp & (rng.random(P) < 0.5)))
        self._sync_persons(psel, d)
        in_scope = d["alive"] & ~h["mon"]
        orc = None
        if want_oracle:
            orng = rng_for(self.seed, STREAM_ORACLE, s)
            # more draws where the probability is not negligible (low disposable income or in
            # distress), fewer for comfortable households: same estimator, less variance per second
            hi = in_scope & ((d["pc_disp"] < 2.5 * line) | d["distress"] | h["elim"])
            orc = E.oracle(w, s, self.horizon, self.oracle_draws, self.lines, orng, hi)
            lo = E.oracle(w, s, self.horizon, max(2, self.oracle_draws // 4), self.lines, orng, in_scope & ~hi)
            orc = np.where(hi, orc, lo)
        present = d["present"]
        mon_persons = present & h["mon"][p["hh"]]
        stats = dict(
            households=int(d["alive"].sum()), persons=int(present.sum()),
            monitored_households=int((h["mon"] & d["alive"]).sum()), monitored_persons=int(mon_persons.sum()),
            ever_monitored_households=int((h["ever"] & d["alive"]).sum()),
            distressed=int(d["distress"].sum()), distressed_unmonitored=int((d["distress"] & in_scope).sum()),
            clues=int(clue.sum()), clues_distressed=int((clue & d["distress"]).sum()),
            identified=int(ident.sum()), identified_not_distressed=int((ident & ~d["distress"]).sum()),
            reidentified=int(reident.sum()), eliminated=int(elim.sum()),
            events=int(len(ev["person"])), severe_events=int(ev["severe"].sum()),
            ident_labour=np.bincount(lc_new, minlength=3).tolist(),
            ident_risk1=np.bincount(risk1_new[risk1_new >= 0], minlength=11).tolist(),
            monitored_labour=np.bincount(d["lc"][h["mon"] & d["alive"]], minlength=3).tolist(),
            monitored_risk1=np.bincount(h["risks"][h["mon"] & d["alive"], 0].clip(0), minlength=11).tolist(),
            in_scope=int(in_scope.sum()),
        )
        return QuarterOut(s=s, persons=np.nonzero(present)[0], d=d, events=ev, oracle=orc,
                          in_scope=in_scope, stats=stats)

    def run(self, quarters: int, snapshot: Callable[[int], bool] | None = None) -> Iterator[QuarterOut]:
        """Burn-in (not exported), then one :class:`QuarterOut` per simulated quarter; the oracle
        only for the quarters ``snapshot(s)`` writes (default: every quarter)."""
        self.setup()
        for s in range(self.s0 + 1, self.start_idx):
            self.step(s, want_oracle=False)
        for s in range(self.start_idx, self.start_idx + quarters):
            yield self.step(s, want_oracle=snapshot is None or snapshot(s))

