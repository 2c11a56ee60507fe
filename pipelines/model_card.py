"""Model card per registered version, in Chinese and in English (Markdown).

Built from what the pipeline measured — train_info (split), metrics.json / metrics_detail.json
(rules vs model vs combined on the test quarters, calibration), the promotion decision (challenger
vs the previous @champion on the same quarters), the fairness audit and the drift report — never
from typed-in numbers. Logged to the version's MLflow run (``model_card/model_card_zh.md``,
``model_card/model_card_en.md``) and set as the registered version's description (Chinese, then
English), which the API shows under /v1/model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

INTENDED_USE_ZH = (
    "供乡镇干部安排入户核实的决策辅助：按风险排序，说明原因和建议措施。每条预警都须入户核实，经村级评议、"
    "乡镇审核、县级审定后才能纳入监测。**不得**据此自动决定任何帮扶、低保、特困或其他待遇的给予、减少或取消。"
)
INTENDED_USE_EN = (
    "Decision support for township staff planning home visits: a ranking with reasons and suggested measures. "
    "Every warning is verified at home and goes through village review, township review and county approval "
    "before a household is taken into monitoring. It must **never** decide automatically on granting, reducing "
    "or withdrawing any benefit (低保, 特困 or other support)."
)
LIMITS_ZH = [
    "只从所给台账学习：识别做法不同的县需要用本县数据重新训练。",
    "收入为最近一次核实的数值，两次核实之间可能已过时；新年度监测线会改变以元计的收入特征（见漂移报告）。",
    "部门预警单独看多为误报；模型只使用截至当季末已知的信息。",
    "标签是“被识别为监测对象”，反映的是干部识别的结果，而非真实困难本身；漏识别的户在数据中是阴性。",
    "人数少的群体（少于最小群体规模）指标不稳定，只报告不判定。",
]
LIMITS_EN = [
    "Learns only from the ledgers it was given: a county with different identification practice needs its own run.",
    "Income is the last verified value and can be stale; a new year's monitoring line moves every feature in yuan "
    "(see the drift report).",
    "Department signals are mostly false alarms on their own; features use only what was known by the end of the quarter.",
    "The label is *being identified* as a monitoring object — the outcome of cadres' screening, not hardship itself; "
    "households that were missed are negatives in the data.",
    "Metrics of small groups (below the minimum group size) are unstable: reported, not judged.",
]


def _pct(v) -> str:
    return "—" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.1%}"


def _num(v, d: int = 4) -> str:
    return "—" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{d}f}"


def _systems_rows(metrics: dict, detail: dict, names: dict[str, str]) -> list[str]:
    rows = []
    for s, v in metrics["systems"].items():
        d = detail.get("systems", {}).get(s, {})
        rows.append(f"| {names.get(s, s)} | {_num(v.get('auc'))} | {_num(v.get('pr_auc'))} | "
                    f"{_pct(v.get('recall_at_rules_workload'))} | {_pct(v.get('precision_at_rules_workload'))} | "
                    f"{_pct(v.get('recall_at_2x_rules_workload'))} | {_pct(v.get('recall_at_5pct'))} | "
                    f"{_num(v.get('brier'))} | {_num(d.get('calibration_error'))} |")
    return rows


def _ledger_lines(ledger: dict | None) -> tuple[list[str], list[str]]:
    """The ledger's snapshots in calendar time (pipelines.labels.snapshot_cadence)."""
    if not ledger or not ledger.get("snapshots"):
        return [], []
    snaps, step, missing = ledger["snapshots"], ledger.get("spacing_quarters"), ledger.get("missing_quarters", [])
    kind_zh = {1: "每季度一次", 4: "每年一次"}.get(step, f"每 {step} 个季度一次") if step else "只有一期"
    kind_en = {1: "quarterly", 4: "annual"}.get(step, f"every {step} quarters") if step else "a single snapshot"
    zh = f"- 台账快照：{'、'.join(snaps)}（{kind_zh}）"
    en = f"- Ledger snapshots: {', '.join(snaps)} ({kind_en})"
    if missing:
        zh += (f"；缺少 {len(missing)} 个季度的快照，按日历季度计算标签窗口和回看特征，缺少的季度不当作空台账"
               "（“较上季度变化”类特征在上一季度没有快照时为缺失值）")
        en += (f"; {len(missing)} quarter(s) have no snapshot: label windows and look-back features count calendar "
               "quarters and never treat a missing quarter as an empty ledger (the changes since the previous "
               "quarter are missing when that quarter has no snapshot)")
    return [zh + "。"], [en + "."]


def _gate_rows(promotion: dict | None) -> list[str]:
    if not promotion:
        return []
    ch, cp = promotion.get("challenger_metrics") or {}, promotion.get("champion_metrics") or {}
    rows = []
    for k in ("auc", "recall_at_rules_workload", "calibration_error"):
        rows.append(f"| {k} | {_num(ch.get(k))} | {_num(cp.get(k)) if cp else '—'} |")
    return rows


def build_cards(*, info: dict, metrics: dict, detail: dict, spec, params, promotion: dict | None = None,
                fairness: dict | None = None, drift: dict | None = None) -> dict[str, str]:
    """The Chinese and English cards (Markdown) of the version in ``info``."""
    H = params.labels.horizon_quarters
    name, version = info["registered_name"], info["version"]
    from models.train import Split

    split_zh, split_en = Split.from_dict(info["split"]).describe()
    ledger_zh, ledger_en = _ledger_lines(info.get("ledger"))
    groups: dict[str, list[str]] = {}
    for f in spec.names:
        groups.setdefault(spec.groups.get(f, "other"), []).append(f)
    champ_before = (promotion or {}).get("champion_before")
    promoted = (promotion or {}).get("promoted")
    lt = detail.get("lead_time", {}).get("combined_minus_rules") or {}
    flags = (fairness or {}).get("flags", [])
    fit = detail.get("fit", {})
    table_head = ("| 系统 system | AUC | PR-AUC | 召回率@k recall@k | 精确率@k precision@k | 召回率@2k | 召回率@5% | "
                  "Brier | 校准误差 calibration error |\n|---|---|---|---|---|---|---|---|---|")
    names_zh = {"rules": "规则", "model": "模型", "combined": "规则+模型", "oracle": "真实概率（仅合成数据）"}
    names_en = {"rules": "rules", "model": "model", "combined": "combined", "oracle": "oracle (synthetic only)"}
    feat_zh = [f"- {g}（{len(v)}项）：" + "、".join(spec.labels.get(x, x) for x in v[:6]) + ("…" if len(v) > 6 else "")
               for g, v in groups.items()]
    feat_en = [f"- {g} ({len(v)}): " + ", ".join(f"`{x}`" for x in v[:6]) + (" …" if len(v) > 6 else "")
               for g, v in groups.items()]
    slices_zh, slices_en = [], []
    if fairness:
        for d in fairness["attributes"].values():
            vals = [g for g in d["groups"] if g.get("recall") is not None]
            if not vals:
                continue
            lo = min(vals, key=lambda g: g["recall"])
            hi = max(vals, key=lambda g: g["recall"])
            slices_zh.append(f"- {d['label_zh']}：召回率 {_pct(lo['recall'])}（{lo['group']}）至 "
                             f"{_pct(hi['recall'])}（{hi['group']}），{len(d['groups'])} 个群体")
            slices_en.append(f"- {d['label_en']}: recall {_pct(lo['recall'])} ({lo['group']}) to "
                             f"{_pct(hi['recall'])} ({hi['group']}), {len(d['groups'])} groups")
    drift_zh = drift_en = ""
    if drift:
        c = drift["counts"]
        drift_zh = (f"新季度 {drift['current_quarter']} 对比训练期：稳定 {c['stable']}、关注 {c['watch']}、"
                    f"告警 {c['alarm']}、已知变化 {c['known']}（PSI，见漂移报告）。")
        drift_en = (f"New quarter {drift['current_quarter']} against the training window: stable {c['stable']}, "
                    f"watch {c['watch']}, alarm {c['alarm']}, known {c['known']} (PSI; see the drift report).")
    cal = detail.get("systems", {}).get("model", {}).get("calibration_error")
    brier = metrics["systems"]["model"].get("brier")
    zh = [
        f"# 模型卡：{name} 第 {version} 版",
        "",
        "## 用途",
        INTENDED_USE_ZH,
        "",
        "## 数据窗口",
        f"- 划分：{split_zh}",
        *ledger_zh,
        f"- 测试样本 {metrics['n_test']:,} 户季，其中后续被识别 {metrics['positives']:,} 户季；规则工作量 k = {metrics['rules_workload']:,}",
        f"- 拟合样本（训练、早停、校准）的 {H} 个季度标签窗口都在测试季度之前结束，训练样本的标签窗口在验证季度之前结束；"
        "窗口会伸入之后集合的季度已剔除（purge）。",
        "",
        "## 模型",
        f"LightGBM（{fit.get('best_iteration')} 棵树，{fit.get('num_leaves')} 个叶子，收入、疾病、住房和部门事件特征带单调约束），"
        f"{detail.get('calibration', params.model.calibration)} 校准，规则集 `{detail.get('ruleset_version')}`。"
        f"类别不平衡（基准率 {_pct(detail.get('base_rate'))}）：正样本权重 {fit.get('scale_pos_weight')}"
        "（params model.scale_pos_weight；在合成台账上 'balanced' 降低了验证 AUC），以 AUC 早停，"
        "叶子至少 model.min_child_samples 个样本，并在独立的校准样本上校准（见上文划分）。",
        "",
        "## 标签定义",
        f"季度 t 处于范围内（非监测对象，或风险已消除）的户，若在之后 {H} 个季度内的台账中显示为新识别的监测对象"
        f"（监测对象类别不为空、风险未消除、识别监测时间晚于 t 季末），标签为 1，否则为 0。最后 {H} 个季度尚无标签。",
        "",
        "## 特征",
        f"共 {len(spec.names)} 项（特征版本 `{spec.version}`），只使用截至 t 季末已知的信息。"
        "民族、姓名、证件号码、性别从不作为特征。",
        *feat_zh,
        "",
        "## 效果（测试季度）",
        table_head,
        *_systems_rows(metrics, detail, names_zh),
        "",
        f"提前量：对最终被识别的户，规则+模型（2k）平均比规则早 {_num(lt.get('mean_quarters'), 2)} 个季度发现。" if lt else "",
        "",
        "## 与上一版冠军模型比较（同一测试季度）",
        (f"上一版 @champion：第 {champ_before} 版。结论：{'已晋升为 @champion' if promoted else '未晋升，继续使用原模型'}。"
         if promotion else "无晋升记录。"),
        "",
        "| 指标 | 本版 | 上一版冠军 |", "|---|---|---|", *_gate_rows(promotion),
        "",
        *_levels_zh(metrics, detail, params),
        "## 校准",
        f"方法：{detail.get('calibration', params.model.calibration)}（在独立的校准样本上拟合，见数据窗口）；"
        f"校准误差（10 等分箱 ECE）{_num(cal)}；Brier {_num(brier)}。",
        "",
        "## 分群体表现（规则+模型，全部预警）",
        *(slices_zh or ["（未运行公平性审计）"]),
        *([""] + ["超出阈值的差异："] + [f"- {f['text_zh']}" for f in flags] if flags else []),
        "",
        "## 数据漂移",
        drift_zh or "（未运行漂移报告）",
        "",
        "## 已知局限",
        *[f"- {x}" for x in LIMITS_ZH],
        "",
    ]
    en = [
        f"# Model card: {name} version {version}",
        "",
        "## Intended use",
        INTENDED_USE_EN,
        "",
        "## Data window",
        f"- Split: {split_en}",
        *ledger_en,
        f"- Test rows: {metrics['n_test']:,} household-quarters, {metrics['positives']:,} later identified; "
        f"rules' workload k = {metrics['rules_workload']:,}",
        f"- Every fitting row (training, early stopping, calibration) has its {H}-quarter label window end by the "
        "first test quarter, and every training row by the first validation quarter; quarters whose window would "
        "reach a later set are purged.",
        "",
        "## Model",
        f"LightGBM ({fit.get('best_iteration')} trees, {fit.get('num_leaves')} leaves, monotone constraints on "
        f"income, illness, housing and event features), {detail.get('calibration', params.model.calibration)} "
        f"calibration, ruleset `{detail.get('ruleset_version')}`. Class imbalance (base rate "
        f"{_pct(detail.get('base_rate'))}): positive weight {fit.get('scale_pos_weight')} (params "
        "model.scale_pos_weight; 'balanced' lowered the validation AUC on the synthetic ledger), early stopping on "
        "AUC, leaves of at least model.min_child_samples rows, and calibration on held-out rows (see the split above).",
        "",
        "## Label definition",
        f"A household in scope at quarter t (not a monitoring object, or its risk eliminated) is positive when a "
        f"snapshot within the next {H} quarters shows it newly identified (category set, risk not eliminated, "
        f"identification after the end of t). The last {H} quarters are not labelled yet.",
        "",
        "## Features",
        f"{len(spec.names)} features (version `{spec.version}`), using only what was known by the end of t. "
        "Ethnicity (民族), names, ID numbers and sex are never features.",
        *feat_en,
        "",
        "## Performance (test quarters)",
        table_head,
        *_systems_rows(metrics, detail, names_en),
        "",
        f"Lead time: households eventually identified were flagged by combined (2k) "
        f"{_num(lt.get('mean_quarters'), 2)} quarters earlier than by the rules, on average." if lt else "",
        "",
        "## Against the previous champion (same test quarters)",
        (f"Previous @champion: version {champ_before}. Decision: "
         f"{'promoted to @champion' if promoted else 'not promoted; the champion keeps serving'}."
         if promotion else "No promotion decision recorded."),
        "",
        "| metric | this version | previous champion |", "|---|---|---|", *_gate_rows(promotion),
        "",
        *_levels_en(metrics, detail, params),
        "## Calibration",
        f"Method: {detail.get('calibration', params.model.calibration)} (fitted on held-out calibration rows, see "
        f"the data window); "
        f"calibration error (ECE, 10 equal-count bins) {_num(cal)}; Brier {_num(brier)}.",
        "",
        "## Slices (combined system, every warning sent)",
        *(slices_en or ["(no fairness audit run)"]),
        *([""] + ["Disparities beyond the thresholds:"] + [f"- {f['text_en']}" for f in flags] if flags else []),
        "",
        "## Drift",
        drift_en or "(no drift report run)",
        "",
        "## Known limits",
        *[f"- {x}" for x in LIMITS_EN],
        "",
    ]
    return {"zh": "\n".join(zh), "en": "\n".join(en)}


def _level_rows(metrics: dict) -> list[str]:
    lv = metrics.get("levels") or {}
    return [f"| {k} | {lv[k]['households']:,} | {_pct(lv[k]['share'])} | {_pct(lv[k]['precision'])} |"
            for k in ("红", "黄", "蓝") if k in lv]


def _levels_zh(metrics: dict, detail: dict, params) -> list[str]:
    lv, wl = metrics.get("levels"), metrics.get("workload")
    if not lv or not wl:
        return []
    p = params.levels
    return [
        "## 预警等级与工作量（测试季度，规则+模型综合）",
        f"每个乡镇每季度按模型风险排序：前 {_pct(p.red_share)} 为红，其次 {_pct(p.yellow_share)} 为黄，再次 "
        f"{_pct(p.blue_share)} 为蓝；规则触发至少为该规则的下限等级；每乡镇每季度红色（须在核实期限内入户）至多 "
        f"{p.capacity_per_township} 户，超出的按风险顺延为黄色（月度走访）。住房、饮水、医保、义务教育、兜底缺口转责任部门任务。",
        "", "| 等级 | 户季 | 占测试样本 | 后续被识别 |", "|---|---|---|---|", *_level_rows(metrics), "",
        f"基准率 {_pct(detail.get('base_rate'))}。预警户占 {_pct(wl['warned_share'])}；单个乡镇单季度红色最多 "
        f"{wl['visits_per_township_max']} 户（核实名额 {wl['capacity_per_township']} 户）。",
        "",
    ]


def _levels_en(metrics: dict, detail: dict, params) -> list[str]:
    lv, wl = metrics.get("levels"), metrics.get("workload")
    if not lv or not wl:
        return []
    p = params.levels
    return [
        "## Levels and workload (test quarters, combined decision)",
        f"Each township and quarter is ranked by the model's risk: the top {_pct(p.red_share)} are 红, the next "
        f"{_pct(p.yellow_share)} 黄, the next {_pct(p.blue_share)} 蓝; a rule hit gets at least its rule's floor; "
        f"at most {p.capacity_per_township} households per township and quarter are 红 (home verification within "
        "the deadline), the other 红 candidates move to 黄 (the monthly visit). Housing, water, insurance, schooling "
        "and 兜底 gaps are tasks for the responsible department.",
        "", "| level | household-quarters | share of test rows | later identified |", "|---|---|---|---|",
        *_level_rows(metrics), "",
        f"Base rate {_pct(detail.get('base_rate'))}. Warned share {_pct(wl['warned_share'])}; the largest 红 list of "
        f"a township in one quarter {wl['visits_per_township_max']} households (capacity "
        f"{wl['capacity_per_township']}).",
        "",
    ]


def bilingual(cards: dict[str, str]) -> str:
    """Both cards in one Markdown text, Chinese first: the registered version's description and
    the evaluation stage's reports/model_card.md."""
    return cards["zh"] + "\n\n---\n\n" + cards["en"]


def write_cards(cards: dict[str, str], out_dir: Path, version: str) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for lang, text in cards.items():
        p = out_dir / f"model_card_v{version}_{lang}.md"
        p.write_text(text, encoding="utf-8")
        paths[lang] = p
    return paths


def log_cards(params, info: dict, cards: dict[str, str]) -> None:
    """Log both cards to the version's training run and make them the version's description."""
    from mlflow import MlflowClient

    from models.registry import setup_mlflow

    setup_mlflow(params)
    client = MlflowClient()
    for lang, text in cards.items():
        client.log_text(info["run_id"], text, f"model_card/model_card_{lang}.md")
    client.update_model_version(info["registered_name"], info["version"],
                                description=bilingual(cards))
    client.set_model_version_tag(info["registered_name"], info["version"], "model_card",
                                 "model_card/model_card_zh.md, model_card/model_card_en.md")
