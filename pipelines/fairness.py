"""Fairness audit of the combined system (what fangpin sends: every rule hit plus the model's
warnings) on labelled household-quarters.

For each attribute (county, township, household type, labour class, sex of the head and — for the
audit only, never a model input — 民族 of the head), fairlearn's ``MetricFrame`` gives recall
(share of the households later identified that got a warning), precision (share of warnings that
were later identified) and false-positive rate (share of the households not identified that got a
warning) per group. Confidence intervals are percentile bootstraps of each rate within each group,
resampling its denominator (positives for recall, warnings for precision, households not
identified for FPR; ``scipy.stats.bootstrap``, ``fairness.bootstrap`` resamples): fairlearn's own
``n_boot`` recomputes every group on every resample and measured 82 s for 50 resamples of 100,000
rows × 24 groups on this machine (docs/decisions.md), far too slow for a quarterly command.

A disparity is flagged when the gap between the best and the worst group exceeds the params
threshold (recall ``max_recall_gap``, precision ``max_precision_gap``, false-positive rate
``max_fpr_gap``), among groups large enough to measure (``min_group_size`` rows and
``min_group_positives`` positives for recall, as many warnings for precision). A flag says
whether the two groups' intervals are apart (``separated``), i.e. whether the gap is more than noise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

# attribute column → (Chinese label, English label, audit-only)
ATTRIBUTES: dict[str, tuple[str, str, bool]] = {
    "county": ("县", "county", False),
    "township": ("乡镇", "township", False),
    "household_type": ("户类型", "household type", False),
    "labor_class": ("劳动力类别", "labour class", False),
    "head_sex": ("户主性别", "sex of the head", True),
    "head_ethnicity": ("户主民族（仅用于审计）", "ethnicity of the head (audit only)", True),
}
METRICS = ("recall", "precision", "fpr")
METRIC_ZH = {"recall": "召回率", "precision": "精确率", "fpr": "误报率"}
MISSING = "（空）"


def group_table(y: np.ndarray, pred: np.ndarray, groups: pd.Series) -> pd.DataFrame:
    """Per group: n, positives, warnings (counts) and recall, precision, fpr from fairlearn's
    MetricFrame (NaN where undefined). ``attrs["overall"]`` holds the same for all rows.

    The rows are first collapsed to (group, label, warning) cells with their counts as sample
    weights — the same confusion matrices, so the same metrics — because MetricFrame spends
    microseconds per row and per metric in Python (measured: 5 s for 100,000 rows × 24 groups)."""
    from fairlearn.metrics import MetricFrame, false_positive_rate, true_positive_rate
    from sklearn.metrics import precision_score

    def recall(yt, yp, sample_weight):
        return true_positive_rate(yt, yp, sample_weight=sample_weight) if np.sum(sample_weight[yt == 1]) else np.nan

    def precision(yt, yp, sample_weight):
        return precision_score(yt, yp, sample_weight=sample_weight, zero_division=np.nan)

    def fpr(yt, yp, sample_weight):
        return false_positive_rate(yt, yp, sample_weight=sample_weight) if np.sum(sample_weight[yt == 0]) else np.nan

    cells = (pd.DataFrame({"g": groups.astype(str).to_numpy(), "y": y.astype(np.int8), "p": pred.astype(np.int8)})
             .groupby(["g", "y", "p"], observed=True).size().rename("w").reset_index())
    w = cells["w"].to_numpy(dtype=float)
    mf = MetricFrame(metrics={"recall": recall, "precision": precision, "fpr": fpr},
                     y_true=cells["y"].to_numpy(), y_pred=cells["p"].to_numpy(),
                     sensitive_features=cells["g"].rename(groups.name),
                     sample_params={m: {"sample_weight": w} for m in ("recall", "precision", "fpr")})
    counts = (cells.assign(n=cells["w"], positives=cells["w"] * cells["y"], warnings=cells["w"] * cells["p"])
              .groupby("g")[["n", "positives", "warnings"]].sum())
    t = counts.join(mf.by_group.set_axis(mf.by_group.index.astype(str)))
    t.index = t.index.astype(str).rename(groups.name)
    t.attrs["overall"] = {"n": int(len(y)), "positives": int(y.sum()), "warnings": int(pred.sum()),
                          **{k: float(v) for k, v in mf.overall.items()}}
    return t


def bootstrap_ci(indicator: np.ndarray, n_resamples: int, level: float, seed: int) -> tuple[float, float]:
    """Percentile bootstrap interval (scipy.stats.bootstrap) of a rate: the mean of ``indicator``
    over its denominator — recall: warned among the positives; precision: positive among the
    warnings; FPR: warned among the negatives."""
    from scipy.stats import bootstrap

    x = np.asarray(indicator, dtype=float)
    if len(x) < 2 or n_resamples < 2:
        return (np.nan, np.nan)
    if x.min() == x.max():  # every resample gives the same rate
        return (float(x[0]), float(x[0]))
    res = bootstrap((x,), np.mean, vectorized=True, n_resamples=n_resamples, confidence_level=level,
                    method="percentile", random_state=seed, batch=100)
    lo, hi = res.confidence_interval
    return float(lo), float(hi)


def _indicator(y: np.ndarray, pred: np.ndarray, metric: str) -> np.ndarray:
    if metric == "recall":
        return pred[y]
    if metric == "precision":
        return y[pred]
    return pred[~y]


@dataclass
class FairnessReport:
    tables: dict[str, pd.DataFrame]  # attribute → per-group table with CIs
    flags: list[dict]
    overall: dict
    quarters: list[str] = field(default_factory=list)
    thresholds: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "quarters": self.quarters,
            "overall": self.overall,
            "thresholds": self.thresholds,
            "flags": self.flags,
            "attributes": {
                a: {"label_zh": ATTRIBUTES.get(a, (a, a, False))[0], "label_en": ATTRIBUTES.get(a, (a, a, False))[1],
                    "audit_only": ATTRIBUTES.get(a, (a, a, False))[2],
                    "groups": t.reset_index(names="group").replace({np.nan: None}).to_dict("records")}
                for a, t in self.tables.items()
            },
        }

    def write(self, out_dir: Path, stem: str = "fairness") -> dict[str, Path]:
        from pipelines.common import write_report_bundle

        return write_report_bundle(self, out_dir, stem)

    def markdown(self, figure: str | None = None) -> str:
        o, t = self.overall, self.thresholds
        lines = [
            "# 公平性审计 Fairness audit",
            "",
            f"季度 quarters: {', '.join(self.quarters)}. 系统：规则+模型（所有发出的预警）/ combined system "
            f"(every warning sent). 总体 overall: recall {o['recall']:.1%}, precision {o['precision']:.1%}, "
            f"FPR {o['fpr']:.1%} (n={o['n']:,}, positives {o['positives']:,}, warnings {o['warnings']:,}).",
            "",
            f"阈值 thresholds: recall gap > {t.get('max_recall_gap')}, precision gap > {t.get('max_precision_gap')}, "
            f"FPR gap > {t.get('max_fpr_gap')}; groups with ≥ {t.get('min_group_size')} rows "
            f"(≥ {t.get('min_group_positives')} positives for recall). "
            f"{int(t.get('ci_level', 0.95) * 100)}% bootstrap intervals ({t.get('bootstrap')} resamples per group).",
            "",
            "民族 and sex of the head are audit attributes only: they are never model features.",
            "",
        ]
        if self.flags:
            lines += ["## 差异提示 Flagged disparities", ""]
            for f in self.flags:
                lines.append(f"- {f['text_zh']} / {f['text_en']}")
            lines.append("")
        else:
            lines += ["无超出阈值的群体差异 / no disparity beyond the thresholds.", ""]
        if figure:
            lines += [f"![fairness]({figure})", ""]
        for a, tab in self.tables.items():
            zh, en, audit = ATTRIBUTES.get(a, (a, a, False))
            lines += [f"## {zh} / {en}", "", "| 群体 group | n | 阳性 positives | 预警 warnings | 召回率 recall (CI) | "
                      "精确率 precision (CI) | 误报率 FPR (CI) |", "|---|---|---|---|---|---|---|"]
            for g, r in tab.iterrows():
                cells = []
                for m in METRICS:
                    v, lo, hi = r[m], r[f"{m}_lo"], r[f"{m}_hi"]
                    cells.append("—" if pd.isna(v) else f"{v:.1%} ({lo:.1%}–{hi:.1%})" if not pd.isna(lo) else f"{v:.1%}")
                lines.append(f"| {g} | {r['n']:,} | {r['positives']:,} | {r['warnings']:,} | " + " | ".join(cells) + " |")
            lines.append("")
        return "\n".join(lines) + "\n"

    def plot(self, path: Path) -> None:
        """Recall by group with intervals, one panel per attribute."""
        from fangpin.plotting import setup_matplotlib

        setup_matplotlib()
        import matplotlib.pyplot as plt

        attrs = list(self.tables)
        sizes = [max(len(self.tables[a]), 2) for a in attrs]
        fig, axes = plt.subplots(len(attrs), 1, figsize=(8, 1.2 + sum(0.22 * s + 0.6 for s in sizes)),
                                 squeeze=False, gridspec_kw={"height_ratios": sizes})
        for ax, a in zip(axes[:, 0], attrs, strict=True):
            tab = self.tables[a]
            ypos = np.arange(len(tab))
            v = tab["recall"].to_numpy(float)
            lo = np.nan_to_num(v - tab["recall_lo"].to_numpy(float), nan=0.0)
            hi = np.nan_to_num(tab["recall_hi"].to_numpy(float) - v, nan=0.0)
            ax.errorbar(v, ypos, xerr=[np.maximum(lo, 0), np.maximum(hi, 0)], fmt="o", color="#2c6fbb",
                        ecolor="#9bbbe0", capsize=2)
            ax.axvline(self.overall["recall"], color="grey", ls=":", lw=1)
            ax.set_yticks(ypos, [str(g) for g in tab.index], fontsize=7)
            ax.set_xlim(0, 1)
            ax.set_title(f"召回率 · {ATTRIBUTES.get(a, (a,))[0]}", fontsize=9)
        axes[-1, 0].set_xlabel("召回率（规则+模型预警覆盖的后续识别户比例）")
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)


def _gap_flag(attr: str, tab: pd.DataFrame, metric: str, eligible: pd.Series, max_gap: float) -> dict | None:
    t = tab[eligible & tab[metric].notna()]
    if len(t) < 2:
        return None
    worst_better = {"recall": (t[metric].idxmin(), t[metric].idxmax()),
                    "precision": (t[metric].idxmin(), t[metric].idxmax()),
                    "fpr": (t[metric].idxmax(), t[metric].idxmin())}[metric]
    worst, best = worst_better
    gap = abs(float(t.at[worst, metric] - t.at[best, metric]))
    if gap <= max_gap:
        return None
    if metric == "fpr":
        separated = t.at[worst, "fpr_lo"] > t.at[best, "fpr_hi"]
    else:
        separated = t.at[worst, f"{metric}_hi"] < t.at[best, f"{metric}_lo"]
    zh, en, audit = ATTRIBUTES.get(attr, (attr, attr, False))
    mz = METRIC_ZH[metric]
    sep_zh = "（置信区间不重叠）" if separated else "（置信区间重叠，可能是抽样波动）"
    sep_en = " (intervals apart)" if separated else " (intervals overlap: may be noise)"
    return {
        "attribute": attr, "metric": metric, "worst_group": str(worst), "best_group": str(best),
        "worst": float(t.at[worst, metric]), "best": float(t.at[best, metric]), "gap": gap,
        "threshold": max_gap, "separated": bool(separated), "audit_only": audit,
        "text_zh": f"{zh}：{mz} {worst} {t.at[worst, metric]:.1%} 对 {best} {t.at[best, metric]:.1%}，"
                   f"差距 {gap:.1%} 超过 {max_gap:.0%}{sep_zh}",
        "text_en": f"{en}: {metric} {worst} {t.at[worst, metric]:.1%} vs {best} {t.at[best, metric]:.1%}, "
                   f"gap {gap:.1%} > {max_gap:.0%}{sep_en}",
    }


def audit(
    frame: pd.DataFrame,
    params,
    *,
    label: str = "label",
    prediction: str = "warning",
    attributes: Mapping[str, tuple[str, str, bool]] | None = None,
    quarters: list[str] | None = None,
) -> FairnessReport:
    """Audit ``frame`` (one row per labelled household-quarter: ``label`` 0/1, ``prediction`` bool,
    and the attribute columns). ``params`` is the whole Params (its ``fairness`` section)."""
    fp = params.fairness
    attributes = ATTRIBUTES if attributes is None else attributes
    y_all = frame[label].to_numpy(dtype=float)
    if np.isnan(y_all).any():
        raise ValueError(f"fairness audit needs labelled rows only: {int(np.isnan(y_all).sum())} rows without a label")
    y_all = y_all.astype(bool)
    p_all = frame[prediction].astype(bool).to_numpy()
    tables: dict[str, pd.DataFrame] = {}
    flags: list[dict] = []
    overall = None
    for a_i, attr in enumerate(attributes):
        if attr not in frame.columns:
            continue
        groups = frame[attr].astype("string").fillna(MISSING).rename(attr)
        tab = group_table(y_all, p_all, groups)
        overall = overall or tab.attrs["overall"]
        idx = groups.groupby(groups, sort=True).indices
        for m in METRICS:
            lo, hi = [], []
            for g_i, g in enumerate(tab.index):
                rows = idx[g]
                ci = bootstrap_ci(_indicator(y_all[rows], p_all[rows], m), fp.bootstrap, fp.ci_level,
                                  fp.seed + 1000 * a_i + g_i) if not np.isnan(tab.at[g, m]) else (np.nan, np.nan)
                lo.append(ci[0])
                hi.append(ci[1])
            tab[f"{m}_lo"], tab[f"{m}_hi"] = lo, hi
        big = tab["n"] >= fp.min_group_size
        for m, elig, gap in (
            ("recall", big & (tab["positives"] >= fp.min_group_positives), fp.max_recall_gap),
            ("precision", big & (tab["warnings"] >= fp.min_group_positives), fp.max_precision_gap),
            ("fpr", big & ((tab["n"] - tab["positives"]) >= fp.min_group_size), fp.max_fpr_gap),
        ):
            f = _gap_flag(attr, tab, m, elig, gap)
            if f:
                flags.append(f)
        tables[attr] = tab
    if overall is None:
        raise ValueError(f"none of the audit attributes {list(attributes)} is a column of the frame")
    return FairnessReport(tables, flags, overall, quarters or [], {
        k: getattr(fp, k) for k in ("max_recall_gap", "max_precision_gap", "max_fpr_gap", "min_group_size",
                                    "min_group_positives", "bootstrap", "ci_level")})
