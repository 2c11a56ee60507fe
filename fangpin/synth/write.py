"""Write the simulation as the contract's files (UTF-8 CSV via pyarrow, headers from fangpin.contract)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from fangpin import contract as C
from fangpin import quarters as Q
from fangpin.synth.model import EVENT_DEPT, qdate
from fangpin.synth.names import ETHNIC_GROUPS
from fangpin.synth.sim import (
    STREAM_COUNTY_SEED,
    STREAM_PROVINCE,
    SUPPORT_TEXT,
    CountyOf,
    QuarterOut,
    Simulation,
    make_ids,
    rng_for,
)

_OPTS = pacsv.WriteOptions(include_header=False, quoting_style="none")


def _cat(codes: np.ndarray, values) -> pa.Array:
    """Code array (-1 = blank) → string array through a dictionary (fast)."""
    codes = np.asarray(codes)
    idx = pa.array(codes.astype(np.int32), mask=codes < 0)
    return pa.DictionaryArray.from_arrays(idx, pa.array(list(values), pa.string())).cast(pa.string())


def _yyyymm(v: np.ndarray) -> pa.Array:
    return pa.array(v.astype(np.int64), mask=v <= 0)


def _write(path: Path, headers: list[str], table: pa.Table) -> None:
    with open(path, "wb") as fh:
        fh.write((",".join(headers) + "\n").encode("utf-8"))
        pacsv.write_csv(table, fh, _OPTS)


class Writer:
    def __init__(self, sim: Simulation, out: Path):
        self.sim, self.out = sim, Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.events: dict[int, list[pa.Table]] = {}
        self.oracle: list[pa.Table] = []
        self._ready = False

    def _prepare(self) -> None:
        sim, geo = self.sim, self.sim.w.geo
        self.ids = pa.array(sim.ids)
        self.names = pa.array(sim.names)
        self.birth = pa.array(sim.birth)
        self.hh_ids = pa.array(sim.hh_ids)
        h = sim.w.h
        self.county = _cat(h["cty"], geo.county_names)
        self.township = _cat(h["twp"], geo.township_names)
        self.village = _cat(h["vil"], geo.village_names)
        self._ready = True

    def quarter(self, q: QuarterOut, ledger: bool = True) -> None:
        """Write quarter ``q``: its ledger snapshot and oracle rows (unless ``ledger`` is False, as
        for the quarters an annual ledger skips) and its department events (always: they are dated)."""
        if not ledger:
            self._events(q)
            return
        if not self._ready:
            self._prepare()
        sim = self.sim
        w, L = sim.w, sim.L
        p, h = w.p, w.h
        qs = Q.from_index(q.s)
        idx = q.persons
        hidx = p["hh"][idx]
        d = q.d
        take_p = pa.array(idx)
        take_h = pa.array(hidx)
        stage = d["stage"][idx]
        # grade-level school values, as many county exports write them
        school = _school_text(stage, p["by"][idx], p["bm"][idx], q.s, p["hh"][idx])
        mon = h["mon"][hidx] | h["elim"][hidx]
        risks = np.where(mon[:, None], h["risks"][hidx], -1)
        cols: dict[str, pa.Array] = {
            "quarter": pa.array(np.full(len(idx), qs)),
            "county": self.county.take(take_h), "township": self.township.take(take_h),
            "village": self.village.take(take_h), "household_id": self.hh_ids.take(take_h),
            "id_number": self.ids.take(take_p), "name": self.names.take(take_p),
            "relation": _cat(p["rel"][idx], C.RELATIONS),
            "sex": _cat(p["female"][idx].astype(np.int8), ("男", "女")),
            "birth_date": self.birth.take(take_p),
            "ethnicity": _cat(p["eth"][idx], _ethnic()),
            "education": _cat(_education(p["edu"][idx], d["age"][idx], stage), C.EDUCATION),
            "school_status": school,
            "health": _cat(L["health"][idx], C.HEALTH),
            "labor_skill": _cat(L["lab"][idx], C.LABOR_SKILL),
            "work_status": _cat(L["work"][idx], C.WORK_STATUS),
            "work_months": pa.array(L["months"][idx].astype(np.int16)),
            "medical_insured": _cat(p["med_ins"][idx].astype(np.int8) * -1 + 1, ("是", "否")),
            "pension_insured": _cat(np.where(d["age"][idx] >= 16, (~p["pen_ins"][idx]).astype(np.int8), -1), ("是", "否")),
            "household_type": _cat((~h["poor"][hidx]).astype(np.int8), C.HOUSEHOLD_TYPE),
            "monitor_category": _cat(np.where(mon, h["mon_cat"][hidx] - 1, -1), C.MONITOR_CATEGORY),
            "monitor_since": _yyyymm(np.where(mon, h["mon_since"][hidx], 0)),
            **{f"risk_{i + 1}": _cat(risks[:, i], C.RISK_TYPES) for i in range(5)},
            "risk_eliminated": _cat(np.where(mon, h["elim"][hidx].astype(np.int8) * -1 + 1, -1), ("是", "否")),
            "eliminated_at": _yyyymm(np.where(h["elim"][hidx], h["elim_at"][hidx], 0)),
            "elimination_mode": _cat(np.where(h["elim"][hidx], h["elim_mode"][hidx] - 1, -1), C.ELIMINATION_MODE),
            "income_per_capita": pa.array(L["pc"][hidx]),
            "wage_income": pa.array(L["wage"][hidx]), "business_income": pa.array(L["biz"][hidx]),
            "property_income": pa.array(L["prop"][hidx]), "transfer_income": pa.array(L["trans"][hidx]),
            "business_expense": pa.array(L["exp"][hidx]), "medical_out_of_pocket": pa.array(L["oop"][hidx]),
            "dibao": _cat(np.where(h["dibao"][hidx], 0, -1), C.DIBAO),
            "tekun": _cat(np.where(h["tekun"][hidx], 0, -1), C.TEKUN),
            "unsafe_housing": _cat((~L["unsafe"][hidx]).astype(np.int8), ("是", "否")),
            "safe_water": _cat((~L["water"][hidx]).astype(np.int8), ("是", "否")),
            "farmland_mu": pa.array(h["farmland"][hidx]),
            "road_distance_km": pa.array(h["road"][hidx]),
        }
        sup = h["sup"][hidx]
        for k, name in enumerate(C.SUPPORT_HEADERS.values()):
            codes = np.where(h["ever"][hidx] | h["dibao"][hidx], sup[:, k] - 1, -1)
            cols[name] = _cat(codes, SUPPORT_TEXT[k][1:])
        names = [c.name for c in C.LEDGER_COLUMNS]
        table = pa.table([cols[n] for n in names], names=names)
        _write(self.out / C.LEDGER_FILE_PATTERN.format(quarter=qs), [c.header for c in C.LEDGER_COLUMNS], table)
        self._events(q)
        if q.oracle is not None:
            sel = np.nonzero(q.in_scope)[0]
            self.oracle.append(pa.table({
                "hh": self.hh_ids.take(pa.array(sel)), "q": pa.array(np.full(len(sel), qs)),
                "p": pa.array(np.round(q.oracle[sel], 6)),
            }))

    def _events(self, q: QuarterOut) -> None:
        sim = self.sim
        ev = q.events
        rng = np.random.default_rng(np.random.SeedSequence(sim.seed, spawn_key=(9, q.s)))
        n = len(ev["person"])
        ids = np.asarray(sim.ids)[ev["person"]]
        # a few events concern people no longer in the ledger (moved away): IDs unknown to it
        ghost = rng.random(n) < sim.rates.ghost_share
        if ghost.any():
            k = int(ghost.sum())
            region = sim.region_codes[rng.integers(0, len(sim.region_codes), k)]
            ids = ids.copy()
            ids[ghost] = make_ids(region, rng.integers(1950, 2005, k), rng.integers(1, 13, k),
                                  rng.integers(1, 29, k), rng.integers(0, 1000, k))
        y, qn = q.s // 4, q.s % 4
        start = np.datetime64(f"{y}-{qn * 3 + 1:02d}-01")
        end = np.datetime64(f"{y + (qn == 3)}-{(qn * 3 + 3) % 12 + 1:02d}-01")
        days = rng.integers(0, int((end - start).astype(int)), n)
        dates = (start + days.astype("timedelta64[D]"))
        amt = ev["amount"]
        t = pa.table({
            "id": pa.array(ids), "date": pa.array(np.datetime_as_string(dates, unit="D")),
            "dept": _cat(EVENT_DEPT[ev["etype"]], C.DEPARTMENTS), "type": _cat(ev["etype"], C.EVENT_TYPES),
            "amount": pa.array(np.where(np.isnan(amt), 0, amt), mask=np.isnan(amt)),
            "_d": pa.array(dates.astype("int64")),
        })
        self.events.setdefault(y, []).append(t)

    def finish(self, stats: list[dict], meta: dict) -> None:
        headers = [c.header for c in C.EVENT_COLUMNS]
        for y, parts in sorted(self.events.items()):
            t = pa.concat_tables(parts)
            t = t.take(pa.array(np.argsort(t["_d"].to_numpy(), kind="stable"))).drop_columns(["_d"])
            _write(self.out / C.EVENTS_FILE_PATTERN.format(year=y), headers, t)
        if self.oracle:
            _write(self.out / C.ORACLE_FILE, list(C.ORACLE_COLUMNS), pa.concat_tables(self.oracle))
        (self.out / "synth_summary.json").write_text(
            json.dumps({"meta": meta, "quarters": stats}, ensure_ascii=False, indent=1), encoding="utf-8")


def _ethnic():
    return ETHNIC_GROUPS


def _education(edu, age, stage):
    """Education attained: children still in school have the level below their stage."""
    out = edu.copy()
    kid = age < 22
    cap = np.select([stage <= 2, stage == 3, stage >= 4], [1, 1, 2], 2)
    out[kid] = np.minimum(out[kid], cap[kid])
    out[age < 7] = -1
    return out


_GRADE_CN = np.array(["", "一", "二", "三", "四", "五", "六"])


def _school_text(stage, by, bm, s, hh) -> pa.Array:
    """School status as exports write it: sometimes the stage (小学), often the grade (八年级)."""
    y, m = qdate(s)
    start_year = y if m >= 9 else y - 1
    grade = start_year - (by.astype(np.int32) + 6 + (bm >= 9)) + 1
    txt = np.array(["非在校生", "学前教育", "小学", "初中", "高中", "中职", "高职高专", "本科及以上"], dtype=object)[stage]
    prim = stage == 2
    by_grade = (hh % 3) != 0  # the form differs by village clerk; fixed per household
    g = np.clip(grade, 1, 6)
    txt[prim & by_grade] = np.char.add("小学", np.char.add(_GRADE_CN[g[prim & by_grade]], "年级"))
    jun = stage == 3
    txt[jun] = np.array(["七年级", "八年级", "九年级"], dtype=object)[np.clip(grade[jun] - 7, 0, 2)]
    for st, name in ((4, "高中"), (5, "中职"), (6, "高职高专")):
        sel = stage == st
        base = 10 if st in (4, 5) else 13
        txt[sel] = np.char.add(name, np.char.add(_GRADE_CN[np.clip(grade[sel] - base + 1, 1, 3)], "年级"))
    return pa.array(txt.astype(str))


def generate(out: Path, households: int, quarters: int, seed: int, start_quarter: str,
             lines: Callable[[int], float], counties: int, townships: int, villages: int, horizon: int,
             oracle_draws: int, on_quarter: Callable[[str], None] | None = None, *,
             snapshots: str = "quarterly", shift=None) -> list[dict]:
    """Run the simulation and write every file. Returns the per-quarter statistics (of the
    quarters written as snapshots).

    ``snapshots="annual"``: the simulation still runs quarter by quarter, but only each year's Q4
    snapshot (and its oracle) is written; department events keep their dates. ``shift``
    (:class:`fangpin.config.SynthShift`): a job-loss wave in one county at ``shift.quarter`` and/or a
    monitoring line raised by ``shift.line_rise`` from that quarter's year on (the lines used are
    then written as 监测线.csv). Quarters before the shift are generated exactly as without it."""
    import dataclasses

    from fangpin.synth.model import Rates

    rates = Rates()
    base_lines = lines
    rise_from = None
    if shift is not None and shift.quarter:
        s_idx = Q.to_index(shift.quarter)
        if shift.job_loss > 0:
            if not 0 <= shift.county < counties:
                raise ValueError(f"synth.shift.county {shift.county} is not a county index (0 … {counties - 1})")
            rates = dataclasses.replace(rates, shift_quarter=s_idx, shift_county=shift.county,
                                        shift_job_loss=float(shift.job_loss))
        if shift.line_rise > 0:
            rise_from = s_idx // 4

            def lines(y: int, _f=1.0 + float(shift.line_rise)) -> float:
                return round(base_lines(y) * (_f if y >= rise_from else 1.0), 0)
    start_idx = Q.to_index(start_quarter)
    sim = Simulation(seed=seed, households=households, start_idx=start_idx,
                     lines=lambda s: lines(s // 4), counties=counties, townships=townships,
                     villages=villages, horizon=horizon, oracle_draws=oracle_draws, rates=rates)
    writer = Writer(sim, out)

    def written(s: int) -> bool:
        return snapshots != "annual" or s % 4 == 3

    stats = []
    for q in sim.run(quarters, snapshot=written):
        writer.quarter(q, ledger=written(q.s))
        if written(q.s):
            stats.append({"quarter": Q.from_index(q.s), **q.stats})
        if on_quarter:
            on_quarter(Q.from_index(q.s))
    if rise_from is not None:  # the county's own lines, as a county ships them beside its exports
        years = range(start_idx // 4 - 2, (start_idx + quarters + horizon) // 4 + 1)
        headers = list(C.LINES_COLUMNS)[:2]
        _write(writer.out / C.LINES_FILE, headers,
               pa.table({"y": pa.array(list(years)), "l": pa.array([float(lines(y)) for y in years])}))
    meta = dict(seed=seed, households=households, quarters=quarters, start_quarter=start_quarter,
                horizon=horizon, oracle_draws=oracle_draws, snapshots=snapshots,
                shift=None if shift is None else shift.model_dump())
    writer.finish(stats, meta)
    return stats


# ----------------------------------------------------------------------------------------------
# a province, county by county (counties as tasks)

MAX_COUNTY_HOUSEHOLDS = 999_999  # household numbers end in a 6-digit sequence within the county


def province_counties(seed: int, households: int, counties: int, start_quarter: str) -> list[dict]:
    """The counties of a province generated county by county: name and code (unique across the
    province), household count, the county's own seed, and the province's one regional downturn.
    Depends only on these arguments (not on how the counties are run)."""
    from fangpin.synth.names import place_names

    if households < counties:
        raise ValueError(f"{households} households cannot fill {counties} counties")
    rng = rng_for(seed, STREAM_PROVINCE, 0)
    names = place_names(rng, counties, "县")
    downturn = int(rng.integers(0, counties))
    downturn_q = int(Q.to_index(start_quarter) + rng.integers(1, 7))
    base, extra = divmod(households, counties)
    out = []
    for k in range(counties):
        n = base + (k < extra)
        if n > MAX_COUNTY_HOUSEHOLDS:
            raise ValueError(f"{n:,} households in one county: at most {MAX_COUNTY_HOUSEHOLDS:,} (6-digit household "
                             f"sequence); use more counties (--counties)")
        seq = np.random.SeedSequence(seed, spawn_key=(STREAM_COUNTY_SEED, k))
        out.append({"index": k, "households": n, "seed": int(seq.generate_state(1, np.uint64)[0] >> np.uint64(1)),
                    "county": CountyOf(name=names[k], code=522621 + k, downturn=k == downturn,
                                       downturn_quarter=downturn_q)})
    return out


def county_task(spec: dict, out: str, quarters: int, start_quarter: str, lines: dict[int, float], townships: int,
                villages: int, horizon: int, oracle_draws: int) -> list[dict]:
    """Simulate and write one county of a province into ``<out>/<county code>/`` (the layout of a
    single-county ledger). Returns the county's per-quarter statistics."""
    c: CountyOf = spec["county"]
    sim = Simulation(seed=spec["seed"], households=spec["households"], start_idx=Q.to_index(start_quarter),
                     lines=lambda s: lines[s // 4], counties=1, townships=townships, villages=villages,
                     horizon=horizon, oracle_draws=oracle_draws, county=c)
    writer = Writer(sim, Path(out) / str(c.code))
    stats = [{"quarter": Q.from_index(q.s), **q.stats} for q in _written(sim, writer, quarters)]
    writer.finish(stats, dict(seed=spec["seed"], households=spec["households"], quarters=quarters,
                              start_quarter=start_quarter, horizon=horizon, oracle_draws=oracle_draws,
                              county=c.name, county_code=c.code))
    return stats


def _written(sim: Simulation, writer: Writer, quarters: int):
    for q in sim.run(quarters):
        writer.quarter(q)
        yield q


def generate_by_county(out: Path, households: int, quarters: int, seed: int, start_quarter: str,
                       lines: Callable[[int], float], counties: int, townships: int, villages: int, horizon: int,
                       oracle_draws: int, executor, on_county: Callable[[str], None] | None = None) -> list[dict]:
    """A province: ``counties`` independent county simulations run as tasks of ``executor``
    (fangpin.cluster), each writing its own folder ``<out>/<county code>/`` (ledger per quarter,
    department signals per year, oracle.csv; `fangpin ingest <out>` reads them all). The files
    depend only on the arguments, not on the executor. Returns the province's per-quarter
    statistics (sums over counties), also written to ``<out>/synth_summary.json``."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    specs = province_counties(seed, households, counties, start_quarter)
    s0 = Q.to_index(start_quarter)
    years = range((s0 - 8) // 4, (s0 + quarters + horizon) // 4 + 1)  # burn-in … look-ahead
    line_of = {y: float(lines(y)) for y in years}
    per_county: dict[int, list[dict]] = {}
    for stats in executor.map_unordered(_county_task_indexed, specs, str(out), quarters, start_quarter, line_of,
                                        townships, villages, horizon, oracle_draws):
        k, st = stats
        per_county[k] = st
        if on_county:
            on_county(specs[k]["county"].name)
    total = [_sum_stats([per_county[k][i] for k in sorted(per_county)]) for i in range(quarters)]
    meta = dict(seed=seed, households=households, quarters=quarters, start_quarter=start_quarter,
                horizon=horizon, oracle_draws=oracle_draws, counties=counties, by_county=True,
                county_codes=[s["county"].code for s in specs])
    (out / "synth_summary.json").write_text(
        json.dumps({"meta": meta, "quarters": total}, ensure_ascii=False, indent=1), encoding="utf-8")
    return total


def _county_task_indexed(spec: dict, *args) -> tuple[int, list[dict]]:
    return spec["index"], county_task(spec, *args)


def _sum_stats(parts: list[dict]) -> dict:
    out: dict = {}
    for st in parts:
        for k, v in st.items():
            if k == "quarter":
                out[k] = v
            elif isinstance(v, list):
                prev = out.get(k, [0] * len(v))
                out[k] = [a + b for a, b in zip(prev, v, strict=True)]
            else:
                out[k] = out.get(k, 0) + v
    return out
