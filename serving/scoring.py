"""Posted households → the registered model's one scoring method, with the ledger's history.

Each posted household is looked up in the online history (fangpin.store.history) by the keyed
hash of its 户编号: its income history and the previous quarter's figures, the department events
the ledger and ``/v1/events`` know, and the context of its village and township — all as of the
ledger's latest scored quarter. Then ``RiskModel.predict`` (models.pyfunc: features, LightGBM,
calibration, rules, levels, reasons, measures — the same method batch scoring and the pyfunc
call) scores what was posted with that history, and each result says where its history came from
(``"ledger:2024Q4"``, or ``"none"`` for a household the ledger has never seen, for a quarter older
than the ledger's, and for a 户编号 posted in another county than the one that holds it). Levels
use the cut-offs the last batch run stored for the household's township and quarter
(:class:`StoredThresholds`; else the training-time ones the model carries), so a household gets
the level the batch gave it. Each household gets its own history: households batched together
never share one. The API scores what it is sent: nothing is looked up in place of a posted value.
保障缺口 tasks come from the rule hits and ``params.tasks.routes`` (fangpin.tasks).

:func:`rescore` re-scores households from their stored snapshot alone (``POST /v1/events``).
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from fangpin import quarters as fq
from fangpin.ids import event_key, keyed_hashes
from fangpin.store import history as hs
from fangpin.tasks import routed
from fangpin.warnings import LEVELS, max_level, visit_list
from models.levels import floored_hits
from serving.model import LoadedModel
from serving.schemas import HouseholdScore


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


@dataclass(frozen=True)
class Context:
    """What scoring needs besides the model: the store holding the history, the ID-hash key, the
    parameters (task routes, deadlines) and the batch's level cut-offs."""

    store: object
    id_key: bytes
    params: object
    thresholds: StoredThresholds | None = None

    def lookup(self, m: LoadedModel):
        return self.thresholds.lookup(m.version) if self.thresholds is not None else None


def _level(v) -> str | None:
    return v if isinstance(v, str) and v in LEVELS else None


def merge_events(*lists: Sequence[dict]) -> list[dict]:
    """Department events of a household from several sources, each event once (fangpin.ids.event_key
    of person, date, department, type, amount). Events need ``person_key``."""
    seen: set[str] = set()
    out = []
    for events in lists:
        for e in events:
            k = event_key(e["person_key"], e["event_date"], e.get("department"), e["event_type"], e.get("amount"))
            if k not in seen:
                seen.add(k)
                out.append(e)
    return out


def inputs(ctx: Context, records: list[dict]) -> tuple[list[dict], list, list, list]:
    """Records (canonical JSON form, events with ``id_number``) → what ``RiskModel.predict``
    takes for households scored alone: records whose events include the stored ones (each event
    once), their histories and contexts; plus the stored rows (None when not used)."""
    keys = keyed_hashes([str(r["household_id"]) for r in records], ctx.id_key)
    rows = hs.histories(ctx.store, keys, {r["county"] for r in records})
    places = hs.contexts(ctx.store, [(r["county"], r["township"], r["village"]) for r in records])
    out, hist, cont, stored = [], [], [], []
    for r, k in zip(records, keys, strict=True):
        row = rows.get(k)
        if row is not None and row["county"] != r["county"]:
            row = None  # another county's household: its history is not this request's to use
        posted = r.get("events") or []
        pk = keyed_hashes([str(e["id_number"]) for e in posted], ctx.id_key) if posted else []
        events = [{**{f: e.get(f) for f in ("event_date", "department", "event_type", "amount")},
                   "person_key": p} for e, p in zip(posted, pk, strict=True)]
        h = None
        if row is not None and fq.to_index(r["quarter"]) >= fq.to_index(row["quarter"]):
            h = row["data"]["history"]
            events = merge_events(events, row["data"]["snapshot"]["events"], row["api_events"])
        out.append({**r, "events": events})
        hist.append(h)
        cont.append(places.get((r["county"], r["township"], r["village"])))
        stored.append(row if h is not None else None)
    return out, hist, cont, stored


def score_households(m: LoadedModel, households, ctx: Context) -> list[HouseholdScore]:
    """Validated :data:`fangpin.household_json.HouseholdIn` objects → one result each."""
    records = [h.model_dump() for h in households]
    recs, hist, cont, _ = inputs(ctx, records)
    # each posted household is scored as itself alone: position keys, so that the same household
    # in two requests batched together is two rows, never one household with two snapshots
    recs = [{**r, "household_id": f"#{i}"} for i, r in enumerate(recs)]
    s = m.scorer.predict(recs, histories=hist, contexts=cont, thresholds=ctx.lookup(m),
                         explain="warnings" if m.explanations else "none")
    if len(s) != len(households):
        raise ValueError(f"model returned {len(s)} rows for {len(households)} households")
    return results(m, s, [r["household_id"] for r in records], ctx.params)


def results(m: LoadedModel, s, household_ids: Sequence[str], params) -> list[HouseholdScore]:
    """The model's result (models.pyfunc.Scored) as the API answers it: the rule hits a warning
    shows (rules with a level floor), the others as 保障缺口 tasks, the visit list of the level."""
    col = s.columns
    w = params.warnings
    out = []
    for i in range(len(s)):
        level = _level(col["combined_level"][i])
        hits = list(col["rule_hits"][i] or ())
        shown = floored_hits(hits, m.scorer.levels)  # a warning's rule hits; the other hits are tasks
        deferred = bool(col["deferred"][i])
        summ = col["summary"][i] if m.explanations and col["summary"][i] is not None else {}
        out.append(HouseholdScore(
            household_id=str(household_ids[i]), quarter=str(col["quarter"][i]), county=str(col["county"][i]),
            township=str(col["township"][i]), village=str(col["village"][i]), in_scope=bool(col["in_scope"][i]),
            probability=float(col["probability"][i]),
            model_level=_level(col["model_level"][i]), rule_level=max_level(x["level"] for x in shown),
            level=level, deferred=deferred, visit_list=visit_list(level, w, deferred) if level else None,
            rule_hits=shown,
            tasks=[{k: t[k] for k in ("rule_id", "gap", "department", "measure", "detail", "days")}
                   for t in routed(hits, params.tasks.routes)] if col["in_scope"][i] else [],
            reasons=col["reasons"][i] if m.explanations else None,
            base_rate=summ.get("base_rate"), other_pp=summ.get("other_pp"),
            reference_period=summ.get("reference_period"),
            measures=col["measures"][i] if m.explanations else None,
            history=str(col["history"][i]), model_version=m.version, ruleset_version=m.ruleset_version,
        ))
    return out


def rescore(m: LoadedModel, ctx: Context, household_keys: Sequence[str], quarters: dict[str, str],
            rows: dict[str, dict], explain: str = "warnings"):
    """Re-score households from their stored snapshot, history and every department event known
    (the ledger's and those received since), at ``quarters[key]`` (the stored quarter or a later
    one, e.g. the quarter of a new event). ``rows``: their stored rows, as the caller read them
    (fangpin.store.history.histories). Returns (stored rows, the model's result) in the order of
    ``household_keys``."""
    places = hs.contexts(ctx.store, [(rows[k]["county"], rows[k]["township"], rows[k]["village"])
                                     for k in household_keys])
    recs, hist, cont, stored = [], [], [], []
    for k in household_keys:
        row = rows[k]
        snap = dict(row["data"]["snapshot"])
        q = quarters.get(k, row["quarter"])
        if q != row["quarter"]:  # a later quarter: ages at its end, from the birth dates
            snap["members"] = [{f: v for f, v in mb.items() if not (f == "age" and mb.get("birth_date"))}
                               for mb in snap["members"]]
        snap.update(quarter=q, events=merge_events(snap["events"], row["api_events"]))
        recs.append(snap)
        hist.append(row["data"]["history"])
        cont.append(places.get((row["county"], row["township"], row["village"])))
        stored.append(row)
    s = m.scorer.predict(recs, histories=hist, contexts=cont, thresholds=ctx.lookup(m), explain=explain)
    return stored, s


@dataclass(frozen=True)
class Rescored:
    """One household re-scored from its stored snapshot (:func:`rescored`): what the model said and
    the warning it would make."""

    key: str  # keyed hash of 户编号
    row: dict  # its stored history row (place, head name, masked ID, the level it has)
    quarter: str
    in_scope: bool
    level: str | None  # combined level (model, rules) — None below every level
    probability: float
    reasons: list
    _col: dict
    _i: int
    _m: LoadedModel

    def record(self, level: str, params, created_at=None):
        """The warning of this scoring at ``level`` (the scored level, or a clue's floor): its rule
        hits, reasons, measures and figures (fangpin.warnings.WarningRecord)."""
        from fangpin.warnings import WarningRecord

        col, i, m, row = self._col, self._i, self._m, self.row
        return WarningRecord.create(
            params=params, created_at=created_at, quarter=self.quarter, county=row["county"],
            township=row["township"], village=row["village"], household_id=row["household_id"],
            head_name=row["head_name"], id_masked=row["id_masked"], level=level,
            probability=min(1.0, max(0.0, self.probability)),
            rule_hits=[{f: h[f] for f in ("rule_id", "level", "text", "threshold")}
                       for h in floored_hits(col["rule_hits"][i], m.scorer.levels)],
            reasons=col["reasons"][i] or [], measures=col["measures"][i] or [],
            deferred=bool(col["deferred"][i]), **(col["summary"][i] or {}),
            model_version=m.version, ruleset_version=m.ruleset_version)


def rescored(m: LoadedModel, ctx: Context, household_keys: Sequence[str], quarters: dict[str, str],
             rows: dict[str, dict], explain: str = "warnings") -> list[Rescored]:
    """:func:`rescore`, one :class:`Rescored` per household (in order): the one re-scoring path of
    ``POST /v1/events`` and ``POST /v1/clues`` (``explain="all"``: a clue's warning may come from its
    channel's floor, so its household gets reasons whatever the model's level)."""
    rows, s = rescore(m, ctx, household_keys, quarters, rows, explain)
    col = s.columns
    return [Rescored(key=k, row=row, quarter=quarters.get(k, row["quarter"]), in_scope=bool(col["in_scope"][i]),
                     level=_level(col["combined_level"][i]), probability=float(col["probability"][i]),
                     reasons=list(col["reasons"][i] or []), _col=col, _i=i, _m=m)
            for i, (k, row) in enumerate(zip(household_keys, rows, strict=True))]
