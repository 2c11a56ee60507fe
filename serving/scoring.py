"""Validated households → the registered model → per-household results.

The model's own entry point for the canonical JSON form (``RiskModel.score_records``, the same code
the MLflow pyfunc runs) does features, LightGBM, calibration, rules and levels, as numpy arrays
(no pandas per request). Reasons and suggested measures for the warned households come from
:attr:`LoadedModel.explainer` (models.explain: TreeSHAP on those rows, Chinese sentences, measures).
"""

from __future__ import annotations

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


def score_households(m: LoadedModel, households, params) -> list[HouseholdScore]:
    explain = m.explainer is not None
    s = m.scorer.score_records(records(households), explain="none", as_frame=False)
    if len(s) != len(households):
        raise ValueError(f"model returned {len(s)} rows for {len(households)} households")
    col = s.columns
    reasons = measures = None
    if explain:  # the single switch: reasons and measures for every warned household
        reasons, measures = m.explainer(s)
    out = []
    for i, h in enumerate(households):
        out.append(HouseholdScore(
            household_id=h.household_id, quarter=h.quarter, county=h.county, township=h.township,
            village=h.village, in_scope=bool(col["in_scope"][i]),
            probability=float(col["probability"][i]),
            model_level=_level(col["model_level"][i]), rule_level=_level(col["rule_level"][i]),
            level=_level(col["combined_level"][i]), rule_hits=list(col["rule_hits"][i] or ()),
            reasons=None if reasons is None else reasons[i],
            measures=None if measures is None else measures[i],
            model_version=m.version, ruleset_version=m.ruleset_version,
        ))
    return out
