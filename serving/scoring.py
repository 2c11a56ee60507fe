"""Validated households → the registered model → per-household results.

The model's own entry point for the canonical JSON form (``RiskModel.score_records``, the same code
the MLflow pyfunc runs) does features, LightGBM, calibration, rules and levels, as numpy arrays
(no pandas per request). Levels use the cut-offs the last batch run stored for the household's
township and quarter (:class:`StoredThresholds`; else the training-time ones the model carries),
so a household gets the level the batch gave it. Reasons, figures and suggested measures for the
warned households come from :attr:`LoadedModel.explainer` (models.explain); 保障缺口 tasks from the
rule hits and ``params.tasks.routes`` (fangpin.tasks).
"""

from __future__ import annotations

import bisect
import threading
import time

from fangpin.tasks import routed
from fangpin.warnings import max_level, visit_list
from models.levels import floored_hits
from serving.model import LoadedModel
from serving.schemas import HouseholdScore


def _level(v) -> str | None:
    return v if isinstance(v, str) and v in ("红", "黄", "蓝") else None


def records(households) -> list[dict]:
    """Validated :class:`fangpin.household_json.HouseholdIn` objects as plain records. Household
    ids are replaced by position keys: households batched together never share a history."""
    out = []
    for i, h in enumerate(households):
        r = h.model_dump()
        r["household_id"] = f"#{i}"
        out.append(r)
    return out


class StoredThresholds:
    """The level cut-offs batch runs stored (``Store.level_thresholds``), per model version,
    re-read after ``refresh_s`` seconds. ``lookup(version)(county, township, quarter)`` gives the
    township's cut-offs of that quarter, else of its latest earlier stored quarter, else None."""

    def __init__(self, store, refresh_s: float = 60.0):
        self._store = store
        self._refresh_s = float(refresh_s)
        self._cache: dict[str, tuple[float, dict]] = {}
        self._lock = threading.Lock()

    def _table(self, version: str) -> dict:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(version)
            if hit is not None and now - hit[0] < self._refresh_s:
                return hit[1]
        by_place: dict = {}
        for (q, c, t), cuts in sorted(self._store.level_thresholds(version).items()):
            by_place.setdefault((c, t), ([], []))
            by_place[(c, t)][0].append(q)
            by_place[(c, t)][1].append(cuts)
        with self._lock:
            self._cache[version] = (now, by_place)
        return by_place

    def lookup(self, version: str):
        table = self._table(str(version))

        def find(county: str, township: str, quarter: str):
            qs = table.get((county, township))
            if not qs:
                return None
            i = bisect.bisect_right(qs[0], str(quarter)) - 1  # YYYYQn sorts in time order
            return qs[1][i] if i >= 0 else None

        return find


def score_households(m: LoadedModel, households, params, thresholds: StoredThresholds | None = None
                     ) -> list[HouseholdScore]:
    explain = m.explainer is not None
    lookup = thresholds.lookup(m.version) if thresholds is not None else None
    s = m.scorer.score_records(records(households), explain="none", as_frame=False, thresholds=lookup)
    if len(s) != len(households):
        raise ValueError(f"model returned {len(s)} rows for {len(households)} households")
    col = s.columns
    reasons = measures = summaries = None
    if explain:  # the single switch: reasons and measures for every warned household
        reasons, measures, summaries = m.explainer(s)
    w = params.warnings
    out = []
    for i, h in enumerate(households):
        level = _level(col["combined_level"][i])
        hits = list(col["rule_hits"][i] or ())
        shown = floored_hits(hits, m.scorer.levels)  # a warning's rule hits; the other hits are tasks
        deferred = bool(col["deferred"][i])
        summ = summaries[i] if summaries is not None and summaries[i] is not None else {}
        out.append(HouseholdScore(
            household_id=h.household_id, quarter=h.quarter, county=h.county, township=h.township,
            village=h.village, in_scope=bool(col["in_scope"][i]),
            probability=float(col["probability"][i]),
            model_level=_level(col["model_level"][i]), rule_level=max_level(x["level"] for x in shown),
            level=level, deferred=deferred,
            visit_list=visit_list(level, w, deferred) if level else None,
            rule_hits=shown,
            tasks=[{k: t[k] for k in ("rule_id", "gap", "department", "measure", "detail", "days")}
                   for t in routed(hits, params.tasks.routes)] if col["in_scope"][i] else [],
            reasons=None if reasons is None else reasons[i],
            base_rate=summ.get("base_rate"), other_pp=summ.get("other_pp"),
            reference_period=summ.get("reference_period"),
            measures=None if measures is None else measures[i],
            model_version=m.version, ruleset_version=m.ruleset_version,
        ))
    return out
