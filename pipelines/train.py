"""`fangpin train`: canonical tables → labels + features → calibrated LightGBM → one pyfunc in
MLflow, registered as params.model.registered_name.

Reads: <paths.ingested_dir> (households/persons/events Parquet, lines.json).
Writes: <model.out_dir>/train_info.json (run id, registered version, split), <model.out_dir>/model/
(the model's parts, as logged). Params: labels, rules, model, levels, lines, paths.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from fangpin.config import Params
from pipelines.common import load_frames, train_info_path, write_json

log = logging.getLogger(__name__)


@dataclass
class Dataset:
    feats: pd.DataFrame  # every household-quarter (features + identity + rule inputs)
    labels: pd.DataFrame  # aligned with feats: in_scope, labelled, label

    @property
    def usable(self) -> np.ndarray:
        return (self.labels["in_scope"] & self.labels["labelled"]).to_numpy()


def build_dataset(frames, params: Params) -> Dataset:
    from models.features import build_features
    from pipelines.labels import make_labels

    feats = build_features(frames)
    labels = make_labels(frames.households, params.labels.horizon_quarters)
    # both follow the row order of frames.households; check rather than assume
    if not (feats["household_id"].to_numpy() == labels["household_id"].to_numpy()).all() or not (
            feats["quarter_idx"].to_numpy() == labels["quarter_idx"].to_numpy()).all():
        raise AssertionError("features and labels are not aligned")
    return Dataset(feats, labels)


def fit(ds: Dataset, params: Params, *, num_leaves: int | None = None):
    """Fit booster + calibrator on the split (models/train.py). Returns (RiskModel, split, info)."""
    from models.features import FeatureSpec
    from models.train import draw_villages, fit_booster, fit_calibrator, row_roles, time_split, village_key

    mp = params.model
    H = params.labels.horizon_quarters
    use = ds.usable
    q = ds.feats["quarter_idx"].to_numpy()
    villages = village_key(ds.feats)
    split = time_split(np.unique(q[use]), H, mp)
    split = draw_villages(split, villages[use], q[use], mp)
    roles, moved = row_roles(split, q, villages, ds.feats["household_id"].to_numpy(), use)
    spec = FeatureSpec.default()
    X = spec.matrix(ds.feats)
    y = ds.labels["label"].fillna(0).to_numpy(dtype=np.float64)
    tr, va, ca = roles == "train", roles == "valid", roles == "calib"
    for name, zh, m in (("training", "训练", tr), ("early-stopping", "早停（验证）", va), ("calibration", "校准", ca)):
        check_outcomes(y[m], q[m], name, zh)
    t0 = time.perf_counter()
    booster, info = fit_booster(X[tr], y[tr], X[va], y[va], spec, mp, num_leaves=num_leaves)
    raw_cal = booster.predict(X[ca], raw_score=True)
    calibrator = fit_calibrator(raw_cal, y[ca], mp.calibration)
    info.update(
        fit_seconds=round(time.perf_counter() - t0, 2),
        n_train=int(tr.sum()), n_valid=int(va.sum()), n_calib=int(ca.sum()),
        pos_train=int(y[tr].sum()), pos_valid=int(y[va].sum()), pos_calib=int(y[ca].sum()),
        purged_rows=int((use & np.isin(q, split.purged)).sum()), moved_households=moved,
    )
    model = make_model(spec, booster, calibrator, params, meta={
        "split": split.to_dict(), "train_info": info, "horizon_quarters": H, "num_threads": mp.num_threads,
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"), "feature_version": spec.version,
    })
    return model, split, info


def make_model(spec, booster, calibrator, params: Params, *, lines=None, meta=None, model_version=None):
    """A RiskModel of a trained booster and calibrator with everything else it scores with taken
    from ``params`` now: ruleset, level parameters, the measures table and the explanation
    settings (they become the model's artifacts, so the registered version is the whole product)."""
    from models.measures import table_for
    from models.pyfunc import ExplainSettings, RiskModel
    from models.rules import Ruleset

    w = params.warnings
    return RiskModel(spec=spec, booster=booster, calibrator=calibrator, ruleset=Ruleset.from_params(params.rules),
                     levels=params.levels, measures=table_for(params),
                     explain=ExplainSettings(max_reasons=w.max_reasons, max_measures=w.max_measures),
                     lines=dict(lines or {}), meta=dict(meta or {}), model_version=model_version)


def check_outcomes(y: np.ndarray, q: np.ndarray, name: str, zh: str) -> None:
    """A set without positives (or without negatives) cannot train, stop early or calibrate."""
    check_counts(len(y), int(np.sum(y)), np.unique(q), name, zh)


def check_counts(n: int, pos: int, quarters, name: str, zh: str) -> None:
    """:func:`check_outcomes` from a set's row and positive counts and its quarters."""
    from fangpin.errors import NotEnoughData
    from fangpin.quarters import from_index

    n, pos = int(n), int(pos)
    if n and 0 < pos < n:
        return
    qs = "、".join(from_index(int(x)) for x in sorted(set(int(v) for v in quarters))) or "—"
    what = "没有样本" if n == 0 else ("没有后续被识别的户（正例）" if pos == 0 else "全部为正例")
    what_en = "has no rows" if n == 0 else ("has no positives (households identified later)" if pos == 0 else
                                           "has only positives")
    raise NotEnoughData(
        f"{zh}集（季度 {qs}，{n:,} 户季）{what}，无法训练出可靠的模型；请提供更长或包含更多户的台账，"
        f"或调整 model.split / labels.horizon_quarters。",
        f"The {name} set (quarters {qs.replace('、', ', ')}, {n:,} household-quarters) {what_en}, so no honest model "
        f"can be fitted; supply a longer ledger or one with more households, or adjust model.split / "
        f"labels.horizon_quarters.")


# ----------------------------------------------------------------------------------------------
# training on a cluster: the feature table as a Dask DataFrame of partitions of whole townships


def features_part(item: tuple[int, list], scratch: str, out_dir: str, lines: dict, horizon: int, last_q: int) -> dict:
    """Features and labels of chunk ``k`` (pipelines.partition, HouseholdRouter) for the rows of
    its own townships, written to ``<out_dir>/part-<k>.parquet``. Labels are judged against the
    ledger's last quarter ``last_q`` (the whole ledger's, not the chunk's). ``_row`` is the row's
    position in households.parquet (the in-process row order). ``item``: (k, its townships)."""
    from fangpin.cluster import peak_rss_mib
    from models.features import build_features
    from pipelines.labels import make_labels
    from pipelines.partition import chunk_frames, own_rows

    k, places = item
    fr = chunk_frames(Path(scratch), k, lines)
    if fr is None:
        return {"k": k, "rows": 0, "peak_rss_mib": peak_rss_mib()}
    feats = build_features(fr)
    labels = make_labels(fr.households, horizon)
    keep = own_rows(feats, places)
    q = labels["quarter_idx"].to_numpy()
    labelled = q + horizon <= last_q
    usable = labels["in_scope"].to_numpy(dtype=bool) & labelled
    label = labels["label"].to_numpy(dtype=np.float64, na_value=np.nan)
    out = feats.loc[keep].reset_index(drop=True)
    out["_row"] = fr.households["_row"].to_numpy()[keep]
    out["usable"] = usable[keep]
    out["label"] = np.where(usable, np.nan_to_num(label, nan=0.0), np.nan)[keep]
    out.to_parquet(Path(out_dir) / f"part-{k:04d}.parquet", index=False)
    return {"k": k, "rows": len(out), "peak_rss_mib": peak_rss_mib()}


def sample_rows(df: pd.DataFrame, quarters, rate: float, seed: int) -> pd.DataFrame:
    """Usable rows of ``quarters``: every positive, and the negatives whose hash of (household,
    quarter, seed) falls below ``rate`` — the same rows however the table is partitioned — with
    ``weight`` = 1 for positives and 1/rate for the kept negatives."""
    d = df[df["usable"].to_numpy(dtype=bool) & df["quarter_idx"].isin(list(quarters)).to_numpy()]
    if rate >= 1.0:
        return d.assign(weight=1.0)
    h = pd.util.hash_pandas_object(d[["household_id", "quarter_idx"]].astype({"household_id": "string"}),
                                   index=False, hash_key=f"{seed:016d}"[-16:]).to_numpy()
    u = (h >> np.uint64(11)).astype(np.float64) / float(2**53)
    pos = d["label"].to_numpy() > 0
    keep = pos | (u < rate)
    return d[keep].assign(weight=np.where(pos[keep], 1.0, 1.0 / rate))


def raw_scores(df: pd.DataFrame, booster, names: list[str]) -> pd.DataFrame:
    """The booster's raw score of each row (calibration quarters), with its label and row."""
    X = df[names].to_numpy(dtype=np.float64)
    raw = booster.predict(X, raw_score=True, num_threads=1) if len(df) else np.zeros(0)
    return pd.DataFrame({"_row": df["_row"].to_numpy(), "raw": raw, "label": df["label"].to_numpy()})


def _label_counts(df: pd.DataFrame) -> pd.DataFrame:
    """Usable rows and positives per quarter of one partition."""
    d = df[df["usable"].to_numpy(dtype=bool)]
    g = d.groupby("quarter_idx")["label"]
    return pd.DataFrame({"count": g.size(), "sum": g.sum()}).reset_index().astype(
        {"quarter_idx": "i8", "count": "i8", "sum": "f8"})


@dataclass
class FeatureTable:
    """The feature table of a training run, a Parquet dataset of partitions of whole townships."""

    path: Path
    rows: int
    partitions: int
    peak_rss_mib: float
    example_frames: object  # the canonical frames of one chunk (the model's input example)
    scratch: Path | None = None  # the chunks' canonical frames (pipelines.partition)
    places: list | None = None  # (county, township) pairs of each chunk
    lines: dict | None = None

    def frame(self):
        import dask.dataframe as dd

        return dd.read_parquet(str(self.path))


def feature_table(params: Params, src: Path, work: Path, executor) -> FeatureTable:
    """The partition pass (every quarter) and the features of every chunk, as tasks of
    ``executor`` (fangpin.cluster). Writes ``<work>/features/part-*.parquet``."""
    import json

    from pipelines.partition import Partitioner, chunk_frames, dataset

    lines = {int(k): float(v) for k, v in params.lines.items()}
    lj = Path(src) / "lines.json"
    if lj.exists():
        lines.update({int(k): float(v) for k, v in json.loads(lj.read_text(encoding="utf-8")).items()})
    hh = dataset(src, "households")
    if hh is None:
        raise FileNotFoundError(f"{Path(src) / 'households.parquet'} not found: run `fangpin ingest` first")
    import pyarrow.compute as pc

    n_rows = hh.count_rows()
    last_q = int(pc.max(hh.to_table(columns=["quarter_idx"]).column("quarter_idx")).as_py())
    n = max(1, math.ceil(n_rows / params.model.partition_rows))
    scratch = Path(work) / "partitions"
    feats_dir = Path(work) / "features"
    scratch.mkdir(parents=True, exist_ok=True)
    feats_dir.mkdir(parents=True, exist_ok=True)
    part = Partitioner(src, scratch, n)
    part.index_all()
    part.run(executor)
    results = executor.map(features_part, list(enumerate(part.townships)), str(scratch.resolve()),
                           str(feats_dir.resolve()), lines, params.labels.horizon_quarters, last_q)
    example = chunk_frames(scratch, 0, lines)
    return FeatureTable(path=feats_dir, rows=sum(r["rows"] for r in results), partitions=n,
                        peak_rss_mib=max(r["peak_rss_mib"] for r in results), example_frames=example,
                        scratch=scratch.resolve(), places=part.townships, lines=lines)


def fit_partitioned(ft: FeatureTable, params: Params, executor):
    """Fit booster + calibrator from a partitioned feature table (module doc of fangpin.cluster):
    the time split from its usable quarters; every positive and a weighted ``model.negative_sample``
    of the negatives of the training and validation quarters, collected (in the in-process row
    order) and fitted with fit_booster on one machine; the calibrator on the raw scores of EVERY
    usable row of the calibration quarters, computed partition by partition. With
    ``negative_sample: 1.0`` the model is the in-process one. Returns (RiskModel, split, info)."""
    from models.features import FeatureSpec
    from models.train import fit_booster, fit_calibrator, time_split

    mp = params.model
    H = params.labels.horizon_quarters
    ddf = ft.frame()
    counts = executor.compute(ddf[["quarter_idx", "label", "usable"]].map_partitions(
        _label_counts, meta={"quarter_idx": "i8", "count": "i8", "sum": "f8"})).groupby("quarter_idx").sum()
    split = time_split(counts.index[counts["count"] > 0].to_numpy(), H, mp)
    if split.fit_mode != "quarters" or split.test_mode != "quarters":
        # a short ledger: villages held out (models.train.draw_villages / row_roles need every row
        # at once); such a ledger is small, so the table is collected and fitted in-process
        return _fit_collected(ft, params, executor)
    n_q, p_q = counts["count"].to_dict(), counts["sum"].to_dict()
    for name, zh, qq in (("training", "训练", split.train), ("early-stopping", "早停（验证）", split.valid),
                         ("calibration", "校准", split.calib)):
        check_counts(sum(n_q.get(q, 0) for q in qq), sum(p_q.get(q, 0) for q in qq), qq, name, zh)
    spec = FeatureSpec.default()
    names = list(spec.names)
    cols = ["_row", "household_id", "quarter_idx", "label", *names]
    t0 = time.perf_counter()
    sampled = executor.compute(ddf[[*cols, "usable"]].map_partitions(
        sample_rows, (*split.train, *split.valid), mp.negative_sample, mp.seed))
    sampled = sampled.sort_values("_row", kind="stable")
    t_sample = time.perf_counter() - t0
    tr = sampled["quarter_idx"].isin(split.train).to_numpy()
    va = ~tr
    X = spec.matrix(sampled)
    y = sampled["label"].to_numpy(dtype=np.float64)
    w = sampled["weight"].to_numpy(dtype=np.float64)
    weighted = mp.negative_sample < 1.0
    t0 = time.perf_counter()
    booster, info = fit_booster(X[tr], y[tr], X[va], y[va], spec, mp, w_tr=w[tr] if weighted else None,
                                w_va=w[va] if weighted else None)
    del X, sampled
    cal = ddf[ddf["usable"] & ddf["quarter_idx"].isin(list(split.calib))][["_row", "label", *names]]
    raw = executor.compute(cal.map_partitions(raw_scores, executor.share(booster), names,
                                              meta={"_row": "i8", "raw": "f8", "label": "f8"}))
    raw = raw.sort_values("_row", kind="stable")
    calibrator = fit_calibrator(raw["raw"].to_numpy(), raw["label"].to_numpy(), mp.calibration)
    rows_of = lambda qq: int(sum(n_q.get(q, 0) for q in qq))  # noqa: E731
    pos_of = lambda qq: int(sum(p_q.get(q, 0) for q in qq))  # noqa: E731
    info.update(
        fit_seconds=round(time.perf_counter() - t0, 2), sample_seconds=round(t_sample, 2),
        n_train=rows_of(split.train), n_valid=rows_of(split.valid), n_calib=int(len(raw)),
        pos_train=pos_of(split.train), pos_valid=pos_of(split.valid), pos_calib=int(raw["label"].sum()),
        purged_rows=rows_of(split.purged), moved_households=0, negative_sample=mp.negative_sample,
        n_train_fitted=int(tr.sum()), n_valid_fitted=int(va.sum()), feature_partitions=ft.partitions,
    )
    model = make_model(spec, booster, calibrator, params, meta={
        "split": split.to_dict(), "train_info": info, "horizon_quarters": H, "num_threads": mp.num_threads,
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"), "feature_version": spec.version,
    })
    return model, split, info


def _fit_collected(ft: FeatureTable, params: Params, executor):
    """The whole feature table collected (in the in-process row order) and fitted with :func:`fit`."""
    df = executor.compute(ft.frame()).sort_values("_row", kind="stable").reset_index(drop=True)
    usable = df["usable"].to_numpy(dtype=bool)
    labels = pd.DataFrame({"in_scope": usable, "labelled": usable,
                           "label": pd.array(np.where(usable, df["label"].fillna(0), 0), dtype="Int8")})
    labels.loc[~usable, "label"] = pd.NA
    model, split, info = fit(Dataset(df, labels), params)
    info["feature_partitions"] = ft.partitions
    return model, split, info


def attach_reference(model, ds: Dataset, frames, split) -> dict:
    """The reference figures the model carries (``model.reference``), from the training data:
    the counties' base rates and typical values by household type (models.explain, for reason
    figures and comparisons), measured on the in-scope rows of the quarters the model was fitted
    on (training, early stopping, calibration; never a test row); and fallback level cut-offs per
    township (models.levels, for households scored one by one before a batch run has stored its
    own), from the latest of those quarters."""
    from fangpin.quarters import from_index
    from models.explain import reference_figures
    from models.levels import fallback_thresholds

    q = ds.feats["quarter_idx"].to_numpy()
    fit_q = sorted({*split.train, *split.valid, *split.calib})
    rows = ds.labels["in_scope"].to_numpy(dtype=bool) & np.isin(q, fit_q) & ~split.test_rows(ds.feats)
    period = f"{from_index(int(q[rows].min()))}–{from_index(int(q[rows].max()))}" if rows.any() else ""
    ref = reference_figures(ds.feats, ds.labels["label"].to_numpy(dtype=np.float64, na_value=np.nan),
                            ds.labels["labelled"].to_numpy(dtype=bool), rows, model.spec, period)
    last = max(fit_q)
    scored = model.predict(frames, quarters=[last], explain="none")
    ref["levels"] = fallback_thresholds(scored.level_groups, from_index(last))
    model.reference = ref
    return ref


def _level_groups_part(item: tuple[int, list], scratch: str, lines: dict, model, qidx: int):
    """The per-township level groups (models.levels) of chunk ``k``'s own townships in ``qidx``."""
    from pipelines.partition import chunk_frames

    k, places = item
    fr = chunk_frames(Path(scratch), k, lines)
    if fr is None:
        return None
    g = model.predict(fr, quarters=[qidx], explain="none").level_groups
    if g is None or g.empty:
        return None
    own = {f"{c}/{t}" for c, t in places}
    return g[(g["county"].astype(str) + "/" + g["township"].astype(str)).isin(own).to_numpy()]


def attach_reference_partitioned(model, ft: FeatureTable, split, executor) -> dict:
    """:func:`attach_reference` from a partitioned feature table: the reference figures from the
    in-scope rows of the fitted quarters (only the columns models.explain.reference_figures reads,
    collected in the in-process row order), the fallback level cut-offs from each chunk's own
    townships in the latest fitted quarter."""
    from fangpin.quarters import from_index
    from models.explain import REFERENCE_STATS, reference_figures
    from models.levels import fallback_thresholds

    ddf = ft.frame()
    fit_q = sorted({*split.train, *split.valid, *split.calib})
    want = ({f for f, _ in REFERENCE_STATS.values()} | {c for c in model.spec.names if c.startswith("ev_")}
            | {"is_tuopin", "quarter_of_year", "county", "township", "village", "quarter_idx", "in_scope", "usable",
               "label", "_row"})
    cols = [c for c in ddf.columns if c in want]
    sel = ddf[ddf["in_scope"] & ddf["quarter_idx"].isin(fit_q)][cols]
    df = executor.compute(sel).sort_values("_row", kind="stable").reset_index(drop=True)
    df = df[~split.test_rows(df)].reset_index(drop=True)  # villages held out for the test (short ledgers)
    q = df["quarter_idx"].to_numpy()
    period = f"{from_index(int(q.min()))}–{from_index(int(q.max()))}" if len(q) else ""
    ref = reference_figures(df, df["label"].to_numpy(dtype=np.float64, na_value=np.nan),
                            df["usable"].to_numpy(dtype=bool), np.ones(len(df), dtype=bool), model.spec, period)
    last = max(fit_q)
    parts = executor.map(_level_groups_part, list(enumerate(ft.places)), str(ft.scratch), ft.lines,
                         executor.share(model), last)
    parts = [g for g in parts if g is not None]
    groups = (pd.concat(parts, ignore_index=True).sort_values(["county", "township"], kind="stable")
              .reset_index(drop=True) if parts else None)
    ref["levels"] = fallback_thresholds(groups, from_index(last))
    model.reference = ref
    return ref


def flat_params(params: Params) -> dict:
    out = {}
    for section in ("labels", "rules", "model", "levels"):
        for k, v in getattr(params, section).model_dump(mode="json").items():
            if isinstance(v, dict):
                out.update({f"{section}.{k}.{kk}": vv for kk, vv in v.items()})
            else:
                out[f"{section}.{k}"] = v if not isinstance(v, list | tuple) else ",".join(map(str, v))
    return out


def train(params: Params) -> dict:
    """The `fangpin train` stage (see module doc). Returns the train_info dict."""
    import tempfile

    import mlflow

    from fangpin.cluster import execution
    from models.registry import input_example, log_model, setup_mlflow
    from pipelines.labels import snapshot_cadence
    from pipelines.partition import dataset

    t0 = time.perf_counter()
    src = Path(params.paths.ingested_dir)
    hh = dataset(src, "households")
    size = hh.count_rows() if hh is not None else 0
    out_dir = Path(params.model.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".train-", dir=out_dir) as work, \
            execution(params, "train", size) as ex:
        if ex.distributed:
            # the feature table in partitions of whole townships, fitted from a weighted sample
            ft = feature_table(params, src, Path(work), ex)
            t_feat = time.perf_counter() - t0
            log.info("features: %d household-quarters in %d partitions in %.1fs (peak %.0f MiB per task)",
                     ft.rows, ft.partitions, t_feat, ft.peak_rss_mib)
            model, split, info = fit_partitioned(ft, params, ex)
            frames = ft.example_frames
            model.lines = dict(frames.lines)
            attach_reference_partitioned(model, ft, split, ex)
            info["feature_peak_rss_mib"] = round(ft.peak_rss_mib, 1)
        else:
            frames = load_frames(params)
            ds = build_dataset(frames, params)
            t_feat = time.perf_counter() - t0
            log.info("features: %d household-quarters × %d features in %.1fs", len(ds.feats),
                     len(ds.feats.columns), t_feat)
            model, split, info = fit(ds, params)
            model.lines = dict(frames.lines)
            attach_reference(model, ds, frames, split)
            del ds
    log.info("trained: best iteration %d, validation AUC %.4f (%s)", info["best_iteration"], info["valid_auc"],
             split.describe()[1])
    exp_id = setup_mlflow(params)
    out_dir = Path(params.model.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with mlflow.start_run(experiment_id=exp_id, run_name=f"train-{datetime.now(UTC):%Y%m%dT%H%M%S}") as run:
        mlflow.log_params(flat_params(params))
        mlflow.log_params({f"split.{k}": ",".join(v) if isinstance(v, list) else v
                           for k, v in split.summary().items()})
        mlflow.log_metrics({k: float(v) for k, v in info.items() if isinstance(v, int | float)})
        mlflow.log_metric("feature_seconds", t_feat)
        mlflow.set_tags({"stage": "train", "ruleset_version": model.ruleset.version,
                         "feature_version": model.spec.version})
        example = input_example(frames, split.test[-1], 2)
        minfo = log_model(model, out_dir / "model", example, params.model.registered_name)
        version = str(minfo.registered_model_version)
    result = {
        "run_id": run.info.run_id,
        "experiment_id": exp_id,
        "registered_name": params.model.registered_name,
        "version": version,
        "model_uri": f"models:/{params.model.registered_name}/{version}",
        "split": split.to_dict(),
        "test_quarters": split.to_dict()["test"],
        "horizon_quarters": params.labels.horizon_quarters,
        "ledger": snapshot_cadence(frames.households["quarter_idx"].to_numpy()),
        "fit": info,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    write_json(train_info_path(params), result)
    log.info("registered %s version %s (run %s)", params.model.registered_name, version, run.info.run_id)
    return result
