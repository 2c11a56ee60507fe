"""One tiny model for the tests that need a trained model: the project's own training pieces
(features, labels, LightGBM with early stopping, calibration, rules, levels) on a small generated
county — seconds, not minutes. Validation is the last labelled quarter, training the ones before."""

from __future__ import annotations

import numpy as np
from canonical_frames import make_frames

from models.features import FeatureSpec, Frames, build_features
from models.pyfunc import RiskModel
from models.train import Split, fit_booster, fit_calibrator
from pipelines.labels import make_labels
from pipelines.train import Dataset, attach_reference, make_model


def tiny_model(params, *, n: int = 600, quarters: int = 8, seed: int = 0, trees: int = 30,
               calibration: str = "centred_isotonic", model_version: str | None = None,
               meta: dict | None = None) -> tuple[RiskModel, Frames]:
    fr = make_frames(n, quarters, seed=seed)
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
                                         "early_stopping_rounds": trees})
    booster, _ = fit_booster(X[tr], y[tr], X[va], y[va], spec, mp)
    cal = fit_calibrator(booster.predict(X[va], raw_score=True), y[va], calibration)
    model = make_model(spec, booster, cal, params, lines=fr.lines, meta=meta, model_version=model_version)
    # the reference figures training attaches (county base rates, typical values, fallback level
    # cut-offs), measured on the training quarters; the validation quarter plays test and calibration
    split = Split(train=tuple(int(x) for x in qs[:-1]), valid=(int(qs[-1]),), calib=(), test=(int(qs[-1]),),
                  horizon=params.labels.horizon_quarters)
    attach_reference(model, Dataset(feats, labels), fr, split)
    return model, fr
