"""A generated annual ledger (one snapshot a year, each written as its Q4; `labels.horizon_quarters: 4`)
run through `fangpin run` in fresh working directories: three snapshots (one training quarter, one
test quarter, early stopping and calibration on villages held out inside the training quarter) and
its first two snapshots (a single labelled quarter: the test is held-out villages, and says so)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("short_ledgers")]

HOUSEHOLDS, QUARTERS, SEED = 5000, 12, 5  # 2022Q1 … 2024Q4: snapshots 2022Q4, 2023Q4, 2024Q4


def _env(w: Path) -> dict[str, str]:
    state = w / ".fangpin"
    return {"FANGPIN_STATE_DIR": str(state), "MLFLOW_TRACKING_URI": f"sqlite:///{state}/mlflow.db"}


def _invoke(args: list[str]) -> str:
    from typer.testing import CliRunner

    from fangpin.cli import app

    res = CliRunner().invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture(scope="module")
def runs(tmp_path_factory, repo_root):
    ws = tmp_path_factory.mktemp("annual")
    p = yaml.safe_load((repo_root / "params.yaml").read_text(encoding="utf-8"))
    p["labels"]["horizon_quarters"] = 4
    p["synth"]["snapshots"] = "annual"
    p["model"].update(n_estimators=60, early_stopping_rounds=10, min_child_samples=20, explain_sample=300)
    pf = ws / "params.yaml"
    pf.write_text(yaml.safe_dump(p, allow_unicode=True), encoding="utf-8")
    syn = ws / "syn"
    out = {"syn": syn}
    with pytest.MonkeyPatch.context() as mp:
        _invoke(["synth", "-n", str(HOUSEHOLDS), "-q", str(QUARTERS), "--seed", str(SEED), "--out", str(syn),
                 "--params", str(pf)])
        ledgers = sorted(syn.glob("户成员台账_*.csv"))
        assert [f.stem[-6:] for f in ledgers] == ["2022Q4", "2023Q4", "2024Q4"]
        for name, files, years in (("three", ledgers, (2022, 2023, 2024)), ("two", ledgers[:2], (2022, 2023))):
            w = ws / name
            for k, v in _env(w).items():
                mp.setenv(k, v)
            args = ["run", "--workdir", str(w), "--params", str(pf)]
            for f in files:
                args += ["--ledger", str(f)]
            for y in years:
                args += ["--events", str(syn / f"部门预警数据_{y}.csv")]
            out[name] = {"w": w, "stdout": _invoke(args)}
    return out


def _read(w: Path, rel: str):
    text = (w / rel).read_text(encoding="utf-8")
    return json.loads(text) if rel.endswith(".json") else text


def test_generator_writes_annual_snapshots_with_dated_events(runs):
    syn = runs["syn"]
    assert sorted(p.stem[-6:] for p in syn.glob("户成员台账_*.csv")) == ["2022Q4", "2023Q4", "2024Q4"]
    ev = pd.read_csv(syn / "部门预警数据_2023.csv", dtype=str)
    months = pd.to_datetime(ev["事件日期"]).dt.month
    assert months.min() <= 3 and months.max() >= 10  # events all year round, not only in Q4
    oracle = pd.read_csv(syn / "oracle.csv", dtype=str)
    assert set(oracle["统计季度"]) == {"2022Q4", "2023Q4", "2024Q4"}


def test_three_annual_snapshots_train_on_one_quarter_and_test_on_the_next(runs):
    w = runs["three"]["w"]
    info = _read(w, "data/model/train_info.json")
    s = info["split"]
    assert (s["train"], s["test"], s["fit_mode"], s["test_mode"]) == (["2022Q4"], ["2023Q4"], "grouped", "quarters")
    assert s["valid_villages"] and s["calib_villages"] and not set(s["valid_villages"]) & set(s["calib_villages"])
    assert info["ledger"]["spacing_quarters"] == 4 and "2023Q2" in info["ledger"]["missing_quarters"]
    fit = info["fit"]
    for k in ("train", "valid", "calib"):
        assert fit[f"n_{k}"] > 0 and 0 < fit[f"pos_{k}"] < fit[f"n_{k}"], fit
    # 2022Q4's 4-quarter window ends at 2023Q4, the test quarter: allowed, nothing purged
    assert s["purged"] == [] and fit["purged_rows"] == 0
    m = _read(w, "reports/metrics.json")
    assert m["test_quarters"] == ["2023Q4"] and m["positives"] > 0
    assert m["systems"]["model"]["auc"] is not None
    report = _read(w, "reports/report.md")
    assert "villages held out inside them" in report and "按村" in report
    card = _read(w, "reports/model_card.md")
    assert "Ledger snapshots: 2022Q4, 2023Q4, 2024Q4 (annual)" in card and "每年一次" in card
    assert "model v1" in runs["three"]["stdout"]


def test_two_annual_snapshots_test_on_held_out_villages_and_say_so(runs):
    w = runs["two"]["w"]
    info = _read(w, "data/model/train_info.json")
    s = info["split"]
    assert (s["test"], s["fit_mode"], s["test_mode"]) == (["2022Q4"], "grouped", "villages")
    test_v, valid_v, calib_v = set(s["test_villages"]), set(s["valid_villages"]), set(s["calib_villages"])
    assert test_v and valid_v and calib_v
    assert not (test_v & valid_v or test_v & calib_v or valid_v & calib_v)
    m = _read(w, "reports/metrics.json")
    hh = pd.read_parquet(w / "data" / "ingested" / "households.parquet")
    from models.train import village_key

    in_test = np.isin(village_key(hh), list(test_v))
    assert 0 < m["n_test"] <= int(in_test.sum()) < len(hh)  # only the held-out villages are tested
    # no household of a test village was used for fitting: the fitting rows are the other villages
    fit = info["fit"]
    assert fit["n_train"] + fit["n_valid"] + fit["n_calib"] + m["n_test"] <= len(hh)
    assert m["positives"] > 0
    report = _read(w, "reports/report.md")
    card = _read(w, "reports/model_card.md")
    for text in (report, card):
        assert "not to the future" in text and "不能代表对未来季度的预测效果" in text
