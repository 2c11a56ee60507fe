"""`fangpin evaluate`: the registered model against the rules on the held-out test quarters.

Each system ranks the in-scope, labelled household-quarters of the test quarters (pooled):

- ``rules``: rule hits first (by level, then income relative to the line), then the rest by income
  relative to the line;
- ``model``: by calibrated probability (ties, which isotonic calibration creates, broken by the
  booster's raw score);
- ``combined`` (what fangpin sends): every rule hit first, ordered among themselves by the model,
  then the rest by the model;
- ``oracle``: by the generator's true probability (oracle.parquet), when present.

k = the number of rule hits (the rules' workload). "Recall at k" is always the top k of a ranking.
AUC and PR-AUC are computed from each ranking; Brier score and calibration error from
probabilities (the combined system sends the model's probabilities, so it shares the model's).
Calibration error = expected calibration error over 10 equal-count bins of predicted probability.

Levels (issue 12): ``levels`` gives, for the combined decision (models.levels: risk bands of each
township-quarter, rule floors, capacity), the household-quarters at 红 / 黄 / 蓝, their share of
the test rows and the share later identified (precision); ``workload`` the share of test rows
warned, the largest 红 list of a township in a test quarter and the capacity it must not exceed.

Writes <reports_dir>/metrics.json (the keys of issue 3 plus ``levels`` and ``workload``),
metrics_detail.json (everything else: precision at 2k and 5%, calibration error, lead time,
warnings by level, rule floors and tasks, shortfall, SHAP importance), report.md with figures/,
model_card.md; logs them to the training run in MLflow.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from fangpin.config import Params
from pipelines.common import load_frames, read_train_info, write_json

log = logging.getLogger(__name__)

SYSTEMS = ("rules", "model", "combined", "oracle")
SLICES = {"county": "county", "township": "township", "household_type": "household_type",
          "labor_class": "labor_class", "ethnicity_audit": "head_ethnicity", "head_sex_audit": "head_sex"}


# ------------------------------------------------------------------------------------------------
# rankings and metrics


def rank_order(keys: list[np.ndarray]) -> np.ndarray:
    """Row positions sorted by ``keys`` (first key most significant, all ascending, NaN last)."""
    cols = [np.where(np.isnan(k.astype(float)), np.inf, k.astype(float)) for k in keys]
    return np.lexsort(tuple(reversed(cols)))


def system_orders(scored: pd.DataFrame) -> dict[str, np.ndarray]:
    hit = (scored["rule_rank"].to_numpy() > 0).astype(float)
    rr = scored["rule_rank"].to_numpy().astype(float)
    ratio = scored["income_ratio"].to_numpy(dtype=float)
    prob = scored["probability"].to_numpy(dtype=float)
    raw = scored["raw_score"].to_numpy(dtype=float)
    orders = {
        "rules": rank_order([-rr, ratio]),
        "model": rank_order([-prob, -raw]),
        "combined": rank_order([-hit, -prob, -raw]),
    }
    if "oracle" in scored.columns and scored["oracle"].notna().all():
        orders["oracle"] = rank_order([-scored["oracle"].to_numpy(dtype=float)])
    return orders


def rank_score(order: np.ndarray) -> np.ndarray:
    """A score whose descending order is ``order`` (n for the first row … 1 for the last)."""
    s = np.empty(len(order))
    s[order] = np.arange(len(order), 0, -1)
    return s


def calibration_error(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    order = np.argsort(p, kind="stable")
    parts = np.array_split(order, bins)
    return float(sum(len(b) * abs(p[b].mean() - y[b].mean()) for b in parts if len(b)) / len(p))


def at_k(order: np.ndarray, y: np.ndarray, k: int) -> tuple[float, float]:
    top = order[:k]
    pos = y.sum()
    tp = y[top].sum()
    return (float(tp / pos) if pos else float("nan"), float(tp / k) if k else float("nan"))


def system_metrics(order: np.ndarray, y: np.ndarray, prob: np.ndarray | None, k: int) -> tuple[dict, dict]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    n = len(y)
    score = rank_score(order)
    both = 0 < y.sum() < n
    r_k, p_k = at_k(order, y, k)
    r_2k, p_2k = at_k(order, y, min(2 * k, n))
    k5 = max(1, math.ceil(0.05 * n))
    r_5, p_5 = at_k(order, y, k5)
    main = {
        "auc": float(roc_auc_score(y, score)) if both else None,
        "pr_auc": float(average_precision_score(y, score)) if both else None,
        "brier": float(np.mean((prob - y) ** 2)) if prob is not None else None,
        "recall_at_rules_workload": r_k,
        "precision_at_rules_workload": p_k,
        "recall_at_2x_rules_workload": r_2k,
        "recall_at_5pct": r_5,
    }
    detail = {
        "calibration_error": calibration_error(prob, y) if prob is not None else None,
        "precision_at_2x_rules_workload": p_2k,
        "precision_at_5pct": p_5,
        "workload_5pct": k5,
    }
    return main, detail


def recall_curve(order: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.cumsum(y[order]) / max(y.sum(), 1)


# ------------------------------------------------------------------------------------------------
# the stage


def scored_frame(model, frames, params: Params, from_q: int) -> pd.DataFrame:
    """Score every household-quarter from quarter index ``from_q`` on; attach labels, oracle,
    rule rank and the slice columns."""
    from pipelines.labels import make_labels

    s = model.predict(frames, quarters=range(from_q, int(frames.households["quarter_idx"].max()) + 1),
                      explain="none")
    labels = make_labels(frames.households, params.labels.horizon_quarters)
    labels = labels[labels["quarter_idx"] >= from_q].reset_index(drop=True)
    out = s.frame().drop(columns=["reasons", "measures", "summary"], errors="ignore")
    if "deferred" not in out:  # a registered version older than capacity levels scores without it
        out["deferred"] = False
    assert (labels["household_id"].to_numpy() == out["household_id"].to_numpy()).all()
    out["rule_rank"] = _rank_of(out["rule_level"])
    for c in ("income_ratio", "labor_class", "household_type"):
        out[c] = np.asarray(s.features[c])
    out["labelled"] = labels["labelled"].to_numpy()
    out["label"] = labels["label"].to_numpy(dtype=np.float64, na_value=np.nan)
    head = _heads(frames.persons, from_q)
    out = out.merge(head, on=["household_id", "quarter_idx"], how="left")
    if frames.oracle is not None and len(frames.oracle):
        o = frames.oracle[["household_id", "quarter", "true_probability"]].rename(
            columns={"true_probability": "oracle"})
        out = out.merge(o.drop_duplicates(["household_id", "quarter"]), on=["household_id", "quarter"], how="left")
    return out


def _rank_of(levels: pd.Series) -> np.ndarray:
    from models.levels import rank

    return rank(levels)


def _heads(persons: pd.DataFrame, from_q: int) -> pd.DataFrame:
    """Sex and 民族 of the head of household (fairness audit only, never a feature)."""
    from fangpin.contract import head_rows

    h = head_rows(persons[persons["quarter_idx"] >= from_q])
    cols = {"sex": "head_sex", "ethnicity": "head_ethnicity"}
    h = h[["household_id", "quarter_idx", *[c for c in cols if c in h.columns]]].rename(columns=cols)
    return h


def test_frame(scored: pd.DataFrame, test_q: list[int], split=None) -> pd.DataFrame:
    """The in-scope, labelled test rows of ``scored``: the test quarters, and in a village test
    (``split.test_mode == "villages"``, :class:`models.train.Split`) only the held-out villages."""
    rows = scored["quarter_idx"].isin(test_q).to_numpy()
    if split is not None:
        rows = rows & split.test_rows(scored)
    return scored[rows & scored["in_scope"].astype(bool).to_numpy()
                  & scored["labelled"].astype(bool).to_numpy()].reset_index(drop=True)


def compute_metrics(scored: pd.DataFrame, test_q: list[int], params: Params, split=None) -> tuple[dict, dict, dict]:
    """metrics.json, metrics_detail.json and arrays for plots, for the test rows (:func:`test_frame`)."""
    from fangpin.errors import NotEnoughData
    from fangpin.quarters import from_index

    test = test_frame(scored, test_q, split)
    quarters = "、".join(from_index(q) for q in sorted(test_q))
    if test.empty or test["label"].sum() == 0:
        what_zh, what_en = ("没有范围内的已标注户季", "has no labelled in-scope household-quarters") if test.empty else (
            "没有后续被识别的户（正例）", "has no positives (households identified later)")
        raise NotEnoughData(
            f"测试集（季度 {quarters}，{len(test):,} 户季）{what_zh}，无法评估模型；请提供更长或包含更多户的台账，"
            f"或调整 model.test_quarters / model.test_split。",
            f"The test set (quarters {quarters.replace('、', ', ')}, {len(test):,} household-quarters) {what_en}, so "
            f"the model cannot be evaluated; supply a longer ledger or one with more households, or adjust "
            f"model.test_quarters / model.test_split.")
    y = test["label"].to_numpy(dtype=float)
    k = int((test["rule_rank"] > 0).sum())
    orders = system_orders(test)
    probs = {"model": test["probability"].to_numpy(float), "combined": test["probability"].to_numpy(float),
             "oracle": test["oracle"].to_numpy(float) if "oracle" in orders else None, "rules": None}
    systems, details, curves = {}, {}, {}
    for s, order in orders.items():
        systems[s], details[s] = system_metrics(order, y, probs[s], k)
        curves[s] = recall_curve(order, y)
    metrics = {
        "test_quarters": [from_index(q) for q in sorted(test_q)],
        "n_test": int(len(test)),
        "positives": int(y.sum()),
        "rules_workload": k,
        "systems": systems,
        "slices": slice_metrics(test, orders, y, k, params),
        "levels": level_metrics(test),
        "workload": workload_metrics(scored, test, test_q, params),
    }
    detail = {"systems": details, "base_rate": float(y.mean()), "rules": _per_rule(test, params),
              "warnings_by_level": _levels_table(test), "levels_by_county": levels_by_county(test),
              "capacity": capacity_detail(scored, test_q),
              "workloads": {"rules_workload": k, "2x": min(2 * k, len(y)), "5pct": max(1, math.ceil(0.05 * len(y)))}}
    plots = {"curves": curves, "y": y, "test": test, "orders": orders}
    return metrics, detail, plots


def _per_rule(test: pd.DataFrame, params: Params | None = None) -> dict:
    """Per rule on the test rows: hits, share, share later identified, and what a hit becomes
    (``floor``: its level floor, ``task``: the department it is routed to)."""
    from models.rules import RULE_LEVELS

    if "rule_hits" not in test.columns:
        return {}
    y = test["label"].to_numpy(dtype=float)
    out = {}
    for rid, level in RULE_LEVELS.items():
        m = test["rule_hits"].map(lambda hs, r=rid: any(h["rule_id"] == r for h in hs)).to_numpy(dtype=bool)
        out[rid] = {"level": level, "hits": int(m.sum()), "share": float(m.mean()),
                    "positive_rate": float(y[m].mean()) if m.any() else 0.0}
        if params is not None:
            route = params.tasks.routes.get(rid)
            out[rid]["floor"] = params.levels.rule_floors.get(rid)
            out[rid]["task"] = f"{route.department} {route.measure}" if route else None
    return out


LEVEL_NAMES = ("红", "黄", "蓝")


def level_metrics(test: pd.DataFrame) -> dict:
    """``{"红"|"黄"|"蓝": {"households", "share", "precision"}}`` of the combined decision on the
    test rows (household-quarters; precision = share later identified, None when empty)."""
    y = test["label"].to_numpy(dtype=float)
    lvl = test["combined_level"].to_numpy(dtype=object)
    n = max(len(test), 1)
    out = {}
    for name in LEVEL_NAMES:
        m = lvl == name
        out[name] = {"households": int(m.sum()), "share": float(m.sum() / n),
                     "precision": float(y[m].mean()) if m.any() else None}
    return out


def levels_by_county(test: pd.DataFrame) -> dict:
    """:func:`level_metrics` per county, with each county's base rate (levels must hold in each)."""
    out = {}
    for c, g in test.groupby(test["county"].fillna("（空）").astype(str)):
        out[c] = {"base_rate": float(g["label"].mean()), "n": int(len(g)), "levels": level_metrics(g)}
    return out


def _red_lists(scored: pd.DataFrame, test_q: list[int]) -> pd.DataFrame:
    """Per township and test quarter: in-scope households, 红 (the visit list due within the
    verification deadline), 红 candidates deferred to 黄 by the capacity."""
    s = scored[scored["quarter_idx"].isin(test_q) & scored["in_scope"].astype(bool)]
    g = s.assign(red=(s["combined_level"] == "红"), deferred=s["deferred"].astype(bool)).groupby(
        [s["county"].fillna(""), s["township"].fillna(""), "quarter_idx"])
    return g.agg(n=("red", "size"), red=("red", "sum"), deferred=("deferred", "sum")).reset_index()


def workload_metrics(scored: pd.DataFrame, test: pd.DataFrame, test_q: list[int], params: Params) -> dict:
    """``{"warned_share", "visits_per_township_max", "capacity_per_township"}`` for the test
    quarters: the share of test rows with a warning, the largest 红 list of a township in one
    quarter (all its in-scope households, labelled or not) and the capacity it must not exceed."""
    lists = _red_lists(scored, test_q)
    return {"warned_share": float(test["combined_level"].notna().mean()) if len(test) else 0.0,
            "visits_per_township_max": int(lists["red"].max()) if len(lists) else 0,
            "capacity_per_township": int(params.levels.capacity_per_township)}


def capacity_detail(scored: pd.DataFrame, test_q: list[int]) -> dict:
    lists = _red_lists(scored, test_q)
    return {"township_quarters": int(len(lists)), "shortfall": int(lists["deferred"].sum()),
            "township_quarters_over_capacity": int((lists["deferred"] > 0).sum()),
            "red_per_township_mean": float(lists["red"].mean()) if len(lists) else 0.0}


def _levels_table(test: pd.DataFrame) -> dict:
    out = {}
    for col in ("rule_level", "model_level", "combined_level"):
        vc = test[col].fillna("无").value_counts()
        pos = test.groupby(test[col].fillna("无"))["label"].mean()
        out[col] = {str(lvl): {"n": int(vc[lvl]), "positive_rate": float(pos[lvl])} for lvl in vc.index}
    return out


def slice_metrics(test: pd.DataFrame, orders: dict, y: np.ndarray, k: int, params: Params) -> dict:
    from sklearn.metrics import roc_auc_score

    n = len(y)
    sel = {}
    for s, kk in (("rules", k), ("model", k), ("combined", min(2 * k, n))):
        m = np.zeros(n, dtype=bool)
        m[orders[s][:kk]] = True
        sel[s] = m
    prob = test["probability"].to_numpy(float)
    out: dict = {}
    for name, col in SLICES.items():
        if col not in test.columns:
            continue
        groups = {}
        for val, idx in test.groupby(test[col].fillna("（空）").astype(str)).indices.items():
            yy = y[idx]
            pos = yy.sum()
            g = {"n": int(len(idx)), "positives": int(pos),
                 "rules_recall_at_k": float(yy[sel["rules"][idx]].sum() / pos) if pos else None,
                 "model_recall_at_k": float(yy[sel["model"][idx]].sum() / pos) if pos else None,
                 "combined_recall_at_2k": float(yy[sel["combined"][idx]].sum() / pos) if pos else None,
                 "combined_flag_rate_at_2k": float(sel["combined"][idx].mean()),
                 "model_auc": float(roc_auc_score(yy, prob[idx])) if 0 < pos < len(idx) else None,
                 "mean_probability": float(prob[idx].mean()), "positive_rate": float(yy.mean())}
            groups[val] = g
        out[name] = groups
    return out


def lead_times(scored: pd.DataFrame, households: pd.DataFrame, from_q: int) -> dict:
    """For households newly identified after ``from_q``: quarters between the first flag and the
    identification, for the rules (their hits) and for combined at 2× the rules' workload of each
    quarter; 0 when a system never flagged the household before it was identified."""
    from pipelines.labels import identification_quarter

    s = scored[scored["in_scope"].astype(bool)].copy()
    s["flag_rules"] = s["rule_rank"] > 0
    s["flag_combined"] = False
    for _, g in s.groupby("quarter_idx"):
        k = int(g["flag_rules"].sum())
        order = system_orders(g)["combined"][: 2 * k]
        s.loc[g.index[order], "flag_combined"] = True
    ident = identification_quarter(households)
    ident = ident[ident["quarter_idx"] > from_q]
    flags = s[["household_id", "quarter_idx", "flag_rules", "flag_combined"]]
    m = ident.merge(flags, on="household_id", suffixes=("_ident", ""))
    m = m[m["quarter_idx"] < m["quarter_idx_ident"]]
    res = {"identified": int(len(ident))}
    leads = {}
    for sys_ in ("rules", "combined"):
        f = m[m[f"flag_{sys_}"]]
        first = f.groupby(["household_id", "quarter_idx_ident"])["quarter_idx"].min()
        lead = (first.index.get_level_values(1) - first.to_numpy())
        lead_s = pd.Series(lead, index=first.index).reindex(
            pd.MultiIndex.from_frame(ident[["household_id", "quarter_idx"]]), fill_value=0)
        leads[sys_] = lead_s.to_numpy()
        res[sys_] = {"flagged_before_identification": float((lead_s > 0).mean()) if len(lead_s) else None,
                     "mean_lead_quarters": float(lead_s.mean()) if len(lead_s) else None,
                     "mean_lead_quarters_if_flagged": float(lead_s[lead_s > 0].mean()) if (lead_s > 0).any() else None}
    if len(ident):
        d = leads["combined"] - leads["rules"]
        res["combined_minus_rules"] = {"mean_quarters": float(d.mean()), "earlier_share": float((d > 0).mean()),
                                       "later_share": float((d < 0).mean())}
    return res


def shap_importance(model, frames, test: pd.DataFrame, params: Params) -> dict:
    """Mean |pred_contrib| (log-odds) over a sample of test rows, per feature and per group."""
    rng = np.random.default_rng(params.model.seed)
    n = min(params.model.explain_sample, len(test))
    pick = test.iloc[np.sort(rng.choice(len(test), n, replace=False))]
    qs = sorted(pick["quarter_idx"].unique())
    s = model.predict(frames, quarters=qs, explain="none")  # the model's own features
    keys = pd.DataFrame({"household_id": np.asarray(s.features["household_id"]),
                         "quarter_idx": np.asarray(s.features["quarter_idx"])}).reset_index()
    rows = keys.merge(pick[["household_id", "quarter_idx"]], on=["household_id", "quarter_idx"])["index"]
    contrib = model.contributions(s.X[rows.to_numpy()])
    imp = np.abs(contrib[:, :-1]).mean(axis=0)
    by_feature = dict(sorted(zip(model.spec.names, imp.tolist(), strict=False), key=lambda kv: -kv[1]))
    groups: dict[str, float] = {}
    for gname in sorted(set(model.spec.groups.values())):
        cols = [i for i, nme in enumerate(model.spec.names) if model.spec.groups[nme] == gname]
        v = np.abs(contrib[:, cols].sum(axis=1)).mean()
        groups[gname] = float(v)
    return {"rows": int(n), "units": "mean |log-odds contribution|",
            "features": by_feature, "groups": dict(sorted(groups.items(), key=lambda kv: -kv[1]))}


def evaluate(params: Params) -> dict:
    """The `fangpin evaluate` stage. Returns metrics.json's content."""
    from fangpin.quarters import to_index
    from models.registry import load_version
    from models.train import Split
    from pipelines import report as rep
    from pipelines.model_card import bilingual, build_cards, log_cards

    info = read_train_info(params)
    frames = load_frames(params)
    model = load_version(params, info["version"])
    test_q = [to_index(q) for q in info["test_quarters"]]
    split = Split.from_dict(info["split"])
    scored = scored_frame(model, frames, params, min(test_q))
    metrics, detail, plots = compute_metrics(scored, test_q, params, split)
    detail["lead_time"] = lead_times(scored, frames.households, min(test_q))
    detail["shap_importance"] = shap_importance(model, frames, plots["test"], params)
    detail["model_version"] = info["version"]
    detail["ruleset_version"] = model.ruleset.version
    detail["split"] = info["split"]
    detail["fit"] = info.get("fit", {})
    detail["calibration"] = model.calibrator.method
    rdir = Path(params.paths.reports_dir)
    write_json(rdir / "metrics.json", metrics)
    write_json(rdir / "metrics_detail.json", detail)
    report_path = rep.write_report(rdir, metrics, detail, plots, info, params)
    cards = build_cards(info=info, metrics=metrics, detail=detail, spec=model.spec, params=params)
    (rdir / "model_card.md").write_text(bilingual(cards), encoding="utf-8")
    _log_to_mlflow(params, info, metrics, detail, rdir, report_path)
    log_cards(params, info, cards)
    m, r = metrics["systems"]["model"], metrics["systems"]["rules"]
    log.info("test %s: n=%d positives=%d k=%d | AUC model %.3f | recall@k rules %.3f model %.3f | "
             "recall@2k rules %.3f combined %.3f | calibration error %.4f", metrics["test_quarters"],
             metrics["n_test"], metrics["positives"], metrics["rules_workload"], m["auc"] or float("nan"),
             r["recall_at_rules_workload"], m["recall_at_rules_workload"], r["recall_at_2x_rules_workload"],
             metrics["systems"]["combined"]["recall_at_2x_rules_workload"],
             detail["systems"]["model"]["calibration_error"])
    return metrics


def flat_metrics(metrics: dict, detail: dict) -> dict:
    out = {}
    for s, d in metrics["systems"].items():
        for k, v in {**d, **detail["systems"].get(s, {})}.items():
            if isinstance(v, int | float) and v is not None and not (isinstance(v, float) and math.isnan(v)):
                out[f"test.{s}.{k}"] = float(v)
    out["test.n"] = metrics["n_test"]
    out["test.positives"] = metrics["positives"]
    out["test.rules_workload"] = metrics["rules_workload"]
    for name, en in (("红", "red"), ("黄", "yellow"), ("蓝", "blue")):
        v = metrics.get("levels", {}).get(name)
        if v:
            out[f"test.levels.{en}.households"] = v["households"]
            if v["precision"] is not None:
                out[f"test.levels.{en}.precision"] = v["precision"]
    wl = metrics.get("workload")
    if wl:
        out["test.workload.warned_share"] = wl["warned_share"]
        out["test.workload.visits_per_township_max"] = wl["visits_per_township_max"]
    lt = detail.get("lead_time", {}).get("combined_minus_rules")
    if lt:
        out["test.lead_time.combined_minus_rules"] = lt["mean_quarters"]
    return out


def _log_to_mlflow(params, info, metrics, detail, rdir: Path, report_path: Path) -> None:
    import mlflow
    from mlflow import MlflowClient

    from models.registry import setup_mlflow

    setup_mlflow(params)
    with mlflow.start_run(run_id=info["run_id"]):
        mlflow.log_metrics(flat_metrics(metrics, detail))
        mlflow.log_artifact(str(rdir / "metrics.json"), "reports")
        mlflow.log_artifact(str(rdir / "metrics_detail.json"), "reports")
        mlflow.log_artifact(str(report_path), "reports")
        mlflow.log_artifacts(str(report_path.parent / "figures"), "reports/figures")
    client = MlflowClient()
    m = metrics["systems"]["model"]
    client.set_model_version_tag(info["registered_name"], info["version"], "test_quarters",
                                 ",".join(metrics["test_quarters"]))
    client.set_model_version_tag(info["registered_name"], info["version"], "test_auc", f"{m['auc']:.4f}")
