"""The pipeline on a real Dask cluster (fangpin.cluster) gives what the in-process path gives.

1. A ``distributed.LocalCluster`` of 2 worker processes runs ingest (files and row chunks as
   tasks), training (the partitioned feature table) and batch scoring (partition, chunk and
   workbook tasks) on a small generated county: the same tables, model and warnings (households,
   probabilities, levels, reasons, measures) as the same steps in this process.
2. The CLI pointed at a scheduler started as separate ``dask scheduler`` / ``dask worker``
   processes on loopback (``fangpin --scheduler tcp://…``), as a province would: synth by county,
   ingest, train, score; the tasks ran on those workers and the warnings equal the in-process run's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from fangpin.cluster import Executor, local_cluster
from fangpin.config import load_params
from pipelines.common import rooted

pytestmark = [pytest.mark.xdist_group("cluster"), pytest.mark.slow]
KEY = b"cluster-test-key"
COMPARED = ["household_id", "quarter", "county", "township", "village", "level", "probability", "rule_hits",
            "reasons", "measures", "head_name", "id_masked", "model_version"]


def _params(tmp: Path, **model):
    p = load_params()
    return rooted(p.model_copy(update={"model": p.model.model_copy(update={"n_estimators": 60, "partition_rows": 6000,
                                                                         **model})}), tmp)


def _pipeline(export: Path, work: Path, ex) -> dict:
    """ingest → train → score with executor ``ex`` (None: the in-process path of each step)."""
    from fangpin.ingest import ingest
    from fangpin.store import Store
    from pipelines.common import load_frames
    from pipelines.score import score_quarter
    from pipelines.train import build_dataset, feature_table, fit, fit_partitioned

    p = _params(work)
    ing = Path(p.paths.ingested_dir)
    rep = ingest([export], [], ing, p, key=KEY, executor=ex or Executor())
    assert rep.ok
    frames = load_frames(p)
    if ex is None:
        model, split, info = fit(build_dataset(frames, p), p)
    else:
        model, split, info = fit_partitioned(feature_table(p, ing, work / "train", ex), p, ex)
    model.lines = dict(frames.lines)
    model.model_version = "3"
    store = Store(f"sqlite:///{work / 'warnings.db'}", b"test-secret", migrate=True)
    try:
        res = score_quarter(p, ingested_dir=ing, model=model, store=store, root=work, show_progress=False,
                            chunk_households=500, executor=ex or Executor())
    finally:
        store.dispose()
    return {"params": p, "model": model, "res": res, "report": rep}


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    from fangpin.synth.write import generate

    p = load_params()
    d = tmp_path_factory.mktemp("county")
    generate(d / "export", 2000, 9, 13, "2022Q1", p.line_for, 2, 3, 4, p.labels.horizon_quarters, 4)
    return d / "export"


def _warnings(res) -> pd.DataFrame:
    w = pd.read_parquet(res.warnings_parquet)
    return w[COMPARED].sort_values("household_id").reset_index(drop=True)


def test_local_cluster_of_two_processes_equals_the_in_process_path(export, tmp_path):
    here = _pipeline(export, tmp_path / "here", None)
    with local_cluster(load_params(), workers=2, stage="score") as client:
        ex = Executor(client)
        assert ex.workers == 2
        pids = set(client.run(os.getpid).values())
        assert len(pids) == 2 and os.getpid() not in pids  # two worker processes, not this one
        # scoring's workers: glibc's own malloc thresholds, not the nanny's trim (fangpin.cluster.UNTRIMMED)
        assert set(client.run(_trim_threshold).values()) == {None}
        there = _pipeline(export, tmp_path / "there", ex)
    # ingest: the same tables and report
    for t in ("households", "persons", "events"):
        a, b = (pq.read_table(Path(r["params"].paths.ingested_dir) / f"{t}.parquet") for r in (here, there))
        assert a.equals(b), t
    assert here["report"].to_dict()["files"] == there["report"].to_dict()["files"]
    # train: the same model
    assert here["model"].booster.model_to_string() == there["model"].booster.model_to_string()
    assert here["model"].calibrator == there["model"].calibrator
    # score: the same warnings, chunks run as tasks on the workers
    rh, rt = here["res"], there["res"]
    assert rt.workers == 2 and rt.chunks >= 4
    assert rh.warnings == rt.warnings > 0 and rh.households == rt.households and rh.by_level == rt.by_level
    pd.testing.assert_frame_equal(_warnings(rh), _warnings(rt))
    assert [Path(b).name for b in rh.workbooks] == [Path(b).name for b in rt.workbooks] and rh.workbooks
    pd.testing.assert_frame_equal(pd.read_parquet(rh.scores_parquet), pd.read_parquet(rt.scores_parquet))


def _trim_threshold():
    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


@pytest.mark.parametrize("stage, trim", [("synth", None), ("ingest", None), ("train", "65536")])
def test_workers_malloc_trim_per_stage(stage, trim):
    """Synth, ingest and scoring run without Dask's malloc trim threshold (less CPU), training
    with it (its memory): fangpin.cluster.UNTRIMMED."""
    with local_cluster(load_params(), workers=1, stage=stage) as client:
        assert set(client.run(_trim_threshold).values()) == {trim}


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 60) -> None:
    t0 = time.monotonic()
    while not path.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        if time.monotonic() - t0 > seconds:
            raise TimeoutError(f"{path} not written in {seconds}s")
        time.sleep(0.2)


def test_cli_on_a_scheduler_and_workers_started_as_separate_processes(tmp_path):
    bin_dir = Path(sys.executable).parent
    sched_file = tmp_path / "scheduler.json"
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    procs = []
    try:
        procs.append(subprocess.Popen([str(bin_dir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
                                       "--no-dashboard", "--scheduler-file", str(sched_file)], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path))
        _wait_for(sched_file, procs[0])
        address = json.loads(sched_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        procs.append(subprocess.Popen([str(bin_dir / "dask"), "worker", address, "--nworkers", "2", "--nthreads", "1",
                                       "--no-dashboard", "--memory-limit", "3GiB", "--local-directory",
                                       str(tmp_path / "dask-worker")], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, cwd="/"))
        from distributed import Client

        with Client(address, timeout=30) as c:
            c.wait_for_workers(2, timeout=60)
            worker_pids = set(c.run(os.getpid).values())
        import yaml

        raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text(encoding="utf-8"))
        raw["model"].update(n_estimators=60, partition_rows=4000, explain_sample=500)
        raw["fairness"].update(bootstrap=20)
        params_file = tmp_path / "params.yaml"
        params_file.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")

        def cli(*args, scheduler=True, work=tmp_path):
            e = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "FANGPIN_STATE_DIR": str(work / "state")}
            cmd = [str(bin_dir / "fangpin")] + (["--scheduler", address] if scheduler else []) + list(args)
            r = subprocess.run(cmd, cwd=work, env=e, capture_output=True, text=True, timeout=300)
            assert r.returncode == 0, r.stdout + r.stderr
            return r.stdout

        export = tmp_path / "export"
        out = cli("synth", "--params", str(params_file), "-n", "800", "-q", "9", "--counties", "2", "--by-county",
                  "--seed", "3", "--out", str(export))
        assert "2 counties as tasks" in out
        assert sorted(d.name for d in export.iterdir() if d.is_dir()) == ["522621", "522622"]
        runs = {}
        for name, on_cluster in (("cluster", True), ("here", False)):
            w = tmp_path / name
            w.mkdir()
            cli("run", "--ledger", str(export), "--workdir", str(w), "--params", str(params_file),
                scheduler=on_cluster, work=w)
            cli("score", "--workdir", str(w), "--params", str(params_file), "--no-excel", scheduler=on_cluster, work=w)
            runs[name] = w
        with Client(address, timeout=30) as c:  # the same two worker processes did the cluster's work
            assert set(c.run(os.getpid).values()) == worker_pids
        info = json.loads((runs["cluster"] / "data/model/train_info.json").read_text())
        assert info["fit"]["feature_partitions"] >= 2  # the cluster's training path, several partitions
        assert "feature_partitions" not in json.loads((runs["here"] / "data/model/train_info.json").read_text())["fit"]
        got = {k: pd.read_parquet(next((w / "data/warnings").glob("warnings_*.parquet"))) for k, w in runs.items()}
        assert len(got["here"]) > 0
        cols = [c for c in COMPARED if c != "model_version"]
        pd.testing.assert_frame_equal(*(g[cols].sort_values("household_id").reset_index(drop=True)
                                        for g in (got["cluster"], got["here"])))
    finally:
        for pr in reversed(procs):
            pr.terminate()
        for pr in reversed(procs):
            try:
                pr.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pr.kill()
