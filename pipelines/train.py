"""`fangpin train`: canonical tables → labels + features → calibrated LightGBM → one pyfunc in
MLflow, registered as params.model.registered_name.

Reads: <paths.ingested_dir> (households/persons/events Parquet, lines.json).
Writes: <model.out_dir>/train_info.json (run id, registered version, split), <model.out_dir>/model/
(the model's parts, as logged). Params: labels, rules, model, levels, lines, paths.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from fangpin.config import Params
from pipelines.common import load_frames, train_info_path, write_json

log = logging.getLogger(__name__)


@dataclass
class Dataset:
    feats: pd.DataFrame  # every household-quarter (features + identity + rule inputs)
    labels: pd.DataFrame  # aligned with feats: in_scope, labelled, label

    @property
    def usable(self) -> np.ndarray:
        return (self.labels["in_scope"] & self.labels["labelled"]).to_numpy()


def build_dataset(frames, params: Params) -> Dataset:
    from models.features import build_features
    from pipelines.labels import make_labels

    feats = build_features(frames)
    labels = make_labels(frames.households, params.labels.horizon_quarters)
    # both follow the row order of frames.households; check rather than assume
    if not (feats["household_id"].to_numpy() == labels["household_id"].to_numpy()).all() or not (
            feats["quarter_idx"].to_numpy() == labels["quarter_idx"].to_numpy()).all():
        raise AssertionError("features and labels are not aligned")
    return Dataset(feats, labels)


def fit(ds: Dataset, params: Params, *, num_leaves: int | None = None):
    """Fit booster + calibrator on the split (models/train.py). Returns (RiskModel, split, info)."""
    from models.features import FeatureSpec
    from models.pyfunc import RiskModel
    from models.rules import Ruleset
    from models.train import draw_villages, fit_booster, fit_calibrator, row_roles, time_split, village_key

    mp = params.model
    H = params.labels.horizon_quarters
    use = ds.usable
    q = ds.feats["quarter_idx"].to_numpy()
    villages = village_key(ds.feats)
    split = time_split(np.unique(q[use]), H, mp)
    split = draw_villages(split, villages[use], q[use], mp)
    roles, moved = row_roles(split, q, villages, ds.feats["household_id"].to_numpy(), use)
    spec = FeatureSpec.default()
    X = spec.matrix(ds.feats)
    y = ds.labels["label"].fillna(0).to_numpy(dtype=np.float64)
    tr, va, ca = roles == "train", roles == "valid", roles == "calib"
    for name, zh, m in (("training", "训练", tr), ("early-stopping", "早停（验证）", va), ("calibration", "校准", ca)):
        check_outcomes(y[m], q[m], name, zh)
    t0 = time.perf_counter()
    booster, info = fit_booster(X[tr], y[tr], X[va], y[va], spec, mp, num_leaves=num_leaves)
    raw_cal = booster.predict(X[ca], raw_score=True)
    calibrator = fit_calibrator(raw_cal, y[ca], mp.calibration)
    info.update(
        fit_seconds=round(time.perf_counter() - t0, 2),
        n_train=int(tr.sum()), n_valid=int(va.sum()), n_calib=int(ca.sum()),
        pos_train=int(y[tr].sum()), pos_valid=int(y[va].sum()), pos_calib=int(y[ca].sum()),
        purged_rows=int((use & np.isin(q, split.purged)).sum()), moved_households=moved,
    )
    model = RiskModel(
        spec=spec, booster=booster, calibrator=calibrator, ruleset=Ruleset.from_params(params.rules),
        levels=params.levels, lines={}, meta={
            "split": split.to_dict(), "train_info": info, "horizon_quarters": H, "num_threads": mp.num_threads,
            "trained_at": datetime.now(UTC).isoformat(timespec="seconds"), "feature_version": spec.version,
        })
    return model, split, info


def check_outcomes(y: np.ndarray, q: np.ndarray, name: str, zh: str) -> None:
    """A set without positives (or without negatives) cannot train, stop early or calibrate."""
    from fangpin.errors import NotEnoughData
    from fangpin.quarters import from_index

    n, pos = len(y), int(np.sum(y))
    if n and 0 < pos < n:
        return
    qs = "、".join(from_index(int(x)) for x in np.unique(q)) or "—"
    what = "没有样本" if n == 0 else ("没有后续被识别的户（正例）" if pos == 0 else "全部为正例")
    what_en = "has no rows" if n == 0 else ("has no positives (households identified later)" if pos == 0 else
                                           "has only positives")
    raise NotEnoughData(
        f"{zh}集（季度 {qs}，{n:,} 户季）{what}，无法训练出可靠的模型；请提供更长或包含更多户的台账，"
        f"或调整 model.split / labels.horizon_quarters。",
        f"The {name} set (quarters {qs.replace('、', ', ')}, {n:,} household-quarters) {what_en}, so no honest model "
        f"can be fitted; supply a longer ledger or one with more households, or adjust model.split / "
        f"labels.horizon_quarters.")


def attach_reference(model, ds: Dataset, frames, split) -> dict:
    """The reference figures the model carries (``model.reference``), from the training data:
    the counties' base rates and typical values by household type (models.explain, for reason
    figures and comparisons), measured on the in-scope rows of the quarters the model was fitted
    on (training, early stopping, calibration; never a test row); and fallback level cut-offs per
    township (models.levels, for households scored one by one before a batch run has stored its
    own), from the latest of those quarters."""
    from fangpin.quarters import from_index
    from models.explain import reference_figures
    from models.levels import fallback_thresholds

    q = ds.feats["quarter_idx"].to_numpy()
    fit_q = sorted({*split.train, *split.valid, *split.calib})
    rows = ds.labels["in_scope"].to_numpy(dtype=bool) & np.isin(q, fit_q) & ~split.test_rows(ds.feats)
    period = f"{from_index(int(q[rows].min()))}–{from_index(int(q[rows].max()))}" if rows.any() else ""
    ref = reference_figures(ds.feats, ds.labels["label"].to_numpy(dtype=np.float64, na_value=np.nan),
                            ds.labels["labelled"].to_numpy(dtype=bool), rows, model.spec, period)
    last = max(fit_q)
    scored = model.score_arrays(frames, quarters=[last], explain="none")
    ref["levels"] = fallback_thresholds(scored.level_groups, from_index(last))
    model.reference = ref
    return ref


def flat_params(params: Params) -> dict:
    out = {}
    for section in ("labels", "rules", "model", "levels"):
        for k, v in getattr(params, section).model_dump(mode="json").items():
            if isinstance(v, dict):
                out.update({f"{section}.{k}.{kk}": vv for kk, vv in v.items()})
            else:
                out[f"{section}.{k}"] = v if not isinstance(v, list | tuple) else ",".join(map(str, v))
    return out


def train(params: Params) -> dict:
    """The `fangpin train` stage (see module doc). Returns the train_info dict."""
    import mlflow

    from models.pyfunc import log_pyfunc, records_from_frames, setup_mlflow
    from pipelines.labels import snapshot_cadence

    t0 = time.perf_counter()
    frames = load_frames(params)
    ds = build_dataset(frames, params)
    t_feat = time.perf_counter() - t0
    log.info("features: %d household-quarters × %d features in %.1fs", len(ds.feats),
             len(ds.feats.columns), t_feat)
    model, split, info = fit(ds, params)
    model.lines = dict(frames.lines)
    attach_reference(model, ds, frames, split)
    log.info("trained: best iteration %d, validation AUC %.4f (%s)", info["best_iteration"], info["valid_auc"],
             split.describe()[1])
    exp_id = setup_mlflow(params)
    out_dir = Path(params.model.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with mlflow.start_run(experiment_id=exp_id, run_name=f"train-{datetime.now(UTC):%Y%m%dT%H%M%S}") as run:
        mlflow.log_params(flat_params(params))
        mlflow.log_params({f"split.{k}": ",".join(v) if isinstance(v, list) else v
                           for k, v in split.summary().items()})
        mlflow.log_metrics({k: float(v) for k, v in info.items() if isinstance(v, int | float)})
        mlflow.log_metric("feature_seconds", t_feat)
        mlflow.set_tags({"stage": "train", "ruleset_version": model.ruleset.version,
                         "feature_version": model.spec.version})
        example = records_from_frames(frames, split.test[-1], 2, seed=params.model.seed)
        minfo = log_pyfunc(model, out_dir / "model", example, params.model.registered_name)
        version = str(minfo.registered_model_version)
    result = {
        "run_id": run.info.run_id,
        "experiment_id": exp_id,
        "registered_name": params.model.registered_name,
        "version": version,
        "model_uri": f"models:/{params.model.registered_name}/{version}",
        "split": split.to_dict(),
        "test_quarters": split.to_dict()["test"],
        "horizon_quarters": params.labels.horizon_quarters,
        "ledger": snapshot_cadence(frames.households["quarter_idx"].to_numpy()),
        "fit": info,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    write_json(train_info_path(params), result)
    log.info("registered %s version %s (run %s)", params.model.registered_name, version, run.info.run_id)
    return result


def leaves_sweep(frames, params: Params, leaves=(7, 15, 31, 63), contrib_rows: int = 2000) -> dict:
    """Test AUC against tree size, beside the cost of exact explanations (pred_contrib rows/s), so
    the smallest trees that keep the AUC can be chosen (docs/benchmarks.md, "Training")."""
    from sklearn.metrics import roc_auc_score

    ds = build_dataset(frames, params)
    y = ds.labels["label"].fillna(0).to_numpy(dtype=np.float64)
    rows = []
    for nl in leaves:
        model, split, info = fit(ds, params, num_leaves=nl)
        te = ds.usable & split.test_rows(ds.feats)
        X = model.spec.matrix(ds.feats.loc[te])
        raw = model.raw_score(X)
        sample = X[:contrib_rows]
        t0 = time.perf_counter()
        model.contributions(sample)
        dt = time.perf_counter() - t0
        t0 = time.perf_counter()
        model.raw_score(X)
        dtp = time.perf_counter() - t0
        rows.append({"num_leaves": nl, "trees": info["best_iteration"], "valid_auc": info["valid_auc"],
                     "test_auc": float(roc_auc_score(y[te], raw)), "contrib_rows_per_s": len(sample) / dt,
                     "predict_rows_per_s": len(X) / dtp, "fit_seconds": info["fit_seconds"]})
        log.info("num_leaves %d: %s", nl, rows[-1])
    return {"rows": rows, "n_test": int(te.sum()), "contrib_sample": contrib_rows,
            "measured": datetime.now(UTC).isoformat(timespec="seconds")}
