"""Reasons a cadre can read: exact TreeSHAP contributions → factors → at most four Chinese sentences.

One pure function of (feature spec, calibrator, feature values, contributions) → reasons, called by
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
4. **Units.** ``logodds`` is the factor's summed contribution (log-odds of the booster's raw
   score). ``prob_pp`` is a probability-scale effect computed, not converted by a rule of thumb:
   ``100 × (calibrated(raw) − calibrated(raw − logodds))`` — the change, in percentage points, of
   the calibrated probability the household was given, against the same raw score with this
   factor's contribution removed (other factors held). With an isotonic calibrator this is 0 where
   the calibration curve is flat; effects of different factors do not add up exactly to the
   probability (the calibrator is non-linear), their log-odds do.
5. **Sentences.** Each sentence names the household's own values (from the feature row the model
   scored: counts, yuan, shares), e.g. ``家庭成员1人患大病，今年合规自付医疗支出23,400元，占家庭年纯收入61%``.
   Rule hits are not reasons: they come from models.rules with the threshold that fired (规则触发).
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
# reasons


def explain_rows(spec: FeatureSpec, calibrator, X: np.ndarray, contrib: np.ndarray,
                 max_reasons: int = 4) -> list[list[dict]]:
    """Reasons for every row of ``X`` (the spec's feature matrix) given its ``pred_contrib`` rows.

    Returns one list per row of at most ``max_reasons`` dicts ``{"factor", "text", "direction",
    "logodds", "prob_pp"}``, most influential first (see the module doc for the units).
    """
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    contrib = np.atleast_2d(np.asarray(contrib, dtype=np.float64))
    if len(X) != len(contrib):
        raise ValueError(f"{len(X)} feature rows but {len(contrib)} contribution rows")
    fx = factors_of(spec)
    F, _base = factor_contributions(spec, contrib)
    raw = contrib.sum(axis=1)
    k = min(max_reasons, F.shape[1])
    order = np.argsort(-np.abs(F), axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(F, order, axis=1)
    p_with = np.asarray(calibrator(raw), dtype=np.float64)
    p_without = np.asarray(calibrator((raw[:, None] - top).ravel()), dtype=np.float64).reshape(top.shape)
    pp = 100.0 * (p_with[:, None] - p_without)
    out: list[list[dict]] = []
    for i in range(len(X)):
        r = _Row(X[i], contrib[i], fx.index)
        keep = [j for j in range(k) if abs(top[i, j]) >= MIN_LOGODDS]
        shown = {fx.keys[order[i, j]] for j in keep}
        reasons = []
        for j in keep:
            key = fx.keys[order[i, j]]
            lo = float(top[i, j])
            up = lo > 0
            text = sentence(spec, key, r, shown, fx)
            reasons.append({"factor": key, "text": text if up else text + DOWN_LABEL,
                            "direction": "up" if up else "down", "logodds": round(lo, 4),
                            "prob_pp": round(float(pp[i, j]), 2)})
        out.append(reasons)
    return out


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
