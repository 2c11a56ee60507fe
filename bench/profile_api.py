"""Profile POST /v1/score for one household in-process (FastAPI TestClient, no network).

Uses the same work dir as bench/bench_api.py (its tracking store and warning store; run that
script once first so a ``@champion`` exists). Prints the mean time per request and, with
``--profile``, a cProfile table sorted by cumulative time; ``--stages`` times the scoring steps
(validation, record → frames, features, predict, rules, explanation, audit, key check) alone.

    .venv/bin/python bench/profile_api.py [--n 300] [--profile] [--stages]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _timeit(fn, n: int, clock=time.perf_counter) -> float:
    """Mean milliseconds per call; ``clock=time.thread_time`` counts this thread's CPU only (steps
    that run in this thread: robust against other load on the machine)."""
    fn()
    t0 = clock()
    for _ in range(n):
        fn()
    return 1000 * (clock() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "api")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--stages", action="store_true")
    args = ap.parse_args()
    out = args.out.resolve()
    os.environ.setdefault("FANGPIN_STATE_DIR", str(out / "state"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{out / 'mlflow.db'}")
    os.environ.setdefault("FANGPIN_PARAMS", str(REPO / "params.yaml"))
    sys.path.insert(0, str(REPO))
    os.chdir(out)

    from fastapi.testclient import TestClient

    from fangpin.household_json import example_household
    from serving.app import create_app

    body = json.dumps({"households": [example_household()]}, ensure_ascii=False).encode()
    with TestClient(create_app()) as client:
        state = client.app.state
        _, key = state.store.add_key("county_system", "青石县", label="profile")
        headers = {"X-API-Key": key, "Content-Type": "application/json"}

        def post():
            r = client.post("/v1/score", content=body, headers=headers)
            assert r.status_code == 200, r.text

        print(f"POST /v1/score (in-process): {_timeit(post, args.n):.2f} ms per request")
        if args.stages:
            stages(state, key, args.n)
        if args.profile:
            import cProfile
            import pstats

            pr = cProfile.Profile()
            pr.enable()
            for _ in range(args.n):
                post()
            pr.disable()
            pstats.Stats(pr).sort_stats("cumulative").print_stats(45)


def stages(state, key: str, n: int) -> None:
    from fangpin.household_json import example_household
    from models.features import feature_table, frames_from_records
    from serving.schemas import ScoreRequest
    from serving.scoring import records, score_households

    m = state.models.current
    scorer = m.scorer
    raw = {"households": [example_household()]}
    req = ScoreRequest.model_validate(raw)
    recs = records(req.households)
    fr = frames_from_records(recs, scorer.lines)
    feats = feature_table(fr, population=False)
    X = scorer.spec.matrix(feats)
    scored = scorer.score_records(recs, explain="none", as_frame=False)
    results = score_households(m, req.households, state.params)
    st = state.store
    rows = {
        "validate (pydantic)": lambda: ScoreRequest.model_validate(raw),
        "records (model_dump)": lambda: records(req.households),
        "frames_from_records": lambda: frames_from_records(recs, scorer.lines),
        "feature_table": lambda: feature_table(fr, population=False),
        "spec.matrix": lambda: scorer.spec.matrix(feats),
        "booster raw_score": lambda: scorer.raw_score(X),
        "rules": lambda: scorer.ruleset.evaluate_columns(feats, fr.events),
        "contributions": lambda: scorer.contributions(X),
        "score_records (all model steps)": lambda: scorer.score_records(recs, explain="none", as_frame=False),
        "explainer (TreeSHAP+reasons+measures)": lambda: m.explainer(scored),
        "score_households (model+explain)": lambda: score_households(m, req.households, state.params),
        "response model_dump_json": lambda: __import__("serving.schemas", fromlist=["ScoreResponse"]).ScoreResponse(
            model_version=m.version, ruleset_version=m.ruleset_version, results=results).model_dump_json(),
        "verify_key": lambda: st.verify_key(key),
        "audit_append": lambda: st.audit_append(key_id="profile", endpoint="POST /v1/score",
                                                household_ids=["x"], levels=["红"], outcome="scored",
                                                model_version=m.version),
    }
    for name, fn in rows.items():
        print(f"  {name:36s} {_timeit(fn, n, time.thread_time):8.3f} ms CPU")


if __name__ == "__main__":
    main()
