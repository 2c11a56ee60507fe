"""Ingest throughput (rows/s) on a generated 500k-person export, as CSV and as .xlsx.

The export is built from the sample ledger (../shared/samples/户成员台账_2024Q1.csv) replicated
with fresh household numbers and fresh ID numbers (valid check characters, computed here), so it
has the real column set and value mix. The xlsx carries two title rows above the header, as the
national system writes it. Writing the files is not timed; `fangpin.ingest.ingest` is, end to end
(read, normalise, validate, hash, build tables, write Parquet and the report).

    .venv/bin/python bench/bench_ingest.py [--rows 500000] [--out bench/out/ingest]

Each ingest runs in a fresh child process (``--one FILE OUT``) that reports its own peak RSS
(``ru_maxrss``), so the figure is the ingest's alone, not the generator's.

Results are printed as JSON and written to <out>/results.json; docs/benchmarks.md records them.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "samples" / "户成员台账_2024Q1.csv"
WEIGHTS = np.array((7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2))
CHECK = np.array(list("10X98765432"))


def build_export(n_rows: int) -> pd.DataFrame:
    base = pd.read_csv(SAMPLE, dtype=str, keep_default_na=False)
    reps = -(-n_rows // len(base))
    df = pd.concat([base] * reps, ignore_index=True).iloc[:n_rows].copy()
    rep = np.repeat(np.arange(reps), len(base))[:n_rows]
    # fresh household numbers: replica index in place of the sample's village-level digits
    df["户编号"] = [f"{h[:6]}{r:05d}{h[-4:]}" for h, r in zip(df["户编号"], rep, strict=True)]
    # fresh ID numbers: region code from the replica, birth date and sequence from the sample
    first17 = [f"{500000 + r:06d}{i[6:17]}" for i, r in zip(df["证件号码"], rep, strict=True)]
    digits = np.frombuffer("".join(first17).encode("ascii"), dtype=np.uint8).reshape(-1, 17) - 48
    check = CHECK[(digits * WEIGHTS).sum(axis=1) % 11]
    df["证件号码"] = [a + b for a, b in zip(first17, check, strict=True)]
    return df


def write_xlsx(df: pd.DataFrame, path: Path) -> None:
    from openpyxl import Workbook

    wb = Workbook(write_only=True)
    ws = wb.create_sheet()
    ws.append(["防止返贫监测对象信息"])
    ws.append(["导出时间：2024年6月28日"])
    ws.append(list(df.columns))
    for row in df.itertuples(index=False, name=None):
        ws.append(row)
    wb.save(path)


def timed_ingest(path: Path, out: Path) -> dict:
    from fangpin.config import load_params
    from fangpin.ingest import ingest

    params = load_params(REPO / "params.yaml")
    t0 = time.perf_counter()
    rep = ingest([path], None, out, params, key=b"bench-key-not-secret")
    dt = time.perf_counter() - t0
    assert rep.ok and rep.rows_read == rep.rows_accepted + rep.rows_quarantined
    return {"file": path.name, "bytes": path.stat().st_size, "rows_read": rep.rows_read,
            "rows_accepted": rep.rows_accepted, "seconds": round(dt, 2), "rows_per_s": round(rep.rows_read / dt),
            "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def run_child(path: Path, out: Path) -> dict:
    """timed_ingest in a fresh process (its peak RSS is the ingest's own)."""
    r = subprocess.run([sys.executable, __file__, "--one", str(path), str(out)], capture_output=True, text=True,
                       check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def machine() -> dict:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith("Model name")), "?")
    cpus = next((ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith("CPU(s)")), "?")
    return {"cpu": model, "cpus": cpus, "python": platform.python_version(), "pandas": pd.__version__}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=500_000)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "ingest")
    ap.add_argument("--skip-xlsx", action="store_true")
    ap.add_argument("--one", nargs=2, type=Path, metavar=("FILE", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(timed_ingest(*a.one)))
        return
    a.out.mkdir(parents=True, exist_ok=True)
    df = build_export(a.rows)
    csv_path = a.out / "户成员台账_2024Q1.csv"
    xlsx_path = a.out / "防止返贫监测对象信息_20240628.xlsx"
    df.to_csv(csv_path, index=False, encoding="utf-8")
    if not a.skip_xlsx:
        write_xlsx(df.drop(columns=["统计季度"]), xlsx_path)
    del df  # the ingest children start from the files alone
    results = {"date": datetime.now(UTC).date().isoformat(), "machine": machine(), "rows": a.rows, "runs": []}
    results["runs"].append({"format": "csv", **run_child(csv_path, a.out / "ingested_csv")})
    if not a.skip_xlsx:
        results["runs"].append({"format": "xlsx", **run_child(xlsx_path, a.out / "ingested_xlsx")})
    (a.out / "results.json").write_text(json.dumps(results, ensure_ascii=False, indent=2), encoding="utf-8")
    print(json.dumps(results, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
