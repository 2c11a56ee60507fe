"""The deployable model: ONE scoring method, from households to explained warnings.

:meth:`RiskModel.predict` is the only place where a household is scored. Batch scoring
(pipelines/score.py, a chunk of whole townships at a time), the API (serving/scoring.py, the
households of a request) and the MLflow pyfunc (:class:`ReturnRiskPyfunc`) all call it and all get
its one result format, :class:`Scored`. Its steps, each a method of its own:

1. features (models.features.feature_table): a county's tables (``population=True``), or records
   in the canonical JSON form scored alone, with the ledger's history and place context passed in
   explicitly (``histories``, ``contexts``; models.features.frames_from_records);
2. LightGBM raw score (:meth:`RiskModel.raw_score`) and 3. calibration (``calibrator``);
4. rules (models.rules.Ruleset): hits with their thresholds and the rule level;
5. levels (:meth:`RiskModel.levels_of`, models.levels): risk bands, rule floors and capacity per
   township and quarter — cut-offs computed from the rows when they are whole townships (the
   batch), else the township's cut-offs the batch stored (``thresholds``) or the training-time
   ones the model carries (households scored alone);
6. reasons (:meth:`RiskModel.reasons_of`): exact TreeSHAP (``pred_contrib``, additivity checked on
   every explained row) → at most ``max_reasons`` Chinese sentences with figures that add up from
   the county's base rate (models.explain, the model's ``reference``);
7. measures (:meth:`RiskModel.measures_of`): the model's own measures table (models.measures),
   looked up by the warning's drivers (the rule hits a warning shows, then its reasons) and the
   household's labour class.

Everything a registered version needs is in its artifacts (:data:`ARTIFACTS`: booster, calibrator,
feature spec, ruleset, level parameters, monitoring lines, the measures table, the explanation
settings and the training-time reference figures), and its code travels with it (models.registry), so the registered version is the whole
product.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fangpin.config import LevelParams
from models import levels as lv
from models.explain import check_additivity, explain_full, labour_classes
from models.features import (
    FeatureSpec,
    Frames,
    Table,
    feature_table,
    frames_from_records,
    history_records,
    history_table,
    place_contexts,
    snapshot_records,
    snapshot_table,
)
from models.measures import MeasureTable, drivers_of, load_table, suggest
from models.rules import Ruleset
from models.train import Calibrator, quiet_openmp

ARTIFACTS = {
    "features": "features.json",
    "booster": "booster.txt",
    "calibrator": "calibrator.json",
    "rules": "rules.json",
    "levels": "levels.json",
    "lines": "lines.json",
    "measures": "measures.json",
    "explain": "explain.json",
    "meta": "meta.json",
    "reference": "reference.json",
}
# models registered before these existed load without them: no reference figures, the packaged
# measures table and the default explanation settings (such a version was logged without its code,
# so it scores with the installed code anyway)
OPTIONAL_ARTIFACTS = ("reference", "measures", "explain")
SMALL_BATCH = 256  # up to this many rows, LightGBM predicts on one thread (see RiskModel._threads)
# The one result format: a column per name, one row per household-quarter scored.
RESULT_COLUMNS = ("household_id", "quarter", "quarter_idx", "county", "township", "village", "in_scope",
                  "probability", "raw_score", "model_level", "rule_level", "rule_hits", "combined_level",
                  "deferred", "warning", "reasons", "summary", "measures", "history", "model_version",
                  "ruleset_version")
EXPLAIN = ("warnings", "in_scope", "all", "none")  # which rows get reasons and measures


@dataclass(frozen=True)
class ExplainSettings:
    """How warnings are presented: at most this many reasons and suggested measures."""

    max_reasons: int = 4
    max_measures: int = 4


@dataclass(frozen=True)
class Scored:
    """What :meth:`RiskModel.predict` returns: ``columns`` (:data:`RESULT_COLUMNS`, numpy arrays,
    one row per household-quarter; ``rule_hits`` every hit of the ruleset and ``rule_level`` the
    highest level among them (the level a warning gets from its rules is that of the hits of rules
    with a floor, models.levels; the others are tasks); ``reasons`` and ``measures`` are lists of dicts and ``summary``
    the figures' summary — base rate, 其他因素, reference period — on explained rows, else None), the
    model matrix ``X`` (spec order), the feature table of the same rows and, when the rows were
    whole townships, each township-quarter's level cut-offs and counts (models.levels)."""

    columns: dict[str, np.ndarray]
    X: np.ndarray
    features: Table
    level_groups: pd.DataFrame | None = None

    def __len__(self) -> int:
        return len(self.X)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.columns)


@dataclass
class RiskModel:
    spec: FeatureSpec
    booster: object  # lightgbm.Booster
    calibrator: Calibrator
    ruleset: Ruleset
    levels: LevelParams
    measures: MeasureTable
    explain: ExplainSettings = field(default_factory=ExplainSettings)
    lines: dict[int, float] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    model_version: str | None = None  # registry version, set by the loaders
    # training-time reference figures (models.explain.reference_figures): the counties' base rates
    # and typical values by household type, and fallback level cut-offs (models.levels)
    reference: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ persistence

    def save(self, d: Path) -> dict[str, str]:
        d = Path(d)
        d.mkdir(parents=True, exist_ok=True)
        self.spec.save(d / ARTIFACTS["features"])
        self.booster.save_model(str(d / ARTIFACTS["booster"]))
        texts = {
            "calibrator": self.calibrator.to_json(),
            "rules": self.ruleset.to_json(),
            "levels": self.levels.model_dump_json(),
            "lines": json.dumps({str(k): v for k, v in self.lines.items()}),
            "measures": self.measures.model_dump_json(indent=1),
            "explain": json.dumps(asdict(self.explain)),
            "meta": json.dumps(self.meta, ensure_ascii=False, indent=1),
            "reference": json.dumps(self.reference, ensure_ascii=False, indent=1),
        }
        for k, t in texts.items():
            (d / ARTIFACTS[k]).write_text(t, encoding="utf-8")
        return {k: str(d / v) for k, v in ARTIFACTS.items()}

    @classmethod
    def from_artifacts(cls, paths: Mapping[str, str]) -> RiskModel:
        quiet_openmp()
        import lightgbm as lgb

        def text(k: str) -> str:
            return Path(paths[k]).read_text(encoding="utf-8")

        def has(k: str) -> bool:
            return bool(paths.get(k)) and Path(paths[k]).exists()

        levels = {k: v for k, v in json.loads(text("levels")).items() if k in LevelParams.model_fields}
        return cls(
            spec=FeatureSpec.from_json(text("features")),
            booster=lgb.Booster(model_file=str(paths["booster"])),
            calibrator=Calibrator.from_json(text("calibrator")),
            ruleset=Ruleset.from_json(text("rules")),
            levels=LevelParams.model_validate(levels),  # keys of older level schemes are dropped
            measures=MeasureTable.model_validate_json(text("measures")) if has("measures") else load_table(),
            explain=ExplainSettings(**json.loads(text("explain"))) if has("explain") else ExplainSettings(),
            lines={int(k): float(v) for k, v in json.loads(text("lines")).items()},
            meta=json.loads(text("meta")),
            reference=json.loads(text("reference")) if has("reference") else {},
        )

    @classmethod
    def load(cls, d: Path) -> RiskModel:
        return cls.from_artifacts({k: str(Path(d) / v) for k, v in ARTIFACTS.items()})

    # ------------------------------------------------------------------ the one scoring method

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.spec.names

    @property
    def ruleset_version(self) -> str:
        return self.ruleset.version

    def predict(self, data, *, quarters=None, histories: Sequence[Mapping | None] | None = None,
                contexts: Sequence[Mapping | None] | None = None, thresholds=None,
                lines: Mapping[int, float] | None = None, explain: str = "warnings") -> Scored:
        """Score households: features → LightGBM → calibration → rules → levels → reasons → measures.

        ``data``: a county's canonical tables (an object with ``households``, ``persons``,
        ``events`` and ``lines``, e.g. models.features.Frames: every household of its villages, so
        local context is computed from them; ``quarters`` limits the rows scored), or a sequence of
        households in the canonical JSON form, each scored alone with its ``histories[i]`` and
        ``contexts[i]`` (models.features.frames_from_records). ``thresholds``: a lookup
        ``(county, township, quarter) → cut-offs`` (the batch's, from the store) for the levels of
        households that are not whole townships (models.levels); without it, a context's
        ``level_cuts`` (the pyfunc's input), else the cut-offs the model carries. ``lines`` adds monitoring lines to
        those the model was trained with. ``explain``: ``"warnings"`` gives reasons and measures
        to every row with a warning, ``"in_scope"`` only to warned rows in scope (batch scoring),
        ``"all"`` to every row (a clue of a people channel is a warning whatever the score),
        ``"none"`` to no row.
        """
        if explain not in EXPLAIN:
            raise ValueError(f"explain must be one of {EXPLAIN}, not {explain!r}")
        lines = {**self.lines, **{int(k): float(v) for k, v in (lines or {}).items()}}
        whole = hasattr(data, "households")
        if whole:
            lines.update({int(k): float(v) for k, v in (getattr(data, "lines", None) or {}).items()})
            frames = Frames(data.households, data.persons, data.events, lines)
            feats = feature_table(frames, quarters=quarters, population=True)
            sources = np.array([f"ledger:{q}" for q in feats["quarter"]], dtype=object)
        else:
            data = list(data)
            frames, src = frames_from_records(data, lines, histories, contexts)
            feats = feature_table(frames, quarters=quarters, population=False)
            sources = np.array(src, dtype=object)
            if thresholds is None and contexts:  # a township's cut-offs may come with its context
                cuts = {(r.get("county"), r.get("township")): c["level_cuts"] for r, c in zip(data, contexts, strict=True)
                        if c and c.get("level_cuts")}
                if cuts:
                    thresholds = lambda county, township, quarter: cuts.get((county, township))  # noqa: E731
        X = self.spec.matrix(feats)
        raw = self.raw_score(X) if len(X) else np.zeros(0)
        prob = self.calibrator(raw)
        rules = self.ruleset.evaluate_columns(feats, frames.events)
        levels = self.levels_of(raw, feats, rules["rule_hits"], None if whole and thresholds is None
                                else self.level_lookup(thresholds))
        warning = levels.combined > 0
        n = len(feats)
        reasons, summary, measures = (np.full(n, None, dtype=object) for _ in range(3))
        rows = (np.arange(n) if explain == "all" else
                np.flatnonzero(warning & (np.asarray(feats["in_scope"], dtype=bool) if explain == "in_scope"
                                          else explain == "warnings")))
        if len(rows):
            rs, ss = self.reasons_of(X[rows], raw[rows], np.asarray(feats["county"], dtype=object)[rows])
            ms = self.measures_of(rules["rule_hits"][rows], rs, X[rows])
            for j, i in enumerate(rows.tolist()):
                reasons[i], summary[i], measures[i] = rs[j], ss[j], ms[j]
        cols = {c: feats[c] for c in RESULT_COLUMNS[:7]}
        cols.update(probability=prob, raw_score=raw, model_level=lv.from_rank(levels.band),
                    rule_level=lv.from_rank(rules["rule_rank"]), rule_hits=rules["rule_hits"],
                    combined_level=lv.from_rank(levels.combined), deferred=levels.deferred, warning=warning,
                    reasons=reasons, summary=summary, measures=measures, history=sources,
                    model_version=np.full(n, self.model_version, dtype=object),
                    ruleset_version=np.full(n, self.ruleset.version, dtype=object))
        return Scored(cols, X, feats, levels.groups)

    # ------------------------------------------------------------------ the online history

    def histories(self, scored: Scored, rows) -> list[dict]:
        """The history of scored rows of a county's tables, as :meth:`predict` takes it for the
        same households scored alone (models.features.history_records, this model's own code)."""
        return history_records(scored.features, np.asarray(rows, dtype=np.int64))

    def place_contexts(self, scored: Scored) -> dict[tuple[str, str, str], dict]:
        """The local context of every place of a county's scored tables (one quarter)."""
        return place_contexts(scored.features)

    def snapshots(self, data, qidx: int, household_ids, event_quarters: int) -> list[dict]:
        """The snapshots of these households in quarter ``qidx`` of a county's tables, as records
        :meth:`predict` takes (models.features.snapshot_records)."""
        return snapshot_records(data, qidx, household_ids, event_quarters)

    def history_table(self, scored: Scored, rows):
        """:meth:`histories` as an Arrow table built column by column (models.features.history_table)."""
        return history_table(scored.features, np.asarray(rows, dtype=np.int64))

    def snapshot_table(self, data, qidx: int, household_ids, event_quarters: int):
        """:meth:`snapshots` as an Arrow table built column by column (models.features.snapshot_table)."""
        return snapshot_table(data, qidx, household_ids, event_quarters)

    # ------------------------------------------------------------------ its steps

    def _threads(self, X: np.ndarray) -> int:
        """One thread for a few rows (the API): OpenMP's start-up and barrier cost more than the
        work, and on a busy machine a descheduled worker stalls the request. Rows are independent,
        so the values are the same whatever the thread count. The count is passed on every call:
        LightGBM keeps the last one as the process default."""
        return 1 if len(X) <= SMALL_BATCH else (self.meta.get("num_threads", 0) or 0)

    def raw_score(self, X: np.ndarray) -> np.ndarray:
        return self.booster.predict(X, raw_score=True, num_threads=self._threads(X))

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """Exact TreeSHAP (log-odds); shape (n, features + 1), base value in the last column."""
        return self.booster.predict(X, pred_contrib=True, num_threads=self._threads(X))

    def levels_of(self, raw: np.ndarray, feats: Table, rule_hits, lookup=None) -> lv.Assigned:
        """Levels per row (models.levels.assign): band (model level), combined level with the rule
        floors, deferred (capacity), and per township-quarter cut-offs when computed from the rows
        (``lookup`` None: the rows are whole townships) or taken from ``lookup``."""
        return lv.assign(raw, rule_hits, feats["in_scope"], feats["county"], feats["township"], feats["quarter"],
                         self.levels, lookup)

    def level_lookup(self, thresholds=None):
        """Level cut-offs for households scored one by one: ``thresholds`` (a lookup, e.g. the
        store's for this model version) first, then the training-time ones the model carries."""
        return lv.chained(thresholds, lv.carried_lookup(self.reference.get("levels")))

    def reasons_of(self, X: np.ndarray, raw: np.ndarray, county=None) -> tuple[list[list[dict]], list[dict]]:
        """Reasons of rows of the model matrix and their figures' summaries: exact TreeSHAP, checked
        to add up to the raw score on every row, grouped into factors, written as sentences with
        figures from the row's county base rate (models.explain, the model's ``reference``)."""
        contrib = self.contributions(X)
        check_additivity(raw, contrib)
        return explain_full(self.spec, self.calibrator, X, contrib, self.explain.max_reasons, county=county,
                            reference=self.reference)

    def measures_of(self, rule_hits: Sequence, reasons: Sequence, X: np.ndarray) -> list[list[dict]]:
        """Suggested measures per row from its drivers (the rule hits a warning shows — rules with
        a level floor, models.levels.floored_hits — then reasons that raise the risk) and its
        labour class (from the model matrix); rows with equal drivers and labour class share one
        lookup."""
        memo: dict = {}
        out = []
        for hits, rs, lc in zip(rule_hits, reasons, labour_classes(X, self.spec), strict=True):
            key = (tuple(drivers_of(lv.floored_hits(hits or [], self.levels), rs)), lc)
            m = memo.get(key)
            if m is None:
                m = memo[key] = [x.model_dump() for x in suggest(key[0], lc, table=self.measures,
                                                                 max_measures=self.explain.max_measures)]
            out.append(m)
        return out


# ---------------------------------------------------------------------- MLflow wrapper


def _define_pyfunc():
    """The MLflow wrapper class, defined on first use (module ``__getattr__``): importing
    ``mlflow.pyfunc`` costs 1.5 s, which every process that only scores (a Dask worker, the API's
    batch path) would otherwise pay at import. Named as a module attribute, so pickles and
    ``logged.ReturnRiskPyfunc()`` (models.registry) find it by reference."""
    import mlflow.pyfunc

    class ReturnRiskPyfunc(mlflow.pyfunc.PythonModel):
        """mlflow.pyfunc model: households in the canonical JSON form in (one row each; ``members``
        and ``events`` nested lists; optional ``history`` and ``context`` objects, as the API passes
        them), :meth:`RiskModel.predict`'s result out (one row per household, the columns of
        :data:`RESULT_COLUMNS` without ``quarter_idx``)."""

        def load_context(self, context):
            self.model = RiskModel.from_artifacts(context.artifacts)

        def predict(self, context, model_input, params=None):
            """``params={"explain": "none"}`` skips reasons and measures; the default explains every
            row with a warning."""
            records, histories, contexts = _records_from_input(model_input)
            s = self.model.predict(records, histories=histories, contexts=contexts,
                                   explain=(params or {}).get("explain", "warnings"))
            return s.frame().drop(columns=["quarter_idx"])

        # A real (not string) annotation, so MLflow knows no schema is inferred from the hint:
        # the explicit ledger-shaped signature validates the input.
        predict.__annotations__["model_input"] = pd.DataFrame

        def unwrap(self) -> RiskModel:
            return self.model

    ReturnRiskPyfunc.__module__ = __name__
    ReturnRiskPyfunc.__qualname__ = "ReturnRiskPyfunc"
    return ReturnRiskPyfunc


def __getattr__(name: str):
    if name == "ReturnRiskPyfunc":
        cls = globals()["ReturnRiskPyfunc"] = _define_pyfunc()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _records_from_input(model_input) -> tuple[list[dict], list, list]:
    if isinstance(model_input, pd.DataFrame):
        recs = model_input.to_dict(orient="records")
    elif isinstance(model_input, dict):
        recs = [model_input]
    else:
        recs = list(model_input)
    out, hist, ctx = [], [], []
    for r in recs:
        r = {k: (None if _isna(v) else v) for k, v in r.items()}
        for k in ("members", "events"):
            v = r.get(k)
            r[k] = [] if v is None else [dict(x) for x in v]
        hist.append(_obj(r.pop("history", None)))
        ctx.append(_obj(r.pop("context", None)))
        out.append(r)
    return out, hist, ctx


def _obj(v):
    """An optional object column: a dict, its JSON text, or missing."""
    if v is None or isinstance(v, dict):
        return v
    return json.loads(v)


def _isna(v) -> bool:
    if isinstance(v, list | tuple | dict | np.ndarray):
        return False
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


_KIND_DTYPE = {"text": "string", "category": "string", "quarter": "string", "sex": "string", "date": "string",
               "float": "double", "int": "long", "yyyymm": "long", "yesno": "boolean"}


def input_schema():
    """The signature's input schema, derived from fangpin.contract (one row per household)."""
    from mlflow.types.schema import Array, ColSpec, Object, Property, Schema

    from fangpin import contract

    required = {"household_id", "quarter", "income_per_capita"}
    # integer columns may be missing: pandas carries them as floats, so they are declared double
    cols = [ColSpec("double" if _KIND_DTYPE[c.kind] == "long" else _KIND_DTYPE[c.kind], c.name,
                    required=c.name in required)
            for c in contract.LEDGER_COLUMNS if c.level == "household"]
    person = [Property(c.name, _KIND_DTYPE[c.kind], required=c.name in ("relation", "health", "labor_skill"))
              for c in contract.LEDGER_COLUMNS if c.level == "person"]
    # the join keys a stored snapshot carries: keyed hash and masked form, never the number
    keys = [Property("person_key", "string", required=False), Property("id_masked", "string", required=False)]
    person += [Property("age", "long", required=False), Property("school_grade", "long", required=False), *keys]
    event = [Property(c.name, _KIND_DTYPE[c.kind], required=c.name in ("event_date", "event_type"))
             for c in contract.EVENT_COLUMNS] + keys[:1]
    cols.append(ColSpec(Array(Object(person)), "members", required=True))
    cols.append(ColSpec(Array(Object(event)), "events", required=False))
    cols.append(ColSpec("string", "history", required=False))  # JSON text (models.features.history_records)
    cols.append(ColSpec("string", "context", required=False))  # JSON text (models.features.place_contexts)
    return Schema(cols)
