"""Small canonical frames (docs/data-model.md) built directly, for tests of labels, features, rules
and the model without going through the generator or ingest.

`make_frames(n, quarters, seed)` simulates a toy county: incomes drift and are re-verified every
other quarter, shocks (serious illness, house damage, village disasters) arrive as department
events, and households are newly identified with a probability that rises with low income and
recent shocks. It is deliberately simple: enough signal for a tiny model to learn, nothing more.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fangpin import quarters as fq
from models.features import Frames

LINES = {2021: 6000.0, 2022: 6500.0, 2023: 6900.0, 2024: 7300.0, 2025: 7600.0}
HEALTH = np.array(["健康", "长期慢性病", "患有大病", "残疾"], dtype=object)
SKILL = np.array(["普通劳动力", "技能劳动力", "弱劳动力或半劳动力", "丧失劳动力", "无劳动力"], dtype=object)


def make_frames(n: int = 400, quarters: int = 8, seed: int = 0, start: str = "2022Q1") -> Frames:
    rng = np.random.default_rng(seed)
    qs = fq.span(start, quarters)
    hid = np.array([f"H{i:06d}" for i in range(n)], dtype=object)
    county = np.where(np.arange(n) % 2 == 0, "甲县", "乙县").astype(object)
    township = np.array([f"{c}{k}镇" for c, k in zip(county, rng.integers(0, 2, n), strict=False)], dtype=object)
    village = np.array([f"{t}{k}村" for t, k in zip(township, rng.integers(0, 3, n), strict=False)], dtype=object)
    htype = np.where(rng.random(n) < 0.3, "脱贫户", "一般农户").astype(object)
    size = rng.integers(1, 6, n)
    latent = np.exp(rng.normal(np.log(10500), 0.45, n))
    trend = rng.normal(0.0, 0.03, n)
    frailty = rng.normal(0, 1, n)  # hidden: never in any column
    # persons (fixed composition over time, ages advance)
    owner = np.repeat(np.arange(n), size)
    pos = np.concatenate([np.arange(s) for s in size])
    m = len(owner)
    birth_year = np.where(pos == 0, rng.integers(1945, 1990, m), rng.integers(1950, 2020, m))
    health = HEALTH[rng.choice(4, m, p=[0.8, 0.12, 0.03, 0.05])]
    skill = np.where(birth_year > 2006, "无劳动力",
                     SKILL[rng.choice(5, m, p=[0.55, 0.1, 0.15, 0.1, 0.1])]).astype(object)
    relation = np.where(pos == 0, "户主", np.where(pos == 1, "配偶", "之子")).astype(object)
    ethnicity = np.where(rng.random(m) < 0.15, "彝族", "汉族").astype(object)
    sex = np.where(rng.random(m) < 0.5, "男", "女").astype(object)
    person_key = np.array([f"pk{i:07d}" for i in range(m)], dtype=object)

    monitored = rng.random(n) < 0.05
    since = np.where(monitored, 202106, 0)
    eliminated = monitored & (rng.random(n) < 0.6)
    elim_at = np.where(eliminated, 202112, 0)
    income = latent.copy()
    verified = latent.copy()
    unsafe = rng.random(n) < 0.03
    oop = np.where(health[np.searchsorted(np.cumsum(size), np.arange(n), side="right")] == "患有大病", 8000.0, 0.0)
    oop = np.where(rng.random(n) < 0.1, rng.uniform(500, 4000, n), oop)

    hh_parts, p_parts, e_parts, o_parts = [], [], [], []
    for t, q in enumerate(qs):
        qi = fq.to_index(q)
        year = qi // 4
        line = LINES[year]
        month0 = (qi % 4) * 3 + 1
        # shocks this quarter
        ill = rng.random(n) < 0.03
        damage = rng.random(n) < 0.015
        vill_hit = {v: rng.random() < 0.08 for v in np.unique(village)}
        disaster = np.array([vill_hit[v] for v in village]) & (rng.random(n) < 0.4)
        income = income * (1 + trend + rng.normal(0, 0.04, n)) - ill * 0.25 * income - disaster * 0.1 * income
        oop = oop + ill * rng.uniform(5000, 30000, n)
        unsafe = unsafe | damage
        if t % 2 == 0:  # re-verification every other quarter
            verified = np.round(income, 2)
        # identification (only households in scope)
        scope = ~monitored | eliminated
        z = -4.2 + 2.5 * np.clip(1.3 - verified / line, -1, 1) + 1.4 * ill + 0.9 * damage + 0.6 * disaster \
            + 0.6 * frailty + 0.8 * unsafe
        newly = scope & (rng.random(n) < 1 / (1 + np.exp(-z)))
        o_parts.append(pd.DataFrame({"household_id": hid, "quarter": q, "true_probability": 1 / (1 + np.exp(-z))}))
        monitored = monitored | newly
        since = np.where(newly, (qi // 4) * 100 + month0 + rng.integers(0, 3, n), since)
        eliminated = np.where(newly, False, eliminated)
        elim_at = np.where(newly, 0, elim_at)
        # elimination after some quarters of monitoring
        old = monitored & ~eliminated & ~newly & (rng.random(n) < 0.25)
        eliminated = eliminated | old
        elim_at = np.where(old, (qi // 4) * 100 + month0, elim_at)
        hh_parts.append(pd.DataFrame({
            "quarter": q, "quarter_idx": np.int32(qi), "county": county, "township": township,
            "village": village, "household_id": hid, "household_type": htype,
            "monitor_category": np.where(monitored, "边缘易致贫户", None),
            "monitor_since": pd.array(np.where(monitored, since, 0), dtype="Int32"),
            "risk_1": np.where(monitored, "因病", None),
            "risk_eliminated": pd.array(np.where(monitored, eliminated, False), dtype="boolean"),
            "eliminated_at": pd.array(np.where(eliminated & monitored, elim_at, 0), dtype="Int32"),
            "elimination_mode": np.where(eliminated & monitored, "帮扶消除", None),
            "income_per_capita": verified,
            "wage_income": verified * size * 0.6, "business_income": verified * size * 0.3,
            "property_income": verified * size * 0.02, "transfer_income": verified * size * 0.1,
            "business_expense": verified * size * 0.02, "medical_out_of_pocket": np.round(oop, 0),
            "dibao": np.where(verified < line * 0.8, "农村低保", None), "tekun": None,
            "unsafe_housing": pd.array(unsafe, dtype="boolean"),
            "safe_water": pd.array(rng.random(n) > 0.01, dtype="boolean"),
            "farmland_mu": np.round(rng.uniform(0, 6, n), 1), "road_distance_km": np.round(rng.uniform(0, 8, n), 1),
            "n_members": size.astype(np.int16), "source_file": f"户成员台账_{q}.csv",
        }))
        for c in ("monitor_since", "eliminated_at"):
            hh_parts[-1][c] = hh_parts[-1][c].mask(hh_parts[-1][c] == 0)
        for c in ("risk_eliminated",):
            hh_parts[-1][c] = hh_parts[-1][c].mask(~pd.Series(monitored))
        end = fq.end_date(q)
        age = end.year - birth_year
        p_parts.append(pd.DataFrame({
            "quarter": q, "quarter_idx": np.int32(qi), "household_id": hid[owner], "person_key": person_key,
            "id_masked": "1234**********567X", "id_valid": True, "name": [f"人{i}" for i in range(m)],
            "relation": relation, "sex": sex, "ethnicity": ethnicity, "education": "初中",
            "school_status": np.where(age < 6, "学前教育", np.where(age < 12, "小学", np.where(
                age < 15, "初中", np.where(age < 18, "高中", "非在校生")))),
            "health": health, "labor_skill": skill, "work_status": np.where(
                np.isin(skill, ["普通劳动力", "技能劳动力"]) & (rng.random(m) < 0.5), "省外务工", "未务工"),
            "work_months": rng.integers(0, 13, m).astype(np.int8), "medical_insured": pd.array(
                rng.random(m) > 0.01, dtype="boolean"), "pension_insured": True,
            "age": age.astype(np.int16), "birth_date": pd.to_datetime(pd.Series(birth_year).astype(str) + "-06-15"),
        }))
        ev_rows = []
        first_member = np.searchsorted(owner, np.arange(n))
        for mask, etype, dept, amt in ((ill, "重大疾病", "卫健", None), (ill, "住院", "医保", 12000.0),
                                       (damage, "房屋受损", "住建", 20000.0),
                                       (disaster, "自然灾害受灾", "应急管理", 5000.0)):
            idx = np.flatnonzero(mask)
            ev_rows.append(pd.DataFrame({
                "person_key": person_key[first_member[idx]], "id_masked": "1234**********567X",
                "household_id": hid[idx],
                "event_date": pd.Timestamp(fq.start_date(q)) + pd.to_timedelta(rng.integers(0, 85, len(idx)), "D"),
                "quarter": q, "quarter_idx": np.int32(qi), "department": dept, "event_type": etype,
                "amount": amt, "source_file": "部门预警数据.csv", "source_row": np.arange(len(idx)) + 2,
            }))
        # false alarms: hospital stays with small bills for anybody
        idx = np.flatnonzero(rng.random(n) < 0.05)
        ev_rows.append(pd.DataFrame({
            "person_key": person_key[first_member[idx]], "id_masked": "1234**********567X", "household_id": hid[idx],
            "event_date": pd.Timestamp(fq.start_date(q)) + pd.to_timedelta(rng.integers(0, 85, len(idx)), "D"),
            "quarter": q, "quarter_idx": np.int32(qi), "department": "医保", "event_type": "住院",
            "amount": rng.uniform(300, 3000, len(idx)).round(0), "source_file": "部门预警数据.csv",
            "source_row": np.arange(len(idx)) + 2}))
        e_parts.extend(ev_rows)
    events = pd.concat(e_parts, ignore_index=True)
    events["amount"] = events["amount"].astype("float64")
    return Frames(
        households=pd.concat(hh_parts, ignore_index=True),
        persons=pd.concat(p_parts, ignore_index=True),
        events=events,
        lines=dict(LINES),
        oracle=pd.concat(o_parts, ignore_index=True),
    )


def write_frames(frames: Frames, d) -> None:
    """Write frames as ingest would (households/persons/events Parquet, lines.json, oracle)."""
    import json
    from pathlib import Path

    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    frames.households.to_parquet(d / "households.parquet", index=False)
    frames.persons.to_parquet(d / "persons.parquet", index=False)
    if frames.events is not None:
        frames.events.to_parquet(d / "events.parquet", index=False)
    if frames.oracle is not None:
        frames.oracle.to_parquet(d / "oracle.parquet", index=False)
    (d / "lines.json").write_text(json.dumps({str(k): v for k, v in frames.lines.items()}), encoding="utf-8")
