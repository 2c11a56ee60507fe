"""Features: one module for training, batch scoring and the API.

Input is always the canonical tables of docs/data-model.md (:class:`Frames`): a whole county's
history for training and batch scoring, or the frames built from one household posted to the API in
the canonical JSON form (:func:`frames_from_records`). Both go through :func:`build_features`, so a
household gets the same features wherever it is scored.

The list of features is declared once, in :data:`FEATURES` (name, explanation group, Chinese label,
monotone direction). A trained model records the :class:`FeatureSpec` it was trained with and scores
with that spec; nobody writes a second list of columns.

Time: the features of household-quarter ``t`` use only the snapshot of ``t``, earlier snapshots of
the same household, and department events dated up to the end of ``t`` (tests/unit/test_features.py
perturbs everything later and checks that nothing at ``t`` moves). 民族 (ethnicity), names, ID
numbers and the sex of members are never read here.

Look-backs count calendar quarters, never snapshots, so a ledger with missing quarters (an annual
ledger: one snapshot a year, written as its Q4) is handled explicitly:

- department-event windows (1, 2, 4 quarters) are windows of event dates;
- ``d_*`` are changes since the *previous calendar quarter's* snapshot: missing (NaN) when that
  quarter has no snapshot — in an annual ledger always — never a change over a year read as one
  over a quarter (income changes between verifications are ``income_change`` and
  ``quarters_since_income_change``, counted in quarters between the snapshots);
- ``township_ident_rate_4q`` covers the 4 calendar quarters t-3 … t; a quarter without a snapshot
  is read from the 识别监测时间 recorded in t's snapshot, never counted as 0.

:func:`lookback_quarters` declares how far back each feature reads; rows whose look-back reaches
before the first quarter of the data are the *warm-up* (:func:`defined_after_warm_up`), which the
drift report leaves out of its comparisons.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from fangpin import contract
from fangpin.config import monitoring_line
from fangpin.quarters import index_of_yyyymm

# Columns carried beside the features (identity and rule inputs; never model inputs).
KEY_COLUMNS = ("household_id", "quarter", "quarter_idx", "county", "township", "village")

COSTLY_SCHOOL = ("高中", "中职", "高职高专", "本科及以上")
COMPULSORY_SCHOOL = ("小学", "初中")
MEDICAL_EVENTS = ("住院", "大额医疗自付", "重大疾病")
LOSS_EVENTS = ("房屋受损", "自然灾害受灾", "产业项目受损", "交通事故")
DISASTER_EVENT = "自然灾害受灾"
EVENT_WINDOWS = (1, 2, 4)
AMOUNT_GROUPS = {"medical": MEDICAL_EVENTS, "loss": LOSS_EVENTS, "all": contract.EVENT_TYPES}
# Event types whose occurrence can only add risk (monotone constraint +1 on their counts).
RISING_EVENTS = ("住院", "大额医疗自付", "重大疾病", "新增残疾", "房屋受损", "自然灾害受灾", "交通事故",
                 "失业登记", "死亡", "辍学", "低保停发", "产业项目受损")
# Changes since the previous quarter's snapshot: d_<base> = <base> now − <base> a quarter before.
LAG_BASES = ("n_members", "n_serious_illness", "n_labor_full", "n_migrant_workers", "work_months_total",
             "medical_oop")
# What a household scored alone (the API, the pyfunc) carries instead of its earlier snapshots and
# its neighbours: the ledger's history of it (:class:`History`, from the store) becomes these
# household columns (:func:`frames_from_records`); batch and training compute them from the tables.
INCOME_STATE = ("hist_q", "hist_ipc", "hist_prev", "hist_since")  # income history at the last snapshot
LAG_COLUMNS = tuple(f"lag_{b}" for b in LAG_BASES)  # the bases at the previous quarter
CONTEXT = ("village_disaster_share", "township_disaster_share", "township_ident_rate_4q")
# English slugs for feature names (the Chinese value sets stay in fangpin.contract).
EVENT_SLUG = {
    "住院": "hospital", "大额医疗自付": "large_medical_bill", "重大疾病": "serious_illness",
    "新增残疾": "new_disability", "房屋受损": "house_damage", "自然灾害受灾": "disaster",
    "交通事故": "traffic_accident", "失业登记": "unemployment", "死亡": "death", "辍学": "dropout",
    "低保停发": "dibao_stopped", "产业项目受损": "business_loss",
}
RISK_SLUG = {
    "因病": "illness", "因残": "disability", "因学": "schooling", "因自然灾害": "disaster",
    "因意外事故": "accident", "因产业项目失败": "business_failure", "因务工就业不稳": "unstable_job",
    "缺劳动力": "lack_labour", "因安全住房": "housing", "因安全饮水": "water", "其他": "other",
}
EVENT_TYPE_CODES = {t: i for i, t in enumerate(contract.EVENT_TYPES)}


def event_count_feature(event_type: str, window: int) -> str:
    return f"ev_{EVENT_SLUG[event_type]}_n_{window}q"


@dataclass(frozen=True)
class Feature:
    name: str
    group: str  # explanation factor (cadre-meaningful): features of one group are explained together
    label: str  # short Chinese description
    monotone: int = 0  # +1: risk may only rise with the value; -1: only fall; 0: free


def _event_features() -> list[Feature]:
    out: list[Feature] = []
    for w in EVENT_WINDOWS:
        for t in contract.EVENT_TYPES:
            grp = "events_medical" if t in MEDICAL_EVENTS else "events_other"
            if t in ("房屋受损", "自然灾害受灾"):
                grp = "events_disaster"
            out.append(Feature(event_count_feature(t, w), grp, f"近{w}个季度{t}事件数",
                               +1 if t in RISING_EVENTS else 0))
        for g in AMOUNT_GROUPS:
            grp = {"medical": "events_medical", "loss": "events_disaster", "all": "events_other"}[g]
            lab = {"medical": "医疗类", "loss": "损失类", "all": "全部"}[g]
            out.append(Feature(f"ev_{g}_amount_{w}q", grp, f"近{w}个季度{lab}部门事件金额（元）", +1))
    out.append(Feature("ev_medical_amount_4q_share", "events_medical", "近4个季度医疗事件金额占家庭年纯收入比例", +1))
    return out


FEATURES: tuple[Feature, ...] = (
    # household composition
    Feature("n_members", "composition", "家庭人口数"),
    Feature("n_children", "composition", "16岁以下人数"),
    Feature("n_elderly", "composition", "60岁及以上人数"),
    Feature("dependency_ratio", "composition", "非劳动年龄人口占比"),
    Feature("head_age", "composition", "户主年龄"),
    # labour capacity
    Feature("n_labor_full", "labour", "有劳动力人数"),
    Feature("n_labor_weak", "labour", "弱劳动力或半劳动力人数"),
    Feature("n_labor_none", "labour", "无劳动力或丧失劳动力人数"),
    Feature("labor_class_code", "labour", "家庭劳动力类别（0有/1弱/2无）"),
    Feature("labor_share", "labour", "有劳动力人口占比"),
    Feature("n_migrant_workers", "employment", "外出务工人数"),
    Feature("work_months_total", "employment", "家庭务工月数合计"),
    Feature("n_idle_labor", "employment", "有劳动力但未务工人数"),
    # health burden
    Feature("n_serious_illness", "health", "患大病人数", +1),
    Feature("n_chronic", "health", "长期慢性病人数"),
    Feature("n_disabled", "health", "残疾人数"),
    Feature("sick_share", "health", "患病或残疾人口占比", +1),
    Feature("n_uninsured", "health", "未参加基本医疗保险人数"),
    # income against the line
    Feature("income_per_capita", "income", "人均纯收入（元）", -1),
    Feature("income_ratio", "income", "人均纯收入与监测线之比", -1),
    Feature("income_margin", "income", "人均纯收入高出监测线（元）", -1),
    Feature("income_change", "income_change", "人均纯收入较上次核实的变化比例", -1),
    Feature("quarters_since_income_change", "income_change", "距上次收入变化的季度数"),
    Feature("household_net_income", "income", "家庭年纯收入（元）", -1),
    # income mix
    Feature("wage_share", "income_mix", "工资性收入占比"),
    Feature("business_share", "income_mix", "生产经营性收入占比"),
    Feature("property_share", "income_mix", "财产性收入占比"),
    Feature("transfer_share", "income_mix", "转移性收入占比"),
    Feature("business_expense_ratio", "income_mix", "生产经营性支出占经营收入比例"),
    # rigid spending
    Feature("medical_oop", "rigid_spending", "合规自付医疗支出（元）", +1),
    Feature("rigid_share", "rigid_spending", "合规自付支出占家庭年纯收入比例", +1),
    Feature("income_after_rigid_ratio", "rigid_spending", "扣除合规自付支出后人均收入与监测线之比", -1),
    # schooling
    Feature("n_compulsory_school", "schooling", "义务教育在校生人数"),
    Feature("n_costly_school", "schooling", "高中及以上在校生人数"),
    Feature("n_preschool", "schooling", "学前教育人数"),
    Feature("n_out_of_school_child", "schooling", "义务教育适龄未在校人数", +1),
    # housing and water
    Feature("unsafe_housing", "housing_water", "是否危房户", +1),
    Feature("no_safe_water", "housing_water", "未解决安全饮用水", +1),
    Feature("farmland_mu", "assets", "耕地面积（亩）"),
    Feature("road_distance_km", "assets", "与村主干路距离（公里）"),
    # social protection
    Feature("dibao", "protection", "享受低保"),
    Feature("tekun", "protection", "享受特困供养"),
    Feature("n_support_measures", "protection", "已享受帮扶措施项数"),
    # monitoring history
    Feature("is_tuopin", "history", "脱贫户"),
    Feature("eliminated_before", "history", "曾为监测对象且风险已消除"),
    Feature("quarters_since_elimination", "history", "风险消除至今季度数"),
    Feature("quarters_since_identified", "history", "首次识别监测至今季度数"),
    Feature("elimination_natural", "history", "风险为自然消除"),
    Feature("n_risk_types", "history", "曾记录的致贫返贫风险数"),
    *(Feature(f"risk_{RISK_SLUG[r]}", "history", f"曾记录风险：{r}") for r in contract.RISK_TYPES),
    # department events
    *_event_features(),
    # changes since the previous quarter's snapshot
    Feature("d_n_members", "composition", "家庭人口数较上季度变化"),
    Feature("d_n_serious_illness", "health", "患大病人数较上季度变化", +1),
    Feature("d_n_labor_full", "labour", "有劳动力人数较上季度变化"),
    Feature("d_n_migrant_workers", "employment", "外出务工人数较上季度变化"),
    Feature("d_work_months_total", "employment", "家庭务工月数较上季度变化"),
    Feature("d_medical_oop", "rigid_spending", "合规自付医疗支出较上季度变化"),
    # local context and calendar
    Feature("village_disaster_share", "context", "本村本季度受灾户占比", +1),
    Feature("township_disaster_share", "context", "本乡镇本季度受灾户占比", +1),
    Feature("township_ident_rate_4q", "context", "本乡镇近4个季度新识别监测户占比"),
    Feature("quarter_of_year", "calendar", "季度（1-4，第4季度为年度收入核实）"),
)
FEATURE_NAMES = frozenset(f.name for f in FEATURES)
# Calendar quarters before t that a look-back feature reads (every other feature reads t only).
LOOKBACK = {
    **{f"d_{b}": 1 for b in LAG_BASES},
    **{f.name: int(f.name.rsplit("_", 1)[1][:-1]) - 1 for f in FEATURES
       if f.name.startswith("ev_") and f.name.rsplit("_", 1)[1][:-1].isdigit()},
    "ev_medical_amount_4q_share": 3,
    # the previous verified income: income is verified once a year, so a year of history
    "income_change": 4, "quarters_since_income_change": 4,
}
EVENT_FEATURES = frozenset(f.name for f in FEATURES if f.name.startswith("ev_"))
FORBIDDEN = ("ethnicity", "name", "id_number", "person_key", "id_masked", "sex")


def lookback_quarters(name: str) -> int:
    """How many calendar quarters before t the feature ``name`` reads (0: only quarter t)."""
    return LOOKBACK.get(name, 0)


def defined_after_warm_up(names: Iterable[str], quarter_idx: np.ndarray, ledger_start: int,
                          events_start: int | None = None) -> dict[str, np.ndarray]:
    """Per feature, the rows (quarter indices ``quarter_idx``) whose look-back lies entirely inside
    the data: t − lookback ≥ the first quarter of the ledger (of the department events, for event
    features, when they start earlier). Rows outside are the warm-up: the feature is missing or
    truncated there because the history is short, not because of the household."""
    q = np.asarray(quarter_idx, dtype=np.int64)
    ev_start = ledger_start if events_start is None else min(int(events_start), int(ledger_start))
    out = {}
    for n in names:
        start = ev_start if n in EVENT_FEATURES else ledger_start
        out[n] = q - lookback_quarters(n) >= start
    return out


@dataclass(frozen=True)
class FeatureSpec:
    """The features a model was trained with, in booster column order (saved with the model)."""

    names: tuple[str, ...]
    groups: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    monotone: dict[str, int] = field(default_factory=dict)
    version: str = "features-1"

    @classmethod
    def default(cls) -> FeatureSpec:
        return cls(
            names=tuple(f.name for f in FEATURES),
            groups={f.name: f.group for f in FEATURES},
            labels={f.name: f.label for f in FEATURES},
            monotone={f.name: f.monotone for f in FEATURES},
        )

    def to_json(self) -> str:
        d = asdict(self)
        d["names"] = list(self.names)
        return json.dumps(d, ensure_ascii=False, indent=1)

    @classmethod
    def from_json(cls, text: str) -> FeatureSpec:
        d = json.loads(text)
        d["names"] = tuple(d["names"])
        return cls(**d)

    def save(self, path: Path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> FeatureSpec:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))

    def matrix(self, feats: pd.DataFrame | Table) -> np.ndarray:
        """The model matrix in this spec's column order (float64, NaN for missing)."""
        if isinstance(feats, Table):
            if len(feats) == 0:
                return np.zeros((0, len(self.names)))
            return np.column_stack([np.asarray(feats[n], dtype=np.float64) for n in self.names])
        return feats.loc[:, list(self.names)].to_numpy(dtype=np.float64, na_value=np.nan)


@dataclass
class Frames:
    """Canonical tables (docs/data-model.md). ``events`` may be empty; ``lines`` maps year → yuan.
    DataFrames for a county (ingest's Parquet); :class:`Table` for records posted to the API."""

    households: pd.DataFrame | Table
    persons: pd.DataFrame | Table
    events: pd.DataFrame | Table | None = None
    lines: dict[int, float] = field(default_factory=dict)
    oracle: pd.DataFrame | None = None

    @classmethod
    def from_dir(cls, d: Path, lines: Mapping[int, float] | None = None) -> Frames:
        """Read the canonical Parquet tables that ingest wrote into ``d``."""
        d = Path(d)
        missing = [n for n in ("households.parquet", "persons.parquet") if not (d / n).exists()]
        if missing:
            raise FileNotFoundError(f"{d}: canonical tables missing: {missing} (run `fangpin ingest` first)")
        ev = d / "events.parquet"
        orc = d / "oracle.parquet"
        merged: dict[int, float] = {int(k): float(v) for k, v in (lines or {}).items()}
        lj = d / "lines.json"
        if lj.exists():
            merged.update({int(k): float(v) for k, v in json.loads(lj.read_text(encoding="utf-8")).items()})
        return cls(
            households=pd.read_parquet(d / "households.parquet"),
            persons=pd.read_parquet(d / "persons.parquet"),
            events=pd.read_parquet(ev) if ev.exists() else None,
            lines=merged,
            oracle=pd.read_parquet(orc) if orc.exists() else None,
        )

    def until(self, qidx: int) -> Frames:
        """Everything known by the end of quarter index ``qidx``."""
        ev = self.events
        return Frames(
            households=self.households[self.households["quarter_idx"] <= qidx],
            persons=self.persons[self.persons["quarter_idx"] <= qidx],
            events=None if ev is None else ev[ev["quarter_idx"] <= qidx],
            lines=self.lines,
        )


# ----------------------------------------------------------------------------------------------
# helpers: plain numpy on columns, so that one household costs little more than a county


_QBITS = 1 << 20  # quarter indices (year*4 + n-1) are far below 2**20


class Table:
    """A table as plain numpy columns (name → 1-d array of equal length).

    :func:`frames_from_records` builds these for the few rows of households posted to the API:
    every pandas operation costs tens of microseconds whatever the size, and the feature code
    makes hundreds of them. :func:`build_features` and the rules read a Table and a DataFrame
    through the same helpers (:func:`_col`, :func:`_num`, :class:`_Cat`, :func:`_take`), so both
    run the same feature code."""

    def __init__(self, columns: Mapping[str, np.ndarray], n: int):
        self._cols = dict(columns)
        self._n = n

    @property
    def columns(self):
        return self._cols.keys()

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, col: str) -> np.ndarray:
        return self._cols[col]

    def take(self, idx: np.ndarray) -> Table:
        return Table({k: v[idx] for k, v in self._cols.items()}, len(idx))

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self._cols, index=pd.RangeIndex(self._n))


def _col(df, col: str, dtype=None) -> np.ndarray:
    """Column ``col`` of a DataFrame or :class:`Table` as a numpy array."""
    if isinstance(df, Table):
        return df[col] if dtype is None else np.asarray(df[col], dtype=dtype)
    return df[col].to_numpy(dtype=dtype)


def _take(df, idx: np.ndarray):
    return df.take(idx) if isinstance(df, Table) else df.iloc[idx]


def _num(df, col: str) -> np.ndarray:
    if col not in df.columns:
        return np.full(len(df), np.nan)
    s = df[col]
    if isinstance(df, Table):
        if s.dtype.kind in "biuf":
            return s.astype(np.float64)
        try:  # the values posted (pydantic-validated): numbers, booleans or None
            return np.array([np.nan if v is None else v for v in s], dtype=np.float64)
        except (TypeError, ValueError):
            return pd.to_numeric(pd.Series(s, dtype=object), errors="coerce").to_numpy(dtype=np.float64,
                                                                                         na_value=np.nan)
    if s.dtype.kind in "biuf" or pd.api.types.is_numeric_dtype(s.dtype):
        return s.to_numpy(dtype=np.float64, na_value=np.nan)
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


_SMALL = 64  # up to this many values, a dict factorises faster than pandas (whose call costs ~20 µs)


def _factorize(values) -> tuple[np.ndarray, np.ndarray]:
    """``pd.factorize(values, use_na_sentinel=True)`` as (int64 codes, object uniques); missing
    values (None, NaN, pd.NA, NaT) get -1. The few values of posted households go through a dict."""
    if isinstance(values, np.ndarray) and len(values) <= _SMALL:
        pos: dict = {}
        codes = np.empty(len(values), dtype=np.int64)
        for i, v in enumerate(values.tolist() if values.dtype.kind != "O" else values):
            codes[i] = -1 if (v is None or v is pd.NA or v is pd.NaT or v != v) else pos.setdefault(v, len(pos))
        uniq = np.empty(len(pos), dtype=object)
        uniq[:] = list(pos)
        return codes, uniq
    codes, uniq = pd.factorize(values, use_na_sentinel=True)
    return np.asarray(codes, dtype=np.int64), np.asarray(uniq, dtype=object)


class _Cat:
    """A column factorised once; cheap membership tests (missing and blank never match)."""

    def __init__(self, df, col: str):
        n = len(df)
        if col not in df.columns or n == 0:
            self.codes, self.uniq = np.full(n, -1, dtype=np.int64), np.array([], dtype=object)
            return
        self.codes, self.uniq = _factorize(df[col])

    def isin(self, values) -> np.ndarray:
        if len(self.uniq) == 0:
            return np.zeros(len(self.codes), dtype=bool)
        hit = np.array([u in values for u in self.uniq] + [False])
        return hit[self.codes]  # code -1 → the trailing False

    def eq(self, value) -> np.ndarray:
        return self.isin((value,))

    def notblank(self) -> np.ndarray:
        if len(self.uniq) == 0:
            return np.zeros(len(self.codes), dtype=bool)
        ok = np.array([not (isinstance(u, str) and u.strip() == "") for u in self.uniq] + [False])
        return ok[self.codes]

    def flag(self, value) -> np.ndarray:
        """1.0 where equal to ``value``, 0.0 where different, NaN where missing."""
        out = self.eq(value).astype(np.float64)
        out[self.codes < 0] = np.nan
        return out

    def take(self) -> np.ndarray:
        out = np.full(len(self.codes), None, dtype=object)
        ok = self.codes >= 0
        out[ok] = self.uniq[self.codes[ok]]
        return out


def _flag(df: pd.DataFrame, col: str, true_value=True) -> np.ndarray:
    return _Cat(df, col).flag(true_value)


def _notnull(df: pd.DataFrame, col: str) -> np.ndarray:
    return _Cat(df, col).notblank()


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = a / b
    out[~np.isfinite(out)] = np.nan
    return out


def monitoring_status(hh) -> tuple[np.ndarray, np.ndarray]:
    """Per household-quarter row: (monitored, eliminated) — 监测对象类别 filled, and 风险是否已消除 = 是."""
    return _notnull(hh, "monitor_category"), _Cat(hh, "risk_eliminated").eq(True)


def in_scope(hh) -> np.ndarray:
    """In scope at the row's quarter (ledger contract, "The outcome to predict"): not a monitoring
    object with unresolved risk (监测对象类别 blank, or 风险是否已消除 = 是)."""
    monitored, eliminated = monitoring_status(hh)
    return ~monitored | eliminated


def identified_quarter(hh) -> np.ndarray:
    """Per row: the quarter index of 识别监测时间 when the row shows an unresolved monitoring object
    (newly identified then), else NaN. A household is newly identified after quarter t when a later
    row shows this with a quarter index > t (pipelines.labels)."""
    monitored, eliminated = monitoring_status(hh)
    return np.where(monitored & ~eliminated, index_of_yyyymm(_num(hh, "monitor_since")), np.nan)


def line_array(years: np.ndarray, lines: Mapping[int, float]) -> np.ndarray:
    out = np.full(len(years), np.nan)
    for y in np.unique(years):
        out[years == y] = monitoring_line(lines, int(y))
    return out


def _text(values):
    """``values`` as an Arrow text array (missing → null), or None when they are not all text."""
    import pyarrow as pa

    if isinstance(values, pa.Array):
        return values
    try:
        return pa.array(values, type=pa.large_string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None


def text_positions(values, keys) -> np.ndarray | None:
    """Position of each of ``values`` among ``keys`` (distinct; -1: absent or missing), through
    Arrow's hash lookup (``index_in``): a chunk's 350,000 persons in 6 ms against 85 ms for a pandas
    Index of Python strings. Texts: numpy / pandas / Arrow arrays. None when either is not all text."""
    import pyarrow.compute as pc

    v, k = _text(values), _text(keys)
    if v is None or k is None:
        return None
    return pc.fill_null(pc.index_in(v, value_set=k), -1).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


class _Keys:
    """(household, quarter) → row position, for the rows of one table (sorted int64 keys)."""

    def __init__(self, hid, q: np.ndarray):
        codes, uniq = _factorize(np.asarray(hid, dtype=object))
        self.uniq = uniq
        self.codes = np.asarray(codes, dtype=np.int64)
        self.key = self.codes * _QBITS + np.asarray(q, dtype=np.int64)
        self.order = np.argsort(self.key, kind="stable")
        self.sorted = self.key[self.order]

    def has_duplicates(self) -> bool:
        return bool(len(self.sorted) > 1 and (np.diff(self.sorted) == 0).any())

    def codes_of(self, hid) -> np.ndarray:
        if len(self.uniq) == 0:
            return np.full(len(hid), -1, dtype=np.int64)
        if len(hid) <= 64 and len(self.uniq) <= 64:  # a few posted households: a dict beats an Index
            pos = {u: i for i, u in enumerate(self.uniq)}
            return np.fromiter((pos.get(h, -1) for h in hid), dtype=np.int64, count=len(hid))
        if self._uniq_text is not None:
            codes = text_positions(hid, self._uniq_text)
            if codes is not None:  # None: the ids looked up are not all text
                return codes
        return np.asarray(self._uniq_index.get_indexer(np.asarray(hid, dtype=object)), dtype=np.int64)

    @cached_property
    def _uniq_text(self):
        """``uniq`` as Arrow text (None: not all text), built on first use by a large lookup."""
        return _text(self.uniq)

    @cached_property
    def _uniq_index(self) -> pd.Index:
        """``uniq`` as a pandas Index, built on first use by a large lookup of ids not all text."""
        return pd.Index(self.uniq)

    def find_codes(self, codes: np.ndarray, q: np.ndarray) -> np.ndarray:
        k = codes * _QBITS + np.asarray(q, dtype=np.int64)
        if len(self.sorted) == 0:
            return np.full(len(k), -1, dtype=np.int64)
        pos = np.searchsorted(self.sorted, k)
        pos = np.minimum(pos, len(self.sorted) - 1)
        ok = (codes >= 0) & (self.sorted[pos] == k)
        return np.where(ok, self.order[pos], -1)

    def find(self, hid, q: np.ndarray) -> np.ndarray:
        return self.find_codes(self.codes_of(hid), q)


def _bincount(rows: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    ok = rows >= 0
    v = np.asarray(values)[ok]
    v = v.astype(np.float64) if v.dtype == bool else np.nan_to_num(v.astype(np.float64, copy=False))
    return np.bincount(rows[ok], weights=v, minlength=n)


def _group_mean(keys: list[np.ndarray], values: np.ndarray) -> np.ndarray:
    """Mean of ``values`` within groups of equal keys (integer code arrays), broadcast to rows."""
    if len(values) == 0:
        return np.zeros(0)
    k = np.zeros(len(values), dtype=np.int64)
    for a in keys:
        a = np.asarray(a, dtype=np.int64)
        k = k * (int(a.max()) + 2) + (a + 1)
    _, inv = np.unique(k, return_inverse=True)
    s = np.bincount(inv, weights=values)
    c = np.bincount(inv)
    return (s / c)[inv]


def _codes(df: pd.DataFrame, col: str) -> np.ndarray:
    if col not in df.columns:
        return np.zeros(len(df), dtype=np.int64)
    return _factorize(df[col])[0]


# ----------------------------------------------------------------------------------------------
# the one feature function


def build_features(
    frames: Frames,
    *,
    quarters: Iterable[int] | None = None,
    population: bool = True,
) -> pd.DataFrame:
    """:func:`feature_table` as a DataFrame (training, evaluation, batch scoring's feature output)."""
    return features_frame(feature_table(frames, quarters=quarters, population=population))


def features_frame(t: Table) -> pd.DataFrame:
    """A feature :class:`Table` as a DataFrame: identity and rule-input columns, then FEATURES."""
    feat = pd.DataFrame(np.column_stack([t[f.name] for f in FEATURES]) if len(t) else
                        np.zeros((0, len(FEATURES))), columns=[f.name for f in FEATURES])
    aux = pd.DataFrame({k: t[k] for k in t.columns if k not in FEATURE_NAMES})
    return pd.concat([aux, feat], axis=1)


def feature_table(
    frames: Frames,
    *,
    quarters: Iterable[int] | None = None,
    population: bool = True,
) -> Table:
    """Features for every household-quarter row of ``frames.households`` (or only ``quarters``,
    quarter indices, while still using earlier snapshots for history).

    ``population=True`` when the frames hold every household of their villages (a county's ledger):
    local context (the share of the village/township hit by a disaster this quarter, the township's
    recent identification rate) is computed from them. For households scored one by one (API,
    pyfunc) context comes only from their place's stored values (:data:`CONTEXT` columns, see
    :func:`frames_from_records`), and their income history and the previous quarter's figures from
    the ledger's history of them (:data:`INCOME_STATE`, :data:`LAG_COLUMNS`); without them those
    features are missing.

    Returns a :class:`Table` of KEY_COLUMNS + every feature of :data:`FEATURES` + rule inputs
    (``year``, ``line``, ``labor_class``, ``in_scope``), one row per household-quarter, in the order
    of the input rows (numpy columns: no pandas cost per call, which matters for the API's single
    households; :func:`build_features` gives the same as a DataFrame).
    """
    hh_all = frames.households
    qall = _col(hh_all, "quarter_idx", np.int64)
    keys_all = _Keys(_col(hh_all, "household_id", object), qall)
    if keys_all.has_duplicates():
        dup_pos = keys_all.order[np.flatnonzero(np.diff(keys_all.sorted) == 0)[0]]
        dup = {c: _col(hh_all, c)[dup_pos] for c in ("household_id", "quarter")}
        raise ValueError(f"households: duplicate row for household {dup['household_id']} in {dup['quarter']}")
    ipc_all = _num(hh_all, "income_per_capita")
    inc = _income_history(keys_all.codes, qall, ipc_all)
    state_q = _num(hh_all, "hist_q")  # a household scored alone: its income history from the ledger
    given = np.flatnonzero(~np.isnan(state_q))
    if len(given):
        st = [state_q[given], *(_num(hh_all, c)[given] for c in INCOME_STATE[1:])]
        inc["prev"][given], inc["since"][given] = _income_from_state(*st, qall[given], ipc_all[given])
        for k, c in enumerate(INCOME_STATE):
            inc[c][given] = st[k]
    if quarters is None:
        wanted = np.ones(len(hh_all), dtype=bool)
    else:
        wanted = np.isin(qall, np.fromiter(quarters, dtype=np.int64))
    # the previous quarter too, for changes since the previous snapshot
    ext = wanted | np.isin(qall, np.unique(qall[wanted]) - 1)
    ext_idx = np.flatnonzero(ext)
    hh = hh_all if len(ext_idx) == len(hh_all) else _take(hh_all, ext_idx)
    keys = keys_all if hh is hh_all else _Keys(_col(hh, "household_id", object), qall[ext_idx])
    out = _features_core(frames, hh, keys, inc["prev"][ext_idx], inc["since"][ext_idx], population)
    for c in INCOME_STATE:  # not features: what a household scored alone needs (see history_record)
        out[c] = inc[c][ext_idx]
    q = out["quarter_idx"]
    if population:
        out["township_ident_rate_4q"] = _ident_rate(hh_all, qall, hh, q)
    else:
        out["township_ident_rate_4q"] = _num(hh, "township_ident_rate_4q")
    prev = keys.find_codes(keys.codes, q - 1)
    has = prev >= 0
    for base, lag_col in zip(LAG_BASES, LAG_COLUMNS, strict=True):
        v = out[base]
        lag = np.array(_num(hh, lag_col), dtype=np.float64)  # scored alone: its previous quarter, from the ledger
        lag[has] = v[prev[has]]
        out[lag_col] = lag
        out[f"d_{base}"] = v - lag
    keep = wanted[ext_idx]
    if not keep.all():
        out = {k: v[keep] for k, v in out.items()}
    return Table(out, int(keep.sum()))


def _ident_rate(hh_all: pd.DataFrame, qall: np.ndarray, hh: pd.DataFrame, q: np.ndarray) -> np.ndarray:
    """Share of the township's households newly identified in the 4 calendar quarters t-3 … t.

    A quarter with a snapshot counts the identifications that snapshot shows as new (识别监测时间 in
    that quarter). A quarter without one — an annual ledger's Q1-Q3, or the quarters before the
    ledger's first snapshot — counts the households of t's snapshot whose 识别监测时间 falls in it:
    never 0 just because the snapshot does not exist. Only what is known at the end of t is used."""
    hh_all = hh_all.to_frame() if isinstance(hh_all, Table) else hh_all
    hh = hh.to_frame() if isinstance(hh, Table) else hh
    new = (identified_quarter(hh_all) == qall).astype(np.float64)
    monitored, _ = monitoring_status(hh_all)
    # quarters since identification, seen at the row's snapshot
    ago = np.where(monitored, qall - index_of_yyyymm(_num(hh_all, "monitor_since")), -1)
    twp_all = (hh_all["county"].astype("string") + "|" + hh_all["township"].astype("string")).to_numpy(dtype=object)
    tk = _Keys(twp_all, np.zeros(len(qall), dtype=np.int64))  # township codes
    k = tk.codes * _QBITS + qall
    uk, inv = np.unique(k, return_inverse=True)
    num_k = np.bincount(inv, weights=new)
    den_k = np.bincount(inv).astype(np.float64)
    snapshots = np.unique(qall)
    # per township-quarter: households of that snapshot identified 1, 2, 3 quarters before it
    seen_k = {lag: np.bincount(inv, weights=(ago == lag).astype(np.float64), minlength=len(uk))
              for lag in range(1, 4)}
    twp = (hh["county"].astype("string") + "|" + hh["township"].astype("string")).to_numpy(dtype=object)
    codes = tk.codes_of(twp)
    num = np.zeros(len(q))
    den = np.full(len(q), np.nan)
    k0 = codes * _QBITS + q
    pos0 = np.minimum(np.searchsorted(uk, k0), len(uk) - 1)
    ok0 = (codes >= 0) & (uk[pos0] == k0)
    for lag in range(4):
        kk = codes * _QBITS + (q - lag)
        pos = np.minimum(np.searchsorted(uk, kk), len(uk) - 1)
        ok = (codes >= 0) & (uk[pos] == kk)
        num[ok] += num_k[pos[ok]]
        if lag == 0:
            den[ok] = den_k[pos[ok]]
            continue
        gap = ok0 & ~np.isin(q - lag, snapshots)  # no snapshot of that quarter in the ledger
        num[gap] += seen_k[lag][pos0[gap]]
    return num / den


def _features_core(frames: Frames, hh: pd.DataFrame, keys: _Keys, prev: np.ndarray, since: np.ndarray,
                   population: bool) -> dict[str, np.ndarray]:
    n = len(hh)
    q = _col(hh, "quarter_idx", np.int64)
    out: dict[str, np.ndarray] = {}
    for c in KEY_COLUMNS:
        out[c] = q if c == "quarter_idx" else (_col(hh, c, object) if c in hh.columns else
                                                np.full(n, None, dtype=object))

    # --- persons → household aggregates
    p = frames.persons
    pq = _col(p, "quarter_idx", np.int64)
    sel = np.isin(pq, np.unique(q))
    if not sel.all():
        p = _take(p, np.flatnonzero(sel))
        pq = pq[sel]
    rows = keys.find(p["household_id"] if isinstance(p, pd.DataFrame) else _col(p, "household_id", object), pq)
    age = _num(p, "age")
    health = _Cat(p, "health")
    skill = _Cat(p, "labor_skill")
    school = _Cat(p, "school_status")
    work = _Cat(p, "work_status")
    full_m = skill.isin({k for k, v in contract.LABOR_CLASS.items() if v == "有劳动力"})
    weak_m = skill.isin({k for k, v in contract.LABOR_CLASS.items() if v == "弱劳动力"})
    none_m = skill.isin({k for k, v in contract.LABOR_CLASS.items() if v == "无劳动力"})

    def cnt(mask: np.ndarray) -> np.ndarray:
        return _bincount(rows, mask, n)

    n_persons = cnt(np.ones(len(p), dtype=bool))
    n_members = np.where(n_persons > 0, n_persons, _num(hh, "n_members"))
    n_children = cnt(age < 16)
    n_elderly = cnt(age >= 60)
    full, weak, none_ = cnt(full_m), cnt(weak_m), cnt(none_m)
    labor_code = np.where(full > 0, 0, np.where(weak > 0, 1, 2)).astype(np.float64)
    out["n_members"] = n_members
    out["n_children"] = n_children
    out["n_elderly"] = n_elderly
    out["dependency_ratio"] = _safe_div(n_children + n_elderly, n_persons)
    head = _Cat(p, "relation").eq(contract.HEAD_RELATION) & (rows >= 0)
    head_age = np.full(n, np.nan)
    head_age[rows[head]] = age[head]
    out["head_age"] = head_age
    out["n_labor_full"] = full
    out["n_labor_weak"] = weak
    out["n_labor_none"] = none_
    out["labor_class_code"] = labor_code
    out["labor_share"] = _safe_div(full, n_persons)
    out["n_migrant_workers"] = cnt(work.isin({"省外务工", "省内县外务工"}))
    out["work_months_total"] = _bincount(rows, _num(p, "work_months"), n)
    out["n_idle_labor"] = cnt(full_m & work.eq("未务工"))
    out["n_serious_illness"] = cnt(health.eq("患有大病"))
    out["n_chronic"] = cnt(health.eq("长期慢性病"))
    out["n_disabled"] = cnt(health.eq("残疾"))
    out["sick_share"] = _safe_div(cnt(health.isin({"患有大病", "长期慢性病", "残疾"})), n_persons)
    uninsured = _Cat(p, "medical_insured").eq(False)
    out["n_uninsured"] = cnt(uninsured)
    # rule input (not a feature): uninsured members who are ill or disabled
    out["n_uninsured_sick"] = cnt(uninsured & health.isin({"患有大病", "长期慢性病", "残疾"}))
    out["n_compulsory_school"] = cnt(school.isin(set(COMPULSORY_SCHOOL)))
    out["n_costly_school"] = cnt(school.isin(set(COSTLY_SCHOOL)))
    out["n_preschool"] = cnt(school.eq("学前教育"))
    out["n_out_of_school_child"] = cnt((age >= 7) & (age <= 15) & school.eq("非在校生"))

    # --- income against the year's line
    years = q // 4
    line = line_array(years, frames.lines)
    ipc = _num(hh, "income_per_capita")
    out["income_per_capita"] = ipc
    out["income_ratio"] = ipc / line
    out["income_margin"] = ipc - line
    out["income_change"] = np.clip(_safe_div(ipc - prev, np.abs(prev)), -5, 5)
    out["prev_income_per_capita"] = prev  # not a feature: the income state of this snapshot (history_record)
    out["quarters_since_income_change"] = since
    hh_income = ipc * n_members
    out["household_net_income"] = hh_income
    wage, bus, prop, trans = (_num(hh, c) for c in ("wage_income", "business_income", "property_income",
                                                    "transfer_income"))
    gross = (np.nan_to_num(np.clip(wage, 0, None)) + np.nan_to_num(np.clip(bus, 0, None)) + np.nan_to_num(prop)
             + np.nan_to_num(trans))
    gross = np.where(gross > 0, gross, np.nan)
    out["wage_share"] = wage / gross
    out["business_share"] = bus / gross
    out["property_share"] = prop / gross
    out["transfer_share"] = trans / gross
    out["business_expense_ratio"] = np.clip(_safe_div(_num(hh, "business_expense"), bus), 0, 10)
    oop = _num(hh, "medical_out_of_pocket")
    out["medical_oop"] = oop
    out["rigid_share"] = np.clip(oop / np.maximum(hh_income, 1000.0), 0, 20)
    out["income_after_rigid_ratio"] = (ipc - np.nan_to_num(oop) / np.maximum(n_members, 1)) / line

    # --- housing, water, protection
    out["unsafe_housing"] = _flag(hh, "unsafe_housing", True)
    out["no_safe_water"] = _flag(hh, "safe_water", False)
    out["farmland_mu"] = _num(hh, "farmland_mu")
    out["road_distance_km"] = _num(hh, "road_distance_km")
    out["dibao"] = _notnull(hh, "dibao").astype(np.float64)
    out["tekun"] = _notnull(hh, "tekun").astype(np.float64)
    n_support = np.zeros(n)
    for c in contract.SUPPORT_HEADERS.values():
        n_support += _notnull(hh, c)
    out["n_support_measures"] = n_support

    # --- monitoring history (as recorded in the snapshot of t)
    monitored, elim = monitoring_status(hh)
    htype = _Cat(hh, "household_type")
    out["is_tuopin"] = htype.flag("脱贫户")
    out["eliminated_before"] = (monitored & elim).astype(np.float64)
    out["quarters_since_elimination"] = np.where(monitored & elim, q - index_of_yyyymm(_num(hh, "eliminated_at")),
                                                 np.nan)
    out["quarters_since_identified"] = np.where(monitored, q - index_of_yyyymm(_num(hh, "monitor_since")), np.nan)
    out["elimination_natural"] = np.where(monitored & elim, _flag(hh, "elimination_mode", "自然消除"), np.nan)
    risks = [_Cat(hh, c) for c in contract.RISK_FIELDS]
    n_risk = np.zeros(n)
    for r in risks:
        n_risk += r.codes >= 0
    for r in contract.RISK_TYPES:
        hit = np.zeros(n, dtype=bool)
        for c in risks:
            hit |= c.eq(r)
        out[f"risk_{RISK_SLUG[r]}"] = hit.astype(np.float64)
    out["n_risk_types"] = n_risk

    # --- department events in the last 1, 2, 4 quarters
    out.update(_event_window_features(keys, q, frames.events, hh_income))

    # --- local context
    disaster_now = (out[event_count_feature(DISASTER_EVENT, 1)] > 0).astype(np.float64)
    for level, col in (("village", "village_disaster_share"), ("township", "township_disaster_share")):
        supplied = _num(hh, col)
        if population and n and level in hh.columns:
            # a village is named within its township (two townships may each have a 青山村)
            place = [_codes(hh, "county"), _codes(hh, "township")] + ([_codes(hh, level)] if level == "village" else [])
            computed = _group_mean([*place, q], disaster_now)
        else:
            computed = np.full(n, np.nan)
        out[col] = np.where(np.isnan(supplied), computed, supplied)

    # --- rule inputs and identity (not model features)
    out["year"] = years
    out["line"] = line
    out["labor_class"] = np.array(contract.LABOR_CLASSES, dtype=object)[labor_code.astype(np.int64)]
    out["in_scope"] = in_scope(hh)
    out["household_type"] = htype.take()
    out["quarter_of_year"] = (q % 4 + 1).astype(np.float64)
    return out


def _income_history(codes: np.ndarray, q: np.ndarray, ipc: np.ndarray) -> dict[str, np.ndarray]:
    """Per household-quarter, from this and earlier snapshots only: ``prev`` (income before the
    latest change, i.e. the previous verification) and ``since`` (quarters since that change), and
    the same state at the household's previous snapshot (:data:`INCOME_STATE`: its quarter index,
    income, prev and since; NaN at a household's first snapshot)."""
    n = len(codes)
    if n == 0:
        return {k: np.zeros(0) for k in ("prev", "since", *INCOME_STATE)}
    order = np.lexsort((q, codes))
    c, qq, v = codes[order], q[order], ipc[order]
    ar = np.arange(n)
    first = np.ones(n, dtype=bool)
    first[1:] = c[1:] != c[:-1]
    prev_val = np.r_[np.nan, v[:-1]]
    changed = ~first & (v != prev_val) & ~(np.isnan(v) & np.isnan(prev_val))
    start = np.maximum.accumulate(np.where(first, ar, 0))
    last = np.maximum.accumulate(np.where(changed, ar, -1))
    ok = last >= start  # a change seen since this household's first snapshot
    lp = np.maximum(last, 0)
    before = np.where(ok, prev_val[lp], np.nan)
    since = np.where(ok, qq - qq[lp], np.nan).astype(np.float64)
    sorted_cols = {"prev": before, "since": since}
    for c, a in zip(INCOME_STATE, (qq.astype(np.float64), v, before, since), strict=True):
        shifted = np.r_[np.nan, a[:-1]]
        shifted[first] = np.nan
        sorted_cols[c] = shifted
    out = {}
    for k, a in sorted_cols.items():
        out[k] = np.empty(n)
        out[k][order] = a
    return out


def _income_from_state(sq: np.ndarray, sv: np.ndarray, sp: np.ndarray, ss: np.ndarray, q: np.ndarray,
                       v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(prev, since) at quarter ``q`` with income ``v`` for households whose earlier snapshots are
    summarised by their income state (:data:`INCOME_STATE`) at their last snapshot ``sq`` < ``q``:
    :func:`_income_history` itself, run on the shortest snapshot sequence with that state (the value
    before the change, the change at ``sq - ss`` and ``sq``, then ``q``), so a household scored with
    the ledger's history gets exactly what the batch computes from all its snapshots."""
    n = len(sq)
    if n == 0:
        return np.zeros(0), np.zeros(0)
    if (sq >= q).any():
        raise ValueError("the income history must end before the quarter scored")
    known = ~np.isnan(ss)
    c = np.where(known, sq - np.where(known, ss, 0), sq)
    qs = np.column_stack([c - 1, c, sq, q]).astype(np.int64).ravel()
    vs = np.column_stack([np.where(known, sp, sv), sv, sv, v]).ravel()
    h = _income_history(np.repeat(np.arange(n, dtype=np.int64), 4), qs, vs)
    return h["prev"][3::4], h["since"][3::4]


def _event_codes(events: pd.DataFrame | None, keys: _Keys) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Household codes (in ``keys``) and quarter of the events that belong to a known household."""
    if events is None or len(events) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), Table({}, 0)
    hid = _col(events, "household_id", object)
    codes = keys.codes_of(hid)
    ok = codes >= 0
    ev = events if ok.all() else _take(events, np.flatnonzero(ok))
    return codes[ok], _col(ev, "quarter_idx", np.int64), ev


def _event_window_features(keys: _Keys, q: np.ndarray, events: pd.DataFrame | None,
                           hh_income: np.ndarray) -> dict[str, np.ndarray]:
    n = len(q)
    types = contract.EVENT_TYPES
    out: dict[str, np.ndarray] = {}
    codes, eq, ev = _event_codes(events, keys)
    tcode = _Cat(ev, "event_type")
    tmap = np.array([EVENT_TYPE_CODES.get(u, -1) for u in tcode.uniq] + [-1], dtype=np.int64)
    tc = tmap[tcode.codes] if len(ev) else np.zeros(0, dtype=np.int64)
    use = (tc >= 0) & np.isin(eq, np.unique(np.concatenate([q - k for k in range(max(EVENT_WINDOWS))])))
    if not use.any() or n == 0:
        for f in FEATURES:
            if f.name.startswith("ev_"):
                out[f.name] = np.zeros(n)
        return out
    codes, eq, tc = codes[use], eq[use], tc[use]
    amount = np.nan_to_num(_num(ev, "amount")[use])
    k = codes * _QBITS + eq
    uk, inv = np.unique(k, return_inverse=True)
    m = len(uk)
    counts = np.zeros((m, len(types)))
    np.add.at(counts, (inv, tc), 1.0)
    amounts = {}
    for g, members in AMOUNT_GROUPS.items():
        in_g = np.isin(tc, [EVENT_TYPE_CODES[t] for t in members])
        amounts[g] = np.bincount(inv[in_g], weights=amount[in_g], minlength=m)
    acc_counts = np.zeros((n, len(types)))
    acc_amounts = {g: np.zeros(n) for g in AMOUNT_GROUPS}
    own = keys.codes  # the rows of ``q`` are the rows of ``keys``
    lag_done = 0
    for w in EVENT_WINDOWS:
        for lag in range(lag_done, w):
            kk = own * _QBITS + (q - lag)
            pos = np.minimum(np.searchsorted(uk, kk), m - 1)
            hit = uk[pos] == kk
            acc_counts[hit] += counts[pos[hit]]
            for g in AMOUNT_GROUPS:
                acc_amounts[g][hit] += amounts[g][pos[hit]]
        lag_done = w
        for t in types:
            out[event_count_feature(t, w)] = acc_counts[:, EVENT_TYPE_CODES[t]].copy()
        for g in AMOUNT_GROUPS:
            out[f"ev_{g}_amount_{w}q"] = acc_amounts[g].copy()
    out["ev_medical_amount_4q_share"] = np.clip(out["ev_medical_amount_4q"] / np.maximum(hh_income, 1000.0), 0, 20)
    return out


def event_window(events: pd.DataFrame | Table | None, hh: pd.DataFrame | Table, window: int,
                 types: Sequence[str], min_amount: float = 0.0) -> Table:
    """Events of ``types`` (amount ≥ ``min_amount`` when given) in the ``window`` quarters up to
    each household-quarter of ``hh`` (columns household_id, quarter_idx). Returns one row per
    matching event with ``row`` = position in ``hh`` (used by the rules for their sentences)."""
    cols = {"row": np.zeros(0, dtype=np.int64), "event_type": np.zeros(0, dtype=object),
            "amount": np.zeros(0), "quarter_idx": np.zeros(0, dtype=np.int64)}
    if events is None or len(events) == 0 or len(hh) == 0:
        return Table(cols, 0)
    et = _Cat(events, "event_type")
    sel = et.isin(set(types))
    amount = _num(events, "amount")
    if min_amount > 0:
        sel &= np.nan_to_num(amount) >= min_amount
    if not sel.any():
        return Table(cols, 0)
    idx = np.flatnonzero(sel)
    keys = _Keys(_col(hh, "household_id", object), _col(hh, "quarter_idx", np.int64))
    codes = keys.codes_of(_col(events, "household_id", object)[idx])
    eq = _col(events, "quarter_idx", np.int64)[idx]
    types_arr = et.take()[idx]
    parts = []
    for lag in range(window):
        rows = keys.find_codes(codes, eq + lag)
        ok = rows >= 0
        if ok.any():
            parts.append((rows[ok], types_arr[ok], amount[idx][ok], eq[ok]))
    if not parts:
        return Table(cols, 0)
    out = {c: np.concatenate([p[k] for p in parts]) for k, c in enumerate(cols)}
    return Table(out, len(out["row"]))


# ----------------------------------------------------------------------------------------------
# the canonical JSON form (one household with members and recent events) → Frames


def frames_from_records(records: Sequence[Mapping], lines: Mapping[int, float],
                        histories: Sequence[Mapping | None] | None = None,
                        contexts: Sequence[Mapping | None] | None = None) -> tuple[Frames, list[str]]:
    """Canonical frames for households in the canonical JSON form, each scored alone.

    Each record: household fields by canonical name (``quarter`` required), ``members``: list of
    person dicts (canonical person fields; ``age`` or ``birth_date`` or ``id_number``), ``events``:
    list of event dicts (``event_date``, ``event_type``, optional ``department``, ``amount``).
    Events dated after the end of the record's quarter are ignored (not known at scoring time).

    ``histories[i]``: the ledger's history of record i in the JSON form of :func:`history_records`
    (income history and the previous quarter's figures), or None; ``contexts[i]``: its place's
    context (:func:`place_contexts`), or None. Without them those features are missing, as for a
    household seen for the first time (:func:`history_columns` says which part applies to the
    record's quarter). Returns the frames and, per record, where its history came from
    (``"ledger:<quarter>"`` or ``"none"``).

    The tables are :class:`Table` objects (numpy columns; no pandas work for a few rows).
    """
    from fangpin import quarters as fq

    hh_rows, p_rows, e_rows, sources = [], [], [], []
    for i, rec in enumerate(records):
        if "quarter" not in rec or rec.get("quarter") in (None, ""):
            raise ValueError(f"household record {i}: field 'quarter' is required (YYYYQn)")
        qs = str(rec["quarter"])
        qi = fq.to_index(qs)
        hid = rec.get("household_id")
        hid = str(hid) if hid not in (None, "") else f"__record_{i}"
        members = rec.get("members") or []
        row = {k: v for k, v in rec.items() if k not in ("members", "events") and k not in _DERIVED}
        row.update(household_id=hid, quarter=qs, quarter_idx=qi, n_members=len(members))
        hist, source = history_columns(histories[i] if histories else None, qi)
        row.update(hist)
        row.update(context_columns(contexts[i] if contexts else None, qi))
        sources.append(source)
        hh_rows.append(row)
        end = fq.end_date(qs)
        for m in members:
            pr = {k: v for k, v in dict(m).items() if k not in FORBIDDEN}
            pr.update(household_id=hid, quarter=qs, quarter_idx=qi)
            if pr.get("age") is None:
                pr["age"] = _age_at(m, end)
            p_rows.append(pr)
        for e in rec.get("events") or []:
            d = _date(e.get("event_date"))
            if d is None:
                raise ValueError(f"household record {i}: event without a valid event_date")
            if d > end:
                continue
            e_rows.append({"household_id": hid, "event_date": d, "quarter_idx": d.year * 4 + (d.month - 1) // 3,
                           "event_type": e.get("event_type"), "department": e.get("department"),
                           "amount": e.get("amount")})
    hh_cols = [*contract.HOUSEHOLD_FIELDS, "quarter_idx", "n_members", *(k for r in hh_rows for k in r)]
    hh = _table(hh_rows, hh_cols)
    persons = _table(p_rows, ["household_id", "quarter", "quarter_idx", "relation", "health", "labor_skill",
                              "age", *(k for r in p_rows for k in r)])
    events = _table(e_rows, [k for r in e_rows for k in r]) if e_rows else None
    lines = {int(k): float(v) for k, v in lines.items()}
    return Frames(households=hh, persons=persons, events=events, lines=lines), sources


# What only the history and context supply: a record's own fields of these names are ignored.
_DERIVED = frozenset((*INCOME_STATE, *LAG_COLUMNS, *CONTEXT))


# ----------------------------------------------------------------------------------------------
# the ledger's history of a household, for scoring it alone (written by batch scoring)

HISTORY_VERSION = 1


def _f(v) -> float | None:
    v = float(v)
    return None if np.isnan(v) else v


def history_table(feats: Table, rows: np.ndarray):
    """The history of rows of a feature table (:func:`feature_table` at the ledger's latest quarter
    L) as an Arrow table, one row per household, built column by column: ``v``, ``quarter`` and
    two structs of floats (missing: null):

    - ``same``: for a snapshot of L itself (replacing the ledger's own): the income history at the
      household's snapshot before L (:data:`INCOME_STATE`) and the figures of quarter L-1
      (:data:`LAG_COLUMNS`);
    - ``next``: for a later quarter: the income history at L and the figures of L (which are the
      previous quarter's figures only for L+1).

    A row's ``to_pylist()`` is the JSON form a household scored alone takes
    (:func:`history_records`, :func:`frames_from_records`)."""
    import pyarrow as pa

    from fangpin import quarters as fq

    q = np.asarray(feats["quarter_idx"], dtype=np.int64)
    rows = np.asarray(rows, dtype=np.int64)
    same = {c: feats[c] for c in (*INCOME_STATE, *LAG_COLUMNS)}
    nxt = {"hist_q": q.astype(np.float64), "hist_ipc": feats["income_per_capita"],
           "hist_prev": feats["prev_income_per_capita"], "hist_since": feats["quarters_since_income_change"],
           **{lc: feats[b] for b, lc in zip(LAG_BASES, LAG_COLUMNS, strict=True)}}

    def struct(cols: dict):
        arrays = [pa.array(np.asarray(a, dtype=np.float64)[rows], type=pa.float64(), from_pandas=True)
                  for a in cols.values()]  # from_pandas: NaN → null
        return pa.StructArray.from_arrays(arrays, names=list(cols))

    qr = q[rows]
    quarter = {int(x): fq.from_index(int(x)) for x in np.unique(qr)}
    return pa.table({"v": pa.array(np.full(len(rows), HISTORY_VERSION, dtype=np.int64)),
                     "quarter": pa.array([quarter[int(x)] for x in qr.tolist()], type=pa.string()),
                     "same": struct(same), "next": struct(nxt)})


def history_records(feats: Table, rows: np.ndarray) -> list[dict]:
    """The history of rows of a feature table in the JSON form (:func:`history_table`, row by row)."""
    return history_table(feats, rows).to_pylist()


def history_columns(history: Mapping | None, qidx: int) -> tuple[dict[str, float], str]:
    """The household columns a history (:func:`history_records`) gives a snapshot of quarter
    ``qidx``, and its source: the ledger's latest quarter L (``"ledger:L"``) when ``qidx >= L``,
    else nothing (``"none"``: an earlier quarter cannot use a history that knows its future)."""
    from fangpin import quarters as fq

    if not history:
        return {}, "none"
    if history.get("v") != HISTORY_VERSION:
        raise ValueError(f"history version {history.get('v')!r} is not {HISTORY_VERSION}")
    latest = fq.to_index(history["quarter"])
    if qidx < latest:
        return {}, "none"
    part = history["same"] if qidx == latest else history["next"]
    cols = {k: (np.nan if v is None else float(v)) for k, v in part.items()}
    if qidx > latest + 1:  # no snapshot of the quarter before: no changes, as in the batch
        cols.update({c: np.nan for c in LAG_COLUMNS})
    return cols, f"ledger:{history['quarter']}"


def place_contexts(feats: Table) -> dict[tuple[str, str, str], dict]:
    """Local context of every place in a feature table of one quarter (a county's whole ledger):
    ``(county, township, village)`` → the village's :data:`CONTEXT` values, and
    ``(county, township, "")`` → the township's; each with the ``quarter`` they describe."""
    from fangpin import quarters as fq

    out: dict[tuple[str, str, str], dict] = {}
    cols = [np.asarray(feats[c], dtype=object) for c in ("county", "township", "village")]
    vals = {c: np.asarray(feats[c], dtype=np.float64) for c in CONTEXT}
    q = np.asarray(feats["quarter_idx"], dtype=np.int64)
    # the first row of each village (setdefault below keeps the first row's values; the first row
    # of a township is the first row of one of its villages)
    first = np.flatnonzero(~pd.DataFrame({"c": cols[0], "t": cols[1], "v": cols[2]}).astype(str).duplicated().to_numpy())
    for i in first.tolist():
        county, township, village = (str(c[i]) for c in cols)
        quarter = fq.from_index(int(q[i]))
        out.setdefault((county, township, ""), {
            "quarter": quarter, "township_disaster_share": _f(vals["township_disaster_share"][i]),
            "township_ident_rate_4q": _f(vals["township_ident_rate_4q"][i])})
        out.setdefault((county, township, village), {
            "quarter": quarter, "village_disaster_share": _f(vals["village_disaster_share"][i])})
    return out


def context_columns(context: Mapping | None, qidx: int) -> dict[str, float]:
    """The :data:`CONTEXT` columns a place context (merged township and village entries of
    :func:`place_contexts`) gives a snapshot of quarter ``qidx``: used when it describes that
    quarter or an earlier one."""
    from fangpin import quarters as fq

    if not context or fq.to_index(context["quarter"]) > qidx:
        return {}
    return {c: (np.nan if context.get(c) is None else float(context[c])) for c in CONTEXT}


_PERSON_OUT = tuple(c.name for c in contract.LEDGER_COLUMNS if c.level == "person"
                    and c.name not in ("id_number", "name")) + ("school_grade", "age", "person_key", "id_masked")


def snapshot_table(frames: Frames, qidx: int, household_ids=None, event_quarters: int = 4):
    """Households of quarter ``qidx`` from canonical tables, as an Arrow table built column by
    column (one row per household): household fields, ``members`` (a list of structs: contract
    fields without name and ID number; with ``person_key`` and ``id_masked``) and ``events`` (the
    department events of the ``event_quarters`` quarters up to ``qidx``, with ``person_key``).
    ``household_ids`` restricts and orders the households. Dates are ISO text, missing values null;
    :func:`record_of` turns a row into the canonical JSON record (:func:`snapshot_records`)."""
    import pyarrow as pa

    hh = frames.households
    hh = hh[hh["quarter_idx"] == qidx]
    if household_ids is not None:
        wanted = np.asarray(list(household_ids), dtype=object)
        if not np.array_equal(hh["household_id"].astype(str).to_numpy(dtype=object), wanted):  # (batch: already so)
            hh = hh.set_index("household_id").loc[wanted.tolist()].reset_index()
    order = pd.Index(hh["household_id"].astype(str))
    order_text = None if order.has_duplicates else _text(order)  # None: the pandas Index (duplicates: an error)
    h_fields = [c for c in contract.HOUSEHOLD_FIELDS if c in hh.columns]
    cols = dict(zip(h_fields, _arrow_columns(hh, h_fields), strict=True))
    persons = frames.persons
    persons = persons[persons["quarter_idx"] == qidx]
    for part, table, fields in (
            ("members", persons, [c for c in _PERSON_OUT if c in persons.columns]),
            ("events", _recent(frames.events, qidx, event_quarters),
             ["person_key", "event_date", "department", "event_type", "amount"])):
        if table is None or not len(table):
            table, pos = None, np.array([], dtype=np.int64)
        else:
            pos = None if order_text is None else text_positions(table["household_id"].astype(str), order_text)
            if pos is None:
                pos = order.get_indexer(table["household_id"].astype(str))
            if (pos < 0).any():
                keep = np.flatnonzero(pos >= 0)
                table, pos = table.iloc[keep], pos[keep]
            fields = [f for f in fields if f in table.columns]
        by = None if (np.diff(pos) >= 0).all() else pa.array(np.argsort(pos, kind="stable"))  # each household's
        # rows in table order; None: they are so already (a ledger lists a household's members together)
        if table is None:
            items = pa.array([], type=pa.struct([]))
        else:
            items = pa.StructArray.from_arrays([a if by is None else a.take(by) for a in _arrow_columns(table, fields)],
                                               names=fields) if fields else pa.array([{}] * len(pos))
        offsets = np.zeros(len(order) + 1, dtype=np.int32)
        np.cumsum(np.bincount(pos, minlength=len(order)), out=offsets[1:])
        cols[part] = pa.ListArray.from_arrays(pa.array(offsets), items)
    return pa.table(cols)


def _arrow_columns(df: pd.DataFrame, fields: list[str]) -> list:
    """Columns of ``df`` as Arrow arrays of JSON values: dates as ISO text, missing as null."""
    import pyarrow as pa

    out = []
    for f in fields:
        s = df[f]
        if pd.api.types.is_datetime64_any_dtype(s.dtype) and s.dt.tz is None:  # ISO dates in Arrow, the
            # text type pandas' strftime gives (5x faster than strftime on a chunk's birth dates)
            out.append(pa.Array.from_pandas(s.reset_index(drop=True)).cast(pa.date32()).cast(pa.large_string()))
            continue
        if pd.api.types.is_datetime64_any_dtype(s.dtype):
            s = s.dt.strftime("%Y-%m-%d")
        if s.dtype == object:  # Python or numpy scalars: as _plain gives them
            a = pa.array([_plain(v) for v in s.tolist()], from_pandas=True)
        else:
            a = pa.Array.from_pandas(s.reset_index(drop=True))
        out.append(a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a)  # Arrow-backed columns
    return out


def record_of(row: dict) -> dict:
    """A row of :func:`snapshot_table` (``to_pylist()``) as the canonical JSON record: a missing
    field (null) is left out of the household and of each member and event."""
    rec = {f: v for f, v in row.items() if v is not None and f not in ("members", "events")}
    for part in ("members", "events"):
        rec[part] = [{f: v for f, v in m.items() if v is not None} for m in row.get(part) or ()]
    return rec


def snapshot_records(frames: Frames, qidx: int, household_ids=None, event_quarters: int = 4) -> list[dict]:
    """Households of quarter ``qidx`` in the canonical JSON form, from canonical tables (the
    ledger's snapshot of a household as a record that can be scored alone): the rows of
    :func:`snapshot_table` as records (:func:`record_of`)."""
    return [record_of(r) for r in snapshot_table(frames, qidx, household_ids, event_quarters).to_pylist()]


def _recent(events, qidx: int, quarters: int):
    if events is None or not len(events):
        return None
    q = events["quarter_idx"]
    return events[(q <= qidx) & (q > qidx - quarters)]


def _plain(v):
    """A JSON value: dates as ISO text, numpy scalars as Python, missing as None."""
    if v is None:
        return None
    if isinstance(v, pd.Timestamp | date):
        return v.strftime("%Y-%m-%d")
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        return v
    return v.item() if isinstance(v, np.generic) else v


def _table(rows: list[dict], columns: Iterable[str]) -> Table:
    """Rows (dicts) → a :class:`Table`; a field a row lacks is None. ``quarter_idx`` is int64."""
    out = {}
    for c in dict.fromkeys(columns):
        a = np.empty(len(rows), dtype=object)
        a[:] = [r.get(c) for r in rows]
        out[c] = a.astype(np.int64) if c == "quarter_idx" else a
    return Table(out, len(rows))


def _date(v) -> date | None:
    """A calendar date (datetime.date) or None when missing or not a date."""
    if v is None or v == "":
        return None
    if type(v) is date:
        return v
    if isinstance(v, str) and len(v) == 10 and v[4] == "-":  # ISO date: the common case, parsed cheaply
        try:
            return date.fromisoformat(v)
        except ValueError:
            return None
    if isinstance(v, str) and len(v) == 8 and v.isdigit():  # YYYYMMDD (the birth date in an ID number)
        try:
            return date(int(v[:4]), int(v[4:6]), int(v[6:]))
        except ValueError:
            return None
    d = pd.to_datetime(v, errors="coerce")
    return None if pd.isna(d) else pd.Timestamp(d).normalize().date()


def _age_at(member: Mapping, end: date) -> float | None:
    bd = member.get("birth_date")
    if bd in (None, "") and member.get("id_number"):
        s = str(member["id_number"])
        bd = s[6:14] if len(s) == 18 else None
    if bd in (None, ""):
        return None
    d = _date(bd if type(bd) is date or (isinstance(bd, str) and len(bd) == 10) else str(bd))
    if d is None:
        return None
    return float(end.year - d.year - ((end.month, end.day) < (d.month, d.day)))
