"""Reasons a cadre can read: exact TreeSHAP contributions → factors → at most four Chinese sentences.

One pure function of (feature spec, calibrator, feature values, contributions) → reasons, shared by
the model's one scoring method (models.pyfunc.RiskModel.reasons_of) for batch scoring, the API and
the pyfunc alike. Nothing here reads files or the registry.

1. **Contributions.** ``booster.predict(X, pred_contrib=True)`` (``RiskModel.contributions``):
   exact TreeSHAP in log-odds, one column per feature and the base value in the LAST column, so
   ``base + Σ contributions = raw score`` (checked on every explained row in the tests). All
   features are numeric, so LightGBM's own TreeSHAP is exact (shap's tree engine is not used: it
   mis-explains LightGBM categorical splits).
2. **Factors.** Features are summed into the explanation groups the model's :class:`FeatureSpec`
   carries (``spec.groups``, declared once in models.features.FEATURES: all features about one
   thing — e.g. the 医保 hospital / serious-illness events of the last 1, 2, 4 quarters and their
   amounts — form one factor). The factor key is the group name; models/measures.yaml knows every
   group (directly or as an alias).
3. **Ranking.** Factors are ranked by |summed log-odds|; the top ``max_reasons`` (≤ 4) with
   |log-odds| ≥ :data:`MIN_LOGODDS` become reasons. A factor that lowers the risk appears only when
   it is among those top factors, and its sentence is labelled （降低风险）.
4. **Figures that add up** (:func:`figures`). ``logodds`` is the factor's summed contribution
   (log-odds of the booster's raw score). ``prob_pp`` is the factor's share, in percentage
   points, of the household's probability minus its county's base rate: the walk from the
   model's reference household (TreeSHAP base value ``bv``, probability ``g(bv)``) to the
   household's raw score is shared over the factors in proportion to their log-odds, along the
   calibration curve's secant: ``prob_pp_j = 100 × φ_j × (g(raw) − g(bv)) / (raw − bv)``. The
   calibrator is strictly increasing (centred isotonic, models.train.Calibrator), so the secant
   is positive: a factor's figure has its log-odds' sign and factors with different log-odds get
   different figures. One more line, ``other_pp`` (其他因素), holds the factors not shown and the
   difference between the reference household and the county (``g(bv) − base rate``), so
   ``Σ prob_pp + other_pp = 100 × (probability − county base rate)``. Figures are rounded to
   0.01 points so that they still add up exactly; two figures that round alike although their
   log-odds differ are moved apart by 0.01 (the larger log-odds keeps the larger figure).
   The county base rate and the period it was measured on come from the model
   (``RiskModel.reference``, computed on the training data: :func:`reference_figures`), so batch
   scoring and the API give the same figures.
5. **Sentences.** Each sentence names the household's own values (from the feature row the model
   scored: counts, yuan, shares), e.g. ``家庭成员1人患大病，今年合规自付医疗支出23,400元，占家庭年纯收入61%``.
   A risk-raising sentence then gives the comparison that makes it a risk, after ``；全县``: the
   same figure for the county's in-scope households of the household's type (脱贫户 / 一般农户) in
   the reference period, e.g. ``人均纯收入15,459元，高出监测线8,159元（为监测线的212%）；全县脱贫户
   人均纯收入中位数为监测线的265%`` (:data:`COMPARISONS`). Every number is the household's own or
   the county's. Rule hits are not reasons: they come from models.rules with the threshold that
   fired (规则触发).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from fangpin.contract import LABOR_CLASSES
from models.features import EVENT_SLUG, RISK_SLUG, FeatureSpec

MIN_LOGODDS = 0.01  # factors with a smaller |summed contribution| are not presented as reasons
DOWN_LABEL = "（降低风险）"
_SLUG_EVENT = {v: k for k, v in EVENT_SLUG.items()}
_EV_COUNT = re.compile(r"^ev_(?P<slug>[a-z_]+)_n_(?P<w>\d+)q$")
_EV_AMOUNT = re.compile(r"^ev_(?P<kind>[a-z]+)_amount_(?P<w>\d+)q$")
_AMOUNT_KIND = {"medical": "医疗类", "loss": "损失类", "all": "部门推送"}


# ----------------------------------------------------------------------------------------------
# grouping


@dataclass(frozen=True)
class Factors:
    """The factor layout of one spec: factor keys (spec order of first appearance) and the
    feature × factor 0/1 matrix that sums contributions."""

    keys: tuple[str, ...]
    matrix: np.ndarray  # (n_features, n_factors)
    index: Mapping[str, int]  # feature name → column
    members: Mapping[str, tuple[str, ...]]  # factor key → its features, spec order


@lru_cache(maxsize=8)
def _factors(names: tuple[str, ...], groups: tuple[tuple[str, str], ...]) -> Factors:
    g = dict(groups)
    missing = [n for n in names if n not in g]
    if missing:
        raise ValueError(f"feature spec has no explanation group for {missing}")
    keys = tuple(dict.fromkeys(g[n] for n in names))
    col = {k: j for j, k in enumerate(keys)}
    m = np.zeros((len(names), len(keys)))
    for i, n in enumerate(names):
        m[i, col[g[n]]] = 1.0
    members = {k: tuple(n for n in names if g[n] == k) for k in keys}
    return Factors(keys, m, {n: i for i, n in enumerate(names)}, members)


def factors_of(spec: FeatureSpec) -> Factors:
    return _factors(tuple(spec.names), tuple(sorted(spec.groups.items())))


def factor_contributions(spec: FeatureSpec, contrib: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(per-factor log-odds (n, factors), base value (n,)) from ``pred_contrib`` output."""
    contrib = np.atleast_2d(np.asarray(contrib, dtype=np.float64))
    if contrib.shape[1] != len(spec.names) + 1:
        raise ValueError(f"contributions have {contrib.shape[1]} columns; the spec has {len(spec.names)} "
                         f"features + 1 base value")
    return contrib[:, :-1] @ factors_of(spec).matrix, contrib[:, -1]


# ----------------------------------------------------------------------------------------------
# formatting


def _isnan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def yuan(x: float) -> str:
    return f"{x:,.0f}元"


def pct(x: float) -> str:
    return f"{x * 100:.0f}%"


def count(x: float) -> str:
    return f"{int(round(x))}"


class _Row:
    """Feature values (and contributions) of one household by name; missing → NaN."""

    __slots__ = ("_x", "_c", "_idx")

    def __init__(self, x: np.ndarray, c: np.ndarray, idx: Mapping[str, int]):
        self._x, self._c, self._idx = x, c, idx

    def __getitem__(self, name: str) -> float:
        i = self._idx.get(name)
        return float("nan") if i is None else float(self._x[i])

    def contrib(self, name: str) -> float:
        i = self._idx.get(name)
        return 0.0 if i is None else float(self._c[i])

    def names(self):
        return self._idx.keys()


def _known(v: float) -> bool:
    return not _isnan(v)


# ----------------------------------------------------------------------------------------------
# one sentence per factor (the household's own values)


def _composition(r: _Row, shown) -> str:
    s = f"家庭{count(r['n_members'])}人，其中16岁以下{count(r['n_children'])}人、60岁及以上{count(r['n_elderly'])}人"
    if _known(r["head_age"]):
        s += f"，户主{count(r['head_age'])}岁"
    return s + _delta(r, "d_n_members", "家庭人口", "人")


def _labour(r: _Row, shown) -> str:
    return (f"家庭有劳动力{count(r['n_labor_full'])}人、弱劳动力{count(r['n_labor_weak'])}人、"
            f"无劳动力{count(r['n_labor_none'])}人" + _delta(r, "d_n_labor_full", "有劳动力", "人"))


def _employment(r: _Row, shown) -> str:
    s = f"外出务工{count(r['n_migrant_workers'])}人，全家务工合计{count(r['work_months_total'])}个月"
    if r["n_idle_labor"] > 0:
        s += f"，有劳动力未务工{count(r['n_idle_labor'])}人"
    return s + _delta(r, "d_n_migrant_workers", "外出务工", "人") + _delta(r, "d_work_months_total", "务工",
                                                                        "个月")


def _health(r: _Row, shown) -> str:
    parts = [f"{count(r[k])}人{lab}" for k, lab in (("n_serious_illness", "患大病"), ("n_chronic", "患长期慢性病"),
                                                     ("n_disabled", "残疾")) if r[k] > 0]
    s = "家庭成员" + "、".join(parts) if parts else "家庭成员患大病0人、长期慢性病0人、残疾0人"
    if r["n_uninsured"] > 0:
        s += f"，{count(r['n_uninsured'])}人未参加基本医疗保险"
    return s + _delta(r, "d_n_serious_illness", "患大病", "人")


def _income(r: _Row, shown) -> str:
    ipc, m, ratio = r["income_per_capita"], r["income_margin"], r["income_ratio"]
    if not _known(ipc):
        return "人均纯收入未填报"
    s = f"人均纯收入{yuan(ipc)}"
    if _known(m) and _known(ratio):
        s += f"，{'低于' if m < 0 else '高出'}监测线{yuan(abs(m))}（为监测线的{pct(ratio)}）"
    return s


def _income_change(r: _Row, shown) -> str:
    ch, since = r["income_change"], r["quarters_since_income_change"]
    if not _known(ch):
        ipc = r["income_per_capita"]
        return f"人均纯收入{yuan(ipc)}，尚无此前核实的收入可比较" if _known(ipc) else "尚无此前核实的收入可比较"
    s = f"人均纯收入较上次核实{'下降' if ch < 0 else '上升'}{pct(abs(ch))}"
    if _known(since):
        s += "（本季度变化）" if since == 0 else f"（{count(since)}个季度前变化）"
    return s


def _income_mix(r: _Row, shown) -> str:
    parts = [f"{lab}占{pct(r[k])}" for k, lab in (("wage_share", "工资性收入"), ("business_share", "生产经营性收入"),
                                                  ("property_share", "财产性收入"), ("transfer_share", "转移性收入"))
             if _known(r[k]) and abs(r[k]) >= 0.005]
    s = "收入构成：" + "、".join(parts) if parts else "收入构成未填报"
    if _known(r["business_expense_ratio"]) and r["business_expense_ratio"] > 0 and _known(r["business_share"]) \
            and r["business_share"] > 0:
        s += f"；生产经营支出为经营收入的{pct(r['business_expense_ratio'])}"
    return s


def _rigid_spending(r: _Row, shown) -> str:
    oop, inc = r["medical_oop"], r["household_net_income"]
    prefix = ""
    if r["n_serious_illness"] > 0 and "health" not in shown:
        prefix = f"家庭成员{count(r['n_serious_illness'])}人患大病，"
    if not _known(oop):
        return prefix + "合规自付医疗支出未填报"
    s = prefix + f"今年合规自付医疗支出{yuan(oop)}"
    if oop > 0:
        if _known(inc) and inc >= 1000:
            s += f"，占家庭年纯收入{pct(r['rigid_share'])}"
        elif _known(inc):
            s += f"，家庭年纯收入仅{yuan(inc)}"
    return s + _delta(r, "d_medical_oop", "合规自付医疗支出", "", money=True)


def _schooling(r: _Row, shown) -> str:
    s = f"在校生：义务教育{count(r['n_compulsory_school'])}人、高中及以上{count(r['n_costly_school'])}人"
    if r["n_preschool"] > 0:
        s += f"、学前{count(r['n_preschool'])}人"
    if r["n_out_of_school_child"] > 0:
        s += f"；义务教育适龄未在校{count(r['n_out_of_school_child'])}人"
    return s


def _flag_text(v: float, yes: str, no: str, unknown: str) -> str:
    return unknown if not _known(v) else (yes if v == 1 else no)


def _housing_water(r: _Row, shown) -> str:
    return (_flag_text(r["unsafe_housing"], "住房为危房", "住房安全", "住房安全情况未填报") + "，"
            + _flag_text(r["no_safe_water"], "未解决安全饮用水", "饮水安全", "饮水情况未填报"))


def _assets(r: _Row, shown) -> str:
    parts = []
    if _known(r["farmland_mu"]):
        parts.append(f"耕地{r['farmland_mu']:.1f}亩")
    if _known(r["road_distance_km"]):
        parts.append(f"距村主干路{r['road_distance_km']:.1f}公里")
    return "，".join(parts) if parts else "耕地、道路情况未填报"


def _protection(r: _Row, shown) -> str:
    cover = [lab for k, lab in (("dibao", "低保"), ("tekun", "特困供养")) if r[k] == 1]
    s = ("享受" + "、".join(cover)) if cover else "未享受低保或特困供养"
    return s + f"，已享受帮扶措施{count(r['n_support_measures'])}项"


def _history(r: _Row, shown) -> str:
    parts = [_flag_text(r["is_tuopin"], "脱贫户", "一般农户", "户类型未填报")]
    if r["eliminated_before"] == 1:
        s = "曾为监测对象"
        if _known(r["quarters_since_elimination"]):
            s += f"，风险消除已{count(r['quarters_since_elimination'])}个季度"
        if r["elimination_natural"] == 1:
            s += "（自然消除）"
        parts.append(s)
    else:
        parts.append("未曾纳入监测")
    risks = [k[len("risk_"):] for k in r.names() if k.startswith("risk_") and r[k] == 1]
    names = {v: k for k, v in RISK_SLUG.items()}
    if risks:
        parts.append("曾记录风险：" + "、".join(names.get(x, x) for x in risks))
    return "，".join(parts)


@lru_cache(maxsize=64)
def _event_windows(group_features: tuple[str, ...]) -> tuple[dict, dict, dict]:
    """The event features of a group by window (1, 2, 4 quarters): counts ("n") and amounts ("a"),
    with each count feature's event slug and each amount feature's kind (parsed once per spec)."""
    by_w: dict[int, dict[str, list[str]]] = {}
    slug, kind = {}, {}
    for n in group_features:
        m = _EV_COUNT.match(n) or _EV_AMOUNT.match(n)
        if m:
            is_count = "slug" in m.groupdict()
            by_w.setdefault(int(m["w"]), {"n": [], "a": []})["n" if is_count else "a"].append(n)
            if is_count:
                slug[n] = m["slug"]
            else:
                kind[n] = m["kind"]
    return by_w, slug, kind


def _events(kinds: tuple[str, ...], label: str) -> Callable[[_Row, set], str]:
    """Department events of a group, in the window (1, 2 or 4 quarters) whose features carry the
    largest share of the group's contribution."""

    def build(r: _Row, shown, group_features: Sequence[str] = ()) -> str:
        by_w, slug, kind_of = _event_windows(tuple(group_features))
        if not by_w:
            return f"{label}部门推送情况不详"
        w = max(sorted(by_w), key=lambda k: abs(sum(r.contrib(n) for v in by_w[k].values() for n in v)))
        when = "本季度" if w == 1 else f"近{w}个季度"
        parts = [f"{_SLUG_EVENT[slug[n]]}{count(r[n])}次" for n in by_w[w]["n"] if r[n] > 0]
        if not parts:
            return f"{when}{label}部门推送0次"
        s = f"{when}部门推送{'、'.join(parts)}"
        amounts = [(n, kind_of[n]) for n in by_w[w]["a"] if r[n] > 0]
        for n, kind in amounts:
            if kind in kinds:
                s += f"，{_AMOUNT_KIND[kind]}金额合计{yuan(r[n])}"
        return s

    build.needs_features = True  # type: ignore[attr-defined]
    return build


def _context(r: _Row, shown) -> str:
    v, t, ident = r["village_disaster_share"], r["township_disaster_share"], r["township_ident_rate_4q"]
    parts = []
    if _known(v):
        parts.append(f"本村本季度受灾户占{pct(v)}")
    if _known(t):
        parts.append(f"本乡镇本季度受灾户占{pct(t)}")
    if _known(ident):
        parts.append(f"本乡镇近4个季度新识别监测户占{ident * 100:.1f}%")
    return "，".join(parts) if parts else "本村、本乡镇受灾和新识别情况不详"


def _calendar(r: _Row, shown) -> str:
    q = r["quarter_of_year"]
    if not _known(q):
        return "季度不详"
    return f"本季度为第{count(q)}季度" + ("（年度收入核实季度）" if q == 4 else "")


def _delta(r: _Row, name: str, what: str, unit: str, money: bool = False) -> str:
    """'，较上季度{what}增加/减少N{unit}' when the change since the previous snapshot is known and not 0."""
    d = r[name]
    if not _known(d) or d == 0:
        return ""
    amount = yuan(abs(d)) if money else f"{count(abs(d))}{unit}"
    return f"，较上季度{what}{'增加' if d > 0 else '减少'}{amount}"


SENTENCES: dict[str, Callable] = {
    "composition": _composition,
    "labour": _labour,
    "employment": _employment,
    "health": _health,
    "income": _income,
    "income_change": _income_change,
    "income_mix": _income_mix,
    "rigid_spending": _rigid_spending,
    "schooling": _schooling,
    "housing_water": _housing_water,
    "assets": _assets,
    "protection": _protection,
    "history": _history,
    "events_medical": _events(("medical",), "医疗类（住院、大额医疗自付、重大疾病）"),
    "events_disaster": _events(("loss",), "房屋受损、自然灾害受灾"),
    "events_other": _events(("all",), "其他类"),
    "context": _context,
    "calendar": _calendar,
}


def _generic(r: _Row, group_features: Sequence[str], labels: Mapping[str, str]) -> str:
    """A factor without a sentence template: its two most influential features, label and value."""
    top = sorted(group_features, key=lambda n: -abs(r.contrib(n)))[:2]
    out = []
    for n in top:
        v = r[n]
        out.append(f"{labels.get(n, n)}：{'未填报' if not _known(v) else f'{v:,.2f}'.rstrip('0').rstrip('.')}")
    return "；".join(out)


def sentence(spec: FeatureSpec, factor: str, r: _Row, shown: set[str], fx: Factors | None = None) -> str:
    fn = SENTENCES.get(factor)
    feats = (fx or factors_of(spec)).members.get(factor, ())
    if fn is None:
        return _generic(r, feats, spec.labels)
    if getattr(fn, "needs_features", False):
        return fn(r, shown, feats)
    return fn(r, shown)


# ----------------------------------------------------------------------------------------------
# the county's reference figures (computed once on the training data, carried in the model)

# statistic → (feature, kind); kinds: mean, median, share (> 0), median_pos (median among > 0)
REFERENCE_STATS: dict[str, tuple[str, str]] = {
    "n_members_mean": ("n_members", "mean"), "n_elderly_mean": ("n_elderly", "mean"),
    "n_labor_full_mean": ("n_labor_full", "mean"), "work_months_mean": ("work_months_total", "mean"),
    "serious_share": ("n_serious_illness", "share"), "chronic_share": ("n_chronic", "share"),
    "disabled_share": ("n_disabled", "share"), "income_ratio_median": ("income_ratio", "median"),
    "income_change_median": ("income_change", "median"), "wage_share_median": ("wage_share", "median"),
    "transfer_share_median": ("transfer_share", "median"), "oop_share": ("medical_oop", "share"),
    "rigid_share_median_pos": ("rigid_share", "median_pos"), "compulsory_mean": ("n_compulsory_school", "mean"),
    "costly_mean": ("n_costly_school", "mean"), "unsafe_housing_share": ("unsafe_housing", "share"),
    "no_water_share": ("no_safe_water", "share"), "farmland_median": ("farmland_mu", "median"),
    "road_median": ("road_distance_km", "median"), "dibao_share": ("dibao", "share"),
    "tekun_share": ("tekun", "share"), "support_mean": ("n_support_measures", "mean"),
    "eliminated_share": ("eliminated_before", "share"), "ident_rate_mean": ("township_ident_rate_4q", "mean"),
    "village_disaster_mean": ("village_disaster_share", "mean"),
}
EVENT_GROUPS = ("events_medical", "events_disaster", "events_other")
TYPES = {1.0: "脱贫户", 0.0: "一般农户"}  # is_tuopin → household type
ALL = "*"


def _stat(v: np.ndarray, kind: str) -> float | None:
    v = v[~np.isnan(v)]
    if kind == "share":
        return float((v > 0).mean()) if len(v) else None
    if kind == "median_pos":
        v = v[v > 0]
    if not len(v):
        return None
    return float(np.median(v)) if kind.startswith("median") else float(v.mean())


def _stats_of(F: Mapping[str, np.ndarray], rows: np.ndarray, spec: FeatureSpec) -> dict:
    out = {k: _stat(F[f][rows], kind) for k, (f, kind) in REFERENCE_STATS.items() if f in F}
    fx = factors_of(spec)
    for g in EVENT_GROUPS:
        cols = [n for n in fx.members.get(g, ()) if (m := _EV_COUNT.match(n)) and m["w"] == "4"]
        if cols:
            anyev = np.zeros(int(rows.sum()), dtype=bool)
            for c in cols:
                anyev |= np.nan_to_num(F[c][rows]) > 0
            out[f"{g}_share"] = float(anyev.mean()) if len(anyev) else None
    return {k: (None if v is None else round(v, 6)) for k, v in out.items()}


def reference_figures(feats, label: np.ndarray, labelled: np.ndarray, rows: np.ndarray, spec: FeatureSpec,
                      period: str) -> dict:
    """The county figures explanations compare with, from the training data (``feats``: a feature
    frame or table with county, in_scope, quarter_of_year; ``rows``: the reference rows, e.g. the
    in-scope rows of the quarters before the test quarters; ``label``/``labelled``: their labels).

    ``base_rate``: share of the labelled reference rows later identified, per county and overall
    (``*``); ``rate_by_quarter``: the same per quarter of the year; ``types``: per county and
    household type (脱贫户 / 一般农户, and ``*`` for all) the :data:`REFERENCE_STATS` and the share
    with a department event of each kind in the last 4 quarters. ``period`` labels them."""
    from models.features import _col

    F = {c: np.asarray(_col(feats, c), dtype=np.float64) for c in
         {f for f, _ in REFERENCE_STATS.values()} | set(spec.names) | {"quarter_of_year"}
         if c in (feats.columns if hasattr(feats, "columns") else feats)}
    county = np.asarray(_col(feats, "county"), dtype=object)
    rows = np.asarray(rows, dtype=bool)
    lab = rows & np.asarray(labelled, dtype=bool)
    y = np.nan_to_num(np.asarray(label, dtype=np.float64))
    tp = F.get("is_tuopin", np.full(len(rows), np.nan))
    qoy = F.get("quarter_of_year", np.full(len(rows), np.nan))
    out: dict = {"period": period, "base_rate": {}, "rate_by_quarter": {}, "types": {}, "n": {}}
    for c in [ALL, *sorted({x for x in county[rows] if isinstance(x, str)})]:
        here = rows if c == ALL else rows & (county == c)
        lab_c = lab & here
        if not lab_c.any():
            continue
        out["base_rate"][c] = round(float(y[lab_c].mean()), 6)
        out["n"][c] = int(lab_c.sum())
        out["rate_by_quarter"][c] = {str(int(q)): round(float(y[lab_c & (qoy == q)].mean()), 6)
                                     for q in (1, 2, 3, 4) if (lab_c & (qoy == q)).any()}
        types = {ALL: _stats_of(F, here, spec)}
        for code, name in TYPES.items():
            m = here & (tp == code)
            if m.sum() >= 30:  # too few households of a type: its comparison falls back to all types
                types[name] = _stats_of(F, m, spec)
        out["types"][c] = types
    return out


def _p1(x: float) -> str:
    return f"{x * 100:.1f}%"


def _comparison(factor: str, r: _Row, st: Mapping, rate_q: Mapping, base: float | None, who: str) -> str:
    """The county's figure for the household's type, phrased for ``factor`` ('' when unknown)."""

    def have(*keys) -> bool:
        return all(st.get(k) is not None for k in keys)

    if factor == "composition" and have("n_members_mean", "n_elderly_mean"):
        return f"{who}户均{st['n_members_mean']:.1f}人，其中60岁及以上{st['n_elderly_mean']:.1f}人"
    if factor == "labour" and have("n_labor_full_mean"):
        return f"{who}户均有劳动力{st['n_labor_full_mean']:.1f}人"
    if factor == "employment" and have("work_months_mean"):
        return f"{who}户均务工{st['work_months_mean']:.1f}个月"
    if factor == "health" and have("serious_share", "chronic_share", "disabled_share"):
        return (f"{who}中有成员患大病的占{_p1(st['serious_share'])}、患长期慢性病的占{_p1(st['chronic_share'])}、"
                f"有残疾成员的占{_p1(st['disabled_share'])}")
    if factor == "income" and have("income_ratio_median"):
        return f"{who}人均纯收入中位数为监测线的{pct(st['income_ratio_median'])}"
    if factor == "income_change" and have("income_change_median"):
        m = st["income_change_median"]
        return f"{who}人均纯收入较上次核实{'下降' if m < 0 else '上升'}的中位数为{pct(abs(m))}"
    if factor == "income_mix" and have("wage_share_median", "transfer_share_median"):
        return (f"{who}工资性收入占比中位数{pct(st['wage_share_median'])}、转移性收入占比中位数"
                f"{pct(st['transfer_share_median'])}")
    if factor == "rigid_spending" and have("oop_share", "rigid_share_median_pos"):
        return (f"{who}有合规自付医疗支出的占{_p1(st['oop_share'])}，其自付占家庭年纯收入的中位数为"
                f"{pct(st['rigid_share_median_pos'])}")
    if factor == "schooling" and have("compulsory_mean", "costly_mean"):
        return f"{who}户均义务教育在校生{st['compulsory_mean']:.1f}人、高中及以上{st['costly_mean']:.1f}人"
    if factor == "housing_water" and have("unsafe_housing_share", "no_water_share"):
        return f"{who}危房户占{_p1(st['unsafe_housing_share'])}、未解决安全饮用水的占{_p1(st['no_water_share'])}"
    if factor == "assets" and have("farmland_median", "road_median"):
        return f"{who}耕地中位数{st['farmland_median']:.1f}亩、距村主干路中位数{st['road_median']:.1f}公里"
    if factor == "protection" and have("dibao_share", "tekun_share", "support_mean"):
        return (f"{who}享受低保的占{_p1(st['dibao_share'])}、特困供养的占{_p1(st['tekun_share'])}，"
                f"户均已享受帮扶措施{st['support_mean']:.1f}项")
    if factor == "history" and have("eliminated_share"):
        return f"{who}曾纳入监测的占{_p1(st['eliminated_share'])}"
    if factor in EVENT_GROUPS and have(f"{factor}_share"):
        return f"{who}近4个季度有此类部门推送的占{_p1(st[f'{factor}_share'])}"
    if factor == "context" and have("ident_rate_mean", "village_disaster_mean"):
        return (f"{who}平均：乡镇近4个季度新识别监测户占{st['ident_rate_mean'] * 100:.1f}%、村本季度受灾户占"
                f"{_p1(st['village_disaster_mean'])}")
    q = r["quarter_of_year"]
    if factor == "calendar" and _known(q) and str(int(q)) in rate_q and base is not None:
        return (f"{who}第{count(q)}季度农户半年内新识别{rate_q[str(int(q))] * 100:.2f}%，各季度平均"
                f"{base * 100:.2f}%")
    return ""


@dataclass(frozen=True)
class _Place:
    """What a row's comparisons and figures read from the model's reference: the county's base
    rate, its rates by quarter of the year, its typical values by household type."""

    base_rate: float | None
    rate_q: Mapping
    types: Mapping
    where: str  # 全县 (the household's county) or 各县 (all training counties: county unknown)


def _place(reference: Mapping | None, county) -> _Place:
    ref = reference or {}
    rates = ref.get("base_rate", {})
    key = county if isinstance(county, str) and county in rates else ALL
    return _Place(rates.get(key), ref.get("rate_by_quarter", {}).get(key, {}), ref.get("types", {}).get(key, {}),
                  "全县" if key != ALL else "各县")


def comparison(factor: str, r: _Row, place: _Place) -> str:
    """'；全县<type>…' for a risk-raising reason (empty when the model carries no reference)."""
    tp = r["is_tuopin"]
    tname = TYPES.get(tp) if _known(tp) else None
    st = place.types.get(tname) if tname in place.types else place.types.get(ALL)
    if not st:
        return ""
    who = place.where + (tname if tname in place.types else "农户")
    c = _comparison(factor, r, st, place.rate_q, place.base_rate, who)
    return f"；{c}" if c else ""


# ----------------------------------------------------------------------------------------------
# figures that add up


def secant_slope(calibrator, raw: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Probability per unit of log-odds along the calibration curve between the reference
    household (``base``) and each row's raw score; the local slope where they coincide."""
    raw, base = np.asarray(raw, dtype=np.float64), np.asarray(base, dtype=np.float64)
    d = raw - base
    far = np.abs(d) > 1e-6
    out = np.empty(len(raw))
    if far.any():
        out[far] = (np.asarray(calibrator(raw[far])) - np.asarray(calibrator(base[far]))) / d[far]
    if (~far).any():
        h = 1e-4
        out[~far] = (np.asarray(calibrator(raw[~far] + h)) - np.asarray(calibrator(raw[~far] - h))) / (2 * h)
    return out


def _apart(hundredths: list[int], logodds: list[float]) -> list[int]:
    """Figures (in 0.01 points) with the sign of their log-odds (at least 0.01 away from 0), and
    strictly ordered like their log-odds within each sign: a figure that rounded onto its
    neighbour's is moved out by 0.01, the larger log-odds keeping the larger magnitude."""
    h = list(hundredths)
    for sign in (1, -1):
        idx = sorted((i for i, lo in enumerate(logodds) if lo * sign > 0), key=lambda i: -abs(logodds[i]))
        for i in idx:
            h[i] = sign * max(1, sign * h[i])
        for a, b in zip(reversed(idx[:-1]), reversed(idx[1:]), strict=True):  # from the smallest up
            if abs(logodds[a]) > abs(logodds[b]) and sign * h[a] <= sign * h[b]:
                h[a] = h[b] + sign
    return h


def figures(calibrator, raw: np.ndarray, base_value: np.ndarray, logodds: np.ndarray, keep: np.ndarray,
            base_rate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Percentage-point figures of the shown factors and the 其他因素 line (module doc, 4).

    ``logodds``: (n, k) summed contributions of the top factors; ``keep``: (n, k) which of them
    are shown; ``base_rate``: (n,) the county base rate of each row. Returns (figures (n, k), 0
    where not shown; other (n,)), both rounded to 0.01, with ``Σ figures + other`` equal to
    ``100 × (probability − base rate)`` rounded to 0.01."""
    raw = np.asarray(raw, dtype=np.float64)
    prob = np.clip(np.asarray(calibrator(raw), dtype=np.float64), 0.0, 1.0)
    slope = secant_slope(calibrator, raw, base_value)
    exact = 100.0 * slope[:, None] * logodds
    total = np.rint(10_000.0 * (prob - np.asarray(base_rate, dtype=np.float64))).astype(np.int64)
    out = np.zeros(logodds.shape)
    other = np.zeros(len(raw))
    for i in range(len(raw)):
        js = np.flatnonzero(keep[i])
        h = _apart([int(v) for v in np.rint(100.0 * exact[i, js])], logodds[i, js].tolist())
        out[i, js] = np.asarray(h, dtype=np.float64) / 100.0
        other[i] = (total[i] - sum(h)) / 100.0
    return out, other


# ----------------------------------------------------------------------------------------------
# reasons


def explain_full(spec: FeatureSpec, calibrator, X: np.ndarray, contrib: np.ndarray, max_reasons: int = 4, *,
                 county=None, reference: Mapping | None = None) -> tuple[list[list[dict]], list[dict]]:
    """Reasons for every row of ``X`` (the spec's feature matrix) given its ``pred_contrib`` rows,
    and each row's figure summary.

    Reasons: at most ``max_reasons`` dicts ``{"factor", "text", "direction", "logodds",
    "prob_pp"}`` per row, most influential first (module doc). Summary: ``{"base_rate",
    "other_pp", "reference_period"}``: the county base rate the figures start from (the model's
    reference; without one, the reference household's probability ``g(bv)``), the 其他因素 line
    and the period the reference was measured on. ``county``: each row's county (for its base
    rate and comparisons); ``reference``: ``RiskModel.reference``.
    """
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    contrib = np.atleast_2d(np.asarray(contrib, dtype=np.float64))
    if len(X) != len(contrib):
        raise ValueError(f"{len(X)} feature rows but {len(contrib)} contribution rows")
    fx = factors_of(spec)
    F, base = factor_contributions(spec, contrib)
    raw = contrib.sum(axis=1)
    k = min(max_reasons, F.shape[1])
    order = np.argsort(-np.abs(F), axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(F, order, axis=1)
    keep = np.abs(top) >= MIN_LOGODDS
    counties = [None] * len(X) if county is None else list(np.asarray(county, dtype=object))
    places = [_place(reference, c) for c in counties]
    rate = np.array([pl.base_rate if pl.base_rate is not None else np.nan for pl in places], dtype=np.float64)
    rate = np.where(np.isnan(rate), np.asarray(calibrator(base), dtype=np.float64), rate) if len(X) else rate
    pp, other = figures(calibrator, raw, base, top, keep, rate)
    period = (reference or {}).get("period")
    out: list[list[dict]] = []
    summaries: list[dict] = []
    for i in range(len(X)):
        r = _Row(X[i], contrib[i], fx.index)
        js = np.flatnonzero(keep[i])
        shown = {fx.keys[order[i, j]] for j in js}
        reasons = []
        for j in js:
            key = fx.keys[order[i, j]]
            lo = float(top[i, j])
            up = lo > 0
            text = sentence(spec, key, r, shown, fx)
            text = text + comparison(key, r, places[i]) if up else text + DOWN_LABEL
            reasons.append({"factor": key, "text": text, "direction": "up" if up else "down",
                            "logodds": round(lo, 4), "prob_pp": float(pp[i, j])})
        out.append(reasons)
        summaries.append({"base_rate": round(float(rate[i]), 6), "other_pp": float(other[i]),
                          "reference_period": period})
    return out, summaries


def explain_rows(spec: FeatureSpec, calibrator, X: np.ndarray, contrib: np.ndarray, max_reasons: int = 4, *,
                 county=None, reference: Mapping | None = None) -> list[list[dict]]:
    """The reasons of :func:`explain_full` (without the figure summaries)."""
    return explain_full(spec, calibrator, X, contrib, max_reasons, county=county, reference=reference)[0]


def check_additivity(raw_score: np.ndarray, contrib: np.ndarray, atol: float = 1e-6) -> None:
    """Raise unless base + Σ contributions equals the model's raw score on every row."""
    diff = np.abs(np.atleast_2d(contrib).sum(axis=1) - np.asarray(raw_score, dtype=np.float64))
    if len(diff) and diff.max() > atol:
        raise AssertionError(f"TreeSHAP additivity violated: max |base + Σφ − raw| = {diff.max():.3g}")


def labour_classes(X: np.ndarray, spec: FeatureSpec) -> list[str]:
    """The labour class (fangpin.contract.LABOR_CLASSES) of every row of a feature matrix, from its
    ``labor_class_code`` (missing → 无劳动力)."""
    code = np.atleast_2d(X)[:, factors_of(spec).index["labor_class_code"]]
    code = np.where(np.isnan(code), len(LABOR_CLASSES) - 1, code).astype(int)
    return [LABOR_CLASSES[c] for c in code.tolist()]
