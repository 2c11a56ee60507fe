"""The deployable model: features + LightGBM + calibration + rules + levels in one object.

- :class:`RiskModel` is the plain Python object that batch scoring and the API use
  (``score(frames)`` → one row per household-quarter; ``score_records(records)`` for households in
  the canonical JSON form). It holds the feature spec it was trained with, the booster, the
  calibrator, the ruleset, the level parameters and the monitoring lines seen in training.
- :class:`ReturnRiskPyfunc` wraps it as one ``mlflow.pyfunc.PythonModel`` whose artifacts are
  those parts; its input is ledger-shaped (one row per household, ``members`` and ``events`` as
  nested lists) with a signature derived from fangpin.contract.
- :func:`load_champion` / :func:`load_version` return the unwrapped :class:`RiskModel` of a
  registered version, so the hot path never goes through MLflow's generic DataFrame conversion.

Explanations: exact TreeSHAP from ``booster.predict(X, pred_contrib=True)`` (log-odds, base value
in the last column) for the rows that get a warning; ``base + Σ contributions = raw_score``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fangpin.config import LevelParams, Params
from models import levels as lv
from models.features import FeatureSpec, Frames, Table, feature_table, features_frame, frames_from_records
from models.rules import Ruleset
from models.train import Calibrator

ARTIFACTS = {
    "features": "features.json",
    "booster": "booster.txt",
    "calibrator": "calibrator.json",
    "rules": "rules.json",
    "levels": "levels.json",
    "lines": "lines.json",
    "meta": "meta.json",
    "reference": "reference.json",
}
OPTIONAL_ARTIFACTS = ("reference",)  # models registered before it existed load without it
SMALL_BATCH = 256  # up to this many rows, LightGBM predicts on one thread (see RiskModel._threads)
SCORE_COLUMNS = ("household_id", "quarter", "quarter_idx", "county", "township", "village", "in_scope",
                 "probability", "raw_score", "model_level", "rule_level", "rule_hits", "combined_level",
                 "deferred", "warning", "explanation")


@dataclass(frozen=True)
class Scored:
    """What :meth:`RiskModel.score_arrays` returns: ``columns`` (name → numpy array, one row per
    household-quarter: :data:`SCORE_COLUMNS` + model and ruleset versions), the model matrix ``X``
    (spec order), the feature :class:`models.features.Table` of the same rows and, when the rows
    were whole townships, each township-quarter's level cut-offs and counts (models.levels)."""

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
        (d / ARTIFACTS["calibrator"]).write_text(self.calibrator.to_json(), encoding="utf-8")
        (d / ARTIFACTS["rules"]).write_text(self.ruleset.to_json(), encoding="utf-8")
        (d / ARTIFACTS["levels"]).write_text(self.levels.model_dump_json(), encoding="utf-8")
        (d / ARTIFACTS["lines"]).write_text(json.dumps({str(k): v for k, v in self.lines.items()}),
                                            encoding="utf-8")
        (d / ARTIFACTS["meta"]).write_text(json.dumps(self.meta, ensure_ascii=False, indent=1), encoding="utf-8")
        (d / ARTIFACTS["reference"]).write_text(json.dumps(self.reference, ensure_ascii=False, indent=1),
                                                encoding="utf-8")
        return {k: str(d / v) for k, v in ARTIFACTS.items()}

    @classmethod
    def from_artifacts(cls, paths: Mapping[str, str]) -> RiskModel:
        from models.train import quiet_openmp

        quiet_openmp()
        import lightgbm as lgb

        def text(k: str) -> str:
            return Path(paths[k]).read_text(encoding="utf-8")

        ref = paths.get("reference")
        reference = json.loads(text("reference")) if ref and Path(ref).exists() else {}
        levels = {k: v for k, v in json.loads(text("levels")).items() if k in LevelParams.model_fields}

        return cls(
            spec=FeatureSpec.from_json(text("features")),
            booster=lgb.Booster(model_file=str(paths["booster"])),
            calibrator=Calibrator.from_json(text("calibrator")),
            ruleset=Ruleset.from_json(text("rules")),
            levels=LevelParams.model_validate(levels),  # keys of older level schemes are dropped
            lines={int(k): float(v) for k, v in json.loads(text("lines")).items()},
            meta=json.loads(text("meta")),
            reference=reference,
        )

    @classmethod
    def load(cls, d: Path) -> RiskModel:
        return cls.from_artifacts({k: str(Path(d) / v) for k, v in ARTIFACTS.items()})

    # ------------------------------------------------------------------ scoring

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.spec.names

    @property
    def ruleset_version(self) -> str:
        return self.ruleset.version

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

    def score(self, frames: Frames, *, quarters=None, population: bool = True, explain: str = "warnings",
              return_features: bool = False, thresholds=None):
        """Score every household-quarter of ``frames`` (or of ``quarters``, quarter indices).

        explain: ``"warnings"`` puts an explanation dict on every row with a warning (else None);
        ``"none"`` skips TreeSHAP (batch scorers that explain in chunks call :meth:`contributions`).
        Returns a DataFrame with :data:`SCORE_COLUMNS` (and the feature frame too when
        ``return_features``). :meth:`score_arrays` is the same without pandas.
        """
        s = self.score_arrays(frames, quarters=quarters, population=population, explain=explain,
                              thresholds=thresholds)
        out = s.frame()
        return (out, features_frame(s.features)) if return_features else out

    def score_arrays(self, frames: Frames, *, quarters=None, population: bool = True,
                     explain: str = "warnings", thresholds=None) -> Scored:
        """:meth:`score` as numpy columns plus the feature table and model matrix it used.

        Levels (models.levels): with ``population`` (whole townships: batch, evaluation) the
        cut-offs of each township-quarter are computed from the rows; otherwise (households one by
        one: API, pyfunc) they come from ``thresholds(county, township, quarter)`` (the batch's,
        from the store) and else from the training-time cut-offs the model carries."""
        lines = {**self.lines, **{int(k): float(v) for k, v in frames.lines.items()}}
        fr = Frames(frames.households, frames.persons, frames.events, lines)
        feats = feature_table(fr, quarters=quarters, population=population)
        X = self.spec.matrix(feats)
        raw = self.raw_score(X) if len(X) else np.zeros(0)
        prob = self.calibrator(raw)
        rules = self.ruleset.evaluate_columns(feats, fr.events)
        r_rank = rules["rule_rank"]
        lookup = None if population and thresholds is None else self.level_lookup(thresholds)
        levels = lv.assign(raw, rules["rule_hits"], feats["in_scope"], feats["county"], feats["township"],
                           feats["quarter"], self.levels, lookup)
        m_rank, c_rank = levels.band, levels.combined
        warning = c_rank > 0
        expl = np.full(len(feats), None, dtype=object)
        if explain == "warnings" and warning.any():
            idx = np.flatnonzero(warning)
            contrib = self.contributions(X[idx])
            for j, i in enumerate(idx):
                expl[i] = self.explanation(X[i], contrib[j])
        cols = {c: feats[c] for c in SCORE_COLUMNS[:7]}
        cols.update(probability=prob, raw_score=raw, model_level=lv.from_rank(m_rank),
                    rule_level=lv.from_rank(r_rank), rule_hits=rules["rule_hits"],
                    combined_level=lv.from_rank(c_rank), deferred=levels.deferred, warning=warning,
                    explanation=expl,
                    model_version=np.full(len(feats), self.model_version, dtype=object),
                    ruleset_version=np.full(len(feats), self.ruleset.version, dtype=object))
        return Scored(cols, X, feats, levels.groups)

    def level_lookup(self, thresholds=None):
        """Level cut-offs for households scored one by one: ``thresholds`` (a lookup, e.g. the
        store's for this model version) first, then the training-time ones the model carries."""
        return lv.chained(thresholds, lv.carried_lookup(self.reference.get("levels")))

    def explanation(self, x: np.ndarray, contrib: np.ndarray) -> dict:
        names = self.spec.names
        return {
            "base_value": float(contrib[-1]),
            "raw_score": float(contrib.sum()),
            "units": "log-odds",
            "features": {n: {"value": None if np.isnan(x[k]) else float(x[k]), "contribution": float(contrib[k])}
                         for k, n in enumerate(names)},
        }

    def score_records(self, records: Sequence[Mapping], *, lines: Mapping[int, float] | None = None,
                      explain: str = "warnings", as_frame: bool = True, thresholds=None) -> pd.DataFrame | Scored:
        """Score households posted in the canonical JSON form (see models.features.frames_from_records);
        ``as_frame=False`` returns the :class:`Scored` arrays (the API: no pandas per request).
        ``thresholds``: a level cut-off lookup (the batch's, from the store; see :meth:`score_arrays`)."""
        fr = frames_from_records(records, {**self.lines, **(lines or {})})
        s = self.score_arrays(fr, population=False, explain=explain, thresholds=thresholds)
        return s.frame() if as_frame else s


# ---------------------------------------------------------------------- MLflow wrapper


def _pyfunc_base():
    import mlflow.pyfunc

    return mlflow.pyfunc.PythonModel


class ReturnRiskPyfunc(_pyfunc_base()):  # type: ignore[misc]
    """mlflow.pyfunc model: ledger-shaped households in, probability/levels/rule hits/explanation out."""

    def load_context(self, context):
        self.model = RiskModel.from_artifacts(context.artifacts)

    def predict(self, context, model_input, params=None):
        """``params={"explain": "none"}`` skips the TreeSHAP explanation column (probabilities,
        levels and rule hits only); the default explains every row with a warning."""
        records = _records_from_input(model_input)
        explain = (params or {}).get("explain", "warnings")
        if explain not in ("warnings", "none"):
            raise ValueError(f"params.explain must be 'warnings' or 'none', not {explain!r}")
        out = self.model.score_records(records, explain=explain)
        out = out.drop(columns=["quarter_idx"])
        out["rule_hits"] = [json.dumps(h, ensure_ascii=False) for h in out["rule_hits"]]
        out["explanation"] = [None if e is None else json.dumps(e, ensure_ascii=False) for e in out["explanation"]]
        return out

    # A real (not string) annotation, so MLflow knows no schema is inferred from the hint: the
    # explicit ledger-shaped signature validates the input.
    predict.__annotations__["model_input"] = pd.DataFrame

    # plain loader convenience
    def unwrap(self) -> RiskModel:
        return self.model


def _records_from_input(model_input) -> list[dict]:
    if isinstance(model_input, pd.DataFrame):
        recs = model_input.to_dict(orient="records")
    elif isinstance(model_input, dict):
        recs = [model_input]
    else:
        recs = list(model_input)
    out = []
    for r in recs:
        r = {k: (None if _isna(v) else v) for k, v in r.items()}
        for k in ("members", "events"):
            v = r.get(k)
            r[k] = [] if v is None else [dict(x) for x in v]
        out.append(r)
    return out


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
    from models.features import SUPPLIED

    required = {"household_id", "quarter", "income_per_capita"}
    # integer columns may be missing: pandas carries them as floats, so they are declared double
    cols = [ColSpec("double" if _KIND_DTYPE[c.kind] == "long" else _KIND_DTYPE[c.kind], c.name,
                    required=c.name in required)
            for c in contract.LEDGER_COLUMNS if c.level == "household"]
    cols += [ColSpec("double", n, required=False) for n in SUPPLIED]
    person = [Property(c.name, _KIND_DTYPE[c.kind], required=c.name in ("relation", "health", "labor_skill"))
              for c in contract.LEDGER_COLUMNS if c.level == "person"]
    person.append(Property("age", "long", required=False))
    event = [Property(c.name, _KIND_DTYPE[c.kind], required=c.name in ("event_date", "event_type"))
             for c in contract.EVENT_COLUMNS if c.name != "id_number"]
    cols.append(ColSpec(Array(Object(person)), "members", required=True))
    cols.append(ColSpec(Array(Object(event)), "events", required=False))
    return Schema(cols)


def records_from_frames(frames: Frames, qidx: int, n: int, seed: int = 0) -> list[dict]:
    """Up to ``n`` households of quarter ``qidx`` in the canonical JSON form (input examples, tests),
    with the history/context fields (models.features.SUPPLIED) filled from the frames, so that a
    record scores exactly as the household does in the batch.

    Personal fields (names, ID numbers) are not copied; events are those of the last 4 quarters.
    """
    hh = frames.households[frames.households["quarter_idx"] == qidx]
    hh = hh.sample(n=min(n, len(hh)), random_state=seed) if len(hh) > n else hh
    persons = frames.persons[(frames.persons["quarter_idx"] == qidx)
                             & frames.persons["household_id"].isin(hh["household_id"])]
    ev = frames.events
    if ev is not None:
        ev = ev[(ev["quarter_idx"] <= qidx) & (ev["quarter_idx"] > qidx - 4) & ev["household_id"].isin(hh["household_id"])]
    from fangpin import contract

    p_fields = [c.name for c in contract.LEDGER_COLUMNS if c.level == "person"
                and c.name not in ("id_number", "name")] + ["age"]
    from models.features import SUPPLIED, build_features

    hist = build_features(frames, quarters=[qidx]).set_index("household_id")
    recs = []
    pg = {k: g for k, g in persons.groupby("household_id", sort=False)}
    eg = {k: g for k, g in ev.groupby("household_id", sort=False)} if ev is not None else {}
    for _, row in hh.iterrows():
        rec = {c: _plain(row.get(c)) for c in contract.HOUSEHOLD_FIELDS if c in row.index}
        rec["quarter"] = str(row["quarter"])
        rec.update({c: _plain(hist.at[row["household_id"], c]) for c in SUPPLIED})
        g = pg.get(row["household_id"])
        rec["members"] = [] if g is None else [
            {c: _plain(v) for c, v in m.items() if c in p_fields} for m in g.to_dict(orient="records")]
        e = eg.get(row["household_id"])
        rec["events"] = [] if e is None else [
            {"event_date": pd.Timestamp(x["event_date"]).strftime("%Y-%m-%d"), "event_type": x["event_type"],
             "department": _plain(x.get("department")), "amount": _plain(x.get("amount"))}
            for x in e.to_dict(orient="records")]
        recs.append(rec)
    return recs


def _plain(v):
    if v is None:
        return None
    if isinstance(v, pd.Timestamp):
        return v.strftime("%Y-%m-%d")
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        return v
    if isinstance(v, np.generic):
        return v.item()
    return v


# ---------------------------------------------------------------------- MLflow plumbing


def tracking_uri(params: Params, root: Path | None = None) -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    if params.model.tracking_uri:
        return params.model.tracking_uri
    state = (Path(root or ".") / params.paths.state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{state}/mlflow.db"


def setup_mlflow(params: Params, root: Path | None = None) -> str:
    """Point MLflow at the configured store and make sure the experiment exists (artifacts under
    <state_dir>/mlartifacts for the embedded store). Returns the experiment id."""
    import mlflow

    uri = tracking_uri(params, root)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    exp = mlflow.get_experiment_by_name(params.model.experiment)
    if exp is not None:
        return exp.experiment_id
    artifact_location = None
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        artifact_location = (db.parent / "mlartifacts").resolve().as_uri()
    return mlflow.create_experiment(params.model.experiment, artifact_location=artifact_location)


def load_version(params: Params, version: str | int, root: Path | None = None) -> RiskModel:
    """The unwrapped RiskModel of a registered version (artifacts downloaded once)."""
    import mlflow

    setup_mlflow(params, root)
    pm = mlflow.pyfunc.load_model(f"models:/{params.model.registered_name}/{version}")
    model = pm.unwrap_python_model().model
    model.model_version = str(version)
    return model


def champion_version(params: Params, root: Path | None = None, alias: str = "champion") -> str | None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    setup_mlflow(params, root)
    try:
        return str(MlflowClient().get_model_version_by_alias(params.model.registered_name, alias).version)
    except MlflowException:
        return None


def load_champion(params: Params, root: Path | None = None, alias: str = "champion") -> RiskModel:
    """The RiskModel behind ``models:/<registered_name>@champion`` (batch scoring and the API)."""
    v = champion_version(params, root, alias)
    if v is None:
        from fangpin.errors import no_champion

        raise no_champion(params.model.registered_name)  # a LookupError, as before
    return load_version(params, v, root)


def log_pyfunc(model: RiskModel, workdir: Path, input_example: list[dict], registered_name: str):
    """Log the model once as a pyfunc (artifacts = its parts) and register it. Returns ModelInfo."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec

    paths = model.save(Path(workdir))
    sig = ModelSignature(inputs=input_schema(), params=ParamSchema([ParamSpec("explain", "string", "warnings")]))
    example = pd.DataFrame(input_example)
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=ReturnRiskPyfunc(),
        artifacts=paths,
        signature=sig,
        input_example=example,
        registered_model_name=registered_name,
        pip_requirements=_requirements(),
    )


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("lightgbm", "numpy", "pandas", "scikit-learn", "mlflow", "pyarrow",
                                           "pydantic", "pyyaml")]
