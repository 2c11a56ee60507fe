"""Drift report: population stability (PSI) of a new quarter against a model's training window.

For every feature of the model and for the score distribution, the new quarter's values are
binned on the training window's deciles (params ``drift.bins``; a column with at most that many
distinct values gets one bin per value, and missing values a bin of their own) and compared with

    PSI = Σ (a_i − e_i) · ln(a_i / e_i)  =  KL(a‖e) + KL(e‖a)

(e = share of the training window in bin i, a = share of the new quarter; empty bins are floored
at ``drift.eps``), computed with ``scipy.special.rel_entr``. Status: below ``psi_warn`` 稳定,
below ``psi_alarm`` 关注, else 告警.

Known shifts: a new year's monitoring line (监测线) moves every feature measured in yuan
(``drift.line_features``: raw per-capita income, the margin above the line, household income),
while the features relative to the line (``income_ratio`` …) stay comparable. When the new
quarter's year has a different line from the training window's years, those yuan features are
also compared after rescaling the training values by new line / line of their year; the drift is
labelled 已知变化 (known) when that line-adjusted PSI stays below ``psi_alarm`` — the line
explains it — and stays an alarm otherwise. Calendar features (the quarter of the year) differ
between quarters by construction and are labelled known too. Likewise the ledger's yearly rhythm
(income is verified once a year): a column that drifts against the whole window but not against
the window's rows of the same quarter of the year (PSI below ``psi_warn``) is a known, seasonal
shift.

Warm-up: look-back features (changes since the previous quarter, event windows, the change of
verified income) are missing or truncated in the first quarters of the data because the history is
short, not because households changed (models.features.lookback_quarters). When the caller passes
which rows are past their warm-up (``reference_defined`` / ``current_defined``, from
models.features.defined_after_warm_up), each column is compared only on those rows; a column with
no such reference row is reported as not comparable (预热期) instead of raising a warm-up alarm.

Why not Evidently / popmon: measured in docs/decisions.md (neither imports or runs with the
locked pandas 3); the formula above is the one those libraries implement.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

STATUS_OK, STATUS_WARN, STATUS_ALARM, STATUS_KNOWN = "稳定", "关注", "告警", "已知变化"
STATUS_EN = {STATUS_OK: "stable", STATUS_WARN: "watch", STATUS_ALARM: "alarm", STATUS_KNOWN: "known"}


def _as_float(x) -> np.ndarray:
    return pd.to_numeric(pd.Series(x), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def bin_shares(reference, current, bins: int = 10) -> tuple[np.ndarray, np.ndarray, int]:
    """Shares of ``reference`` and ``current`` in bins fixed on the reference.

    Continuous columns: inner edges at the reference's quantiles (duplicates merged). Columns with
    at most ``bins`` distinct reference values: one bin per value, plus one for unseen values.
    Missing values: one extra bin. Returns (expected shares, actual shares, number of bins).
    """
    ref, cur = _as_float(reference), _as_float(current)
    if len(ref) == 0 or len(cur) == 0:
        raise ValueError("PSI needs rows in both the reference and the current sample")
    ref_ok, cur_ok = ref[~np.isnan(ref)], cur[~np.isnan(cur)]
    values = np.unique(ref_ok)
    if len(values) == 0:  # nothing but missing values in the reference: every value is unseen
        idx_r, idx_c, n_bins = np.zeros(0, dtype=int), np.zeros(len(cur_ok), dtype=int), 1
    elif len(values) <= bins:
        # one bin per reference value; values unseen in the reference share the last bin
        pos_r = np.searchsorted(values, ref_ok)
        pos_c = np.searchsorted(values, cur_ok)
        hit = (pos_c < len(values)) & (values[np.minimum(pos_c, len(values) - 1)] == cur_ok)
        idx_r, idx_c = pos_r, np.where(hit, pos_c, len(values))
        n_bins = len(values) + 1
    else:
        edges = np.unique(np.quantile(ref_ok, np.linspace(0, 1, bins + 1)[1:-1]))
        idx_r = np.searchsorted(edges, ref_ok, side="right")
        idx_c = np.searchsorted(edges, cur_ok, side="right")
        n_bins = len(edges) + 1
    counts_r = np.bincount(idx_r, minlength=n_bins + 1).astype(float)
    counts_c = np.bincount(idx_c, minlength=n_bins + 1).astype(float)
    counts_r[n_bins] = np.isnan(ref).sum()  # the missing-value bin
    counts_c[n_bins] = np.isnan(cur).sum()
    return counts_r / len(ref), counts_c / len(cur), n_bins + 1


def psi_from_shares(expected: np.ndarray, actual: np.ndarray, eps: float = 1e-4) -> float:
    from scipy.special import rel_entr

    e = np.maximum(np.asarray(expected, float), eps)
    a = np.maximum(np.asarray(actual, float), eps)
    keep = (np.asarray(expected) > 0) | (np.asarray(actual) > 0)  # bins empty on both sides add nothing
    return float(np.sum(rel_entr(a[keep], e[keep]) + rel_entr(e[keep], a[keep])))


def psi(reference, current, bins: int = 10, eps: float = 1e-4) -> float:
    """Population stability index of ``current`` against ``reference`` (see the module doc)."""
    e, a, _ = bin_shares(reference, current, bins)
    return psi_from_shares(e, a, eps)


def status_of(value: float, warn: float, alarm: float) -> str:
    if np.isnan(value):
        return STATUS_OK
    return STATUS_ALARM if value >= alarm else STATUS_WARN if value >= warn else STATUS_OK


@dataclass
class LineChange:
    """The monitoring line of the new quarter's year against the training window's years."""

    year: int
    line: float
    reference_lines: dict[int, float]

    @property
    def changed(self) -> bool:
        return any(abs(v - self.line) > 1e-9 for v in self.reference_lines.values())

    def note_zh(self) -> str:
        ref = "、".join(f"{y}年{v:,.0f}元" for y, v in sorted(self.reference_lines.items()))
        return f"{self.year}年监测线{self.line:,.0f}元（训练期：{ref}）"

    def note_en(self) -> str:
        ref = ", ".join(f"{y}: {v:,.0f}" for y, v in sorted(self.reference_lines.items()))
        return f"monitoring line {self.year}: {self.line:,.0f} yuan (training window {ref})"


def line_change(reference_years: Sequence[int], current_year: int, lines: Mapping[int, float]) -> LineChange:
    from fangpin.config import monitoring_line

    ref = {int(y): monitoring_line(lines, y) for y in sorted(set(reference_years))}
    return LineChange(int(current_year), monitoring_line(lines, current_year), ref)


@dataclass
class DriftReport:
    table: pd.DataFrame  # column, kind, label, psi, psi_line_adjusted, psi_same_season, status, note, …
    reference_quarters: list[str]
    current_quarter: str
    line: LineChange | None
    thresholds: dict = field(default_factory=dict)

    @property
    def alarms(self) -> pd.DataFrame:
        return self.table[self.table["status"] == STATUS_ALARM]

    @property
    def known(self) -> pd.DataFrame:
        return self.table[self.table["status"] == STATUS_KNOWN]

    def counts(self) -> dict[str, int]:
        vc = self.table["status"].value_counts()
        return {STATUS_EN[s]: int(vc.get(s, 0)) for s in (STATUS_OK, STATUS_WARN, STATUS_ALARM, STATUS_KNOWN)}

    def to_dict(self) -> dict:
        rows = self.table.replace({np.nan: None}).to_dict("records")
        return {
            "current_quarter": self.current_quarter,
            "reference_quarters": self.reference_quarters,
            "monitoring_line": None if self.line is None else {
                "year": self.line.year, "line": self.line.line,
                "reference": {str(k): v for k, v in self.line.reference_lines.items()},
                "changed": self.line.changed},
            "thresholds": self.thresholds,
            "counts": self.counts(),
            "columns": rows,
        }

    def write(self, out_dir: Path, stem: str | None = None) -> dict[str, Path]:
        """<stem>.json, <stem>.md and <stem>.png (PSI by column with the thresholds)."""
        from pipelines.common import write_report_bundle

        return write_report_bundle(self, out_dir, stem or f"drift_{self.current_quarter}")

    def markdown(self, figure: str | None = None) -> str:
        t = self.thresholds
        c = self.counts()
        lines = [
            f"# 数据漂移报告 Drift report — {self.current_quarter}",
            "",
            f"新季度 {self.current_quarter} 对比训练期 {', '.join(self.reference_quarters)}（PSI；"
            f"≥{t.get('psi_warn')} 关注，≥{t.get('psi_alarm')} 告警）。",
            f"New quarter against the training window; PSI ≥ {t.get('psi_warn')} watch, ≥ {t.get('psi_alarm')} alarm.",
            "",
            f"稳定 stable {c['stable']} · 关注 watch {c['watch']} · 告警 alarm {c['alarm']} · "
            f"已知变化 known {c['known']}",
            "",
        ]
        if self.line is not None and self.line.changed:
            lines += [f"**已知变化 Known shift:** {self.line.note_zh()} / {self.line.note_en()}", ""]
        if figure:
            lines += [f"![PSI]({figure})", ""]
        lines += ["| 列 column | 说明 | PSI | 按监测线调整后 line-adjusted | 同季度 same quarter | 状态 status | 备注 note |",
                  "|---|---|---|---|---|---|---|"]
        for r in self.table.itertuples():
            adj = "—" if pd.isna(r.psi_line_adjusted) else f"{r.psi_line_adjusted:.3f}"
            sea = "—" if pd.isna(r.psi_same_season) else f"{r.psi_same_season:.3f}"
            val = "—" if pd.isna(r.psi) else f"{r.psi:.3f}"
            lines.append(f"| `{r.column}` | {r.label} | {val} | {adj} | {sea} | {r.status} {r.status_en} | {r.note} |")
        return "\n".join(lines) + "\n"

    def plot(self, path: Path, top: int = 25) -> None:
        from fangpin.plotting import setup_matplotlib

        setup_matplotlib()
        import matplotlib.pyplot as plt

        t = self.table.dropna(subset=["psi"]).sort_values("psi", ascending=False).head(top).iloc[::-1]
        colors = {STATUS_OK: "#4c9f70", STATUS_WARN: "#e0a526", STATUS_ALARM: "#c0392b", STATUS_KNOWN: "#7f8c8d"}
        fig, ax = plt.subplots(figsize=(8, 0.28 * len(t) + 1.6))
        ax.barh([f"{lab}" if lab else c for c, lab in zip(t["column"], t["label"], strict=True)], t["psi"],
                color=[colors[s] for s in t["status"]])
        ax.axvline(self.thresholds.get("psi_warn", 0.1), color="#e0a526", ls="--", lw=1, label="关注 watch")
        ax.axvline(self.thresholds.get("psi_alarm", 0.25), color="#c0392b", ls="--", lw=1, label="告警 alarm")
        ax.set_xlabel("PSI（新季度对比训练期）")
        ax.set_title(f"数据漂移 {self.current_quarter}（灰色：已知变化，如新年度监测线）", fontsize=10)
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)


def drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: Sequence[str],
    *,
    params,
    scores: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    labels: Mapping[str, str] | None = None,
    lines: Mapping[int, float] | None = None,
    reference_quarters: Sequence[str] = (),
    current_quarter: str = "",
    reference_defined: Mapping[str, np.ndarray] | None = None,
    current_defined: Mapping[str, np.ndarray] | None = None,
) -> DriftReport:
    """PSI per column of ``columns`` (``reference`` = training window rows, ``current`` = the new
    quarter's rows) and per score in ``scores`` (name → (reference scores, current scores)).

    ``params`` is the whole :class:`fangpin.config.Params` (its ``drift`` section and ``lines``).
    ``lines`` (year → yuan) overrides params.lines; reference rows need a ``quarter`` column when
    the line check is wanted. ``reference_defined`` / ``current_defined`` (column → boolean mask over
    the rows): compare each column only on the rows past its warm-up (see the module doc).
    """
    from fangpin.quarters import parse

    dp = params.drift
    all_lines = {**params.lines, **(lines or {})}
    labels = labels or {}
    lc = None
    ref_year = None
    if "quarter" in reference.columns and current_quarter:
        ref_year = reference["quarter"].astype(str).str[:4].astype(int).to_numpy()
        lc = line_change(sorted(set(ref_year.tolist())), parse(current_quarter)[0], all_lines)
    season = None
    if "quarter" in reference.columns and current_quarter:
        same = reference["quarter"].astype(str).str[-1].to_numpy() == current_quarter[-1]
        season = reference[same] if same.any() else None
    from models.features import FEATURES

    calendar = {f.name for f in FEATURES if f.group == "calendar"}  # quarter of the year: one value a quarter
    rows = []
    n_ref_all = len(reference)
    for col in columns:
        rm = np.ones(n_ref_all, bool) if reference_defined is None or col not in reference_defined else \
            np.asarray(reference_defined[col], bool)
        cm = np.ones(len(current), bool) if current_defined is None or col not in current_defined else \
            np.asarray(current_defined[col], bool)
        ref_col, cur_col = reference[col].to_numpy()[rm], current[col].to_numpy()[cm]
        base = {"column": col, "kind": "feature", "label": labels.get(col, ""), "n_ref": int(rm.sum()),
                "n_cur": int(cm.sum()), "warm_up_ref": int((~rm).sum())}
        if len(ref_col) == 0 or len(cur_col) == 0:
            rows.append({**base, "psi": np.nan, "psi_line_adjusted": np.nan, "psi_same_season": np.nan,
                         "status": STATUS_OK, "bins": 0,
                         "note": "预热期：训练期内此特征尚未定义（回看窗口早于台账起始），不比较 / warm-up: not "
                                 "defined in the training window (its look-back starts before the data), not compared"})
            continue
        e, a, nb = bin_shares(ref_col, cur_col, dp.bins)
        value = psi_from_shares(e, a, dp.eps)
        status, note, adj, seasonal = status_of(value, dp.psi_warn, dp.psi_alarm), "", np.nan, np.nan
        if lc is not None and lc.changed and col in dp.line_features:
            scale = np.array([lc.line / lc.reference_lines[y] for y in ref_year[rm]])
            adj = psi(_as_float(ref_col) * scale, cur_col, dp.bins, dp.eps)
            if status != STATUS_OK:
                if adj < dp.psi_alarm:
                    status, note = STATUS_KNOWN, f"新年度监测线 {lc.note_zh()}"
                else:
                    note = f"按监测线调整后仍漂移（{adj:.3f}）：超出监测线变化可解释的范围"
        same_r = None if season is None else (same & rm)
        if (status in (STATUS_WARN, STATUS_ALARM) and same_r is not None and same_r.any()
                and same_r.sum() < rm.sum()):
            # the ledger has a yearly rhythm (income verified once a year): compare with the same quarter
            seasonal = psi(reference[col].to_numpy()[same_r], cur_col, dp.bins, dp.eps)
            if seasonal < dp.psi_warn:
                status, note = STATUS_KNOWN, f"季节性：与训练期同一季度相比 PSI {seasonal:.3f}"
        if status != STATUS_OK and col in calendar:
            status, note = STATUS_KNOWN, "日历特征：每个季度取值不同，不是人群变化 / calendar feature"
        if (~rm).any() and not note:
            note = f"已排除预热期 {int((~rm).sum()):,} 行 / {int((~rm).sum()):,} warm-up rows left out"
        rows.append({**base, "psi": value, "psi_line_adjusted": adj, "psi_same_season": seasonal, "status": status,
                     "note": note, "bins": nb})
    for name, (ref_s, cur_s) in (scores or {}).items():
        value = psi(ref_s, cur_s, dp.bins, dp.eps)
        rows.append({"column": name, "kind": "score", "label": "风险概率分布", "psi": value,
                     "psi_line_adjusted": np.nan, "psi_same_season": np.nan, "status": status_of(value, dp.psi_warn, dp.psi_alarm),
                     "note": "", "n_ref": int(len(ref_s)), "n_cur": int(len(cur_s)), "warm_up_ref": 0, "bins": dp.bins})
    table = pd.DataFrame(rows)
    table["status_en"] = table["status"].map(STATUS_EN)
    table = table.sort_values(["kind", "psi"], ascending=[False, False], kind="stable").reset_index(drop=True)
    return DriftReport(table, list(reference_quarters), current_quarter, lc,
                       {"psi_warn": dp.psi_warn, "psi_alarm": dp.psi_alarm, "bins": dp.bins})
