"""Batch scoring (pipelines/score.py): chunked == whole county, every rule hit is a warning or a
task, no township's visit list beyond its capacity, additive reasons naming the household's values
with figures that add up, tasks in the store and the workbook's own sheet, the API giving the
batch's level from the stored cut-offs, idempotent re-runs, township workbooks without a full ID,
the CLI on a new export with the registered @champion."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from reason_check import check_reason
from tiny_model import tiny_model

from fangpin.config import load_params
from models.features import Frames
from models.pyfunc import RiskModel
from pipelines.common import rooted

pytestmark = pytest.mark.xdist_group("score_tiny_county")
RANK = {None: 0, "蓝": 1, "黄": 2, "红": 3}
CAPACITY = 4


def _tiny_model(params) -> RiskModel:
    return tiny_model(params, n=1000, quarters=8, seed=2, trees=30, model_version="7")[0]


@pytest.fixture(scope="module")
def county(tmp_path_factory):
    """A generated county (fangpin.synth, contract-format export) ingested with the ingest API."""
    from fangpin.ingest import ingest
    from fangpin.synth.write import generate

    p = load_params()
    d = tmp_path_factory.mktemp("county")
    generate(d / "export", 1500, 6, 11, "2022Q1", p.line_for, 2, 3, 4, p.labels.horizon_quarters, 4)
    rep = ingest([d / "export"], [], d / "ingested", p)
    assert rep.ok
    return d


@pytest.fixture(scope="module")
def run(county, tmp_path_factory):
    from fangpin.store import Store
    from pipelines.score import score_quarter

    params = load_params()
    # a small capacity, so that the generated townships (250 households) fill it
    params = params.model_copy(update={"levels": params.levels.model_copy(update={"capacity_per_township": CAPACITY})})
    model = _tiny_model(params)
    work = tmp_path_factory.mktemp("work")
    p = rooted(params, work)
    store = Store(f"sqlite:///{work / 'warnings.db'}", b"test-secret", migrate=True)
    import pipelines.score as ps

    left: dict[int, list[str]] = {}  # each chunk's part files still in the scratch after its task
    real = ps._run_chunk

    def run_chunk(k, job):
        out = real(k, job)
        left[k] = sorted(p.name for p in Path(job["scratch"]).glob(f"*_{k:04d}_*.arrow"))
        return out

    with pytest.MonkeyPatch.context() as mp:  # in-process: the county is below cluster.in_process_below
        mp.setattr(ps, "_run_chunk", run_chunk)
        res = score_quarter(p, ingested_dir=county / "ingested", model=model, store=store, root=work,
                            show_progress=False, chunk_households=400)
    frames = Frames.from_dir(county / "ingested", lines=params.lines)
    yield dict(res=res, model=model, store=store, params=p, work=work, frames=frames, county=county, left=left)
    store.dispose()


def _warnings(run) -> pd.DataFrame:
    return pd.read_parquet(run["res"].warnings_parquet)


def test_several_chunks_and_warnings(run):
    res = run["res"]
    assert res.chunks >= 3
    assert res.warnings > 30 and res.explained == res.warnings
    assert res.quarter == "2023Q2"  # default: the latest quarter in the data


def test_a_chunk_removes_its_part_files_once_done(run):
    """The scratch never holds a whole quarter's rows twice (a province: ~20 GB of part files)."""
    assert len(run["left"]) == run["res"].chunks
    assert all(not names for names in run["left"].values()), run["left"]


def test_chunked_scoring_equals_scoring_the_whole_county(run):
    m, fr = run["model"], run["frames"]
    q = int(fr.households["quarter_idx"].max())
    whole = m.predict(fr, quarters=[q], explain="none").frame()
    whole = whole[whole["in_scope"]].set_index("household_id")
    chunked = pd.read_parquet(run["res"].scores_parquet).set_index("household_id")
    assert len(chunked) == len(whole) == run["res"].households
    chunked = chunked.loc[whole.index]
    np.testing.assert_allclose(chunked["probability"].to_numpy(), whole["probability"].to_numpy(), atol=1e-12)
    assert (chunked["combined_level"].fillna("-") == whole["combined_level"].fillna("-")).all()
    assert [list(x) for x in chunked["rule_ids"]] == [[h["rule_id"] for h in hs] for hs in whole["rule_hits"]]


def test_every_rule_hit_is_a_warning_or_a_task_and_no_visit_list_exceeds_capacity(run):
    p, res = run["params"], run["res"]
    floors, routes = p.levels.rule_floors, p.tasks.routes
    s = pd.read_parquet(res.scores_parquet)
    w = _warnings(run).set_index("household_id")
    t = pd.read_parquet(Path(p.paths.warnings_dir) / f"tasks_{res.quarter}.parquet")
    tasks = set(zip(t["household_id"], t["rule_id"], strict=True))
    assert set(w.index) == set(s.loc[s["warning"], "household_id"])
    n_floor = n_task = 0
    for hid, ids, level, deferred in zip(s["household_id"], s["rule_ids"], s["combined_level"], s["deferred"],
                                         strict=True):
        for rid in ids:
            assert floors.get(rid) is not None or rid in routes
            if floors.get(rid) is not None:  # a warning of at least its floor (红 deferred by capacity: 黄)
                n_floor += 1
                floor = RANK[floors[rid]]
                got = RANK[level if isinstance(level, str) else None]
                assert got >= floor or (deferred and floor == 3 and got == 2), (hid, rid, level)
                assert rid in [h["rule_id"] for h in w.loc[hid, "rule_hits"]]
            if rid in routes:
                n_task += 1
                assert (hid, rid) in tasks
    assert n_floor > 0 and n_task > 0 and len(t) == n_task == res.tasks
    # the visit list due within the verification deadline fits every township
    red = s[s["combined_level"] == "红"].groupby(["county", "township"]).size()
    assert red.max() <= CAPACITY and s["deferred"].sum() > 0  # the cap was reached and held
    assert (w.loc[w["deferred"], "level"] == "黄").all()
    rep = res.report
    assert rep["workload"]["visits_per_township_max"] == red.max() <= rep["workload"]["capacity_per_township"]
    assert rep["workload"]["shortfall"] == s["deferred"].sum()
    assert rep["levels"]["红"]["households"] == (w["level"] == "红").sum()
    assert rep["workload"]["warned_share"] == pytest.approx(len(w) / res.households)
    assert json.loads(Path(res.report_path).read_text(encoding="utf-8")) == json.loads(json.dumps(rep))


def test_deadlines_follow_the_level_and_figures_add_up(run):
    from datetime import date

    w = _warnings(run)
    due = {lvl: set(g["deadline"]) for lvl, g in w.groupby("level")}
    assert all(len(v) == 1 for v in due.values())  # one run, one deadline per level
    days = {lvl: (date.fromisoformat(next(iter(v))) - date.fromisoformat(w["created_at"].iloc[0][:10])).days
            for lvl, v in due.items()}
    wp = run["params"].warnings
    assert days.get("红", wp.verification_days) in (wp.verification_days, wp.verification_days + 1)  # UTC vs local day
    assert days.get("黄", wp.monthly_visit_days) in (wp.monthly_visit_days, wp.monthly_visit_days + 1)
    for row in w.itertuples():
        total = sum(r["prob_pp"] for r in row.reasons) + row.other_pp
        assert abs(total - 100 * (row.probability - row.base_rate)) <= 0.1
        figs = {}
        for r in row.reasons:
            assert figs.setdefault(r["prob_pp"], r["logodds"]) == r["logodds"]  # no shared figure
        assert row.reference_period == run["model"].reference["period"]


def test_tasks_reach_the_store_and_the_townships_sheet(run):
    from openpyxl import load_workbook

    store, res = run["store"], run["res"]
    page = store.query_tasks(quarter=res.quarter, limit=500)
    assert page.total == res.tasks > 0
    assert sum(res.tasks_by_department.values()) == res.tasks
    t = page.items[0]
    assert t.status == "待办理" and t.department in {"住建", "水利", "医保", "教育", "民政"}
    assert [x.deadline for x in page.items] == sorted(x.deadline for x in page.items)
    book = next(Path(b) for b in res.workbooks if f"_{t.township}_" in Path(b).name and t.county in b)
    rows = list(load_workbook(book)["保障缺口任务"].iter_rows(values_only=True))
    mine = [r for r in rows[1:] if r[2] == t.household_id]
    assert any(r[6] == t.department and r[7] == t.measure for r in mine)
    # a re-run keeps a task's status
    store.set_task_status(t.id, "办理中")
    assert store.get_task(t.id).status == "办理中"


def test_the_api_gives_a_household_the_batchs_level(run):
    """The API's path (RiskModel.predict on households one by one with their history, serving.scoring's
    StoredThresholds over the cut-offs the batch stored) gives every household the batch's level."""
    from online import alone

    from serving.scoring import StoredThresholds

    m, fr, store = run["model"], run["frames"], run["store"]
    q = int(fr.households["quarter_idx"].max())
    s = pd.read_parquet(run["res"].scores_parquet).set_index("household_id")
    recs, hist, ctx, *_ = alone(m, fr, q, 300, seed=3)
    keep = [i for i, r in enumerate(recs) if r["household_id"] in s.index]
    recs, hist, ctx = [recs[i] for i in keep], [hist[i] for i in keep], [ctx[i] for i in keep]
    lookup = StoredThresholds(store).lookup(m.model_version)
    assert lookup(recs[0]["county"], recs[0]["township"], recs[0]["quarter"]) is not None
    got = [m.predict([r], histories=[h], contexts=[c], thresholds=lookup, explain="none")
           for r, h, c in zip(recs, hist, ctx, strict=True)]
    want = s.loc[[r["household_id"] for r in recs]]
    assert [g.columns["combined_level"][0] for g in got] == [v if isinstance(v, str) else None
                                                             for v in want["combined_level"]]
    assert [bool(g.columns["deferred"][0]) for g in got] == want["deferred"].tolist()
    assert sum(isinstance(v, str) for v in want["combined_level"]) > 5 and want["deferred"].any()
    # a model version without stored cut-offs falls back to the training-time ones it carries
    assert StoredThresholds(store).lookup("no-such-version")(recs[0]["county"], recs[0]["township"], recs[0]["quarter"]) is None


def test_reasons_are_exact_treeshap_additive_and_name_the_households_values(run):
    m, fr, p = run["model"], run["frames"], run["params"]
    q = int(fr.households["quarter_idx"].max())
    s = m.predict(fr, quarters=[q], explain="none")
    pos = pd.Index(s.features["household_id"]).get_indexer(_warnings(run)["household_id"])
    X = s.X[pos]
    contrib = m.contributions(X)
    np.testing.assert_allclose(contrib.sum(axis=1), m.booster.predict(X, raw_score=True), atol=1e-9)
    from models.explain import factor_contributions, factors_of

    F, _ = factor_contributions(m.spec, contrib)
    keys = factors_of(m.spec).keys
    hh = fr.households[fr.households["quarter_idx"] == q].set_index("household_id")
    persons = dict(tuple(fr.persons[fr.persons["quarter_idx"] == q].groupby("household_id")))
    for i, row in enumerate(_warnings(run).itertuples()):
        assert len(row.reasons) <= p.warnings.max_reasons
        for r in row.reasons:
            assert r["logodds"] == pytest.approx(F[i, keys.index(r["factor"])], abs=1e-4)
            check_reason(r, X[i], m.spec.names, hh.loc[row.household_id], persons.get(row.household_id),
                         m.reference)


def test_records_carry_head_name_masked_id_and_measures(run):
    fr = run["frames"]
    q = int(fr.households["quarter_idx"].max())
    heads = fr.persons[(fr.persons["quarter_idx"] == q) & (fr.persons["relation"] == "户主")].set_index(
        "household_id")
    w = _warnings(run)
    with_head = w[w["household_id"].isin(heads.index)]
    assert len(with_head) > 0.9 * len(w)
    assert (with_head["head_name"].to_numpy() == heads.loc[with_head["household_id"], "name"].to_numpy()).all()
    assert with_head["id_masked"].str.fullmatch(r"[0-9A-Za-z]{4}\*+[0-9A-Za-z]{4}").all()
    assert (w["measures"].map(len) >= 1).all()
    assert (w["model_version"] == "7").all()


def test_rerun_of_the_same_quarter_is_idempotent(run):
    from pipelines.score import score_quarter

    store, res = run["store"], run["res"]
    before = store.query_warnings(quarter=res.quarter, limit=1).total
    done = next(t for t in store.query_tasks(quarter=res.quarter, limit=500).items if t.status == "待办理")
    store.set_task_status(done.id, "已办结")
    again = score_quarter(run["params"], ingested_dir=run["county"] / "ingested", model=run["model"], store=store,
                          root=run["work"], show_progress=False, chunk_households=700, write_excel=False)
    assert before == res.warnings == again.warnings
    assert again.store["inserted"] == 0 and again.store["updated"] == res.warnings and again.store["removed"] == 0
    assert store.query_warnings(quarter=res.quarter, limit=1).total == before
    # tasks: refreshed, not duplicated, their status kept
    assert again.tasks == res.tasks == store.query_tasks(quarter=res.quarter, limit=1).total
    assert store.get_task(done.id).status == "已办结" and store.get_task(done.id).deadline == done.deadline
    assert sorted(store.workload(res.quarter, res.model_version), key=lambda g: g["township"]) == sorted(
        ({**g, "quarter": res.quarter, "model_version": res.model_version} for g in
         [{k: t[k] for k in ("county", "township", "n_in_scope", "n_red_wanted", "n_red", "n_yellow", "n_blue",
                             "shortfall", "capacity")} for t in again.townships]), key=lambda g: g["township"])


def test_one_workbook_per_township_without_a_full_id(run):
    from openpyxl import load_workbook

    from fangpin.excel import HEADERS

    w = _warnings(run)
    books = [Path(b) for b in run["res"].workbooks]
    t = pd.read_parquet(Path(run["params"].paths.warnings_dir) / f"tasks_{run['res'].quarter}.parquet")
    places = set(zip(w["county"], w["township"], strict=True)) | set(zip(t["county"], t["township"], strict=True))
    assert len(books) == len(places)  # a township with warnings or tasks
    full_id = re.compile(r"\d{17}[\dXx]")
    rows = 0
    for b in books:
        assert b.name.startswith("预警清单_") and b.name.endswith(f"_{run['res'].quarter}.xlsx")
        wb = load_workbook(b, read_only=True)
        sheet = wb.worksheets[0]
        values = list(sheet.iter_rows(values_only=True))
        assert tuple(values[0][:len(HEADERS)]) == HEADERS
        rows += len(values) - 1
        for ws in wb.worksheets:
            for r in ws.iter_rows(values_only=True):
                assert not any(full_id.search(str(c)) for c in r if c is not None)
        wb.close()
    assert rows == len(w)


@pytest.mark.slow
def test_cli_scores_a_new_export_with_the_registered_champion(run, tmp_path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient
    from typer.testing import CliRunner

    from fangpin.cli import app
    from models.registry import input_example, log_model, setup_mlflow

    params = load_params()
    monkeypatch.setenv("FANGPIN_STORE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    exp = setup_mlflow(params)  # its artifacts live under the state dir, not ./mlruns
    fr = run["frames"]
    example = input_example(fr, int(fr.households["quarter_idx"].max()), 2)
    with mlflow.start_run(experiment_id=exp):
        info = log_model(run["model"], tmp_path / "model", example, params.model.registered_name)
    MlflowClient().set_registered_model_alias(params.model.registered_name, "champion",
                                              str(info.registered_model_version))
    export = run["county"] / "export"
    out = CliRunner().invoke(app, ["score", "--quarter", "2023Q1", "--ledger", str(export), "--events", str(export),
                                   "--workdir", str(tmp_path), "--no-excel"])
    assert out.exit_code == 0, out.output
    assert "2023Q1" in out.output and "warnings" in out.output
    w = pd.read_parquet(tmp_path / params.paths.warnings_dir / "warnings_2023Q1.parquet")
    assert len(w) > 0 and (w["quarter"] == "2023Q1").all()
    assert (w["model_version"] == str(info.registered_model_version)).all()
    bad = CliRunner().invoke(app, ["score", "--quarter", "2023Q9", "--workdir", str(tmp_path)])
    assert bad.exit_code != 0


def _third_chunk_fails(monkeypatch) -> tuple[list[int], object]:
    """Make the third chunk task of the next run raise; returns the chunks called and the real task."""
    import pipelines.score as score

    real = score._run_chunk
    calls: list[int] = []

    def failing(k, job):
        calls.append(k)
        if len(calls) == 3:
            raise RuntimeError("chunk failed")
        return real(k, job)

    monkeypatch.setattr(score, "_run_chunk", failing)
    return calls, real


def test_a_run_that_fails_half_way_leaves_the_store_and_outputs_as_they_were(run, monkeypatch, tmp_path):
    """The store inserts each chunk as it finishes, its warnings and its households' online
    history, inside one transaction: a chunk failing after others were inserted rolls all of them
    back, and nothing is published."""
    from sqlalchemy import inspect, text

    import pipelines.score as score

    store, res = run["store"], run["res"]

    def rows():  # every column a write touches, run id and update time included
        with store.engine.connect() as conn:
            return (sorted(map(tuple, conn.execute(text("SELECT * FROM warnings WHERE quarter = :q"), {"q": res.quarter}))),
                    *(sorted(map(tuple, conn.execute(text(f"SELECT * FROM {t}"))))
                      for t in ("household_blocks", "history_blocks", "person_blocks", "place_context")))

    before = rows()
    assert len(before[0]) == res.warnings and 0 < len(before[1]) < res.history["households"]
    households = [c["name"] for c in inspect(store.engine).get_columns("household_blocks")].index("households")
    assert sum(r[households] for r in before[1]) == res.history["households"]
    assert len(before[2]) == res.history["blocks"] > 0
    runs_before = len(store.runs(res.quarter))
    calls, _ = _third_chunk_fails(monkeypatch)
    p = rooted(load_params(), tmp_path)
    out = Path(p.paths.warnings_dir)
    with pytest.raises(RuntimeError, match="chunk failed"):
        score.score_quarter(p, ingested_dir=run["county"] / "ingested", model=run["model"], store=store,
                            root=tmp_path, show_progress=False, chunk_households=400)
    assert len(calls) == 3  # two chunks were inserted before the failure
    assert rows() == before and len(store.runs(res.quarter)) == runs_before
    assert out.is_relative_to(tmp_path) and not list(out.glob("*.parquet")) and not list(tmp_path.rglob("*.xlsx"))
    assert not list(out.glob(".score_*"))  # scratch removed


@pytest.mark.postgres
def test_on_postgresql_a_quarter_appears_whole_or_not_at_all(run, monkeypatch, tmp_path):
    """The same on PostgreSQL: a run whose third chunk fails leaves the store as it was; a run
    that succeeds makes every warning of the quarter visible at once."""
    from pg_db import throwaway_pg_db
    from sqlalchemy import text

    import pipelines.score as score
    from fangpin.store import Store

    with throwaway_pg_db() as url:
        store = Store(url, b"test-secret", migrate=True)
        try:
            p = rooted(load_params(), tmp_path)
            kw = dict(ingested_dir=run["county"] / "ingested", model=run["model"], store=store, root=tmp_path,
                      show_progress=False, chunk_households=400, write_excel=False)
            _, real = _third_chunk_fails(monkeypatch)
            with pytest.raises(RuntimeError, match="chunk failed"):
                score.score_quarter(p, **kw)

            def count():
                with store.engine.connect() as conn:
                    return conn.execute(text("SELECT count(*) FROM warnings")).scalar_one()

            assert count() == 0
            monkeypatch.setattr(score, "_run_chunk", real)
            res = score.score_quarter(p, **kw)
            assert res.warnings == run["res"].warnings and count() == res.warnings
        finally:
            store.dispose()


def test_an_export_without_department_signals_scores(run, tmp_path):
    """A valid export with no 部门预警数据 file: ingest writes an empty events table in its canonical
    column types and scoring runs (it used to stop in the partition step on text-typed columns);
    an events table with the wrong types is refused naming the file."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from fangpin.ingest import ingest
    from fangpin.ingest.tables import EVENT_DTYPES
    from pipelines.score import score_export, score_quarter

    ledger = tmp_path / "ledger_only"
    ledger.mkdir()
    for f in (run["county"] / "export").glob("户成员台账_*.csv"):
        shutil.copy(f, ledger / f.name)
    p = rooted(run["params"], tmp_path)
    res = score_export(p, [ledger], None, quarter="2023Q1", model=run["model"], store=run["store"],
                       root=tmp_path, show_progress=False, write_excel=False)
    assert res.households > 0 and res.warnings > 0

    ing = tmp_path / "ing"
    assert ingest([ledger], [], ing, p).ok
    ev = pq.read_table(ing / "events.parquet")
    assert ev.num_rows == 0 and ev.schema.field("quarter_idx").type == pa.int32()
    assert ev.schema.field("amount").type == pa.float64() and set(ev.column_names) == set(EVENT_DTYPES)
    # a table written with text columns (as the old ingest did) is refused with the file named
    pq.write_table(pa.table({c: pa.array([], pa.large_string()) for c in EVENT_DTYPES}), ing / "events.parquet")
    with pytest.raises(ValueError, match=r"events.parquet: column quarter_idx"):
        score_quarter(p, quarter="2023Q1", ingested_dir=ing, model=run["model"], store=run["store"],
                      root=tmp_path, show_progress=False, write_excel=False)
