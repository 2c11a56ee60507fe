# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 季度复盘 Quarterly review
#
# For the county analyst, right after `make demo` / `fangpin run` and after every `fangpin retrain`:
# how the model compares with the rules (and, after retraining, over the quarters), calibration, what
# drives the scores (SHAP), what has shifted in the population (drift) and whether any group of
# households is being missed (fairness) — the last two once a retrain has produced them.
#
# Figures appear inline in Jupyter. Inputs are found through environment variables, so the same
# notebook runs on the demo, on a county's working directory, or on a tiny generated run in the
# test suite:
#
# - `FANGPIN_WORKDIR`: the working directory of `make demo` / `fangpin run` (default: the repo root);
# - `FANGPIN_FIGURES`: optional folder where every figure is also saved as PNG;
# - `MLFLOW_TRACKING_URI` / `FANGPIN_STATE_DIR`: the MLflow store, as for the pipeline.

# %%
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from IPython.display import display

from fangpin.config import load_params
from fangpin.plotting import setup_matplotlib
from pipelines.common import rooted

WORKDIR = Path(os.environ.get("FANGPIN_WORKDIR", "..")).resolve()
FIGURES = Path(os.environ["FANGPIN_FIGURES"]) if os.environ.get("FANGPIN_FIGURES") else None
# a glyph that the font lacks is drawn as a box: make it an error instead
warnings.filterwarnings("error", message=".*[Gg]lyph.*missing.*")

params_file = WORKDIR / "params.yaml"
params = rooted(load_params(params_file if params_file.exists() else None), WORKDIR)
font = setup_matplotlib()  # a CJK font; Jupyter's inline backend is kept, so figures show below each cell
import matplotlib.pyplot as plt  # noqa: E402  (after the backend and font are set)

reports = Path(params.paths.reports_dir)
print("workdir:", WORKDIR, "| font:", font)


def save(fig, name: str) -> None:
    if FIGURES is not None:
        FIGURES.mkdir(parents=True, exist_ok=True)
        fig.savefig(FIGURES / f"{name}.png", dpi=80)


# %% [markdown]
# ## MLflow runs: every training run and retraining verdict

# %%
import mlflow  # noqa: E402

from models.registry import champion_version, load_version, setup_mlflow  # noqa: E402

exp_id = setup_mlflow(params)
runs = mlflow.search_runs(experiment_ids=[exp_id], order_by=["start_time ASC"])
train_runs = runs[runs["tags.stage"] == "train"].copy()
retrain_runs = runs[runs.get("tags.stage", pd.Series(dtype=str)) == "retrain"]
train_runs["last_test_quarter"] = train_runs["params.split.test"].str.split(",").str[-1]
cols = {"metrics.test.rules.recall_at_rules_workload": "规则 recall@k",
        "metrics.test.model.recall_at_rules_workload": "模型 recall@k",
        "metrics.test.rules.recall_at_2x_rules_workload": "规则 recall@2k",
        "metrics.test.combined.recall_at_2x_rules_workload": "规则+模型 recall@2k",
        "metrics.test.model.auc": "模型 AUC"}
perf = train_runs.set_index("last_test_quarter")[[c for c in cols if c in train_runs.columns]].rename(columns=cols)
print(f"{len(train_runs)} training runs, {len(retrain_runs)} retraining runs; @champion v{champion_version(params)}")
display(perf)

# %% [markdown]
# ## 模型与规则 Performance against the rules
#
# The newest evaluation (`reports/metrics.json`): of the households identified later, the share each
# system finds with the rules' workload k (the number of rule hits) and with twice that workload.
# The split it was measured on is printed above the figure (for a short ledger: villages held out).

# %%
from models.train import Split  # noqa: E402

metrics = json.loads((reports / "metrics.json").read_text(encoding="utf-8"))
train_info = json.loads((Path(params.model.out_dir) / "train_info.json").read_text(encoding="utf-8"))
print("划分 split:", Split.from_dict(train_info["split"]).describe()[0])
names = {"rules": "规则", "model": "模型", "combined": "规则+模型", "oracle": "真实概率（合成）"}
systems = [s for s in names if s in metrics["systems"]]
x = np.arange(len(systems))
fig, ax = plt.subplots(figsize=(7, 3.8))
for i, (key, lab) in enumerate((("recall_at_rules_workload", "召回率@k"), ("recall_at_2x_rules_workload", "召回率@2k"))):
    vals = [metrics["systems"][s][key] for s in systems]
    bars = ax.bar(x + (i - 0.5) * 0.38, vals, 0.38, label=lab)
    ax.bar_label(bars, fmt="{:.0%}", fontsize=8)
ax.set_xticks(x, [names[s] for s in systems])
ax.set_ylim(0, 1)
ax.set_ylabel("召回率")
ax.set_title(f"测试 {', '.join(metrics['test_quarters'])}：k = {metrics['rules_workload']:,} 次走访，"
             f"{metrics['positives']:,} 户后续被识别")
ax.legend(fontsize=8)
fig.tight_layout()
save(fig, "performance")

# %% [markdown]
# ## 各季度召回率 Performance over the quarters (after retraining)
#
# Each training run is evaluated on its own newest labelled quarters; the x axis is the last of them.
# Shown once there are at least two training runs.

# %%
if len(perf) >= 2:
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for c, style in zip(perf.columns[:4], ("o--", "o-", "s--", "s-"), strict=False):
        ax.plot(perf.index, perf[c], style, label=c)
    ax.set_ylim(0, 1)
    ax.set_xlabel("测试季度（最后一季）")
    ax.set_ylabel("召回率")
    ax.set_title("模型与规则：相同走访量下找到的后续识别户比例")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, "performance_over_quarters")
else:
    print("one training run so far: the comparison over quarters appears after `fangpin retrain`")

# %% [markdown]
# ## Latest verdict

# %%
verdicts = sorted(reports.glob("retrain/*/verdict.json"))
verdict = json.loads(verdicts[-1].read_text(encoding="utf-8")) if verdicts else None
if verdict:
    print(f"{verdict['new_quarter']}: {verdict['decision']} — challenger v{verdict['challenger']}, "
          f"@champion v{verdict['champion_after']}")
    for r in verdict["reasons"]:
        print("  ", r)
else:
    print("no retraining yet: showing the evaluation of the current training run only")

# %% [markdown]
# ## 校准 Calibration of the newest model on its test quarters

# %%
from fangpin.quarters import to_index  # noqa: E402
from pipelines.common import load_frames, read_train_info  # noqa: E402
from pipelines.evaluate import scored_frame, test_frame  # noqa: E402

info = read_train_info(params)
# labels with the horizon the model was trained for (train_info), whatever params.yaml says now
params = params.model_copy(update={"labels": params.labels.model_copy(
    update={"horizon_quarters": info["horizon_quarters"]})})
model = load_version(params, info["version"])
frames = load_frames(params)
test_q = [to_index(q) for q in info["test_quarters"]]
scored = scored_frame(model, frames, params, min(test_q))
test = test_frame(scored, test_q, Split.from_dict(info["split"]))  # the evaluation's test rows
p, y = test["probability"].to_numpy(float), test["label"].to_numpy(float)
bins = np.array_split(np.argsort(p, kind="stable"), 10)
rel = pd.DataFrame({"predicted": [p[b].mean() for b in bins], "observed": [y[b].mean() for b in bins]})
fig, ax = plt.subplots(figsize=(4.5, 4.2))
top = max(rel.max().max(), 0.01) * 1.1
ax.plot([0, top], [0, top], color="grey", ls=":")
ax.plot(rel["predicted"], rel["observed"], "o-")
ax.set_xlabel("预测概率（10 等分组均值）")
ax.set_ylabel("实际识别比例")
ax.set_title(f"校准曲线 第{info['version']}版")
fig.tight_layout()
save(fig, "calibration")
display(rel)

# %% [markdown]
# ## SHAP 特征贡献 summary (exact TreeSHAP, `pred_contrib`, log-odds)

# %%
import shap  # noqa: E402

from models.features import Frames, build_features  # noqa: E402

rng = np.random.default_rng(0)
sample = test.iloc[np.sort(rng.choice(len(test), min(500, len(test)), replace=False))]
feats = build_features(Frames(frames.households, frames.persons, frames.events,
                              {**model.lines, **frames.lines}), quarters=sorted(sample["quarter_idx"].unique()))
feats = feats.merge(sample[["household_id", "quarter_idx"]], on=["household_id", "quarter_idx"])
X = model.spec.matrix(feats)
contrib = model.contributions(X)
names = [model.spec.labels.get(n, n) for n in model.spec.names]
plt.figure()  # shap draws on the current figure
shap.summary_plot(contrib[:, :-1], X, feature_names=names, max_display=12, show=False, plot_size=(8, 5))
fig = plt.gcf()
fig.axes[0].set_title("主要风险因素（SHAP，对数几率）")
fig.tight_layout()
save(fig, "shap_summary")

# %% [markdown]
# ## 数据漂移 Drift of the newest quarter

# %%
if verdict:
    drift = json.loads((Path(verdict["reports"]["dir"]) / "drift.json").read_text(encoding="utf-8"))
    d = pd.DataFrame(drift["columns"]).dropna(subset=["psi"]).sort_values("psi", ascending=False)
    print("counts:", drift["counts"], "| line changed:", (drift["monitoring_line"] or {}).get("changed"))
    top = d.head(15).iloc[::-1]
    colors = {"稳定": "#4c9f70", "关注": "#e0a526", "告警": "#c0392b", "已知变化": "#7f8c8d"}
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    ax.barh([lab or col for col, lab in zip(top["column"], top["label"], strict=True)], top["psi"],
            color=[colors[s] for s in top["status"]])
    ax.axvline(drift["thresholds"]["psi_warn"], color="#e0a526", ls="--", lw=1)
    ax.axvline(drift["thresholds"]["psi_alarm"], color="#c0392b", ls="--", lw=1)
    ax.set_xlabel("PSI（新季度对比训练期）")
    ax.set_title(f"数据漂移 {drift['current_quarter']}（灰色为已知变化）")
    fig.tight_layout()
    save(fig, "drift")
    display_cols = ["column", "label", "psi", "psi_line_adjusted", "psi_same_season", "status", "n_ref", "note"]
    display(d[[c for c in display_cols if c in d.columns]].head(15))
else:
    print("no retraining yet: the drift of a new quarter appears after `fangpin retrain`")

# %% [markdown]
# ## 公平性 Fairness: recall of the combined warnings by group (95% bootstrap intervals)

# %%
if verdict:
    fair = json.loads((Path(verdict["reports"]["dir"]) / "fairness.json").read_text(encoding="utf-8"))
    attrs = [a for a, v in fair["attributes"].items() if v["groups"]]
    fig, axes = plt.subplots(len(attrs), 1, figsize=(7, 1.3 * len(attrs) + 2), squeeze=False)
    for ax, a in zip(axes[:, 0], attrs, strict=True):
        g = pd.DataFrame(fair["attributes"][a]["groups"]).dropna(subset=["recall"])
        ypos = np.arange(len(g))
        err = [np.maximum(g["recall"] - g["recall_lo"], 0), np.maximum(g["recall_hi"] - g["recall"], 0)]
        ax.errorbar(g["recall"], ypos, xerr=err, fmt="o", capsize=2)
        ax.set_yticks(ypos, g["group"].astype(str), fontsize=7)
        ax.set_xlim(0, 1)
        ax.set_title(fair["attributes"][a]["label_zh"], fontsize=9)
    axes[-1, 0].set_xlabel("召回率")
    fig.tight_layout()
    save(fig, "fairness")
    for f in fair["flags"]:
        print("⚠", f["text_zh"])
else:
    print("no retraining yet: the fairness audit appears after `fangpin retrain`")
