"""End to end: a small generated history run through `fangpin run`, then `fangpin retrain` on one
more generated quarter (synth is prefix-stable: Q+1 quarters reproduce the first Q), and the
quarterly review notebook executed on the result."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("retrain")]

HOUSEHOLDS, QUARTERS, SEED = 1500, 10, 7


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


@pytest.fixture(scope="module")
def ws(tmp_path_factory, repo_root):
    ws = tmp_path_factory.mktemp("retrain")
    w = ws / "w"
    w.mkdir()
    p = yaml.safe_load((repo_root / "params.yaml").read_text(encoding="utf-8"))
    p["model"].update(n_estimators=40, early_stopping_rounds=10, min_child_samples=20, explain_sample=300)
    p["fairness"]["bootstrap"] = 50
    (w / "params.yaml").write_text(yaml.safe_dump(p, allow_unicode=True), encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        for k, v in _env(ws).items():
            mp.setenv(k, v)
        for q in (QUARTERS, QUARTERS + 1):
            _invoke(["synth", "-n", str(HOUSEHOLDS), "-q", str(q), "--seed", str(SEED), "--out", str(ws / f"syn{q}"),
                     "--params", str(w / "params.yaml")])
        _invoke(["run", "--ledger", str(ws / f"syn{QUARTERS}"), "--events", str(ws / f"syn{QUARTERS}"),
                 "--workdir", str(w), "--params", str(w / "params.yaml")])
        new = sorted((ws / f"syn{QUARTERS + 1}").glob("户成员台账_*.csv"))[-1]
        year = new.stem[-6:-2]
        export = [ "--ledger", str(new), "--events", str(ws / f"syn{QUARTERS + 1}" / f"部门预警数据_{year}.csv"),
                   "--workdir", str(w), "--params", str(w / "params.yaml")]
        out1 = _invoke(["retrain", *export]).output
        from pipelines.retrain import table_fingerprint

        fp1 = table_fingerprint(w / "data" / "ingested")
        out2 = _invoke(["retrain", *export]).output
        fp2 = table_fingerprint(w / "data" / "ingested")
    return {"ws": ws, "w": w, "new_quarter": new.stem[-6:], "out1": out1, "out2": out2, "fp": (fp1, fp2)}


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


def test_quarterly_review_notebook_runs_and_renders_chinese(ws, repo_root, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    figs = tmp_path / "figs"
    for k, v in {**_env(ws["ws"]), "FANGPIN_WORKDIR": str(ws["w"]), "FANGPIN_FIGURES": str(figs)}.items():
        monkeypatch.setenv(k, v)
    nb_path = repo_root / "notebooks" / "quarterly_review.ipynb"
    nb = nbformat.read(nb_path, as_version=4)
    # the .ipynb and its jupytext pair say the same thing
    import jupytext

    paired = jupytext.read(repo_root / "notebooks" / "quarterly_review.py")
    assert [c.source for c in paired.cells] == [c.source for c in nb.cells]
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(nb_path.parent)}}).execute()  # a failing cell raises
    text = json.dumps([o for c in nb.cells for o in c.get("outputs", [])], ensure_ascii=False)
    assert "missing from font" not in text and "Glyph" not in text
    pngs = {p.name for p in figs.glob("*.png")}
    assert pngs == {"performance_over_quarters.png", "calibration.png", "shap_summary.png", "drift.png",
                    "fairness.png"}
    assert all((figs / p).stat().st_size > 5000 for p in pngs)
    assert os.environ["FANGPIN_WORKDIR"] == str(ws["w"])
