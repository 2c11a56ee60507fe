"""Households of a county's tables as each would be scored alone (the API, the pyfunc): the
ledger's snapshot records with the history and place context the batch leaves in the store, built
with the model's own methods (models.pyfunc.RiskModel.histories / place_contexts / snapshots)."""

from __future__ import annotations

import numpy as np

from fangpin.store.history import merge_context


def thresholds_of(scored):
    """The level cut-offs a batch run computed for its townships (Scored.level_groups) as the lookup
    the API takes from the store (models.levels)."""
    from models import levels as lv

    return lv.carried_lookup(lv.fallback_thresholds(scored.level_groups, "batch"))


def with_cuts(records, contexts, scored) -> list:
    """Contexts carrying their township's level cut-offs (``level_cuts``), as the pyfunc takes them."""
    from models import levels as lv

    g = scored.level_groups.set_index(["county", "township"])
    return [{**(c or {}), "level_cuts": [float(x) for x in g.loc[(r["county"], r["township"]), list(lv.CUTS)]]}
            for r, c in zip(records, contexts, strict=True)]


def alone(model, frames, t: int, n: int | None = None, seed: int = 0):
    """(records, histories, contexts, the batch's columns for the same households in order, the
    batch's level cut-offs as a lookup, the contexts with their township's cut-offs) for ``n``
    households (all when None) of quarter index ``t``."""
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
    return recs, model.histories(s, rows), ctx, batch, thresholds_of(s), with_cuts(recs, ctx, s)
