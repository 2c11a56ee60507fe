"""train → evaluate → register → promote → rollback on a small canonical ledger, in a private
MLflow store; the logged pyfunc takes ledger-shaped input and agrees with the plain loader."""

import json

import numpy as np
import pandas as pd
import pytest
from canonical_frames import make_frames, write_frames

from fangpin.config import Params
from pipelines.common import rooted

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("mlflow_pipeline")]


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    p = Params(lines={2021: 6000.0, 2022: 6500.0, 2023: 6900.0, 2024: 7300.0, 2025: 7600.0})
    model = p.model.model_copy(update={"n_estimators": 40, "min_child_samples": 20, "num_leaves": 7,
                                       "early_stopping_rounds": 10, "num_threads": 1, "explain_sample": 300})
    p = rooted(p.model_copy(update={"model": model}), tmp_path / "w")
    write_frames(make_frames(1200, 9, seed=5), p.paths.ingested_dir)
    return p


def test_train_evaluate_promote_rollback(workdir):
    import mlflow

    from models.registry import champion_version, load_champion
    from pipelines.evaluate import evaluate
    from pipelines.promote import promote, rollback
    from pipelines.train import train

    p = workdir
    info1 = train(p)
    assert info1["version"] == "1"
    metrics = evaluate(p)
    rdir = p.paths.reports_dir
    on_disk = json.loads((rdir / "metrics.json").read_text(encoding="utf-8"))
    assert on_disk == json.loads(json.dumps(metrics))
    assert set(on_disk) == {"test_quarters", "n_test", "positives", "rules_workload", "systems", "slices", "levels",
                            "workload"}
    assert on_disk["workload"]["visits_per_township_max"] <= on_disk["workload"]["capacity_per_township"]
    assert (rdir / "report.md").exists() and (rdir / "model_card.md").exists()
    assert "## Levels and workload" in (rdir / "report.md").read_text(encoding="utf-8")
    card = (rdir / "model_card.md").read_text(encoding="utf-8")
    for section in ("## 用途", "## 模型", "类别不平衡", "## Intended use", "## Model", "Class imbalance", "purged",
                    "## 预警等级与工作量", "## Levels and workload"):
        assert section in card, section
    mv = mlflow.MlflowClient().get_model_version(info1["registered_name"], info1["version"])
    assert mv.description == card  # the evaluation stage's card is the registered version's description
    assert (rdir / "figures" / "recall_at_workload.png").stat().st_size > 1000
    run = mlflow.get_run(info1["run_id"])
    assert "test.model.auc" in run.data.metrics and "model.num_leaves" in run.data.params
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(info1["run_id"], "reports")}
    assert "reports/report.md" in arts

    d1 = promote(p)
    assert d1["promoted"] and champion_version(p) == "1"

    info2 = train(p)  # same data, same seed: not worse, so it is promoted
    assert info2["version"] == "2"
    d2 = promote(p)
    assert d2["promoted"] and d2["champion_before"] == "1" and champion_version(p) == "2"
    assert d2["champion_metrics"]["auc"] == pytest.approx(d2["challenger_metrics"]["auc"])

    back = rollback(p)
    assert back["champion_after"] == "1" and champion_version(p) == "1"
    with pytest.raises(LookupError):
        rollback(p)

    # the plain loader, the generic pyfunc and the batch give one result: households of the last
    # quarter scored alone with their history (as the API passes it) equal the county batch
    from online import alone

    from models.features import Frames
    from models.pyfunc import RESULT_COLUMNS

    frames = Frames.from_dir(p.paths.ingested_dir)
    t = int(frames.households["quarter_idx"].max())
    model = load_champion(p)
    assert model.model_version == "1"
    recs, hist, _, batch, _, ctx = alone(model, frames, t, 40, seed=2)  # contexts with the batch's level cut-offs
    plain = model.predict(recs, histories=hist, contexts=ctx).frame()
    pyf = mlflow.pyfunc.load_model(f"models:/{p.model.registered_name}@champion")
    inp = pd.DataFrame(recs).assign(history=[json.dumps(h) for h in hist], context=[json.dumps(c) for c in ctx])
    out = pyf.predict(inp)
    assert list(out.columns) == [c for c in RESULT_COLUMNS if c != "quarter_idx"]
    np.testing.assert_array_equal(out["probability"].to_numpy(), plain["probability"].to_numpy())
    np.testing.assert_allclose(out["probability"].to_numpy(), batch["probability"], rtol=0, atol=1e-12)
    def values(col):  # MLflow's output frame carries a missing level as NaN
        return [None if not isinstance(v, str | list) else v for v in col]

    for c in ("combined_level", "deferred", "rule_hits", "reasons", "summary", "measures", "history"):
        assert values(out[c]) == values(plain[c]) == values(batch[c]), c
    assert out["warning"].any()
    bare = pyf.predict(inp, params={"explain": "none"})  # declared in the signature
    assert bare["reasons"].isna().all() and np.array_equal(bare["probability"], out["probability"])


def test_a_worse_challenger_is_not_promoted(workdir):
    from models.registry import champion_version
    from pipelines.promote import decide, promote
    from pipelines.train import train

    p = workdir
    train(p)
    promote(p)
    champ = {"auc": 0.80, "recall_at_rules_workload": 0.50, "calibration_error": 0.01}
    worse = {"auc": 0.78, "recall_at_rules_workload": 0.50, "calibration_error": 0.01}
    ok, reasons = decide(worse, champ, p)
    assert not ok and any(r.startswith("FAIL: AUC") for r in reasons)
    ok, _ = decide({**champ, "calibration_error": 0.05}, champ, p)
    assert not ok
    ok, _ = decide({**champ, "auc": 0.796}, champ, p)  # within max_auc_drop
    assert ok
    assert champion_version(p) == "1"
