"""Profile POST /v1/score for one household in-process (FastAPI TestClient, no network).

Uses the same work dir as bench/bench_api.py (its tracking store and warning store; run that
script once first so a ``@champion`` exists). Prints the mean time per request and, with
``--profile``, a cProfile table sorted by cumulative time; ``--stages`` times the scoring steps
(validation with the value normaliser, history lookup, record → frames, features, the model's one
method, response, audit, key check) alone. The household is the one bench_api.py exported from the
ledger (``<out>/households.json``), so its history is in the store.

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

    from serving.app import create_app

    exported = json.loads((out / "households.json").read_text(encoding="utf-8"))["households"][0]
    body = json.dumps({"households": [exported]}, ensure_ascii=False).encode()
    with TestClient(create_app()) as client:
        state = client.app.state
        _, key = state.store.add_key("county_system", exported["county"], label="profile")
        headers = {"X-API-Key": key, "Content-Type": "application/json"}

        def post():
            r = client.post("/v1/score", content=body, headers=headers)
            assert r.status_code == 200, r.text
            assert r.json()["results"][0]["history"] != "none"

        print(f"POST /v1/score (in-process): {_timeit(post, args.n):.2f} ms per request")
        if args.stages:
            stages(state, key, args.n, json.loads(body))
        if args.profile:
            import cProfile
            import pstats

            pr = cProfile.Profile()
            pr.enable()
            for _ in range(args.n):
                post()
            pr.disable()
            pstats.Stats(pr).sort_stats("cumulative").print_stats(45)


def stages(state, key: str, n: int, raw: dict) -> None:
    import importlib

    from serving.schemas import ScoreRequest, ScoreResponse
    from serving.scoring import inputs, results, score_households

    m = state.models.current
    scorer, ctx = m.scorer, state.scoring
    # the registered version's own feature module (its code travels with it: models.registry)
    mf = importlib.import_module(type(scorer).__module__.rsplit(".", 1)[0] + ".features")
    feature_table, frames_from_records = mf.feature_table, mf.frames_from_records
    req = ScoreRequest.model_validate(raw)
    recs, hist, cont, _ = inputs(ctx, [h.model_dump() for h in req.households])
    fr, _ = frames_from_records(recs, scorer.lines, hist, cont)
    feats = feature_table(fr, population=False)
    s = scorer.predict(recs, histories=hist, contexts=cont)
    out = results(m, s, [h.household_id for h in req.households])
    st = state.store
    rows = {
        "validate (normaliser + pydantic)": lambda: ScoreRequest.model_validate(raw),
        "history lookup (store)": lambda: inputs(ctx, [h.model_dump() for h in req.households]),
        "frames_from_records": lambda: frames_from_records(recs, scorer.lines, hist, cont),
        "feature_table": lambda: feature_table(fr, population=False),
        "booster raw_score": lambda: scorer.raw_score(s.X),
        "rules": lambda: scorer.ruleset.evaluate_columns(feats, fr.events),
        "reasons (TreeSHAP + sentences)": lambda: scorer.reasons_of(s.X, s.columns["raw_score"]),
        "predict (the model's one method)": lambda: scorer.predict(recs, histories=hist, contexts=cont),
        "score_households (lookup + predict)": lambda: score_households(m, req.households, ctx),
        "response model_dump_json": lambda: ScoreResponse(model_version=m.version, ruleset_version=m.ruleset_version,
                                                          results=out).model_dump_json(),
        "verify_key": lambda: st.verify_key(key),
        "audit_append": lambda: st.audit_append(key_id="profile", endpoint="POST /v1/score",
                                                household_ids=["x"], levels=["红"], outcome="scored",
                                                model_version=m.version),
    }
    for name, fn in rows.items():
        print(f"  {name:36s} {_timeit(fn, n, time.thread_time):8.3f} ms CPU")


if __name__ == "__main__":
    main()
