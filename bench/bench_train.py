"""Training + evaluation speed on ~1,000,000 household-quarters (issue 3: "minutes, not hours").

Generates a synthetic ledger (default 100,000 households x 11 quarters) with `fangpin synth`,
ingests it (not timed: ingest has its own benchmark), then times the real stages in-process, in a
temporary working directory with a private MLflow store:

- `train`: canonical tables → labels + features (all quarters) → LightGBM with early stopping →
  calibration → pyfunc logged and registered;
- `evaluate`: the registered model scores every quarter from the first test quarter, metrics for
  rules/model/combined/oracle, lead times, slices, TreeSHAP importance on `model.explain_sample`
  rows, report with figures, logged to MLflow.

Prints JSON (wall and CPU seconds per stage and per step, peak RSS, sizes, test metrics);
docs/benchmarks.md ("Training") records the figures. Run:

    .venv/bin/python bench/bench_train.py [--households 100000] [--quarters 11] [--ledger DIR]
    [--ingested DIR]   # reuse an already ingested ledger

`--sweep` also runs the tree-size sweep (num_leaves 7/15/31/63: test AUC, trees, pred_contrib
rows/s) on the same data.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def leaves_sweep(frames, params, leaves=(7, 15, 31, 63), contrib_rows: int = 2000) -> dict:
    """Test AUC against tree size, beside the cost of exact explanations (pred_contrib rows/s), so
    the smallest trees that keep the AUC can be chosen (docs/benchmarks.md, "Training")."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from pipelines.train import build_dataset, fit

    ds = build_dataset(frames, params)
    y = ds.labels["label"].fillna(0).to_numpy(dtype=np.float64)
    rows = []
    for nl in leaves:
        model, split, info = fit(ds, params, num_leaves=nl)
        te = ds.usable & split.test_rows(ds.feats)
        X = model.spec.matrix(ds.feats.loc[te])
        raw = model.raw_score(X)
        sample = X[:contrib_rows]
        t0 = time.perf_counter()
        model.contributions(sample)
        dt = time.perf_counter() - t0
        t0 = time.perf_counter()
        model.raw_score(X)
        dtp = time.perf_counter() - t0
        rows.append({"num_leaves": nl, "trees": info["best_iteration"], "valid_auc": info["valid_auc"],
                     "test_auc": float(roc_auc_score(y[te], raw)), "contrib_rows_per_s": len(sample) / dt,
                     "predict_rows_per_s": len(X) / dtp, "fit_seconds": info["fit_seconds"]})
        print(f"num_leaves {nl}: {rows[-1]}", file=sys.stderr)
    return {"rows": rows, "n_test": int(te.sum()), "contrib_sample": contrib_rows,
            "measured": datetime.now(UTC).isoformat(timespec="seconds")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--households", type=int, default=100_000)
    ap.add_argument("--quarters", type=int, default=11)
    ap.add_argument("--ledger", type=Path, help="existing ledger folder (skip generation)")
    ap.add_argument("--ingested", type=Path, help="existing canonical tables (skip generation and ingest)")
    ap.add_argument("--workdir", type=Path, help="keep outputs here (default: a temporary directory)")
    ap.add_argument("--sweep", action="store_true", help="also run the num_leaves sweep")
    args = ap.parse_args()

    from models.train import quiet_openmp

    quiet_openmp()
    from fangpin.config import load_params
    from pipelines.common import rooted

    tmp = tempfile.TemporaryDirectory()
    work = args.workdir or Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work}/mlflow.db")
    p = rooted(load_params(REPO / "params.yaml"), work)
    fangpin = str(Path(sys.executable).parent / "fangpin")
    prep = {}
    if args.ingested is None:
        ledger = args.ledger
        if ledger is None:
            ledger = work / "ledger"
            t0 = time.perf_counter()
            subprocess.run([fangpin, "synth", "--households", str(args.households), "--quarters",
                            str(args.quarters), "--out", str(ledger)], check=True, cwd=REPO)
            prep["synth_wall_s"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        subprocess.run([fangpin, "ingest", "--ledger", str(ledger), "--out", str(p.paths.ingested_dir)],
                       check=True, cwd=REPO)
        prep["ingest_wall_s"] = round(time.perf_counter() - t0, 1)
    else:
        p.paths.ingested_dir.parent.mkdir(parents=True, exist_ok=True)
        if not p.paths.ingested_dir.exists():
            p.paths.ingested_dir.symlink_to(args.ingested.resolve())

    from pipelines.evaluate import evaluate
    from pipelines.train import train

    stages = {}
    t0, c0 = time.perf_counter(), time.process_time()
    info = train(p)
    stages["train"] = {"wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(time.process_time() - c0, 1),
                       "fit_s": info["fit"]["fit_seconds"], "trees": info["fit"]["best_iteration"],
                       "train_rows": info["fit"]["n_train"]}
    t0, c0 = time.perf_counter(), time.process_time()
    metrics = evaluate(p)
    stages["evaluate"] = {"wall_s": round(time.perf_counter() - t0, 1),
                          "cpu_s": round(time.process_time() - c0, 1)}
    import pandas as pd

    hh = pd.read_parquet(p.paths.ingested_dir / "households.parquet", columns=["quarter"])
    out = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "load_average_at_end": os.getloadavg(),
        "household_quarters": int(len(hh)), "quarters": int(hh["quarter"].nunique()),
        "prep": prep, "stages": stages,
        "total_train_evaluate_wall_s": round(stages["train"]["wall_s"] + stages["evaluate"]["wall_s"], 1),
        "peak_rss_mb": round(_peak_rss_mb()),
        "test": {"n": metrics["n_test"], "positives": metrics["positives"], "k": metrics["rules_workload"],
                 **{f"{s}_auc": round(v["auc"], 4) for s, v in metrics["systems"].items()}},
    }
    if args.sweep:
        from models.features import Frames

        out["leaves_sweep"] = leaves_sweep(Frames.from_dir(p.paths.ingested_dir, lines=p.lines), p)["rows"]
    print(json.dumps(out, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
