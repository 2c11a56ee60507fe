"""Batch scoring (pipelines/score.py): chunked == whole county, every rule hit is a warning,
additive reasons naming the household's values, idempotent re-runs, township workbooks without a
full ID, the CLI on a new export with the registered @champion."""

from __future__ import annotations

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
    model = _tiny_model(params)
    work = tmp_path_factory.mktemp("work")
    p = rooted(params, work)
    store = Store(f"sqlite:///{work / 'warnings.db'}", b"test-secret", migrate=True)
    res = score_quarter(p, ingested_dir=county / "ingested", model=model, store=store, root=work,
                        show_progress=False, chunk_households=400)
    frames = Frames.from_dir(county / "ingested", lines=params.lines)
    yield dict(res=res, model=model, store=store, params=p, work=work, frames=frames, county=county)
    store.dispose()


def _warnings(run) -> pd.DataFrame:
    return pd.read_parquet(run["res"].warnings_parquet)


def test_several_chunks_and_warnings(run):
    res = run["res"]
    assert res.chunks >= 3
    assert res.warnings > 30 and res.explained == res.warnings
    assert res.quarter == "2023Q2"  # default: the latest quarter in the data


def test_chunked_scoring_equals_scoring_the_whole_county(run):
    m, fr = run["model"], run["frames"]
    q = int(fr.households["quarter_idx"].max())
    whole = m.score(fr, quarters=[q], explain="none")
    whole = whole[whole["in_scope"]].set_index("household_id")
    chunked = pd.read_parquet(run["res"].scores_parquet).set_index("household_id")
    assert len(chunked) == len(whole) == run["res"].households
    chunked = chunked.loc[whole.index]
    np.testing.assert_allclose(chunked["probability"].to_numpy(), whole["probability"].to_numpy(), atol=1e-12)
    assert (chunked["combined_level"].fillna("-") == whole["combined_level"].fillna("-")).all()
    assert [list(x) for x in chunked["rule_ids"]] == [[h["rule_id"] for h in hs] for hs in whole["rule_hits"]]


def test_every_rule_hit_is_a_warning_on_every_scored_row(run):
    s = pd.read_parquet(run["res"].scores_parquet)
    hit = s["rule_ids"].map(len) > 0
    assert hit.sum() > 0
    assert s.loc[hit, "warning"].all()
    def rank(v):
        return RANK[v if isinstance(v, str) else None]

    assert all(rank(c) >= rank(r) for c, r in zip(s["combined_level"], s["rule_level"], strict=True))
    w = _warnings(run)
    assert set(w["household_id"]) == set(s.loc[s["warning"], "household_id"])
    assert set(s.loc[hit, "household_id"]) <= set(w.loc[w["rule_hits"].map(len) > 0, "household_id"])


def test_reasons_are_exact_treeshap_additive_and_name_the_households_values(run):
    m, fr, p = run["model"], run["frames"], run["params"]
    q = int(fr.households["quarter_idx"].max())
    scored, feats = m.score(fr, quarters=[q], explain="none", return_features=True)
    pos = pd.Index(feats["household_id"]).get_indexer(_warnings(run)["household_id"])
    X = m.spec.matrix(feats.iloc[pos])
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
            check_reason(r, X[i], m.spec.names, hh.loc[row.household_id], persons.get(row.household_id))


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
    again = score_quarter(run["params"], ingested_dir=run["county"] / "ingested", model=run["model"], store=store,
                          root=run["work"], show_progress=False, chunk_households=700, write_excel=False)
    assert before == res.warnings == again.warnings
    assert again.store["inserted"] == 0 and again.store["updated"] == res.warnings and again.store["removed"] == 0
    assert store.query_warnings(quarter=res.quarter, limit=1).total == before


def test_one_workbook_per_township_without_a_full_id(run):
    from openpyxl import load_workbook

    from fangpin.excel import HEADERS

    w = _warnings(run)
    books = [Path(b) for b in run["res"].workbooks]
    assert len(books) == w.groupby(["county", "township"]).ngroups
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
    from models.pyfunc import log_pyfunc, records_from_frames, setup_mlflow

    params = load_params()
    monkeypatch.setenv("FANGPIN_STORE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    setup_mlflow(params)
    fr = run["frames"]
    example = records_from_frames(fr, int(fr.households["quarter_idx"].max()), 2)
    with mlflow.start_run():
        info = log_pyfunc(run["model"], tmp_path / "model", example, params.model.registered_name)
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


def test_a_run_that_fails_half_way_leaves_the_store_and_outputs_as_they_were(run, monkeypatch, tmp_path):
    """The store inserts each chunk as it finishes, inside one transaction: a chunk failing after
    others were inserted rolls all of them back, and nothing is published."""
    from sqlalchemy import text

    import pipelines.score as score

    store, res = run["store"], run["res"]

    def rows():  # every column a write touches, run id and update time included
        with store.engine.connect() as conn:
            return sorted(map(tuple, conn.execute(text("SELECT * FROM warnings WHERE quarter = :q"), {"q": res.quarter})))

    before = rows()
    assert len(before) == res.warnings
    runs_before = len(store.runs(res.quarter))
    real = score._run_chunk
    calls = []

    def failing(k, job):
        calls.append(k)
        if len(calls) == 3:
            raise RuntimeError("chunk failed")
        return real(k, job)

    monkeypatch.setattr(score, "_run_chunk", failing)
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
    import uuid

    from sqlalchemy import text
    from test_store import _pg_admin

    import pipelines.score as score
    from fangpin.store import Store

    admin = _pg_admin()
    name = f"fangpin_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as c:
        c.exec_driver_sql(f'CREATE DATABASE "{name}"')
    store = Store(admin.url.set(database=name).render_as_string(hide_password=False), b"test-secret", migrate=True)
    try:
        p = rooted(load_params(), tmp_path)
        kw = dict(ingested_dir=run["county"] / "ingested", model=run["model"], store=store, root=tmp_path,
                  show_progress=False, chunk_households=400, write_excel=False)
        real = score._run_chunk
        calls = []

        def failing(k, job):
            calls.append(k)
            if len(calls) == 3:
                raise RuntimeError("chunk failed")
            return real(k, job)

        monkeypatch.setattr(score, "_run_chunk", failing)
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
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


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
