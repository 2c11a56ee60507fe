"""The loop after a warning on a working directory's store and ingested ledger (after `make demo`,
or `fangpin score` of two quarters, so that earlier warnings have later snapshots to match):
read-back of the whole history (a second run: what re-reading costs, nothing changes), the
overdue steps of every township, the county view's figures and its four SVG charts per county,
and the weekly digest — with deadlines read ``--days-later`` days from now (the clock injected).

    flock /tmp/fangpin-bench.lock .venv/bin/python bench/bench_loop.py [--workdir .] [--repeat 3] [--days-later 200]

Prints JSON: the load average before and after, and the best of ``--repeat`` wall times (s).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def best(fn, repeat: int):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return round(min(times), 3), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", type=Path, default=Path("."))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--days-later", type=int, default=200,
                    help="read the deadlines this many days after now (the demo's warnings are new: nothing is overdue today)")
    a = ap.parse_args()

    from fangpin.config import load_params
    from fangpin.store import Store
    from fangpin.store.loop import counties, county_rows, open_steps
    from fangpin.warnings import local_date
    from pipelines.common import rooted
    from pipelines.digest import write_digest
    from pipelines.readback import read_back
    from serving.county_figures import CHARTS, figures

    load0 = os.getloadavg()
    p = rooted(load_params(a.workdir / "params.yaml"), a.workdir)
    store = Store.from_params(p)
    now = datetime.now(UTC)
    today = local_date(now + timedelta(days=a.days_later))
    out = {"machine": f"{os.cpu_count()} cores", "date": local_date(now).isoformat(), "deadlines_read_on": today.isoformat()}
    out["readback_s"], rb = best(lambda: read_back(store, Path(p.paths.ingested_dir), p, now=now), a.repeat)
    out["readback"] = {k: rb[k] for k in ("export_quarter", "warnings_matched", "loops_changed", "households_state")}
    out["overdue_s"], od = best(lambda: open_steps(store, today, overdue_only=True), a.repeat)
    out["overdue"] = len(od)
    per = {}
    for c in counties(store):
        def view(c=c):
            ws, cs, hs = county_rows(store, county=c)
            figs = figures(ws, cs, hs, today, p)
            return len(ws), {n: len(f(figs)) for n, f in CHARTS.items()}
        t, (n, sizes) = best(view, a.repeat)
        per[c] = {"warnings": n, "seconds": t, "svg_bytes": sizes}
    out["county_view"] = per
    with tempfile.TemporaryDirectory() as tmp:
        out["digest_s"], d = best(lambda: write_digest(store, p, today=today, out_dir=Path(tmp)), a.repeat)
    out["digest"] = {k: d[k] for k in ("overdue_warnings", "overdue_tasks", "townships")}
    store.dispose()
    out["load_before"], out["load_after"] = [round(x, 2) for x in load0], [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
