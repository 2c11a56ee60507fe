"""The fault suite's figures for docs/benchmarks.md ("Reliability"): runs tests/reliability with
``FANGPIN_RELIABILITY_OUT`` set (each test writes its figures there) and the mixed load for
``--seconds``, then ingests ledgers with wide headers (1k–4k extra columns) to show the header
handling is linear. Prints markdown; records the machine, the date and the load average before and
after.

    flock /tmp/fangpin-bench.lock .venv/bin/python bench/bench_reliability.py --seconds 30
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def wide_header_seconds(n_extra: int, work: Path) -> float:
    """Seconds to ingest a 20-household ledger with ``n_extra`` extra columns (limit raised)."""
    sys.path.insert(0, str(REPO / "tests" / "data"))
    from ingest_fixtures import household

    from fangpin.config import load_params
    from fangpin.ingest import ingest

    rows = [r for i in range(20) for r in household(f"5201220010000{i:02d}", 3)]
    headers = list(rows[0]) + [f"附加列{j}" for j in range(n_extra)]
    d = work / f"wide_{n_extra}"
    d.mkdir(parents=True)
    with open(d / "户成员台账_2024Q1.csv", "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(headers)
        for r in rows:
            w.writerow([r.get(h, "x") for h in headers])
    p = load_params()
    p = p.model_copy(update={"ingest": p.ingest.model_copy(update={"max_columns": n_extra + 100})})
    t = time.perf_counter()
    assert ingest([d], [], work / f"out_{n_extra}", p).ok
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30.0, help="duration of the mixed load")
    ap.add_argument("--workers", type=int, default=2, help="pytest-xdist workers")
    args = ap.parse_args()
    load0 = os.getloadavg()
    started = datetime.now(UTC)
    out = Path(tempfile.mkdtemp(prefix="fangpin_reliability_"))
    env = {**os.environ, "FANGPIN_RELIABILITY_OUT": str(out / "figures"),
           "FANGPIN_RELIABILITY_SECONDS": str(args.seconds)}
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", str(args.workers), "--dist", "loadgroup",
                          "tests/reliability"], cwd=REPO, env=env, capture_output=True, text=True)
    suite_s = time.perf_counter() - t
    tail = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else res.stderr[-500:]
    figures = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted((out / "figures").glob("*.json"))}
    wide = {n: wide_header_seconds(n, out / "wide") for n in (1000, 2000, 4000)}
    load1 = os.getloadavg()
    shutil.rmtree(out, ignore_errors=True)

    print(f"### Figures ({started:%Y-%m-%d %H:%M} UTC)\n")
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}; load average before {load0[0]:.2f}, after {load1[0]:.2f}.")
    print(f"`tests/reliability` with {args.workers} workers: {tail} ({suite_s:.0f} s wall).\n")
    print("| test | store | requests | 5xx | client errors | p99 ms | notes |")
    print("|---|---|---|---|---|---|---|")
    for name, f in figures.items():
        if "requests" not in f:
            continue
        kind, _, store = name.rpartition("_")
        notes = ", ".join(f"{k} {v}" for k, v in f.items()
                          if k not in ("requests", "5xx", "client_errors", "p99_ms", "by_kind"))
        per = "; ".join(f"{k}: n={v['n']} p99={v['p99_ms']}" for k, v in f.get("by_kind", {}).items())
        print(f"| {kind} | {store} | {f['requests']} | {f['5xx']} | {f['client_errors']} | {f['p99_ms']} | "
              f"{notes}; {per} |")
    if "bodies" in figures:
        print(f"\nBodies: {json.dumps(figures['bodies'])}")
    print("\nIngest of a 60-person ledger with a wide header (seconds): "
          + ", ".join(f"{n} extra columns {s:.2f}" for n, s in wide.items()))


if __name__ == "__main__":
    main()
