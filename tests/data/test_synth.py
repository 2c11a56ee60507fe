"""The synthetic ledger generator: contract format, determinism, prefix stability, dynamics, oracle,
calibration. One generated directory per module (4,000 households x 10 quarters), shared by the
tests of this module through an xdist group."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fangpin import contract as C
from fangpin import quarters as Q
from fangpin.config import load_params
from fangpin.ids import checksum_ok_series
from fangpin.synth.write import generate

pytestmark = pytest.mark.xdist_group("synth")

N, NQ, SEED = 4_000, 10, 11
START = "2022Q1"


def _gen(out: Path, n: int, nq: int, seed: int = SEED, draws: int = 8):
    p = load_params()
    return generate(out, n, nq, seed, START, p.line_for, 3, 8, 12, p.labels.horizon_quarters, draws)


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    _gen(out, N, NQ)
    return out


@pytest.fixture(scope="module")
def ledger(synth_dir) -> pd.DataFrame:
    frames = [pd.read_csv(synth_dir / C.LEDGER_FILE_PATTERN.format(quarter=q), dtype=str, keep_default_na=False)
              for q in Q.span(START, NQ)]
    df = pd.concat(frames, ignore_index=True)
    df["qi"] = df["统计季度"].map(Q.to_index)
    return df


@pytest.fixture(scope="module")
def households(ledger) -> pd.DataFrame:
    hh = ledger.drop_duplicates(["户编号", "统计季度"]).copy()
    hh["monitored"] = (hh["监测对象类别"] != "") & (hh["风险是否已消除"] == "否")
    hh["since_qi"] = hh["识别监测时间"].map(lambda v: Q.to_index(Q.of_yyyymm(int(v))) if v else -1)
    hh["pc"] = hh["人均纯收入（元）"].astype(float)
    return hh.sort_values(["户编号", "qi"])


@pytest.fixture(scope="module")
def labelled(households) -> pd.DataFrame:
    """In-scope household-quarters with the contract's label (new identification within H)."""
    H = load_params().labels.horizon_quarters
    hh = households[["户编号", "qi", "monitored", "since_qi"]]
    out = hh[~hh["monitored"]].copy()
    out["y"] = False
    for k in range(1, H + 1):
        nxt = hh.assign(qi=hh["qi"] - k)[["户编号", "qi", "monitored", "since_qi"]]
        m = out.merge(nxt, on=["户编号", "qi"], how="left", suffixes=("", "_n"))
        out["y"] |= (m["monitored_n"].fillna(False).astype(bool) & (m["since_qi_n"] > m["qi"])).to_numpy()
    last = hh["qi"].max()
    return out[out["qi"] <= last - H]


def test_files_and_headers_exactly_per_contract(synth_dir):
    names = sorted(p.name for p in synth_dir.iterdir())
    expected = sorted([C.LEDGER_FILE_PATTERN.format(quarter=q) for q in Q.span(START, NQ)]
                      + [C.EVENTS_FILE_PATTERN.format(year=y) for y in (2022, 2023, 2024)]
                      + [C.ORACLE_FILE, "synth_summary.json"])
    assert names == expected
    head = (synth_dir / "户成员台账_2022Q1.csv").read_text(encoding="utf-8").splitlines()[0]
    assert head.split(",") == [c.header for c in C.LEDGER_COLUMNS]
    head = (synth_dir / "部门预警数据_2022.csv").read_text(encoding="utf-8").splitlines()[0]
    assert head.split(",") == [c.header for c in C.EVENT_COLUMNS]
    head = (synth_dir / C.ORACLE_FILE).read_text(encoding="utf-8").splitlines()[0]
    assert head.split(",") == list(C.ORACLE_COLUMNS)


def test_value_sets(ledger):
    for col in C.LEDGER_COLUMNS:
        if col.kind == "category" and col.name != "school_status":
            vals = set(ledger[col.header].unique()) - {""}
            assert vals <= set(col.values), (col.header, vals - set(col.values))
    school = set(ledger["在校生状况"].unique())
    grades = {f"{s}{g}年级" for s in ("小学", "高中", "中职", "高职高专") for g in "一二三四五六"}
    allowed = set(C.SCHOOL_STATUS) | {"七年级", "八年级", "九年级"} | grades
    assert school <= allowed, school - allowed
    assert {"八年级", "高中二年级"} <= school
    assert set(ledger["性别"]) == {"男", "女"}
    assert set(ledger["户类型"]) == set(C.HOUSEHOLD_TYPE)
    assert ledger["户编号"].str.fullmatch(r"\d{15}").all()
    months = ledger["务工时间（月）"].astype(int)
    assert months.between(0, 12).all()
    share_poor = ledger.drop_duplicates("户编号")["户类型"].eq("脱贫户").mean()
    assert 0.2 <= share_poor <= 0.34


def test_ids_valid_and_consistent_with_birth_date(ledger):
    ids = ledger["证件号码"]
    assert checksum_ok_series(ids).all()
    assert (ids.str[6:14] == ledger["出生日期"].str.replace("-", "")).all()
    # sex digit (17th): odd for men
    odd = ids.str[16].astype(int) % 2 == 1
    assert (odd == (ledger["性别"] == "男")).all()
    # one person per ID per quarter, and an ID always belongs to the same household
    assert not ledger.duplicated(["统计季度", "证件号码"]).any()
    assert ledger.groupby("证件号码")["户编号"].nunique().max() == 1


def test_household_fields_identical_across_members(ledger):
    hh_cols = [c.header for c in C.LEDGER_COLUMNS if c.level == "household"]
    nunique = ledger.groupby(["统计季度", "户编号"])[hh_cols].nunique()
    assert (nunique <= 1).all().all()
    heads = ledger[ledger["与户主关系"] == "户主"].groupby(["统计季度", "户编号"]).size()
    assert heads.max() == 1
    assert len(heads) / ledger.groupby(["统计季度", "户编号"]).ngroups > 0.995


def test_ledger_income_is_stale_between_verifications(households):
    """人均纯收入 changes only at the annual verification (Q4), or for households under monitoring
    (re-verified every quarter) or newly identified."""
    h = households.copy()
    h["prev_pc"] = h.groupby("户编号")["pc"].shift(1)
    h["prev_mon"] = h.groupby("户编号")["monitored"].shift(1).fillna(False).astype(bool)
    h = h[h["prev_pc"].notna()]
    changed = h["pc"] != h["prev_pc"]
    q4 = h["统计季度"].str.endswith("Q4")
    explained = q4 | h["monitored"] | h["prev_mon"]
    assert not (changed & ~explained).any()
    assert changed[q4].mean() > 0.9  # and the verification really updates it


def test_elimination_only_after_two_quarters_and_reidentification_exists(households):
    h = households
    elim = h[(h["风险是否已消除"] == "是") & (h["消除监测时间"] != "")].copy()
    elim["elim_qi"] = elim["消除监测时间"].map(lambda v: Q.to_index(Q.of_yyyymm(int(v))))
    assert len(elim) > 0
    assert (elim["elim_qi"] - elim["since_qi"] >= 2).all()
    first = elim.drop_duplicates("户编号")
    assert set(first["风险消除方式"]) <= set(C.ELIMINATION_MODE)
    # 返贫: households eliminated earlier that are identified again within the export window
    ever_elim = h["户编号"][h["风险是否已消除"] == "是"].unique()
    later = h[h["户编号"].isin(ever_elim) & h["monitored"]]
    was_elim_before = later.merge(elim[["户编号", "qi"]], on="户编号", suffixes=("", "_e"))
    assert (was_elim_before["qi"] > was_elim_before["qi_e"]).any()


def test_newly_identified_have_risks_and_category(households):
    h = households
    new = h[h["monitored"] & (h["since_qi"] == h["qi"])]
    assert len(new) > 50
    assert (new["致贫/返贫风险1"] != "").all()
    assert (new["识别监测时间"].map(lambda v: Q.of_yyyymm(int(v))) == new["统计季度"]).all()
    assert set(new["监测对象类别"]) == set(C.MONITOR_CATEGORY)


def test_oracle_covers_in_scope_and_matches_positive_rate(synth_dir, households, labelled):
    orc = pd.read_csv(synth_dir / C.ORACLE_FILE, dtype={"户编号": str})
    orc["qi"] = orc["统计季度"].map(Q.to_index)
    in_scope = households[~households["monitored"]][["户编号", "qi"]]
    assert len(orc) == len(in_scope)
    assert orc["真实风险概率"].between(0, 1).all()
    m = labelled.merge(orc, on=["户编号", "qi"], how="left")
    assert m["真实风险概率"].notna().all()
    mean_p, rate = m["真实风险概率"].mean(), m["y"].mean()
    # ~20,000 labelled rows with a positive rate near 1%: the binomial SE of the rate is ~7% of it
    assert abs(mean_p - rate) / rate < 0.2, (mean_p, rate)
    # and it ranks: the top decile of the oracle holds far more than 10% of the positives
    top = m["真实风险概率"] >= m["真实风险概率"].quantile(0.9)
    assert m.loc[top, "y"].sum() / m["y"].sum() > 0.5


def test_events_mostly_false_alarms_and_some_unknown_ids(synth_dir, ledger, households):
    ev = pd.concat([pd.read_csv(f, dtype=str, keep_default_na=False) for f in sorted(synth_dir.glob("部门预警数据_*.csv"))])
    assert set(ev["来源部门"]) <= set(C.DEPARTMENTS) and set(ev["事件类型"]) <= set(C.EVENT_TYPES)
    assert checksum_ok_series(ev["证件号码"]).all()
    known = ev["证件号码"].isin(set(ledger["证件号码"]))
    assert 0.005 < (~known).mean() < 0.05
    ev = ev[known].copy()
    ev["hh"] = ev["证件号码"].map(ledger.drop_duplicates("证件号码").set_index("证件号码")["户编号"])
    ev["qi"] = pd.to_datetime(ev["事件日期"]).map(Q.of_date).map(Q.to_index)
    new = households[households["monitored"] & (households["since_qi"] == households["qi"])]
    idq = new.groupby("户编号")["qi"].apply(set)
    followed = [any(q <= x <= q + 2 for x in idq.get(h, ())) for h, q in zip(ev["hh"], ev["qi"], strict=False)]
    assert np.mean(followed) < 0.10  # most department alerts are false alarms (Wen county)


def test_calibration_targets(synth_dir):
    """Targets of docs/synthetic-data.md with their stated tolerances."""
    s = json.loads((synth_dir / "synth_summary.json").read_text(encoding="utf-8"))["quarters"]
    last = s[-1]
    share_persons = last["monitored_persons"] / last["persons"]
    assert 0.008 <= share_persons <= 0.030, share_persons  # Pinggui 1.55%
    lab = np.sum([q["monitored_labour"] for q in s[-4:]], axis=0)
    lab = lab / lab.sum()
    assert lab[0] >= 0.45 and lab[2] <= 0.30, lab  # Pinggui: 77% with labour, 7.5% without
    clues = sum(q["clues"] for q in s)
    ident = sum(q["identified"] for q in s)
    assert 0.30 <= ident / clues <= 0.65, ident / clues  # Ningshan 46%
    re = sum(q["reidentified"] for q in s) / ident
    assert 0.03 <= re <= 0.40, re


def test_prefix_stable_and_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _gen(a, 600, 5, seed=5, draws=4)
    _gen(b, 600, 6, seed=5, draws=4)
    for q in Q.span(START, 5):
        name = C.LEDGER_FILE_PATTERN.format(quarter=q)
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "部门预警数据_2022.csv").read_bytes() == (b / "部门预警数据_2022.csv").read_bytes()
    ev_a = (a / "部门预警数据_2023.csv").read_text(encoding="utf-8").splitlines()
    lines_b = (b / "部门预警数据_2023.csv").read_text(encoding="utf-8").splitlines()
    ev_b = lines_b[:1] + [r for r in lines_b[1:] if r.split(",")[1][:7] <= "2023-03"]
    assert ev_a == ev_b
    oa = (a / C.ORACLE_FILE).read_text(encoding="utf-8").splitlines()
    ob = (b / C.ORACLE_FILE).read_text(encoding="utf-8").splitlines()
    assert ob[: len(oa)] == oa
    c = tmp_path / "c"
    _gen(c, 600, 5, seed=6, draws=4)
    assert (a / "户成员台账_2022Q1.csv").read_bytes() != (c / "户成员台账_2022Q1.csv").read_bytes()


def test_province_by_county(tmp_path):
    """A province generated county by county (counties as tasks): one folder per county in the
    single-county layout, names/codes/IDs/household numbers unique across counties, the province's
    one downturn in one county, statistics summed, and the files independent of the run order."""
    from fangpin.cluster import Executor
    from fangpin.synth.write import generate_by_county, province_counties

    p = load_params()

    def run(out, order=None):
        class Reversed(Executor):  # tasks finishing in another order must not change anything
            def map_unordered(self, fn, items, *args, **kw):
                for it in reversed(list(items)):
                    yield fn(it, *args, **kw)
        ex = Reversed() if order == "reversed" else Executor()
        return generate_by_county(out, 900, 3, 5, START, p.line_for, 3, 2, 3, p.labels.horizon_quarters, 4, ex)

    stats = run(tmp_path / "a")
    run(tmp_path / "b", "reversed")
    specs = province_counties(5, 900, 3, START)
    assert sum(s["county"].downturn for s in specs) == 1
    assert [s["households"] for s in specs] == [300, 300, 300]
    ledgers, hh_ids = [], set()
    for s in specs:
        d = tmp_path / "a" / str(s["county"].code)
        assert sorted(f.name for f in d.iterdir()) == sorted(
            [C.LEDGER_FILE_PATTERN.format(quarter=q) for q in Q.span(START, 3)]
            + ["部门预警数据_2022.csv", C.ORACLE_FILE, "synth_summary.json"])
        for f in d.iterdir():
            assert f.read_bytes() == (tmp_path / "b" / d.name / f.name).read_bytes(), f
        df = pd.read_csv(d / C.LEDGER_FILE_PATTERN.format(quarter=START), dtype=str, keep_default_na=False)
        assert set(df["县(市、区、旗)"]) == {s["county"].name}
        assert df["户编号"].str.startswith(str(s["county"].code)).all()
        assert not (set(df["户编号"]) & hh_ids)
        hh_ids |= set(df["户编号"])
        ledgers.append(df)
    allq = pd.concat(ledgers)
    assert not allq["证件号码"].duplicated().any()
    assert len({s["county"].name for s in specs}) == 3
    assert stats[0]["persons"] == len(allq)
    summary = json.loads((tmp_path / "a" / "synth_summary.json").read_text(encoding="utf-8"))
    assert summary["quarters"] == stats and summary["meta"]["by_county"] is True


def test_injected_shift_leaves_earlier_quarters_unchanged(tmp_path):
    """synth.shift: a job-loss wave in one county at 2023Q2 and the line raised by 15% from 2023. The
    quarters before are byte-identical to the run without it; the wave shows in the ledger (the
    county is re-checked at once); the lines used are written as 监测线.csv for ingest."""
    from fangpin.config import SynthShift

    p = load_params()
    shift = SynthShift(quarter="2023Q2", county=1, job_loss=0.6, line_rise=0.15)
    base, shifted = tmp_path / "base", tmp_path / "shifted"
    for out, sh in ((base, None), (shifted, shift)):
        generate(out, 900, 6, SEED, START, p.line_for, 3, 8, 12, p.labels.horizon_quarters, 2, shift=sh)
    for q in Q.span(START, 4):  # 2022Q1 … 2022Q4
        name = C.LEDGER_FILE_PATTERN.format(quarter=q)
        assert (base / name).read_bytes() == (shifted / name).read_bytes(), q
    assert not (base / C.LINES_FILE).exists()
    lines = pd.read_csv(shifted / C.LINES_FILE)
    got = dict(zip(lines["年度"], lines["监测线（元）"], strict=True))
    assert got[2022] == p.line_for(2022) and got[2023] == round(p.line_for(2023) * 1.15)

    def migrants(d: Path) -> pd.Series:
        df = pd.read_csv(d / C.LEDGER_FILE_PATTERN.format(quarter="2023Q2"), dtype=str)
        away = df["务工状况"].isin(["省外务工", "省内县外务工"])
        return away.groupby(df["县(市、区、旗)"]).mean()

    mb, ms = migrants(base), migrants(shifted)
    hit = ms.index[np.argmax((mb - ms).to_numpy())]
    assert (mb - ms)[hit] > 0.1  # one county lost a large share of its migrant workers at once
    assert ((mb - ms).drop(hit).abs() < 0.05).all()  # the others did not


def test_annual_snapshots_only_each_years_q4(tmp_path):
    p = load_params()
    stats = generate(tmp_path, 600, 8, SEED, START, p.line_for, 3, 8, 12, 4, 2, snapshots="annual")
    assert [s["quarter"] for s in stats] == ["2022Q4", "2023Q4"]
    assert sorted(f.stem[-6:] for f in tmp_path.glob("户成员台账_*.csv")) == ["2022Q4", "2023Q4"]
    assert {f.stem[-4:] for f in tmp_path.glob("部门预警数据_*.csv")} == {"2022", "2023"}
