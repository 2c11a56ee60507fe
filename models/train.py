"""The model: LightGBM on the feature frame, time-ordered splits, probability calibration.

- Splits are by quarter, never shuffled across time: the last ``test_quarters`` labelled quarters
  are the test set, the ``calibration_quarters`` before them fit the calibrator, the
  ``validation_quarters`` before those drive early stopping, and everything earlier trains —
  except training rows whose label window (t+1 … t+H) reaches into the validation quarters or
  later, which are purged (their outcome would be read from the same snapshots as later sets).
- Class imbalance: ``scale_pos_weight`` (a number, or ``balanced`` = negatives/positives); the
  calibrator maps the weighted model's raw score back to probabilities.
- Monotone constraints come from the feature registry (models.features.FEATURES): lower income,
  a new illness or a damaged house can never lower the risk.
- All features are numeric (flags and ordinal codes), so TreeSHAP via ``pred_contrib`` is exact.
- Deterministic: fixed seed, ``deterministic=True``, row-wise histograms, fixed thread count.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

import numpy as np

from fangpin.config import ModelParams
from models.features import FeatureSpec


@dataclass(frozen=True)
class Split:
    train: tuple[int, ...]
    valid: tuple[int, ...]
    calib: tuple[int, ...]
    test: tuple[int, ...]
    horizon: int

    def to_dict(self) -> dict:
        from fangpin.quarters import from_index

        return {k: [from_index(q) for q in getattr(self, k)] for k in ("train", "valid", "calib", "test")} | {
            "horizon": self.horizon}


class NotEnoughQuarters(ValueError):
    pass


def time_split(labelled_quarters, horizon: int, mp: ModelParams) -> Split:
    """Quarter indices for each set (see module doc)."""
    qs = sorted({int(q) for q in labelled_quarters})
    need = mp.test_quarters + mp.calibration_quarters + mp.validation_quarters
    if len(qs) < need + 1:
        raise NotEnoughQuarters(
            f"need at least {need + 1} labelled quarters (test {mp.test_quarters}, calibration "
            f"{mp.calibration_quarters}, validation {mp.validation_quarters}, ≥1 training) but the ledger "
            f"has {len(qs)} labelled quarters (a quarter is labelled when the ledger reaches {horizon} "
            f"quarters beyond it)")
    test = tuple(qs[-mp.test_quarters:])
    calib = tuple(qs[-(mp.test_quarters + mp.calibration_quarters):-mp.test_quarters])
    valid = tuple(qs[-need:-(mp.test_quarters + mp.calibration_quarters)])
    train = tuple(q for q in qs[:-need] if q + horizon < valid[0])
    if not train:
        raise NotEnoughQuarters(
            f"no training quarter left after purging rows whose {horizon}-quarter label window reaches "
            f"the validation quarters; the ledger needs more quarters")
    return Split(train=train, valid=valid, calib=calib, test=test, horizon=horizon)


def lgb_params(mp: ModelParams, spec: FeatureSpec, pos_weight: float) -> dict:
    return {
        "objective": "binary",
        "metric": ["auc", "binary_logloss"],
        "first_metric_only": True,
        "num_leaves": mp.num_leaves,
        "max_depth": mp.max_depth,
        "learning_rate": mp.learning_rate,
        "min_data_in_leaf": mp.min_child_samples,
        "feature_fraction": mp.feature_fraction,
        "bagging_fraction": mp.bagging_fraction,
        "bagging_freq": mp.bagging_freq,
        "lambda_l2": mp.lambda_l2,
        "scale_pos_weight": pos_weight,
        "monotone_constraints": [int(spec.monotone.get(n, 0)) for n in spec.names],
        "monotone_constraints_method": "intermediate",
        "seed": mp.seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": mp.num_threads,
        "verbose": -1,
    }


def positive_weight(mp: ModelParams, y: np.ndarray) -> float:
    if mp.scale_pos_weight == "balanced":
        pos = float(np.sum(y))
        return float((len(y) - pos) / max(pos, 1.0))
    return float(mp.scale_pos_weight)


def quiet_openmp() -> None:
    """Let OpenMP threads sleep instead of spinning while they wait: on a busy 2-core machine a
    spinning LightGBM runs several times slower. Effective when set before lightgbm is loaded."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def fit_booster(X_tr, y_tr, X_va, y_va, spec: FeatureSpec, mp: ModelParams, *, num_leaves: int | None = None):
    """Train with early stopping on the validation quarters; returns (booster, info)."""
    quiet_openmp()
    import lightgbm as lgb

    if num_leaves is not None:
        mp = mp.model_copy(update={"num_leaves": num_leaves})
    w = positive_weight(mp, y_tr)
    params = lgb_params(mp, spec, w)
    names = list(spec.names)
    dtr = lgb.Dataset(X_tr, label=y_tr, feature_name=names, free_raw_data=True)
    dva = lgb.Dataset(X_va, label=y_va, reference=dtr, feature_name=names)
    evals: dict = {}
    booster = lgb.train(params, dtr, num_boost_round=mp.n_estimators, valid_sets=[dva], valid_names=["valid"],
                        callbacks=[lgb.early_stopping(mp.early_stopping_rounds, first_metric_only=True, verbose=False),
                                   lgb.record_evaluation(evals)])
    best = booster.best_iteration or mp.n_estimators
    # keep exactly the trees up to the best iteration (smaller model, cheaper explanations)
    booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
    info = {"best_iteration": int(best), "valid_auc": float(evals["valid"]["auc"][best - 1]),
            "scale_pos_weight": w, "num_leaves": mp.num_leaves}
    return booster, info


@dataclass
class Calibrator:
    """Maps the booster's raw score (log-odds) to a calibrated probability.

    - ``isotonic``: the isotonic step function (``x``, ``y`` = its thresholds), flat on each step;
    - ``centred_isotonic``: centred isotonic regression — linear between the centres of the
      isotonic steps (``x``, ``y``: one point per step, strictly increasing), continued below the
      first and above the last centre by a logistic tail of slope ``tail_slope`` in log-odds
      (raw is the booster's log-odds, so slope 1 keeps its own spacing). Strictly increasing
      everywhere: a higher raw score always gives a higher probability, which is what makes the
      reason figures of different factors differ (models/explain.py);
    - ``sigmoid``: ``p = 1 / (1 + exp(-(a*raw + b)))`` (Platt scaling).
    """

    method: str
    x: list[float] = field(default_factory=list)  # isotonic: thresholds on the raw score
    y: list[float] = field(default_factory=list)
    a: float = 1.0  # sigmoid: p = 1 / (1 + exp(-(a*raw + b)))
    b: float = 0.0
    tail_slope: float = 1.0  # centred_isotonic: log-odds per unit of raw score beyond the end centres

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=np.float64)
        if self.method == "isotonic":
            return np.interp(raw, np.asarray(self.x), np.asarray(self.y))
        if self.method == "centred_isotonic":
            x, y = np.asarray(self.x), np.asarray(self.y)
            out = np.interp(raw, x, y)
            lo, hi = raw < x[0], raw > x[-1]
            if lo.any():
                out[lo] = _expit(_logit(y[0]) + self.tail_slope * (raw[lo] - x[0]))
            if hi.any():
                out[hi] = _expit(_logit(y[-1]) + self.tail_slope * (raw[hi] - x[-1]))
            return out
        return 1.0 / (1.0 + np.exp(-(self.a * raw + self.b)))

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Calibrator:
        return cls(**json.loads(text))


def _logit(p: float) -> float:
    return float(np.log(p / (1.0 - p)))


def _expit(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def centre_steps(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The centre of each flat step of an isotonic fit (thresholds ``x``, values ``y``), without
    the steps at 0 or 1 (a logistic tail cannot start there): strictly increasing points."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    starts = np.flatnonzero(np.r_[True, np.diff(y) != 0])
    ends = np.r_[starts[1:] - 1, len(y) - 1]
    cx, cy = (x[starts] + x[ends]) / 2.0, y[starts]
    keep = (cy > 0) & (cy < 1)
    return cx[keep], cy[keep]


def fit_calibrator(raw: np.ndarray, y: np.ndarray, method: str) -> Calibrator:
    raw = np.asarray(raw, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if method in ("isotonic", "centred_isotonic"):
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, y)
        if method == "isotonic":
            return Calibrator("isotonic", x=iso.X_thresholds_.tolist(), y=iso.y_thresholds_.tolist())
        cx, cy = centre_steps(iso.X_thresholds_, iso.y_thresholds_)
        if len(cx) == 0:  # every calibration row has the same label: nothing to centre on
            rate = min(max(float(y.mean()), 1e-6), 1 - 1e-6)
            cx, cy = np.array([float(np.median(raw))]), np.array([rate])
        return Calibrator("centred_isotonic", x=cx.tolist(), y=cy.tolist())
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=1e6).fit(raw.reshape(-1, 1), y)
    return Calibrator("sigmoid", a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]))
