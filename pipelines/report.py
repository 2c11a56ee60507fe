"""The readable evaluation report (Markdown + PNG figures) and the model card."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from fangpin.config import Params

SYSTEM_LABELS = {"rules": "规则 rules", "model": "模型 model", "combined": "规则+模型 combined",
                 "oracle": "oracle (true probability)"}


def _fmt(v, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "—"
    if pct:
        return f"{v:.1%}"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def write_figures(fig_dir: Path, metrics: dict, detail: dict, plots: dict) -> dict[str, str]:
    from fangpin.plotting import NoCJKFont, setup_matplotlib

    try:
        setup_matplotlib()
    except NoCJKFont:  # figures stay readable with English labels only
        import matplotlib

        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    y = plots["y"]
    n = len(y)
    k = metrics["rules_workload"]
    # 1. recall against workload
    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = np.arange(1, n + 1)
    for s, c in plots["curves"].items():
        ax.plot(x, c, label=SYSTEM_LABELS[s])
    for w, lab in ((k, "k"), (2 * k, "2k"), (int(np.ceil(0.05 * n)), "5%")):
        if w <= n:
            ax.axvline(w, color="grey", ls=":", lw=1)
            ax.text(w, 0.02, lab, color="grey")
    ax.set_xlim(0, min(n, max(4 * k, int(0.2 * n))))
    ax.set_xlabel("visits (top of each ranking)")
    ax.set_ylabel("recall of households newly identified")
    ax.set_title("Recall at workload, test quarters")
    ax.legend(loc="lower right")
    fig.tight_layout()
    out["recall"] = "figures/recall_at_workload.png"
    fig.savefig(fig_dir / "recall_at_workload.png", dpi=110)
    plt.close(fig)
    # 2. reliability diagram
    test = plots["test"]
    fig, ax = plt.subplots(figsize=(5, 5))
    for s, col in (("model", "probability"), ("oracle", "oracle")):
        if col not in test.columns or test[col].isna().any():
            continue
        p = test[col].to_numpy(float)
        order = np.argsort(p, kind="stable")
        parts = np.array_split(order, 10)
        ax.plot([p[b].mean() for b in parts], [y[b].mean() for b in parts], "o-", label=SYSTEM_LABELS[s])
    lim = max(0.05, float(test["probability"].quantile(0.99)) * 1.2)
    ax.plot([0, lim], [0, lim], "k--", lw=1)
    ax.set_xlabel("mean predicted probability (10 equal-count bins)")
    ax.set_ylabel("observed rate")
    ax.set_title("Calibration, test quarters")
    ax.legend()
    fig.tight_layout()
    out["calibration"] = "figures/calibration.png"
    fig.savefig(fig_dir / "calibration.png", dpi=110)
    plt.close(fig)
    # 3. SHAP importance by group and top features
    imp = detail["shap_importance"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    g = list(imp["groups"].items())[:15][::-1]
    axes[0].barh([a for a, _ in g], [b for _, b in g])
    axes[0].set_title("by factor group (|sum of contributions|)")
    f = list(imp["features"].items())[:20][::-1]
    axes[1].barh([a for a, _ in f], [b for _, b in f])
    axes[1].set_title("top features (mean |contribution|)")
    for a in axes:
        a.set_xlabel("log-odds")
    fig.tight_layout()
    out["shap"] = "figures/shap_importance.png"
    fig.savefig(fig_dir / "shap_importance.png", dpi=110)
    plt.close(fig)
    return out


def write_report(rdir: Path, metrics: dict, detail: dict, plots: dict, info: dict, params: Params):
    rdir = Path(rdir)
    figs = write_figures(rdir / "figures", metrics, detail, plots)
    from models.train import Split

    S = metrics["systems"]
    D = detail["systems"]
    k = metrics["rules_workload"]
    split_zh, split_en = Split.from_dict(info["split"]).describe()
    lines = [
        "# fangpin evaluation report",
        "",
        f"Model `{info['registered_name']}` version {info['version']} (run `{info['run_id']}`), ruleset "
        f"`{detail['ruleset_version']}`, generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        "",
        f"Test rows ({', '.join(metrics['test_quarters'])}): {metrics['n_test']:,} in-scope household-quarters, "
        f"{metrics['positives']:,} newly identified within {params.labels.horizon_quarters} quarters (base rate "
        f"{detail['base_rate']:.2%}). The rules hit k = {k:,} of them: that is the rules' workload.",
        "",
        f"划分 Split: {split_zh}",
        "",
        f"{split_en}",
        "",
        "## Systems",
        "",
        "| system | AUC | PR-AUC | Brier | calibration error | recall@k | precision@k | recall@2k | "
        "precision@2k | recall@5% | precision@5% |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in S:
        m, d = S[s], D[s]
        lines.append(f"| {SYSTEM_LABELS[s]} | {_fmt(m['auc'])} | {_fmt(m['pr_auc'])} | {_fmt(m['brier'])} | "
                     f"{_fmt(d['calibration_error'])} | {_fmt(m['recall_at_rules_workload'], True)} | "
                     f"{_fmt(m['precision_at_rules_workload'], True)} | {_fmt(m['recall_at_2x_rules_workload'], True)} | "
                     f"{_fmt(d['precision_at_2x_rules_workload'], True)} | {_fmt(m['recall_at_5pct'], True)} | "
                     f"{_fmt(d['precision_at_5pct'], True)} |")
    r, mo, c = S["rules"], S["model"], S["combined"]
    lines += [
        "",
        f"- **Same visits, better chosen**: at the rules' workload (k = {k:,}) the model finds "
        f"{mo['recall_at_rules_workload']:.1%} of the households later identified, the rules "
        f"{r['recall_at_rules_workload']:.1%} ({(mo['recall_at_rules_workload'] - r['recall_at_rules_workload']) * 100:+.1f} points).",
        f"- **Where the extra visits go**: at 2k, combined (every rule hit, then the model's next picks) finds "
        f"{c['recall_at_2x_rules_workload']:.1%}, the rules ranked by income {r['recall_at_2x_rules_workload']:.1%} "
        f"({(c['recall_at_2x_rules_workload'] - r['recall_at_2x_rules_workload']) * 100:+.1f} points).",
        "- At k, combined and rules select the same households by construction; the model orders visits "
        "within the rule hits.",
    ]
    if "oracle" in S:
        o = S["oracle"]
        gap = (o["auc"] or 0) - (mo["auc"] or 0)
        lines += [
            f"- **Model against the oracle**: AUC {mo['auc']:.3f} against the oracle's {o['auc']:.3f} "
            f"(oracle − model = {gap:+.3f}); PR-AUC {mo['pr_auc']:.3f} against {o['pr_auc']:.3f}; recall at 5% "
            f"{mo['recall_at_5pct']:.1%} against {o['recall_at_5pct']:.1%}. The oracle is the generator's own "
            "probability: it sees hidden state that no ledger column shows (true current income between "
            "verifications, a household's unrecorded frailty, the shocks that arrive after the quarter ends, "
            "the township's detection intensity), so it ranks the households at the top far better — that "
            "part of the gap is what the ledger does not reveal by the end of the quarter.",
        ]
        if gap < 0:
            lines += [
                "- **Why the oracle's AUC can be below the model's**: oracle.csv is a Monte-Carlo estimate (a "
                "few simulated futures per household, fewer for low-risk households). For the great majority of "
                "households, whose probability is a fraction of a percent, that sampling noise is larger than "
                "the differences between them, and AUC counts every pair; PR-AUC and recall at small workloads, "
                "which look at the top of the ranking, are where the oracle's hidden information shows. The "
                "oracle's AUC is therefore a noisy lower bound on the best achievable AUC, not the ceiling.",
            ]
    lines += ["", "### Targets (issue 3)", "", "| target | measured | met |", "|---|---|---|"]
    d_k = (mo["recall_at_rules_workload"] - r["recall_at_rules_workload"]) * 100
    d_2k = (c["recall_at_2x_rules_workload"] - r["recall_at_2x_rules_workload"]) * 100
    ce = D["model"]["calibration_error"]
    lines += [
        f"| model recall at k ≥ rules + 10 points | {d_k:+.1f} points | {'yes' if d_k >= 10 else 'no'} |",
        f"| combined recall at 2k ≥ rules at 2k + 5 points | {d_2k:+.1f} points | {'yes' if d_2k >= 5 else 'no'} |",
        f"| calibration error < 0.02 | {ce:.4f} | {'yes' if ce < 0.02 else 'no'} |",
    ]
    lines += level_section(metrics, detail, params)
    per_rule = detail.get("rules")
    if per_rule:
        lines += ["", "### Rule hits on the test quarters", "",
                  "How often each rule fires among the in-scope household-quarters, how many of those were "
                  f"newly identified within {params.labels.horizon_quarters} quarters (base rate "
                  f"{detail['base_rate']:.2%}) and what a hit becomes: a warning of at least its floor "
                  "(`levels.rule_floors`) and/or a 保障缺口 task for a department (`tasks.routes`).", "",
                  "| rule | policy level | hits | share of households | later identified | level floor | task |",
                  "|---|---|---|---|---|---|---|"]
        for rid, v in per_rule.items():
            lines.append(f"| {rid} | {v['level']} | {v['hits']:,} | {v['share']:.1%} | {v['positive_rate']:.2%} | "
                         f"{v.get('floor') or '—'} | {v.get('task') or '—'} |")
    lines += ["", f"![recall at workload]({figs['recall']})", "",
              "## Calibration", "",
              f"Calibration: {detail['calibration']} on the calibration quarter(s). Calibration error (expected "
              f"calibration error, 10 equal-count bins) of the model on the test quarters: "
              f"{D['model']['calibration_error']:.4f}; Brier score {mo['brier']:.4f}.", "",
              f"![calibration]({figs['calibration']})", "",
              "## Warnings by level, each decision", "",
              "| decision | level | household-quarters | later identified |", "|---|---|---|---|"]
    for col, lvls in detail["warnings_by_level"].items():
        for lvl, v in lvls.items():
            lines.append(f"| {col} | {lvl} | {v['n']:,} | {v['positive_rate']:.1%} |")
    lt = detail["lead_time"]
    lines += ["", "## Lead time", "",
              f"Households newly identified after the first test quarter: {lt['identified']:,}. For each, the "
              "quarters between the first flag and the identification (rules: a rule hit; combined: in the top 2× "
              "the rules' workload of that quarter), 0 when never flagged before.", "",
              "| system | flagged before identification | mean lead (quarters) | mean lead when flagged |",
              "|---|---|---|---|"]
    for s in ("rules", "combined"):
        v = lt.get(s, {})
        lines.append(f"| {s} | {_fmt(v.get('flagged_before_identification'), True)} | "
                     f"{_fmt(v.get('mean_lead_quarters'))} | {_fmt(v.get('mean_lead_quarters_if_flagged'))} |")
    if "combined_minus_rules" in lt:
        d = lt["combined_minus_rules"]
        lines.append("")
        lines.append(f"Combined flags a household on average {d['mean_quarters']:.2f} quarters earlier than the "
                     f"rules; earlier for {d['earlier_share']:.1%}, later for {d['later_share']:.1%}.")
    lines += ["", "## Slices", "",
              "Recall within each group (selections made on the pooled ranking). 民族 and the sex of the head "
              "of household are audited here only; neither is a model feature.", ""]
    for name, groups in metrics["slices"].items():
        lines += [f"### {name}", "", "| group | n | positives | rules recall@k | model recall@k | "
                  "combined recall@2k | flagged@2k | model AUC | mean prob | positive rate |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for g, v in sorted(groups.items(), key=lambda kv: -kv[1]["n"])[:30]:
            lines.append(f"| {g} | {v['n']:,} | {v['positives']:,} | {_fmt(v['rules_recall_at_k'], True)} | "
                         f"{_fmt(v['model_recall_at_k'], True)} | {_fmt(v['combined_recall_at_2k'], True)} | "
                         f"{_fmt(v['combined_flag_rate_at_2k'], True)} | {_fmt(v['model_auc'])} | "
                         f"{v['mean_probability']:.3f} | {v['positive_rate']:.3f} |")
        lines.append("")
    imp = detail["shap_importance"]
    lines += ["## Global SHAP importance", "",
              f"Exact TreeSHAP (`pred_contrib`, log-odds) on {imp['rows']:,} test rows.", "",
              f"![shap]({figs['shap']})", "", "| factor group | mean abs contribution |", "|---|---|"]
    lines += [f"| {g} | {v:.4f} |" for g, v in imp["groups"].items()]
    report = rdir / "report.md"
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return report



def level_section(metrics: dict, detail: dict, params: Params) -> list[str]:
    """Levels of the combined decision on the test quarters (precision must fall from 红 to 蓝 and
    stay above the base rate) and the township workload against the capacity."""
    lv, wl = metrics.get("levels"), metrics.get("workload")
    if not lv or not wl:
        return []
    base = detail["base_rate"]
    prec = [lv[k]["precision"] for k in ("红", "黄", "蓝")]
    ordered = all(p is not None for p in prec) and prec[0] > prec[1] > prec[2] > base
    p = params.levels
    cap = detail.get("capacity", {})
    out = ["", "## Levels and workload (combined decision, test quarters)", "",
           f"Each township and quarter, the in-scope households are ranked by the model's risk: the top "
           f"{p.red_share:.0%} are 红, the next {p.yellow_share:.0%} 黄, the next {p.blue_share:.0%} 蓝; a rule hit "
           f"lifts a household to at least its rule's floor; at most {p.capacity_per_township} households per "
           "township and quarter stay 红 (home verification within the deadline), the other 红 candidates move to 黄 "
           "(the next monthly visit). Rules without a floor become 保障缺口 tasks (below).", "",
           "| level | household-quarters | share of test rows | later identified |", "|---|---|---|---|"]
    for k in ("红", "黄", "蓝"):
        v = lv[k]
        out.append(f"| {k} | {v['households']:,} | {v['share']:.2%} | {_fmt(v['precision'], True)} |")
    out += ["", f"Base rate {base:.2%}. Precision ordered 红 > 黄 > 蓝 > base rate: **{'yes' if ordered else 'no'}**.",
            "", f"Workload: {wl['warned_share']:.2%} of the test household-quarters are warned; the largest 红 list "
            f"of a township in one quarter holds {wl['visits_per_township_max']} households (capacity "
            f"{wl['capacity_per_township']}); {cap.get('shortfall', 0):,} 红 candidates in "
            f"{cap.get('township_quarters_over_capacity', 0)} of {cap.get('township_quarters', 0)} township-quarters "
            "were moved to the monthly visit (the shortfall the county sees)."]
    by_c = detail.get("levels_by_county")
    if by_c:
        out += ["", "| county | base rate | 红 later identified | 黄 | 蓝 | warned share |", "|---|---|---|---|---|---|"]
        for c, v in by_c.items():
            L = v["levels"]
            warned = sum(L[k]["share"] for k in ("红", "黄", "蓝"))
            out.append(f"| {c} | {v['base_rate']:.2%} | {_fmt(L['红']['precision'], True)} | "
                       f"{_fmt(L['黄']['precision'], True)} | {_fmt(L['蓝']['precision'], True)} | {warned:.2%} |")
    return out
