"""Warning levels (domain.md, Lu'an): 红 (一级) > 黄 (二级) > 蓝 (三级); no level = no warning.

Levels mean measured risk and fit the township (docs/warnings.md "Levels"). For each township and
quarter (a *group*), from the model's raw score (the calibrated probability is a strictly
increasing function of it, so both rank alike) and ``params.levels``:

1. **Risk bands.** The group's in-scope households are ranked by raw score; the top
   ``red_share`` of them are 红 by risk, the next ``yellow_share`` 黄, the next ``blue_share`` 蓝
   (shares, not probabilities: a county with three times the base rate still warns the same share
   of its households, and the most likely first). A band is a raw-score cut-off (inclusive), so
   equal scores get equal levels.
2. **Rule floors.** A rule hit lifts the household to at least its rule's floor
   (``rule_floors``); a rule without a floor is not a warning by itself but a 保障缺口 task
   (fangpin/tasks.py). :func:`check_coverage` refuses a rule with neither, so a hit is never lost.
   ``pre = max(floor, band)``.
3. **Capacity.** At most ``capacity_per_township`` in-scope households of the group stay 红 (due
   within the verification deadline), highest raw score first: a capacity cut-off on the raw
   score of the 红 candidates (ties at the boundary are all moved, so the cap holds). The other
   红 candidates become 黄 (the next monthly visit), flagged ``deferred``; their count is the
   group's ``shortfall``.

Every level is a function of (raw score, floor, the group's four cut-offs): batch scoring
computes the cut-offs from the whole township (:func:`group_thresholds`) and applies them with
:func:`apply`; the API applies the cut-offs the batch stored for the township and quarter (or the
training-time ones the model carries, :func:`fallback_thresholds`) with the same function, so a
household gets the same level on both paths.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fangpin.config import LevelParams
from fangpin.warnings import LEVELS, severity

RANK = {None: 0, **{lvl: severity(lvl) for lvl in LEVELS}}  # 0 no warning … 3 红 (fangpin.warnings)
_BY_RANK = np.array(sorted(RANK, key=RANK.__getitem__), dtype=object)
INF = math.inf
CUTS = ("t_red", "t_yellow", "t_blue", "t_capacity")  # a group's raw-score cut-offs, in this order
STATS = ("n_in_scope", "n_red_wanted", "n_red", "n_yellow", "n_blue", "shortfall")


def rank(levels) -> np.ndarray:
    """Levels (红/黄/蓝/None) → 3/2/1/0."""
    return np.fromiter((severity(v) for v in levels), dtype=np.int8, count=len(levels))


def from_rank(r: np.ndarray) -> np.ndarray:
    return _BY_RANK[np.asarray(r, dtype=np.int64)]


def combine(floor_rank: np.ndarray, band_rank: np.ndarray) -> np.ndarray:
    """max(rule floor, risk band): a rule with a floor always gives a warning."""
    return np.maximum(np.asarray(floor_rank, dtype=np.int8), np.asarray(band_rank, dtype=np.int8))


# ----------------------------------------------------------------------------------------------
# rule floors


class CoverageError(ValueError):
    pass


def check_coverage(p: LevelParams, routes: Mapping, rule_ids: Sequence[str]) -> None:
    """Every rule must have a level floor (``levels.rule_floors``), a task route
    (``tasks.routes``) or both: a rule hit is always a warning or a task."""
    missing = [r for r in rule_ids if p.rule_floors.get(r) is None and r not in routes]
    if missing:
        raise CoverageError(
            f"rules {missing} have neither a level floor (levels.rule_floors) nor a task route "
            f"(tasks.routes): their hits would be neither a warning nor a task")
    unknown = sorted((set(p.rule_floors) | set(routes)) - set(rule_ids))
    if unknown:
        raise CoverageError(f"levels.rule_floors / tasks.routes name unknown rules {unknown}; "
                            f"known: {list(rule_ids)}")


def floor_ranks(rule_hits: Sequence, p: LevelParams) -> np.ndarray:
    """Per row: the highest floor among its rule hits (0 when no hit has a floor)."""
    floor = {r: RANK[v] for r, v in p.rule_floors.items() if v is not None}
    out = np.zeros(len(rule_hits), dtype=np.int8)
    for i, hits in enumerate(rule_hits):
        if hits is not None and len(hits):
            out[i] = max((floor.get(h["rule_id"], 0) for h in hits), default=0)
    return out


def floored_hits(hits: Sequence[Mapping], p: LevelParams) -> list[dict]:
    """The hits of rules with a floor, each labelled with its floor level (what a warning shows
    under 规则触发; hits of rules without a floor are tasks)."""
    return [{**h, "level": p.rule_floors[h["rule_id"]]} for h in (hits or ())
            if p.rule_floors.get(h["rule_id"]) is not None]


# ----------------------------------------------------------------------------------------------
# cut-offs and levels


def _count(share: float, n: int) -> int:
    return int(math.ceil(share * n - 1e-9))


def band_cutoffs(raw_desc: np.ndarray, p: LevelParams) -> tuple[float, float, float]:
    """Raw-score cut-offs (t_red, t_yellow, t_blue) of one group from its in-scope raw scores
    sorted descending: the score of the last household inside each cumulative share."""
    n = len(raw_desc)
    out = []
    for share in (p.red_share, p.red_share + p.yellow_share, p.red_share + p.yellow_share + p.blue_share):
        k = _count(share, n)
        out.append(float(raw_desc[k - 1]) if k > 0 else INF)
    return out[0], out[1], out[2]


def capacity_cutoff(red_raw: np.ndarray, capacity: int) -> float:
    """The smallest raw score kept at 红 among a group's 红 candidates so that at most
    ``capacity`` stay (``-inf`` when they all fit). Candidates tied at the boundary all move."""
    if len(red_raw) <= capacity:
        return -INF
    r = np.sort(np.asarray(red_raw, dtype=np.float64))[::-1]
    t = r[capacity - 1]
    if r[capacity] < t:
        return float(t)
    above = r[r > t]
    return float(above.min()) if len(above) else INF


def band_ranks(raw: np.ndarray, t_red, t_yellow, t_blue) -> np.ndarray:
    raw = np.asarray(raw, dtype=np.float64)
    return np.select([raw >= t_red, raw >= t_yellow, raw >= t_blue], [3, 2, 1], 0).astype(np.int8)


def apply(raw: np.ndarray, floor_rank: np.ndarray, cuts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Levels from raw scores, rule floors and per-row cut-offs ``cuts`` (n × 4, :data:`CUTS`;
    NaN rows: no cut-offs known → no risk band, no cap).

    Returns (band rank, combined rank, deferred): the risk band, the combined level after the
    capacity cap, and whether a 红 candidate was moved to 黄 by the cap."""
    raw = np.asarray(raw, dtype=np.float64)
    cuts = np.asarray(cuts, dtype=np.float64).reshape(len(raw), 4)
    known = ~np.isnan(cuts).any(axis=1)
    t = np.where(known[:, None], cuts, np.array([INF, INF, INF, -INF]))
    band = band_ranks(raw, t[:, 0], t[:, 1], t[:, 2])
    pre = combine(floor_rank, band)
    deferred = (pre == 3) & (raw < t[:, 3])
    combined = np.where(deferred, np.int8(2), pre).astype(np.int8)
    return band, combined, deferred


@dataclass(frozen=True)
class Assigned:
    """Levels of scored rows: ``band`` (risk band), ``floor`` (rule floor), ``combined`` (the
    warning level, capacity applied), ``deferred`` (a 红 candidate moved to 黄 by the cap) as
    ranks 0-3; ``groups``: the cut-offs and counts of each township-quarter when computed from the
    rows (batch), else None (API: cut-offs looked up)."""

    band: np.ndarray
    floor: np.ndarray
    combined: np.ndarray
    deferred: np.ndarray
    groups: pd.DataFrame | None = None


def _groups(columns: list[np.ndarray]) -> tuple[np.ndarray, list[tuple]]:
    """Group number of each row by the values of ``columns`` (numbered in order of first
    appearance) and each group's values: what ``pd.MultiIndex.from_frame(...).factorize()``
    gives, from one factorisation per column (a third of the time on a chunk's 50,000 rows)."""
    code = np.zeros(len(columns[0]), dtype=np.int64)
    for c in columns:
        k, u = pd.factorize(c, use_na_sentinel=False)
        code = code * len(u) + k
    gid, _ = pd.factorize(code)
    first = np.unique(gid, return_index=True)[1]
    return gid.astype(np.int64, copy=False), [tuple(c[i] for c in columns) for i in first.tolist()]


def group_thresholds(raw: np.ndarray, floor_rank: np.ndarray, in_scope: np.ndarray, county, township,
                     quarter, p: LevelParams) -> tuple[pd.DataFrame, np.ndarray]:
    """The cut-offs of every (county, township, quarter) group from its in-scope rows, and the
    n × 4 cut-offs of every row. Groups with no in-scope row get no cut-offs (NaN)."""
    raw = np.asarray(raw, dtype=np.float64)
    ins = np.asarray(in_scope, dtype=bool)
    gid, uniq = _groups([pd.Series(np.asarray(county, dtype=object)).fillna("").to_numpy(dtype=object),
                         pd.Series(np.asarray(township, dtype=object)).fillna("").to_numpy(dtype=object),
                         np.asarray(quarter, dtype=object)])
    cuts = np.full((len(raw), 4), np.nan)
    rows = []
    order = np.lexsort((-raw, gid))  # by group, raw descending within
    starts = np.searchsorted(gid[order], np.arange(len(uniq) + 1))
    for g in range(len(uniq)):
        idx = order[starts[g]:starts[g + 1]]
        mine = idx[ins[idx]]
        if not len(mine):
            continue
        r = raw[mine]  # descending
        t_red, t_yellow, t_blue = band_cutoffs(r, p)
        pre = combine(floor_rank[mine], band_ranks(r, t_red, t_yellow, t_blue))
        t_cap = capacity_cutoff(r[pre == 3], p.capacity_per_township)
        cuts[idx] = (t_red, t_yellow, t_blue, t_cap)
        _, comb, _ = apply(r, floor_rank[mine], np.tile([t_red, t_yellow, t_blue, t_cap], (len(r), 1)))
        c, t, q = uniq[g]
        wanted, red = int((pre == 3).sum()), int((comb == 3).sum())
        rows.append({"county": c, "township": t, "quarter": q, "t_red": t_red, "t_yellow": t_yellow,
                     "t_blue": t_blue, "t_capacity": t_cap, "n_in_scope": len(mine), "n_red_wanted": wanted,
                     "n_red": red, "n_yellow": int((comb == 2).sum()), "n_blue": int((comb == 1).sum()),
                     "shortfall": wanted - red, "capacity": p.capacity_per_township})
    cols = ["county", "township", "quarter", *CUTS, *STATS, "capacity"]
    return pd.DataFrame(rows, columns=cols), cuts


Lookup = Callable[[str, str, str], Sequence[float] | None]


def assign(raw: np.ndarray, rule_hits: Sequence, in_scope: np.ndarray, county, township, quarter,
           p: LevelParams, lookup: Lookup | None = None) -> Assigned:
    """Levels of scored rows (module doc). ``lookup=None``: the rows are whole townships (batch,
    evaluation) and the cut-offs are computed from them; else ``lookup(county, township, quarter)``
    gives each row's stored cut-offs (None: unknown → no risk band; floors still apply)."""
    raw = np.asarray(raw, dtype=np.float64)
    floor = floor_ranks(rule_hits, p)
    groups = None
    if lookup is None:
        groups, cuts = group_thresholds(raw, floor, in_scope, county, township, quarter, p)
    else:
        cuts = np.full((len(raw), 4), np.nan)
        memo: dict = {}
        for i, key in enumerate(zip(np.asarray(county, dtype=object), np.asarray(township, dtype=object),
                                    np.asarray(quarter, dtype=object), strict=True)):
            if key not in memo:
                memo[key] = lookup(*key)
            if memo[key] is not None:
                cuts[i] = memo[key]
    band, combined, deferred = apply(raw, floor, cuts)
    return Assigned(band, floor, combined, deferred, groups)


# ----------------------------------------------------------------------------------------------
# cut-offs the model carries (training time) and the lookup the API uses


def fallback_thresholds(groups: pd.DataFrame, period: str) -> dict:
    """Training-time cut-offs to carry in the model: per "county/township" and overall ("*": the
    median of each cut-off over the groups), labelled with the quarter(s) they come from."""
    out: dict = {"period": period, "groups": {}, "*": None}
    if groups is None or groups.empty:
        return out
    for r in groups.itertuples(index=False):
        out["groups"][f"{r.county}/{r.township}"] = [_finite(getattr(r, c)) for c in CUTS]
    med = []
    for c in CUTS:
        v = groups[c].to_numpy(dtype=np.float64)
        med.append(_finite(float(np.median(v))))
    out["*"] = med
    return out


def _finite(v: float) -> float | str:
    """JSON-safe cut-off: ±inf as the strings "inf" / "-inf"."""
    return v if math.isfinite(v) else ("inf" if v > 0 else "-inf")


def from_json(v) -> float:
    return float(v)


def carried_lookup(levels_ref: Mapping | None) -> Lookup:
    """Cut-offs from a model's training-time ``reference["levels"]``: the township's, else the
    overall median, else none."""
    ref = levels_ref or {}
    groups = ref.get("groups", {})
    overall = ref.get("*")

    def lookup(county: str, township: str, quarter: str):
        v = groups.get(f"{county}/{township}", overall)
        return None if v is None else [from_json(x) for x in v]

    return lookup


def chained(*lookups: Lookup | None) -> Lookup:
    """The first lookup that knows the group."""
    ls = [f for f in lookups if f is not None]

    def lookup(county: str, township: str, quarter: str):
        for f in ls:
            v = f(county, township, quarter)
            if v is not None:
                return v
        return None

    return lookup
