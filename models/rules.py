"""The rule guardrail: a versioned ruleset whose thresholds live in params.yaml (``rules``).

Each rule reads the household's own figures from the feature frame (models.features) and, when it
fires, yields a hit ``{"rule_id", "level", "text", "threshold"}`` with a Chinese sentence naming those
figures. Rules are evaluated vectorised over a whole frame; one household is a frame of one row.
A household's rule level is the highest level among its hits; the combined decision is
``max(rule level, model level)`` (models.levels.combine), so a rule hit is always a warning.

The rules and their levels (domain.md, Lu'an levels; 两不愁三保障 and safe water):

| id | level | fires when |
|---|---|---|
| R01_INCOME_BELOW_LINE | 红 | per-capita net income below the year's monitoring line |
| R02_INCOME_NEAR_LINE | 黄 | income at or above the line but below line × (1 + income_margin) |
| R03_RIGID_SPENDING | 红 | compliant out-of-pocket medical spending over rigid_spending_share of household net income |
| R04_UNSAFE_HOUSING | 红 | 危房 (safe housing not secured) |
| R05_NO_SAFE_WATER | 红 | safe drinking water not secured |
| R06_NO_MEDICAL_INSURANCE | 红 | an ill or disabled member without basic medical insurance (basic medical care not secured; a healthy uninsured member is an enrolment task for 医保, not a 返贫 warning) |
| R07_OUT_OF_SCHOOL | 红 | a child of compulsory-school age (7–15) not in school |
| R08_NO_LABOUR_NO_SUPPORT | 红 | no member with labour or weak labour and neither 低保 nor 特困 |
| R09_SEVERE_EVENT | 黄 | a severe department event (severe_event_types, amount ≥ severe_event_min_amount) in the last severe_event_quarters quarters |

Changing what a rule means requires a new ``rules.version``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from fangpin.config import RuleParams
from models.features import _col, event_window
from models.levels import RANK, from_rank

RULE_LEVELS = {
    "R01_INCOME_BELOW_LINE": "红",
    "R02_INCOME_NEAR_LINE": "黄",
    "R03_RIGID_SPENDING": "红",
    "R04_UNSAFE_HOUSING": "红",
    "R05_NO_SAFE_WATER": "红",
    "R06_NO_MEDICAL_INSURANCE": "红",
    "R07_OUT_OF_SCHOOL": "红",
    "R08_NO_LABOUR_NO_SUPPORT": "红",
    "R09_SEVERE_EVENT": "黄",
}


def _yuan(x: float) -> str:
    return f"{x:,.0f}元"


def _pct(x: float) -> str:
    return f"{x:.0%}"


@dataclass(frozen=True)
class Ruleset:
    version: str
    income_margin: float
    rigid_spending_share: float
    severe_event_quarters: int
    severe_event_types: tuple[str, ...]
    severe_event_min_amount: float

    @classmethod
    def from_params(cls, p: RuleParams) -> Ruleset:
        return cls(version=p.version, income_margin=p.income_margin, rigid_spending_share=p.rigid_spending_share,
                   severe_event_quarters=p.severe_event_quarters, severe_event_types=tuple(p.severe_event_types),
                   severe_event_min_amount=p.severe_event_min_amount)

    def to_json(self) -> str:
        d = asdict(self)
        d["levels"] = RULE_LEVELS
        return json.dumps(d, ensure_ascii=False, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Ruleset:
        d = json.loads(text)
        d.pop("levels", None)
        d["severe_event_types"] = tuple(d["severe_event_types"])
        return cls(**d)

    # ------------------------------------------------------------------------------------------

    def evaluate(self, feats: pd.DataFrame, events: pd.DataFrame | None) -> pd.DataFrame:
        """Rule hits for every row of a feature frame (models.features.build_features).

        Returns a frame aligned with ``feats``: ``rule_hits`` (list of hit dicts, empty when none),
        ``rule_rank`` (0 none, 1 蓝, 2 黄, 3 红) and ``rule_level`` (红/黄/蓝/None).
        """
        cols = self.evaluate_columns(feats, events)
        return pd.DataFrame({"rule_hits": pd.Series(cols["rule_hits"], dtype=object, index=feats.index),
                             "rule_rank": pd.Series(cols["rule_rank"], index=feats.index),
                             "rule_level": pd.Series(cols["rule_level"], index=feats.index, dtype=object)})

    def evaluate_columns(self, feats, events) -> dict[str, np.ndarray]:
        """:meth:`evaluate` as numpy columns, for a feature DataFrame or a feature
        :class:`models.features.Table` (what RiskModel.score uses)."""
        n = len(feats)
        hits: list[list[dict]] = [[] for _ in range(n)]
        rr = np.zeros(n, dtype=np.int8)

        def add(rule_id: str, mask: np.ndarray, text_fn, threshold_fn) -> None:
            idx = np.flatnonzero(mask)
            rr[idx] = np.maximum(rr[idx], RANK[RULE_LEVELS[rule_id]])
            for i in idx:
                hits[i].append({"rule_id": rule_id, "level": RULE_LEVELS[rule_id], "text": text_fn(i),
                                "threshold": threshold_fn(i)})

        f = {c: _col(feats, c) for c in (
            "income_per_capita", "line", "year", "household_net_income", "medical_oop", "unsafe_housing",
            "no_safe_water", "n_uninsured_sick", "n_out_of_school_child", "dibao", "tekun", "n_members")}
        labour = _col(feats, "labor_class")
        ipc, line, year = f["income_per_capita"], f["line"], f["year"]
        with np.errstate(invalid="ignore"):
            below = ipc < line
            upper = line * (1 + self.income_margin)
            near = (ipc >= line) & (ipc < upper)
        add("R01_INCOME_BELOW_LINE", below,
            lambda i: f"人均纯收入{_yuan(ipc[i])}，低于{int(year[i])}年监测线{_yuan(line[i])}",
            lambda i: f"{int(year[i])}年监测线{_yuan(line[i])}")
        add("R02_INCOME_NEAR_LINE", near,
            lambda i: (f"人均纯收入{_yuan(ipc[i])}，高于{int(year[i])}年监测线{_yuan(line[i])}不足"
                       f"{_pct(self.income_margin)}（{_yuan(upper[i])}）"),
            lambda i: f"监测线上浮{_pct(self.income_margin)}（{_yuan(upper[i])}）")

        inc, oop = f["household_net_income"], np.nan_to_num(f["medical_oop"].astype(float))
        with np.errstate(invalid="ignore", divide="ignore"):
            rigid = (oop > 0) & ((inc <= 0) | (oop > self.rigid_spending_share * inc))

        def rigid_text(i: int) -> str:
            if inc[i] <= 0:
                return f"合规自付医疗支出{_yuan(oop[i])}，家庭年纯收入仅{_yuan(inc[i])}"
            return (f"合规自付医疗支出{_yuan(oop[i])}，占家庭年纯收入{_yuan(inc[i])}的{_pct(oop[i] / inc[i])}，"
                    f"超过{_pct(self.rigid_spending_share)}")

        add("R03_RIGID_SPENDING", rigid, rigid_text,
            lambda i: f"合规自付支出超过家庭年纯收入的{_pct(self.rigid_spending_share)}")
        add("R04_UNSAFE_HOUSING", f["unsafe_housing"] == 1, lambda i: "住房为危房（是否危房户：是）",
            lambda i: "住房安全有保障")
        add("R05_NO_SAFE_WATER", f["no_safe_water"] == 1, lambda i: "尚未解决安全饮用水",
            lambda i: "饮水安全有保障")
        unins = f["n_uninsured_sick"]
        add("R06_NO_MEDICAL_INSURANCE", unins > 0,
            lambda i: f"家庭成员{int(unins[i])}人患病或残疾，未参加城乡居民基本医疗保险",
            lambda i: "基本医疗有保障（患病、残疾成员参加基本医疗保险）")
        oos = f["n_out_of_school_child"]
        add("R07_OUT_OF_SCHOOL", oos > 0, lambda i: f"义务教育阶段适龄儿童{int(oos[i])}人未在校",
            lambda i: "义务教育有保障（7至15岁适龄儿童在校）")
        no_support = (labour == "无劳动力") & (f["dibao"] != 1) & (f["tekun"] != 1) & (f["n_members"] > 0)
        add("R08_NO_LABOUR_NO_SUPPORT", no_support,
            lambda i: f"家庭{int(f['n_members'][i])}人均无劳动能力，且未享受低保或特困供养",
            lambda i: "无劳动力家庭应纳入低保或特困供养兜底")

        sev = event_window(events, feats, self.severe_event_quarters, self.severe_event_types,
                           self.severe_event_min_amount)
        if len(sev):
            when = "本季度" if self.severe_event_quarters == 1 else f"近{self.severe_event_quarters}个季度"
            types_txt = "、".join(self.severe_event_types)
            thr = f"{when}发生{types_txt}事件" + (
                f"（金额不低于{_yuan(self.severe_event_min_amount)}）" if self.severe_event_min_amount > 0 else "")
            # (row, event type) groups in sorted order: count and total amount of each
            ut, tcode = np.unique(np.asarray(sev["event_type"], dtype=str), return_inverse=True)
            uk, inv = np.unique(sev["row"] * len(ut) + tcode.ravel(), return_inverse=True)
            sizes = np.bincount(inv.ravel())
            sums = np.bincount(inv.ravel(), weights=np.nan_to_num(sev["amount"].astype(np.float64)))
            texts: dict[int, list[str]] = {}
            for key, k, amt in zip(uk.tolist(), sizes.tolist(), sums.tolist(), strict=True):
                row, et = divmod(key, len(ut))
                texts.setdefault(row, []).append(f"{ut[et]}{k}次" + (f"（{_yuan(amt)}）" if amt > 0 else ""))
            for row, parts in texts.items():
                rr[row] = max(rr[row], RANK[RULE_LEVELS["R09_SEVERE_EVENT"]])
                hits[row].append({"rule_id": "R09_SEVERE_EVENT", "level": RULE_LEVELS["R09_SEVERE_EVENT"],
                                  "text": f"{when}部门推送：" + "、".join(parts), "threshold": thr})

        levels = from_rank(rr)
        hits_arr = np.empty(n, dtype=object)
        hits_arr[:] = hits
        return {"rule_hits": hits_arr, "rule_rank": rr, "rule_level": levels}


def rule_ids() -> Sequence[str]:
    return tuple(RULE_LEVELS)
