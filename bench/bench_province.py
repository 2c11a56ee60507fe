"""A synthetic province on Dask (issue 15): synth, ingest, features, training and batch scoring
with every warning explained and written (store + Excel), each with 1 and with 2 LocalCluster
workers, peak memory per worker, and the sampled model against the full-data model.

One command (the full run; expected duration and disk in docs/benchmarks.md, "Province on Dask"):

    flock /tmp/fangpin-bench.lock .venv/bin/python bench/bench_province.py --out /tmp/province

Stages (each (stage, workers) pair runs in a fresh process with its own LocalCluster, so the peak
RSS figures are its own; results are appended to ``<out>/results.json``):

- ``synth``: ``--households`` × ``--quarters`` in ``--counties`` counties (fangpin synth
  --by-county: counties as tasks) into ``<out>/csv``; and the training ledger,
  ``--train-households`` × ``--train-quarters`` (the time split needs ≥ 7 labelled quarters:
  a 4-quarter ledger cannot be trained on), into ``<out>/csv_train``;
- ``ingest``: ``<out>/csv`` → ``<out>/ing_<w>`` (files and row chunks as tasks); the reports of
  the runs must be equal;
- ``train``: the training ledger is ingested once (not timed here), then the feature table
  (partitions of whole townships, Parquet) and the fit from every positive and a
  ``--negative-sample`` of the negatives, calibration on every calibration row; ``--compare``
  also fits the full-data model (negative_sample 1.0 — the in-process model) on the same quarters
  and records both test AUCs;
- ``score``: the latest quarter of ``<out>/ing_<w>`` with the model of ``train``: partition,
  features, booster, calibration, rules, levels, TreeSHAP reasons and measures for every warning,
  SQLite store, Parquet, one workbook per township.

Each stage also records the CPU seconds of every worker and of the calling process, and the
machine's I/O wait and stolen seconds over the stage (``machine_iowait_seconds``,
``machine_steal_seconds``: /proc/stat), so a slow run on a noisy machine can be told apart.

``--keep`` keeps the generated data (default: the CSV, ingested tables and outputs are removed at
the end; the results stay).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KEY = b"bench-province-id-key"  # ID hashing key of the generated ledger (not a secret)
sys.path.insert(0, str(REPO))


def _load() -> str:
    return Path("/proc/loadavg").read_text().strip()


def _machine_waits() -> dict[str, float]:
    """Seconds the machine's CPUs have spent waiting on I/O and stolen by the hypervisor since
    boot (/proc/stat, all CPUs summed): a stage's difference tells a noisy machine (its disk, its
    neighbours) from a slower program."""
    f = Path("/proc/stat")
    if not f.exists():
        return {}
    v = f.read_text().split("\n", 1)[0].split()[1:]  # user nice system idle iowait irq softirq steal
    hz = os.sysconf("SC_CLK_TCK")
    return {"iowait": int(v[4]) / hz, "steal": int(v[7]) / hz}


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) if Path(path).exists() else 0


def _params(workers: int, **model):
    from fangpin.config import load_params

    p = load_params(REPO / "params.yaml")
    return p.model_copy(update={"cluster": p.cluster.model_copy(update={"workers": workers}),
                                "model": p.model.model_copy(update=model)})


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process so far."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _worker_cpu(client) -> list[float]:
    return sorted(round(v, 1) for v in client.run(_cpu_seconds).values())


def _worker_peaks(client) -> list[float]:
    from fangpin.cluster import peak_rss_mib

    return sorted(round(v) for v in client.run(peak_rss_mib).values())


def stage(name: str, workers: int, a) -> dict:
    from fangpin.cluster import Executor, local_cluster, peak_rss_mib

    out = Path(a.out)
    res: dict = {"stage": name, "workers": workers, "load_before": _load()}
    p = _params(workers, negative_sample=a.negative_sample)
    with local_cluster(p, workers, stage=name) as client:
        ex = Executor(client)
        t0, cpu0, waits0 = time.perf_counter(), _cpu_seconds(), _machine_waits()
        if name == "synth":
            from fangpin.synth.write import generate_by_county

            sp = p.synth
            for d, n, q in ((out / "csv", a.households, a.quarters),
                            (out / "csv_train", a.train_households, a.train_quarters)):
                t1 = time.perf_counter()
                counties = max(1, -(-n // a.county_households))
                stats = generate_by_county(d, n, q, sp.seed, sp.start_quarter, p.line_for, counties,
                                           sp.townships_per_county, sp.villages_per_township,
                                           p.labels.horizon_quarters, sp.oracle_draws, ex)
                res[d.name] = {"households": n, "quarters": q, "counties": counties, "seconds": round(time.perf_counter() - t1, 1),
                               "person_rows": sum(s["persons"] for s in stats), "bytes": _du(d)}
        elif name == "ingest":
            from fangpin.ingest import ingest

            dest = out / f"ing_{workers}"
            shutil.rmtree(dest, ignore_errors=True)
            rep = ingest([out / "csv"], [], dest, p, key=KEY, executor=ex)
            res.update(rows_read=rep.rows_read, households=rep.households, quarantined=rep.rows_quarantined,
                       bytes_in=_du(out / "csv"), bytes_out=_du(dest))
        elif name == "train":
            from pipelines.train import feature_table, fit_partitioned

            ing = out / "ing_train"
            if not (ing / "households.parquet").exists():
                from fangpin.ingest import ingest

                ingest([out / "csv_train"], [], ing, p, key=KEY, executor=ex)
                t0 = time.perf_counter()
            work = out / f"train_{workers}"
            shutil.rmtree(work, ignore_errors=True)
            ft = feature_table(p, ing, work, ex)
            res["features_seconds"] = round(time.perf_counter() - t0, 1)
            res["feature_rows"], res["feature_partitions"] = ft.rows, ft.partitions
            res["feature_peak_rss_mib_per_task"] = round(ft.peak_rss_mib)
            t1 = time.perf_counter()
            model, split, info = fit_partitioned(ft, p, ex)
            res["training_seconds"] = round(time.perf_counter() - t1, 1)
            res["split"] = split.to_dict()
            res["sampled"] = {**_test_auc(ft, model, split, ex), "negative_sample": a.negative_sample,
                              "fitted_rows": info["n_train_fitted"] + info["n_valid_fitted"],
                              "train_rows": info["n_train"] + info["n_valid"], "trees": info["best_iteration"]}
            model.lines = dict(ft.example_frames.lines)
            model.model_version = "bench"
            model.save(out / "model")
            if a.compare:
                t1 = time.perf_counter()
                full, _, finfo = fit_partitioned(ft, _params(workers, negative_sample=1.0), ex)
                res["full_data"] = {**_test_auc(ft, full, split, ex), "seconds": round(time.perf_counter() - t1, 1),
                                    "fitted_rows": finfo["n_train_fitted"] + finfo["n_valid_fitted"],
                                    "trees": finfo["best_iteration"]}
                res["auc_difference"] = round(res["full_data"]["test_auc"] - res["sampled"]["test_auc"], 4)
        elif name == "score":
            from fangpin.store import Store
            from models.pyfunc import RiskModel
            from pipelines.common import rooted
            from pipelines.score import score_quarter

            work = out / f"score_{workers}"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            pr = rooted(p, work)
            model = RiskModel.load(out / "model")
            model.model_version = "bench"
            store = Store(f"sqlite:///{work / 'warnings.db'}", b"bench-secret", migrate=True)
            r = score_quarter(pr, ingested_dir=out / f"ing_{workers}", model=model, store=store, root=work,
                              show_progress=False, executor=ex)
            store.dispose()
            res.update(quarter=r.quarter, households=r.households, warnings=r.warnings, explained=r.explained,
                       by_level=r.by_level, chunks=r.chunks, workbooks=len(r.workbooks), seconds=r.seconds,
                       households_per_s=round(r.households / max(r.seconds["total"], 1e-9)))
        res["wall_seconds"] = round(time.perf_counter() - t0, 1)
        res["peak_rss_mib_per_worker"] = _worker_peaks(client)
        # where the CPU went: the workers' and this process's (which inserts into the store)
        res["cpu_seconds_per_worker"] = _worker_cpu(client)
        res["cpu_seconds_driver"] = round(_cpu_seconds() - cpu0, 1)
        res.update({f"machine_{k}_seconds": round(v - waits0[k], 1) for k, v in _machine_waits().items()})
    res["peak_rss_mib_driver"] = round(peak_rss_mib())
    res["load_after"] = _load()
    return res


def _test_auc(ft, model, split, ex) -> dict:
    """AUC of the calibrated model on every usable row of the test quarters (partition by partition)."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from pipelines.train import raw_scores

    ddf = ft.frame()
    names = list(model.spec.names)
    test = ddf[ddf["usable"] & ddf["quarter_idx"].isin(list(split.test))][["_row", "label", *names]]
    raw = ex.compute(test.map_partitions(raw_scores, ex.share(model.booster), names,
                                         meta={"_row": "i8", "raw": "f8", "label": "f8"}))
    y = raw["label"].to_numpy()
    return {"test_auc": round(float(roc_auc_score(y, model.calibrator(raw["raw"].to_numpy()))), 4),
            "test_rows": int(len(y)), "test_positives": int(np.sum(y))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--households", type=int, default=5_000_000)
    ap.add_argument("--quarters", type=int, default=4)
    ap.add_argument("--county-households", type=int, default=200_000, help="households per county (task)")
    ap.add_argument("--train-households", type=int, default=300_000)
    ap.add_argument("--train-quarters", type=int, default=9)
    ap.add_argument("--negative-sample", type=float, default=0.1)
    ap.add_argument("--compare", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--stages", default="synth,ingest,train,score")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--run-stage", help=argparse.SUPPRESS)
    ap.add_argument("--run-workers", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.run_stage:
        print(json.dumps(stage(a.run_stage, a.run_workers, a), ensure_ascii=False), flush=True)
        return
    a.out.mkdir(parents=True, exist_ok=True)
    results_path = a.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {"runs": []}
    results["machine"] = {"cores": os.cpu_count(), "argv": sys.argv[1:]}
    stages = a.stages.split(",")
    workers = [int(w) for w in a.workers.split(",")]
    for st in stages:
        for w in ([max(workers)] if st == "synth" else workers):
            cmd = [sys.executable, __file__, "--run-stage", st, "--run-workers", str(w)] + [
                x for x in sys.argv[1:]]
            r = subprocess.run(cmd, check=True, capture_output=True, text=True)
            row = json.loads(r.stdout.strip().splitlines()[-1])
            print(json.dumps(row, ensure_ascii=False), flush=True)
            results["runs"].append(row)
            results_path.write_text(json.dumps(results, ensure_ascii=False, indent=1))
    ing = [r for r in results["runs"] if r["stage"] == "ingest"]
    if len(ing) >= 2:
        reports = [json.loads((a.out / f"ing_{r['workers']}" / "ingest_report.json").read_text()) for r in ing[-2:]]
        for rep in reports:
            rep.pop("created"), rep.pop("out_dir")
        results["ingest_reports_equal"] = reports[0] == reports[1]
        results_path.write_text(json.dumps(results, ensure_ascii=False, indent=1))
    if not a.keep:
        for d in a.out.iterdir():
            if d.is_dir():
                shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
