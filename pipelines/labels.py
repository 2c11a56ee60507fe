"""Labels, exactly as ../shared/ledger-contract.md ("The outcome to predict") defines them.

A household is *in scope* at quarter t when it is not a monitoring object with unresolved risk at t
(监测对象类别 blank, or 风险是否已消除 = 是). It is *positive* when a later snapshot within the next H
quarters (t+1 … t+H) shows it newly identified: 监测对象类别 set, 风险是否已消除 = 否 (not 是), and
识别监测时间 after the end of quarter t. A household-quarter is *labelled* only when the ledger has
the snapshot of quarter t+H, the end of its window (the last H quarters cannot be labelled yet); a
household missing from some later snapshot is judged on the snapshots that exist.

Quarters are calendar quarters, never snapshots: in an annual ledger (each year's Q4, run with
``labels.horizon_quarters: 4``) the window of 2023Q4 is 2024Q1 … 2024Q4 and is judged on the one
snapshot it holds, 2024Q4; with H = 2 no window of an annual ledger ends on a snapshot, so nothing
is labelled (and training says so) instead of every label silently reading 0. Limit of sparse
ledgers, kept as the contract defines the outcome: a household identified and already eliminated
between two annual snapshots is not seen as identified.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def in_scope(households: pd.DataFrame) -> pd.Series:
    """models.features.in_scope as a Series aligned with ``households``."""
    from models.features import in_scope as scope

    return pd.Series(scope(households), index=households.index, dtype=bool)


def newly_identified_at(households: pd.DataFrame) -> pd.Series:
    """Per snapshot row: the quarter index of identification when the row shows an unresolved
    monitoring object, else NA (models.features.identified_quarter)."""
    from models.features import identified_quarter

    return pd.Series(identified_quarter(households), index=households.index).astype("Float64")


def make_labels(households: pd.DataFrame, horizon: int) -> pd.DataFrame:
    """One row per household-quarter of ``households``: household_id, quarter, quarter_idx,
    in_scope, labelled (the ledger reaches t+H), label (0/1, NA when not labelled or out of scope).
    """
    hh = households[["household_id", "quarter", "quarter_idx", "monitor_category", "risk_eliminated",
                     "monitor_since"]].reset_index(drop=True)
    scope = in_scope(hh).to_numpy()
    ident_q = newly_identified_at(hh).to_numpy(dtype=np.float64, na_value=np.nan)
    q = hh["quarter_idx"].to_numpy(dtype=np.int64)
    key = pd.MultiIndex.from_arrays([hh["household_id"].astype("string").to_numpy(), q])
    positive = np.zeros(len(hh), dtype=bool)
    for h in range(1, horizon + 1):
        pos = key.get_indexer(pd.MultiIndex.from_arrays([hh["household_id"].astype("string").to_numpy(), q + h]))
        found = pos >= 0
        later_ident = np.full(len(hh), np.nan)
        later_ident[found] = ident_q[pos[found]]
        # newly identified: 识别监测时间 after the end of quarter t (quarter index > t)
        positive |= ~np.isnan(later_ident) & (later_ident > q)
    labelled = np.isin(q + horizon, np.unique(q))  # the ledger has the snapshot that ends the window
    label = pd.array(np.where(positive, 1, 0), dtype="Int8")
    label[~(labelled & scope)] = pd.NA
    return pd.DataFrame({
        "household_id": hh["household_id"].to_numpy(),
        "quarter": hh["quarter"].to_numpy(),
        "quarter_idx": q,
        "in_scope": scope,
        "labelled": labelled,
        "label": label,
    })


def identification_quarter(households: pd.DataFrame) -> pd.DataFrame:
    """Every new identification seen in the ledger: household_id, quarter_idx of the first snapshot
    that shows it (used for lead times)."""
    hh = households[["household_id", "quarter_idx", "monitor_category", "risk_eliminated", "monitor_since"]]
    ident = newly_identified_at(hh)
    rows = hh.assign(ident_q=ident)[ident.notna()]
    rows = rows.sort_values(["household_id", "quarter_idx"])
    rows = rows.drop_duplicates(["household_id", "ident_q"], keep="first")
    return rows[["household_id", "quarter_idx", "ident_q"]].reset_index(drop=True)


def snapshot_cadence(quarter_idx) -> dict:
    """The ledger's snapshots in calendar time: quarters present, quarters missing between the
    first and the last, and the usual spacing (1 quarterly, 4 annual)."""
    from fangpin.quarters import from_index

    qs = np.unique(np.asarray(quarter_idx, dtype=np.int64))
    gaps = np.diff(qs)
    spacing = int(np.bincount(gaps).argmax()) if len(gaps) else None
    missing = sorted(set(range(int(qs[0]), int(qs[-1]) + 1)) - set(qs.tolist())) if len(qs) else []
    return {"snapshots": [from_index(int(x)) for x in qs], "spacing_quarters": spacing,
            "missing_quarters": [from_index(x) for x in missing]}
