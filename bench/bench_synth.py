"""Synthetic generator speed: `fangpin synth` for 50,000 households x 12 quarters (target < 60 s).

Runs the generator in-process (same code path as the CLI) into a temporary directory, a given
number of times, and prints wall time, CPU time and output size. Run:

    .venv/bin/python bench/bench_synth.py [--households 50000] [--quarters 12] [--repeat 1]

Results are printed as JSON; docs/benchmarks.md ("Synthetic generator") records them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--households", type=int, default=50_000)
    ap.add_argument("--quarters", type=int, default=12)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    from fangpin.config import load_params
    from fangpin.synth.write import generate

    p = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    sp = p.synth
    runs = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            t0, c0 = time.perf_counter(), time.process_time()
            stats = generate(Path(tmp), args.households, args.quarters, sp.seed, sp.start_quarter, p.line_for,
                             sp.counties, sp.townships_per_county, sp.villages_per_township,
                             p.labels.horizon_quarters, sp.oracle_draws)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            size = sum(f.stat().st_size for f in Path(tmp).iterdir())
        runs.append({"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "bytes": size,
                     "person_rows": sum(s["persons"] for s in stats)})
    print(json.dumps({
        "date": datetime.now(UTC).strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(), "households": args.households, "quarters": args.quarters,
        "oracle_draws": sp.oracle_draws, "runs": runs,
    }, indent=1))


if __name__ == "__main__":
    main()
