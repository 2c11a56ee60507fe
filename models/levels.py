"""Warning levels (domain.md, Lu'an): 红 (一级) > 黄 (二级) > 蓝 (三级); no level = no warning.

Model levels come from params.levels: probability cut-offs, or a per-township visit capacity (the
top ``capacity_per_township`` households of each township and quarter by probability get a warning,
graded by the cut-offs but at least 蓝). The combined level is ``max(rule level, model level)``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fangpin.config import LevelParams
from fangpin.warnings import LEVELS, severity

RANK = {None: 0, **{lvl: severity(lvl) for lvl in LEVELS}}  # 0 no warning … 3 红 (fangpin.warnings)
_BY_RANK = np.array(sorted(RANK, key=RANK.__getitem__), dtype=object)


def rank(levels) -> np.ndarray:
    """Levels (红/黄/蓝/None) → 3/2/1/0."""
    return np.fromiter((severity(v) for v in levels), dtype=np.int8, count=len(levels))


def from_rank(r: np.ndarray) -> np.ndarray:
    return _BY_RANK[np.asarray(r, dtype=np.int64)]


def cutoff_rank(prob: np.ndarray, p: LevelParams) -> np.ndarray:
    prob = np.asarray(prob, dtype=np.float64)
    return np.select([prob >= p.red, prob >= p.yellow, prob >= p.blue], [3, 2, 1], 0).astype(np.int8)


def model_rank(prob: np.ndarray, p: LevelParams, township=None, quarter=None) -> np.ndarray:
    """Model level ranks for probabilities (see module doc)."""
    r = cutoff_rank(prob, p)
    if p.mode == "cutoffs":
        return r
    if township is None or quarter is None:
        raise ValueError("capacity mode needs the township and quarter of every row")
    df = pd.DataFrame({"t": np.asarray(township), "q": np.asarray(quarter), "p": np.asarray(prob, dtype=float)})
    pos = df.groupby(["t", "q"], sort=False)["p"].rank(method="first", ascending=False).to_numpy()
    within = pos <= p.capacity_per_township
    return np.where(within, np.maximum(r, 1), 0).astype(np.int8)


def combine(rule_rank: np.ndarray, model_rank_: np.ndarray) -> np.ndarray:
    """The combined decision: max(rule level, model level). A rule hit is always a warning."""
    return np.maximum(np.asarray(rule_rank, dtype=np.int8), np.asarray(model_rank_, dtype=np.int8))
