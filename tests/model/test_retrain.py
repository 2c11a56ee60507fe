"""End to end: a small generated history run through `fangpin run`, the quarterly review notebook
executed on it (before any retrain), then `fangpin retrain` on one more generated quarter (synth is
prefix-stable: Q+1 quarters reproduce the first Q) into which the generator injected a known shift —
a job-loss wave in one county — and the notebook executed again on the result."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("retrain")]

HOUSEHOLDS, QUARTERS, SEED = 1500, 10, 7
SHIFT = {"quarter": "2024Q3", "county": 0, "job_loss": 0.6, "line_rise": 0.0}  # the retrain's new quarter
# features the job-loss wave moves (work, income, unemployment signals); every other alarm is suspect
SHIFT_FEATURES = {"n_migrant_workers", "work_months_total", "n_idle_labor", "d_n_migrant_workers",
                  "d_work_months_total", "wage_share", "transfer_share", "business_share", "income_per_capita",
                  "income_ratio", "income_margin", "household_net_income", "income_change", "rigid_share",
                  "income_after_rigid_ratio", "quarters_since_income_change", "ev_unemployment_n_1q",
                  "ev_unemployment_n_2q", "ev_unemployment_n_4q", "labor_share"}
# seasonal township/village context and the township's identification rate differ between the
# training window (2022Q1-Q2) and 2024Q3 without any shift (few township values, disaster season)
CONTEXT = {"township_disaster_share", "village_disaster_share", "township_ident_rate_4q"}


def _env(ws: Path) -> dict[str, str]:
    state = ws / "w" / ".fangpin"
    return {"FANGPIN_STATE_DIR": str(state), "MLFLOW_TRACKING_URI": f"sqlite:///{state}/mlflow.db",
            "FANGPIN_STORE_URL": f"sqlite:///{state}/warnings.db", "FANGPIN_PARAMS": str(ws / "w" / "params.yaml")}


def _invoke(args: list[str]):
    from typer.testing import CliRunner

    from fangpin.cli import app

    res = CliRunner().invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res


def _execute_notebook(repo_root: Path, ws: Path, figs: Path):
    """Run the review notebook as an analyst opens it in Jupyter: no MPLBACKEND from the test
    environment, so the kernel's inline backend is active. Returns (notebook, image/png outputs)."""
    import nbformat
    from nbclient import NotebookClient

    nb_path = repo_root / "notebooks" / "quarterly_review.ipynb"
    nb = nbformat.read(nb_path, as_version=4)
    with pytest.MonkeyPatch.context() as mp:
        for k, v in {**_env(ws), "FANGPIN_WORKDIR": str(ws / "w"), "FANGPIN_FIGURES": str(figs)}.items():
            mp.setenv(k, v)
        mp.delenv("MPLBACKEND", raising=False)  # conftest sets Agg for the test process, not for Jupyter
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(nb_path.parent)}}).execute()  # a failing cell raises
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    return nb, len(images)


@pytest.fixture(scope="module")
def ws(tmp_path_factory, repo_root):
    ws = tmp_path_factory.mktemp("retrain")
    w = ws / "w"
    w.mkdir()
    p = yaml.safe_load((repo_root / "params.yaml").read_text(encoding="utf-8"))
    p["model"].update(n_estimators=40, early_stopping_rounds=10, min_child_samples=20, explain_sample=300)
    p["fairness"]["bootstrap"] = 50
    (w / "params.yaml").write_text(yaml.safe_dump(p, allow_unicode=True), encoding="utf-8")
    p["synth"]["shift"] = SHIFT
    (ws / "shift.yaml").write_text(yaml.safe_dump(p, allow_unicode=True), encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        for k, v in _env(ws).items():
            mp.setenv(k, v)
        for q, pf, out in ((QUARTERS, w / "params.yaml", f"syn{QUARTERS}"),
                           (QUARTERS + 1, ws / "shift.yaml", f"syn{QUARTERS + 1}"),
                           (QUARTERS + 1, w / "params.yaml", "control")):  # the same quarter without the shift
            _invoke(["synth", "-n", str(HOUSEHOLDS), "-q", str(q), "--seed", str(SEED), "--out", str(ws / out),
                     "--params", str(pf)])
        _invoke(["run", "--ledger", str(ws / f"syn{QUARTERS}"), "--events", str(ws / f"syn{QUARTERS}"),
                 "--workdir", str(w), "--params", str(w / "params.yaml")])
        shutil.copytree(w / "data" / "ingested", ws / "ingested_before")
    # right after the run, before any retrain: performance, calibration and SHAP, inline
    _, images_before = _execute_notebook(repo_root, ws, ws / "figs_before")
    with pytest.MonkeyPatch.context() as mp:
        for k, v in _env(ws).items():
            mp.setenv(k, v)
        new = sorted((ws / f"syn{QUARTERS + 1}").glob("户成员台账_*.csv"))[-1]
        year = new.stem[-6:-2]
        export = [ "--ledger", str(new), "--events", str(ws / f"syn{QUARTERS + 1}" / f"部门预警数据_{year}.csv"),
                   "--workdir", str(w), "--params", str(w / "params.yaml")]
        out1 = _invoke(["retrain", *export]).output
        from pipelines.retrain import table_fingerprint

        fp1 = table_fingerprint(w / "data" / "ingested")
        out2 = _invoke(["retrain", *export]).output
        fp2 = table_fingerprint(w / "data" / "ingested")
    return {"ws": ws, "w": w, "new_quarter": new.stem[-6:], "out1": out1, "out2": out2, "fp": (fp1, fp2),
            "images_before": images_before}


def test_retrain_prints_a_verdict_with_figures_and_writes_the_reports(ws):
    out = ws["out1"]
    assert "结论 verdict" in out and ("PROMOTE" in out or "KEEP" in out)
    assert "recall@k" in out and "AUC" in out and "%" in out
    rdir = ws["w"] / "reports" / "retrain" / ws["new_quarter"]
    v = json.loads((rdir / "verdict.json").read_text(encoding="utf-8"))
    assert v["new_quarter"] == ws["new_quarter"]
    assert v["challenger"] == "2" and v["champion_before"] == "1"
    # the quarter the new snapshot resolves (t - H) is labelled now and among the compared quarters
    assert v["labels_resolved"]["quarters"] and v["labels_resolved"]["quarters"][-1] in v["test_quarters"]
    assert set(v["challenger_metrics"]) >= {"auc", "recall_at_rules_workload", "calibration_error"}
    assert v["champion_metrics"] is not None  # challenger and champion scored on the same quarters
    assert v["decision"] in ("promote", "keep") and v["reasons"]
    for name in ("drift.json", "drift.md", "drift.png", "fairness.json", "fairness.md", "fairness.png",
                 "feedback.json", "model_card_v2_zh.md", "model_card_v2_en.md"):
        assert (rdir / name).stat().st_size > 0, name
    drift = json.loads((rdir / "drift.json").read_text(encoding="utf-8"))
    assert any(c["kind"] == "score" for c in drift["columns"])
    fair = json.loads((rdir / "fairness.json").read_text(encoding="utf-8"))
    assert {"county", "township", "household_type", "labor_class", "head_sex", "head_ethnicity"} <= set(fair["attributes"])


def test_same_export_twice_changes_nothing(ws):
    assert ws["fp"][0] == ws["fp"][1]
    assert "数据未变化" in ws["out2"]
    hist = json.loads((ws["w"] / "reports" / "retrain_history.json").read_text(encoding="utf-8"))
    assert len(hist) == 1


def test_model_card_is_logged_with_the_version_and_the_champion_is_served(ws, monkeypatch):
    for k, v in _env(ws["ws"]).items():
        monkeypatch.setenv(k, v)
    from mlflow import MlflowClient

    from fangpin.config import load_params
    from models.registry import champion_version, setup_mlflow
    from pipelines.common import rooted
    from serving.model import default_loader

    params = rooted(load_params(ws["w"] / "params.yaml"), ws["w"])
    setup_mlflow(params)
    client = MlflowClient()
    mv = client.get_model_version("return-risk", "2")
    assert "模型卡" in mv.description and "Model card" in mv.description
    assert "决策辅助" in mv.description and "never" in mv.description
    arts = {a.path for a in client.list_artifacts(mv.run_id, "model_card")}
    assert {"model_card/model_card_zh.md", "model_card/model_card_en.md"} <= arts
    v = json.loads((ws["w"] / "reports" / "retrain" / ws["new_quarter"] / "verdict.json").read_text(encoding="utf-8"))
    assert str(champion_version(params)) == v["champion_after"]
    # what POST /v1/admin/reload loads: the version behind @champion
    assert str(default_loader(params, params.serving.model_uri).version) == v["champion_after"]
    assert len(client.search_model_versions("name='return-risk'")) == 2  # the repeated export trained nothing


def test_notebook_shows_performance_calibration_and_shap_right_after_the_run(ws):
    figs = ws["ws"] / "figs_before"
    assert ws["images_before"] == 3
    assert {p.name for p in figs.glob("*.png")} == {"performance.png", "calibration.png", "shap_summary.png"}


def test_quarterly_review_notebook_shows_every_figure_after_a_retrain(ws, repo_root):
    figs = ws["ws"] / "figs_after"
    nb, images = _execute_notebook(repo_root, ws["ws"], figs)
    # the .ipynb and its jupytext pair say the same thing
    import jupytext

    paired = jupytext.read(repo_root / "notebooks" / "quarterly_review.py")
    assert [c.source for c in paired.cells] == [c.source for c in nb.cells]
    text = json.dumps([o for c in nb.cells for o in c.get("outputs", [])], ensure_ascii=False)
    assert "missing from font" not in text and "Glyph" not in text
    pngs = {p.name for p in figs.glob("*.png")}
    expected = {"performance.png", "performance_over_quarters.png", "calibration.png", "shap_summary.png",
                "drift.png", "fairness.png"}
    assert pngs == expected
    assert images == len(expected)  # every figure shown inline, not only saved
    assert all((figs / p).stat().st_size > 5000 for p in pngs)


def test_retrain_flags_the_injected_shift_and_not_the_warm_up(ws, monkeypatch):
    """The new quarter carries a job-loss wave in one county (synth.shift): the drift report flags
    work features; the same quarter generated without the wave does not. Look-back features, empty or
    truncated in the first training quarters, raise no alarm although a naive PSI would."""
    for k, v in _env(ws["ws"]).items():
        monkeypatch.setenv(k, v)
    from fangpin.config import load_params
    from fangpin.ingest import ingest
    from models.features import Frames
    from models.registry import load_version
    from pipelines.common import rooted
    from pipelines.drift import STATUS_ALARM, drift_report
    from pipelines.retrain import _in_scope_rows, compute_drift

    drift = json.loads((ws["w"] / "reports" / "retrain" / ws["new_quarter"] / "drift.json").read_text(encoding="utf-8"))
    status = {c["column"]: c for c in drift["columns"] if c["kind"] == "feature"}
    alarms = {c for c, r in status.items() if r["status"] == STATUS_ALARM}
    assert alarms & {"d_n_migrant_workers", "d_work_months_total"}, alarms
    assert alarms <= SHIFT_FEATURES | CONTEXT, alarms - SHIFT_FEATURES - CONTEXT
    # warm-up: the first training quarter has no previous quarter and no year of events
    assert status["d_n_members"]["warm_up_ref"] > 0 and status["ev_hospital_n_4q"]["n_ref"] == 0

    params = rooted(load_params(ws["w"] / "params.yaml"), ws["w"])
    v1 = load_version(params, "1")
    frames = Frames.from_dir(ws["w"] / "data" / "ingested", lines=params.lines)
    ref, cur = _in_scope_rows(v1, frames, list(v1.meta["split"]["train"]))[1], \
        _in_scope_rows(v1, frames, [ws["new_quarter"]])[1]
    naive = drift_report(ref, cur, list(v1.spec.names), params=params)  # every reference row, warm-up included
    naive_alarms = set(naive.alarms["column"])
    warm_up_only = {"d_n_members", "d_n_serious_illness", "d_medical_oop", "d_n_labor_full", "ev_hospital_n_4q"}
    assert naive_alarms & warm_up_only  # the check can fail: without the exclusion these would alarm
    assert not alarms & warm_up_only

    # the same quarter without the wave: no work-feature alarm
    ctrl = ws["ws"] / "ingested_ctrl"
    shutil.copytree(ws["ws"] / "ingested_before", ctrl)
    new = sorted((ws["ws"] / "control").glob("户成员台账_*.csv"))[-1]
    ingest([new], [ws["ws"] / "control" / f"部门预警数据_{new.stem[-6:-2]}.csv"], ctrl, params, append=True,
           show_progress=False)
    control = compute_drift(Frames.from_dir(ctrl, lines=params.lines), ws["new_quarter"], v1, None, params)
    assert not set(control.alarms["column"]) & {"d_n_migrant_workers", "d_work_months_total", "n_idle_labor"}
