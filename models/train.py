"""The model: LightGBM on the feature frame, honest splits, probability calibration.

Splits (docs/decisions.md, "Splits and purging"). A household-quarter t is *labelled* when the ledger
has the snapshot of t+H; its label window is (t, t+H]. Deployment at quarter s fits on the rows whose
label is known by s (t + H ≤ s) and scores the rows of s. The split reproduces exactly that:

- **Test** (``model.test_split``): the last ``test_quarters`` labelled quarters ("quarters"; auto uses
  fewer, down to one, when the ledger is short). When not even one labelled quarter can be tested
  forward in time — a ledger whose only labelled quarter is its first, e.g. two annual snapshots —
  ``auto`` tests on held-out villages of the same quarters ("villages"); the report says that this
  measures generalisation to other villages, not to a later quarter.
- **Fitting rows** (training, early stopping, calibration) have t + H ≤ s for the first test
  quarter s: their label windows end by the test's feature time, so no outcome the test reads was
  used for fitting (quarters between are *purged*).
- **Early stopping and calibration** (``model.split``): "quarters": the last ``calibration_quarters``
  fitting quarters calibrate, the ``validation_quarters`` before them drive early stopping, and the
  training quarters satisfy t + H ≤ the first validation quarter (the same rule; the rule used to
  be t + H < v, one quarter stricter than needed). "grouped": villages held out inside the fitting
  quarters (sklearn ``GroupShuffleSplit`` by village, so neighbours — who share shocks — never sit
  on both sides), used when the ledger has too few labelled quarters, or when a quarter count is 0.
  "auto" picks quarters when possible, else grouped.
  Validation quarters are not purged against the calibration quarters: they only choose the
  number of trees.
- A household whose rows fall in villages of two different sets (it moved) is kept only in the
  test, or dropped from fitting, in the village-based splits.

Other properties:

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
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from fangpin.config import ModelParams
from fangpin.errors import NotEnoughData
from models.features import FeatureSpec

ROLES = ("train", "valid", "calib", "test")


@dataclass(frozen=True)
class Split:
    """Which rows train, stop early, calibrate and test (see the module doc).

    Quarter tuples hold quarter indices. In the village-based modes the villages (keys
    ``county|township|village``) of the held-out sets are listed; every other village of the same
    quarters trains."""

    train: tuple[int, ...]
    valid: tuple[int, ...]
    calib: tuple[int, ...]
    test: tuple[int, ...]
    horizon: int
    fit_mode: str = "quarters"  # "quarters" | "grouped"
    test_mode: str = "quarters"  # "quarters" | "villages"
    purged: tuple[int, ...] = ()  # labelled quarters in no set (label window reaches a later set)
    valid_villages: tuple[str, ...] = ()
    calib_villages: tuple[str, ...] = ()
    test_villages: tuple[str, ...] = ()
    reason: str = ""  # why this split (English)
    reason_zh: str = ""

    def to_dict(self) -> dict:
        from fangpin.quarters import from_index

        out = {k: [from_index(q) for q in getattr(self, k)] for k in (*ROLES, "purged")}
        out.update(horizon=self.horizon, fit_mode=self.fit_mode, test_mode=self.test_mode,
                   reason=self.reason, reason_zh=self.reason_zh,
                   valid_villages=list(self.valid_villages), calib_villages=list(self.calib_villages),
                   test_villages=list(self.test_villages))
        return out

    @classmethod
    def from_dict(cls, d: dict) -> Split:
        """From :meth:`to_dict` (train_info.json, a model's meta); older dicts have quarters only."""
        from fangpin.quarters import to_index

        q = {k: tuple(to_index(x) for x in d.get(k, ())) for k in (*ROLES, "purged")}
        return cls(**q, horizon=int(d.get("horizon", 0)), fit_mode=d.get("fit_mode", "quarters"),
                   test_mode=d.get("test_mode", "quarters"), reason=d.get("reason", ""),
                   reason_zh=d.get("reason_zh", ""),
                   **{k: tuple(d.get(k) or ()) for k in ("valid_villages", "calib_villages", "test_villages")})

    def summary(self) -> dict:
        """Short form for MLflow params and logs (village lists as counts)."""
        d = self.to_dict()
        for k in ("valid_villages", "calib_villages", "test_villages"):
            d[k] = len(d[k])
        d.pop("reason_zh")
        return d

    def roles(self, quarter_idx: np.ndarray, village: np.ndarray) -> np.ndarray:
        """The set of each row ("train", "valid", "calib", "test" or "" for none), by quarter and,
        in the village-based modes, by village key (:func:`village_key`)."""
        q = np.asarray(quarter_idx)
        v = np.asarray(village, dtype=object)
        out = np.full(len(q), "", dtype=object)
        t_vil = np.isin(v, list(self.test_villages)) if self.test_mode == "villages" else np.zeros(len(q), bool)
        fit_ok = ~t_vil
        if self.fit_mode == "grouped":
            fq = np.isin(q, self.train) & fit_ok
            va = fq & np.isin(v, list(self.valid_villages))
            ca = fq & np.isin(v, list(self.calib_villages))
            out[fq] = "train"
            out[va] = "valid"
            out[ca] = "calib"
        else:
            out[np.isin(q, self.train) & fit_ok] = "train"
            out[np.isin(q, self.valid) & fit_ok] = "valid"
            out[np.isin(q, self.calib) & fit_ok] = "calib"
        test = np.isin(q, self.test)
        if self.test_mode == "villages":
            test &= t_vil
        out[test] = "test"
        return out

    def test_rows(self, frame) -> np.ndarray:
        """Boolean mask of the test rows of a frame with quarter_idx, county, township, village."""
        q = frame["quarter_idx"].to_numpy()
        if self.test_mode != "villages":
            return np.isin(q, self.test)
        return np.isin(q, self.test) & np.isin(village_key(frame), list(self.test_villages))

    def describe(self) -> tuple[str, str]:
        """(Chinese, English) sentences: the sets, and why this split was used."""
        from fangpin.quarters import from_index

        def qs(x):
            return "、".join(from_index(i) for i in x) or "—"

        def qe(x):
            return ", ".join(from_index(i) for i in x) or "—"

        if self.fit_mode == "grouped":
            fit_zh = (f"训练季度 {qs(self.train)}；早停和校准使用这些季度内按村留出的样本"
                      f"（早停 {len(self.valid_villages)} 个村，校准 {len(self.calib_villages)} 个村，"
                      f"按村分组，同村农户不会同时出现在两边）")
            fit_en = (f"training quarters {qe(self.train)}; early stopping and calibration on villages held out "
                      f"inside them ({len(self.valid_villages)} villages for early stopping, "
                      f"{len(self.calib_villages)} for calibration; grouped by village, so neighbours never sit "
                      f"on both sides)")
        else:
            fit_zh = f"训练季度 {qs(self.train)}；早停（验证）季度 {qs(self.valid)}；校准季度 {qs(self.calib)}"
            fit_en = (f"training quarters {qe(self.train)}; early stopping on {qe(self.valid)}; calibration on "
                      f"{qe(self.calib)}")
        if self.test_mode == "villages":
            fit_zh = "测试村以外的村：" + fit_zh
            fit_en = "villages outside the test: " + fit_en
        if self.test_mode == "villages":
            test_zh = (f"测试：季度 {qs(self.test)} 中留出的 {len(self.test_villages)} 个村（同一时期的其他村，"
                       f"不是之后的季度：衡量对其他村的推广能力，不能代表对未来季度的预测效果）")
            test_en = (f"test: {len(self.test_villages)} villages held out of {qe(self.test)} (other villages of "
                       f"the same period, not a later quarter: this measures generalisation to other villages, "
                       f"not to the future)")
        else:
            test_zh = f"测试季度 {qs(self.test)}（从未用于训练、早停或校准）"
            test_en = f"test quarters {qe(self.test)} (never used for training, early stopping or calibration)"
        purge_zh = (f"；为避免标签窗口重叠而未使用的季度：{qs(self.purged)}" if self.purged else "")
        purge_en = (f"; quarters left out because their label window would reach a later set: {qe(self.purged)}"
                    if self.purged else "")
        zh = f"{fit_zh}；{test_zh}{purge_zh}。{self.reason_zh}"
        en = f"{fit_en}; {test_en}{purge_en}. {self.reason}"
        return zh, en


class NotEnoughQuarters(NotEnoughData):
    """The ledger cannot give an honest split (kept as the name callers know)."""


def village_key(frame) -> np.ndarray:
    """``county|township|village`` of each row (the grouping unit of the village-based splits)."""
    parts = [frame[c].astype("string").fillna("") for c in ("county", "township", "village")]
    return (parts[0] + "|" + parts[1] + "|" + parts[2]).to_numpy(dtype=object)


def _fmt_q(qs) -> str:
    from fangpin.quarters import from_index

    return ", ".join(from_index(q) for q in qs) or "—"


def time_split(labelled_quarters, horizon: int, mp: ModelParams) -> Split:
    """Quarters of each set and the modes (see the module doc); villages are drawn afterwards by
    :func:`draw_villages` when a mode needs them."""
    qs = sorted({int(q) for q in labelled_quarters})
    H = int(horizon)
    if not qs:
        raise NotEnoughQuarters(
            f"台账中没有可用于训练的已标注季度：季度 t 需要台账中有 t+{H} 季度的快照才能判断之后 {H} 个季度内是否被识别，"
            f"请提供更多季度的台账，或按台账的间隔调整 labels.horizon_quarters（年度台账用 4）。",
            f"The ledger has no labelled quarter: a quarter t is labelled when the ledger holds the snapshot of "
            f"t+{H}; supply more quarters, or set labels.horizon_quarters to the ledger's spacing (4 for an annual "
            f"ledger).")

    def fitting(test):
        return [q for q in qs if q + H <= test[0]]

    # --- the test
    test: list[int] = []
    fit: list[int] = []
    test_mode = "quarters"
    reasons_en: list[str] = []
    reasons_zh: list[str] = []
    if mp.test_split in ("auto", "quarters"):
        counts = [mp.test_quarters] if mp.test_split == "quarters" else range(mp.test_quarters, 0, -1)
        for n in counts:
            if n > len(qs):
                continue
            t = qs[-n:]
            if fitting(t):
                test, fit = t, fitting(t)
                break
        if test and len(test) < mp.test_quarters:
            reasons_en.append(f"only {len(test)} test quarter(s) instead of {mp.test_quarters}: the ledger is short")
            reasons_zh.append(f"台账较短，测试季度由 {mp.test_quarters} 个减为 {len(test)} 个")
    if not test:
        if mp.test_split == "quarters":
            raise NotEnoughQuarters(
                f"台账只有 {len(qs)} 个已标注季度（{_fmt_q(qs)}），无法留出之后的 {mp.test_quarters} 个测试季度并保留"
                f"标签窗口（{H} 个季度）之前的训练季度；请提供更长的台账，或把 model.test_split 设为 auto 或 villages。",
                f"The ledger has {len(qs)} labelled quarter(s) ({_fmt_q(qs)}): too few for {mp.test_quarters} later "
                f"test quarter(s) plus a training quarter whose {H}-quarter label window ends before them; supply a "
                f"longer ledger or set model.test_split to auto or villages.")
        test, fit, test_mode = list(qs), list(qs), "villages"
        reasons_en.append("no labelled quarter can be tested forward in time (a training quarter needs its "
                          f"{H}-quarter label window to end by the test quarter), so the test holds out villages")
        reasons_zh.append(f"没有能按时间向后测试的已标注季度（训练季度的 {H} 个季度标签窗口须在测试季度之前结束），"
                          "因此测试使用留出的村")
    # --- early stopping and calibration
    nv, nc = mp.validation_quarters, mp.calibration_quarters
    fit_mode, train, valid, calib = "grouped", list(fit), list(fit), list(fit)
    if mp.split in ("auto", "quarters") and nv > 0 and nc > 0 and len(fit) >= nv + nc + 1:
        c = fit[-nc:]
        v = fit[-(nv + nc):-nc]
        tr = [q for q in fit[:-(nv + nc)] if q + H <= v[0]]
        if tr:
            fit_mode, train, valid, calib = "quarters", tr, v, c
    if fit_mode == "grouped":
        if mp.split == "quarters":
            raise NotEnoughQuarters(
                f"可用于拟合的季度只有 {len(fit)} 个（{_fmt_q(fit)}），不够留出 {nv} 个验证季度和 {nc} 个校准季度并保留"
                f"训练季度；请提供更长的台账，或把 model.split 设为 auto 或 grouped（按村留出）。",
                f"Only {len(fit)} quarter(s) can be used for fitting ({_fmt_q(fit)}): too few for {nv} validation and "
                f"{nc} calibration quarter(s) plus a training quarter; supply a longer ledger or set model.split to "
                f"auto or grouped (villages held out).")
        if mp.split == "grouped":
            reasons_en.append("model.split is 'grouped'")
            reasons_zh.append("参数 model.split 设为 grouped")
        elif nv == 0 or nc == 0:
            reasons_en.append("validation_quarters or calibration_quarters is 0")
            reasons_zh.append("验证或校准季度数设为 0")
        else:
            reasons_en.append(f"too few labelled quarters for separate validation ({nv}) and calibration ({nc}) "
                              "quarters, so they are villages held out inside the training quarters")
            reasons_zh.append(f"已标注季度太少，无法单独留出验证（{nv} 个）和校准（{nc} 个）季度，因此在训练季度内按村留出")
    used = set(train) | set(valid) | set(calib) | set(test)
    purged = tuple(q for q in qs if q not in used)
    en = ("Why: " + "; ".join(reasons_en) + ".") if reasons_en else "Enough labelled quarters for a split by quarter."
    zh = ("原因：" + "；".join(reasons_zh) + "。") if reasons_zh else "已标注季度足够，按季度划分。"
    return Split(train=tuple(train), valid=tuple(valid), calib=tuple(calib), test=tuple(test), horizon=H,
                 fit_mode=fit_mode, test_mode=test_mode, purged=purged, reason=en, reason_zh=zh)


def draw_villages(split: Split, villages: np.ndarray, quarter_idx: np.ndarray, mp: ModelParams) -> Split:
    """Hold out villages where the split's modes need them (sklearn ``GroupShuffleSplit``, seeded):
    the test villages first (``group_test_share``), then, among the other villages of the fitting
    quarters, those for early stopping and for calibration. ``villages``/``quarter_idx``: the
    usable rows."""
    from sklearn.model_selection import GroupShuffleSplit

    if split.fit_mode != "grouped" and split.test_mode != "villages":
        return split
    v = np.asarray(villages, dtype=object)
    q = np.asarray(quarter_idx)
    upd: dict = {}

    def hold_out(groups: np.ndarray, share: float, what_zh: str, what_en: str, seed_offset: int):
        uniq = np.unique(groups)
        if len(uniq) < 3:
            raise NotEnoughData(
                f"只有 {len(uniq)} 个村，无法按村留出{what_zh}；按村划分至少需要 3 个村，请提供包含更多村的台账。",
                f"Only {len(uniq)} village(s): too few to hold out villages for {what_en}; a split by village needs "
                f"at least 3 villages — supply a ledger with more villages.")
        gss = GroupShuffleSplit(n_splits=1, test_size=share, random_state=mp.seed + seed_offset)
        _, held = next(gss.split(np.zeros(len(uniq)), groups=uniq))
        return tuple(sorted(uniq[held].tolist()))

    test_v: tuple[str, ...] = ()
    if split.test_mode == "villages":
        test_v = hold_out(v[np.isin(q, split.test)], mp.group_test_share, "测试集", "the test", 0)
        upd["test_villages"] = test_v
    if split.fit_mode == "grouped":
        fit_rows = np.isin(q, split.train) & ~np.isin(v, list(test_v))
        groups = np.unique(v[fit_rows])
        share = mp.group_valid_share + mp.group_calib_share
        held = np.array(hold_out(groups, share, "早停和校准样本", "early stopping and calibration", 1), dtype=object)
        # the held-out villages are split between early stopping and calibration, again by village
        gss = GroupShuffleSplit(n_splits=1, test_size=mp.group_calib_share / share, random_state=mp.seed + 2)
        va, ca = next(gss.split(np.zeros(len(held)), groups=held))
        upd["valid_villages"] = tuple(sorted(held[va].tolist()))
        upd["calib_villages"] = tuple(sorted(held[ca].tolist()))
    return replace(split, **upd)


def row_roles(split: Split, quarter_idx: np.ndarray, villages: np.ndarray, household: np.ndarray,
              usable: np.ndarray) -> tuple[np.ndarray, int]:
    """Roles of the rows (:meth:`Split.roles`) restricted to ``usable`` rows; in the village-based
    modes a household with rows in two sets (it moved village) keeps only its test rows or is
    dropped from fitting. Returns (roles, number of households dropped for that reason)."""
    roles = split.roles(quarter_idx, villages)
    roles[~np.asarray(usable, bool)] = ""
    if split.fit_mode != "grouped" and split.test_mode != "villages":
        return roles, 0
    import pandas as pd

    codes, _ = pd.factorize(np.asarray(household, dtype=object))
    n = int(codes.max()) + 1 if len(codes) else 0
    in_set = {r: np.bincount(codes[roles == r], minlength=n) > 0 for r in ROLES}
    fitting = in_set["train"] | in_set["valid"] | in_set["calib"]
    # a household in a later test quarter is expected (forward test); only village sets must not share one
    n_sets = (sum(in_set[r].astype(int) for r in ("train", "valid", "calib")) if split.fit_mode == "grouped"
              else fitting.astype(int))
    if split.test_mode == "villages":
        n_sets = n_sets + in_set["test"].astype(int)
    moved = n_sets > 1
    if not moved.any():
        return roles, 0
    drop = moved[codes] & (roles != "test") & (roles != "")
    roles[drop] = ""
    return roles, int(moved.sum())


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


def positive_weight(mp: ModelParams, y: np.ndarray, w: np.ndarray | None = None) -> float:
    if mp.scale_pos_weight == "balanced":
        w = np.ones(len(y)) if w is None else np.asarray(w, dtype=np.float64)
        pos = float(np.sum(w * y))
        return float((np.sum(w) - pos) / max(pos, 1.0))
    return float(mp.scale_pos_weight)


def quiet_openmp() -> None:
    """Let OpenMP threads sleep instead of spinning while they wait: on a busy 2-core machine a
    spinning LightGBM runs several times slower. Effective when set before lightgbm is loaded."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def fit_booster(X_tr, y_tr, X_va, y_va, spec: FeatureSpec, mp: ModelParams, *, num_leaves: int | None = None,
                w_tr: np.ndarray | None = None, w_va: np.ndarray | None = None):
    """Train with early stopping on the validation quarters; returns (booster, info). ``w_tr`` /
    ``w_va``: row weights (a sample of the negatives weighted by the inverse of its rate,
    pipelines.train.sample_rows); None = every row counts once."""
    quiet_openmp()
    import lightgbm as lgb

    if num_leaves is not None:
        mp = mp.model_copy(update={"num_leaves": num_leaves})
    w = positive_weight(mp, y_tr, w_tr)
    params = lgb_params(mp, spec, w)
    names = list(spec.names)
    dtr = lgb.Dataset(X_tr, label=y_tr, weight=w_tr, feature_name=names, free_raw_data=True)
    dva = lgb.Dataset(X_va, label=y_va, weight=w_va, reference=dtr, feature_name=names)
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
