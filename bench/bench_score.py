"""Batch scoring throughput and peak memory (issue 4), beside plain predict and shap.TreeExplainer,
and the tree-size trade-off (AUC vs exact-TreeSHAP rows/s).

Inputs are ingested canonical tables (generation and ingest are not timed):

    .venv/bin/fangpin synth -n 1000000 -q 4 --seed 11 --out /tmp/s1m
    .venv/bin/fangpin ingest --ledger /tmp/s1m --events /tmp/s1m --out /tmp/i1m
    .venv/bin/fangpin synth -n 20000 -q 10 --seed 5 --out /tmp/s20k    # training data for the model
    .venv/bin/fangpin ingest --ledger /tmp/s20k --events /tmp/s20k --out /tmp/i20k
    .venv/bin/python bench/bench_score.py --score /tmp/i1m --train /tmp/i20k [--out bench/out/score]

Phases (each timed one in a fresh process, so ``ru_maxrss`` — the peak resident set size of that
process, from ``resource.getrusage`` — is its own):

1. ``train``: the real training code (pipelines.train.build_dataset + fit, params.yaml model
   params) on ``--train``; the model is saved; the tree-size sweep refits with num_leaves
   7/15/31/63 (early stopping as configured) and records test-quarter AUC, trees, and
   exact-TreeSHAP (``pred_contrib``) and predict rows/s on the same test rows; each is saved
   (``model_<leaves>``) and ``--model-leaves`` picks the one the other phases use.
2. ``score``: ``pipelines.score.score_quarter`` on the latest quarter of ``--score`` — partition,
   features, booster, calibration, rules, levels, TreeSHAP + Chinese reasons + measures for every
   warning, store (SQLite), Parquet, township workbooks — with its stage seconds (wall: partition,
   chunks, store after the last chunk, publish; task seconds summed over the Dask workers
   (fangpin.cluster; ``--workers`` sizes the LocalCluster): score, explain, excel, chunk_read,
   chunk_write) and the peak RSS of this process and of the largest worker (each task reports its
   worker's ``ru_maxrss``).
3. ``baseline``: the same quarter's feature matrix (built chunk by chunk, not timed), then
   ``booster.predict`` on every row, ``pred_contrib`` and ``shap.TreeExplainer`` on a sample
   (stated) extrapolated to every row.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _load() -> str:
    return Path("/proc/loadavg").read_text().strip()


def machine() -> dict:
    cpu = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        cpu = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "")
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}


# ------------------------------------------------------------------------------------------------


def phase_train(train_dir: Path, out: Path, leaves: list[int], sample: int) -> dict:
    from sklearn.metrics import roc_auc_score

    from fangpin.config import load_params
    from models.features import Frames
    from pipelines.train import build_dataset, fit

    p = load_params()
    fr = Frames.from_dir(train_dir, lines=p.lines)
    t0 = time.perf_counter()
    ds = build_dataset(fr, p)
    t_feat = time.perf_counter() - t0
    res = {"train_rows": int(len(ds.feats)), "feature_seconds": round(t_feat, 1), "sweep": []}
    y = ds.labels["label"].fillna(0).to_numpy(dtype=float)
    for nl in leaves:
        t0 = time.perf_counter()
        model, split, info = fit(ds, p, num_leaves=nl)
        fit_s = time.perf_counter() - t0
        test = ds.usable & split.test_rows(ds.feats)
        X = model.spec.matrix(ds.feats.loc[test])
        auc = roc_auc_score(y[test], model.calibrator(model.raw_score(X)))
        Xs = X[:sample]
        t0 = time.perf_counter()
        model.booster.predict(Xs, raw_score=True)
        pred_rs = len(Xs) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        model.booster.predict(Xs, pred_contrib=True)
        shap_rs = len(Xs) / (time.perf_counter() - t0)
        row = {"num_leaves": nl, "trees": model.booster.num_trees(), "test_auc": round(float(auc), 4),
               "test_rows": int(test.sum()), "timed_rows": len(Xs), "predict_rows_s": round(pred_rs),
               "pred_contrib_rows_s": round(shap_rs), "fit_seconds": round(fit_s, 1)}
        print(json.dumps(row), flush=True)
        res["sweep"].append(row)
        model.lines = dict(fr.lines)
        model.model_version = "bench"
        model.save(out / f"model_{nl}")
    return res


def phase_score(score_dir: Path, out: Path, chunk: int | None, excel: bool, leaves: int,
                workers: int | None = None) -> dict:
    from fangpin.config import load_params
    from fangpin.store import Store
    from models.pyfunc import RiskModel
    from pipelines.common import rooted
    from pipelines.score import score_quarter

    model = RiskModel.load(out / f"model_{leaves}")
    model.model_version = "bench"
    p = rooted(load_params(), out / "work")
    if workers:  # the LocalCluster's size (fangpin.cluster); default one worker per core
        p = p.model_copy(update={"cluster": p.cluster.model_copy(update={"workers": workers})})
    db = out / "work" / "warnings.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    if db.exists():
        db.unlink()
    store = Store(f"sqlite:///{db}", b"bench-secret", migrate=True)
    load_before = _load()
    t0 = time.perf_counter()
    r = score_quarter(p, ingested_dir=score_dir, model=model, store=store, root=out / "work", show_progress=False,
                      write_excel=excel, chunk_households=chunk)
    wall = time.perf_counter() - t0
    load_after = _load()
    s = r.seconds
    return {"num_leaves": leaves, "trees": model.booster.num_trees(), "quarter": r.quarter, "households": r.households,
            "warnings": r.warnings, "by_level": r.by_level, "explained": r.explained, "chunks": r.chunks,
            "workers": r.workers, "workbooks": len(r.workbooks),
            "workbook_rows": r.warnings if excel else 0, "seconds": s, "wall_seconds": round(wall, 1),
            "households_per_s_end_to_end": round(r.households / wall),
            "peak_rss_mib_main": round(_maxrss_mib()), "peak_rss_mib_per_worker": round(r.chunk_peak_rss_mib),
            "store": r.store, "load_before": load_before, "load_after": load_after}


def phase_baseline(score_dir: Path, out: Path, sample: int, shap_sample: int, leaves: int) -> dict:
    import tempfile

    import pyarrow.dataset as pds

    from fangpin.config import load_params
    from models.pyfunc import RiskModel
    from pipelines.partition import Partitioner, chunk_frames
    from pipelines.score import latest_quarter

    model = RiskModel.load(out / f"model_{leaves}")
    p = load_params()
    from fangpin import quarters as fq

    quarter = latest_quarter(score_dir)
    q = fq.to_index(quarter)
    n_q = pds.dataset(str(score_dir / "households.parquet")).count_rows(filter=pds.field("quarter_idx") == q)
    n_chunks = max(1, -(-n_q // p.warnings.chunk_households))
    mats = []
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        part = Partitioner(score_dir, Path(tmp), n_chunks)
        part.index_quarter(q, event_window=4)
        part.run()
        for k in range(n_chunks):
            fr = chunk_frames(Path(tmp), k, {**model.lines, **p.lines})
            if fr is None:
                continue
            s = model.predict(fr, quarters=[q], explain="none")
            mats.append(s.X[np.asarray(s.features["in_scope"], dtype=bool)])
    X = np.vstack(mats)
    del mats
    n = len(X)
    load_before = _load()
    t0 = time.perf_counter()
    model.booster.predict(X, raw_score=True)
    predict_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    S = X[rng.choice(n, size=min(sample, n), replace=False)]
    t0 = time.perf_counter()
    model.booster.predict(S, pred_contrib=True)
    contrib_rs = len(S) / (time.perf_counter() - t0)
    import shap

    T = X[rng.choice(n, size=min(shap_sample, n), replace=False)]
    expl = shap.TreeExplainer(model.booster)
    t0 = time.perf_counter()
    expl.shap_values(T, check_additivity=False)
    shap_rs = len(T) / (time.perf_counter() - t0)
    return {"num_leaves": leaves, "trees": model.booster.num_trees(), "rows": n, "predict_seconds_all_rows": round(predict_s, 2), "predict_rows_s": round(n / predict_s),
            "pred_contrib_sample": len(S), "pred_contrib_rows_s": round(contrib_rs),
            "pred_contrib_seconds_all_rows_extrapolated": round(n / contrib_rs),
            "shap_tree_explainer_sample": len(T), "shap_tree_explainer_rows_s": round(shap_rs),
            "shap_tree_explainer_seconds_all_rows_extrapolated": round(n / shap_rs),
            "shap_version": shap.__version__, "load_before": load_before, "load_after": _load()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--score", type=Path, required=True, help="ingested tables of the county to score")
    ap.add_argument("--train", type=Path, help="ingested tables to train the model on (phase train)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "score")
    ap.add_argument("--leaves", default="7,15,31,63")
    ap.add_argument("--sample", type=int, default=50_000, help="rows timed for pred_contrib")
    ap.add_argument("--shap-sample", type=int, default=10_000, help="rows timed for shap.TreeExplainer")
    ap.add_argument("--chunk", type=int, default=None, help="households per chunk (default params)")
    ap.add_argument("--no-excel", action="store_true")
    ap.add_argument("--workers", type=int, default=None, help="LocalCluster workers (default: one per core)")
    ap.add_argument("--model-leaves", type=int, default=None,
                    help="which sweep model scores (default: params.yaml model.num_leaves)")
    ap.add_argument("--phase", choices=["all", "train", "score", "baseline"], default="all")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    if a.model_leaves is None:
        from fangpin.config import load_params

        a.model_leaves = load_params().model.num_leaves
    if a.phase != "all":
        if a.phase == "train":
            r = phase_train(a.train, a.out, [int(x) for x in a.leaves.split(",")], a.sample)
        elif a.phase == "score":
            r = phase_score(a.score, a.out, a.chunk, not a.no_excel, a.model_leaves, a.workers)
        else:
            r = phase_baseline(a.score, a.out, a.sample, a.shap_sample, a.model_leaves)
        r["phase_peak_rss_mib"] = round(_maxrss_mib())
        name = a.phase if a.phase == "train" else f"{a.phase}_{a.model_leaves}"
        (a.out / f"{name}.json").write_text(json.dumps(r, ensure_ascii=False, indent=1))
        print(json.dumps(r, ensure_ascii=False), flush=True)
        return
    results = {"machine": machine()}
    phases = (["train"] if a.train else []) + ["score", "baseline"]
    for ph in phases:
        cmd = [sys.executable, __file__, "--phase", ph, "--score", str(a.score), "--out", str(a.out),
               "--leaves", a.leaves, "--model-leaves", str(a.model_leaves), "--sample", str(a.sample), "--shap-sample", str(a.shap_sample)]
        if a.train:
            cmd += ["--train", str(a.train)]
        if a.chunk:
            cmd += ["--chunk", str(a.chunk)]
        if a.no_excel:
            cmd.append("--no-excel")
        if a.workers:
            cmd += ["--workers", str(a.workers)]
        subprocess.run(cmd, check=True)
        name = ph if ph == "train" else f"{ph}_{a.model_leaves}"
        results[name] = json.loads((a.out / f"{name}.json").read_text())
    (a.out / "results.json").write_text(json.dumps(results, ensure_ascii=False, indent=1))
    print(json.dumps(results, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
