"""What a LocalCluster costs before it does any work (fangpin.cluster): start 2 worker processes,
import a stage's modules in them (the first task of a stage pays it) and run one trivial task,
and close it again — against the in-process rate of each stage, the input size below which
running in this process is faster (``cluster.in_process_below``).

    flock /tmp/fangpin-bench.lock .venv/bin/python bench/bench_cluster.py [--repeat 3] \\
        [--rates synth=10000,ingest=11000000,train=60000,score=12000]

``--rates``: in-process units per second of each stage (households/s, bytes/s, household-quarters/s,
households/s), measured by bench/bench_province.py (1 worker) and the stage benchmarks. The cut-off
``n*`` solves ``n / r = T0 + n / (r * S)``: ``n* = T0 * r * S / (S - 1)``, with ``S`` the measured
speed-up of 2 workers over 1 (``--speedup``, default 1.8).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODULES = {
    "synth": ["fangpin.synth.write"],
    "ingest": ["fangpin.ingest.tasks", "fangpin.ingest.core"],
    "train": ["pipelines.train", "pipelines.partition", "models.features", "pipelines.labels", "lightgbm",
              "dask.dataframe"],
    "score": ["pipelines.score", "pipelines.partition", "models.pyfunc", "models.explain", "models.measures",
              "fangpin.excel", "lightgbm"],
}


def _import(mods: list[str]) -> float:
    import importlib

    t0 = time.perf_counter()
    for m in mods:
        importlib.import_module(m)
    return time.perf_counter() - t0


def overhead(stage: str, workers: int) -> dict:
    from fangpin.cluster import local_cluster
    from fangpin.config import load_params

    p = load_params(REPO / "params.yaml")
    t0 = time.perf_counter()
    with local_cluster(p, workers, stage=stage) as client:
        t_start = time.perf_counter() - t0
        imports = client.run(_import, MODULES[stage])
        client.submit(sum, [1, 2]).result()
        t_ready = time.perf_counter() - t0
    return {"stage": stage, "start_s": round(t_start, 2), "ready_s": round(t_ready, 2),
            "closed_s": round(time.perf_counter() - t0, 2), "worker_import_s": sorted(round(v, 2) for v in imports.values())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rates", default="")
    ap.add_argument("--speedup", type=float, default=1.8)
    a = ap.parse_args()
    rates = {k: float(v) for k, v in (kv.split("=") for kv in a.rates.split(",") if kv)}
    load_before = Path("/proc/loadavg").read_text().strip()
    out = {"workers": a.workers, "load_before": load_before, "stages": {}}
    for stage in MODULES:
        runs = [overhead(stage, a.workers) for _ in range(a.repeat)]
        t0 = min(r["closed_s"] for r in runs)
        row = {"runs": runs, "T0_s": t0}
        if stage in rates:
            row["in_process_rate"] = rates[stage]
            row["cut_off"] = round(t0 * rates[stage] * a.speedup / (a.speedup - 1))
        out["stages"][stage] = row
    out["load_after"] = Path("/proc/loadavg").read_text().strip()
    print(json.dumps(out, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
