"""A tiny model built with the project's own training pieces (features, LightGBM with early
stopping, calibration, rules, levels) on a small generated county — seconds, not minutes.

`register_tiny` logs it as the real pyfunc and registers it in a throwaway MLflow store, so the
API's default loader (``models:/return-risk@champion``) is exercised end to end.
"""

from __future__ import annotations

import numpy as np
from canonical_frames import LINES, make_frames

from models.features import FeatureSpec, build_features
from models.pyfunc import RiskModel
from models.rules import Ruleset
from models.train import fit_booster, fit_calibrator
from pipelines.labels import make_labels


def train_tiny(params, n: int = 600, quarters: int = 8, seed: int = 0, trees: int = 30) -> RiskModel:
    fr = make_frames(n, quarters, seed)
    feats = build_features(fr)
    labels = make_labels(fr.households, params.labels.horizon_quarters)
    spec = FeatureSpec.default()
    ok = labels["label"].notna().to_numpy()
    q = labels["quarter_idx"].to_numpy()
    qs = np.unique(q[ok])
    tr, va = ok & (q < qs[-1]), ok & (q == qs[-1])
    X = spec.matrix(feats)
    y = labels["label"].to_numpy(dtype=float, na_value=np.nan)
    mp = params.model.model_copy(update={"n_estimators": trees, "num_leaves": 7, "min_child_samples": 10,
                                         "early_stopping_rounds": 10})
    booster, _ = fit_booster(X[tr], y[tr], X[va], y[va], spec, mp)
    cal = fit_calibrator(booster.predict(X[va], raw_score=True), y[va], "sigmoid")
    return RiskModel(spec=spec, booster=booster, calibrator=cal, ruleset=Ruleset.from_params(params.rules),
                     levels=params.levels, lines=dict(LINES), meta={"trained_on": "tests: tiny generated county"})


def register_tiny(params, workdir, model: RiskModel | None = None, name: str | None = None) -> str:
    """Log + register the tiny model as the real pyfunc and point @champion at it; returns the version."""
    import mlflow
    from mlflow import MlflowClient

    from models.pyfunc import log_pyfunc, records_from_frames, setup_mlflow

    model = model or train_tiny(params)
    setup_mlflow(params)
    name = name or params.model.registered_name
    fr = make_frames(50, 4, 1)
    example = records_from_frames(fr, int(fr.households["quarter_idx"].max()), 2)
    with mlflow.start_run():
        info = log_pyfunc(model, workdir, example, name)
    version = str(info.registered_model_version)
    MlflowClient().set_registered_model_alias(name, "champion", version)
    return version
