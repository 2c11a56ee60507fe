"""Households of a county's tables as each would be scored alone (the API, the pyfunc): the
ledger's snapshot records with the history and place context the batch leaves in the store, built
with the model's own methods (models.pyfunc.RiskModel.histories / place_contexts / snapshots)."""

from __future__ import annotations

import numpy as np

from fangpin.store.history import merge_context


def alone(model, frames, t: int, n: int | None = None, seed: int = 0):
    """(records, histories, contexts, the batch's Scored of the same households in order) for
    ``n`` households (all when None) of quarter index ``t``."""
    s = model.predict(frames, quarters=[t], explain="warnings")
    rows = np.arange(len(s))
    if n is not None and n < len(s):
        rows = np.sort(np.random.default_rng(seed).choice(len(s), n, replace=False))
    ids = [s.features["household_id"][i] for i in rows]
    recs = model.snapshots(frames, t, ids, max(4, model.ruleset.severe_event_quarters))
    places = model.place_contexts(s)
    ctx = [merge_context(places.get((r["county"], r["township"], "")),
                         places.get((r["county"], r["township"], r["village"]))) for r in recs]
    batch = {k: v[rows] for k, v in s.columns.items()}
    return recs, model.histories(s, rows), ctx, batch
