"""Scoring API latency and throughput, beside `mlflow models serve` on the same registered model.

Both servers run as uvicorn subprocesses on 127.0.0.1 (uvicorn picks uvloop and httptools, which
the project installs as ``uvicorn[standard]``, for both) and are driven, in turn, by wrk (C, one
thread, C keep-alive connections in a closed loop; 3 s warm-up, then the measured seconds). The
servers' CPU time per request is read from the process and its children. Each request scores ONE
household:

- fangpin (`serving.app`): POST /v1/score with an API key (verified against the store), one
  household of the ledger's latest quarter exactly as ``fangpin households`` exports it (the
  ledger's own text values, normalised and validated), its history looked up in the store (income
  history, previous quarter, department events, village and township context), the model's one
  method: features + LightGBM + calibration + rules + levels + TreeSHAP reasons in Chinese +
  suggested measures (the household has a warning, so every request is explained), an audit row.
- generic: `mlflow models serve -m models:/return-risk@champion --env-manager local`, POST
  /invocations with the same household as one ``dataframe_records`` row in canonical values, with
  the same history and context as JSON columns, and ``params`` ``{"explain": "none"}`` (declared
  in the model signature): the same pyfunc and method, so the same features + LightGBM +
  calibration + rules + levels; no TreeSHAP, no reasons, no auth, no store, no audit.
- events: POST /v1/events with a ``department`` key, one NEW department event per request (a
  serious illness of a member of one of the county's households, a different household and amount
  each time): the event stored once, its household re-scored at once from the stored snapshot,
  history and all its events, and a warning created or raised when its level rises. Reported as
  events/s (each one re-scored).

The model: ``models:/return-risk@champion`` of the tracking store in MLFLOW_TRACKING_URI; when it
has none, one is built first with the real pipeline (`fangpin synth` + `fangpin run`) under the
work dir, and scored with `fangpin score` (which leaves the online history in the store). Run (under
the machine-wide benchmark lock):

    flock /tmp/fangpin-bench.lock .venv/bin/python bench/bench_api.py [--seconds 20] [--out bench/out/api]

Results are printed and written to <out>/results.json; docs/benchmarks.md records them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = REPO / ".venv" / "bin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine() -> str:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, Python {platform.python_version()}, {platform.system()}"


def env_for(out: Path) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"  # mlflow models serve needs uvicorn on PATH
    env.setdefault("FANGPIN_STATE_DIR", str(out / "state"))
    env.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{out / 'mlflow.db'}")
    env.setdefault("FANGPIN_PARAMS", str(REPO / "params.yaml"))
    return env


def ensure_model(out: Path, env: dict, households: int) -> str:
    """The @champion version; trains and registers one with the real pipeline when there is none."""
    code = ("from fangpin.config import load_params; from models.registry import champion_version; "
            "print(champion_version(load_params()) or '')")
    v = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                       cwd=out).stdout.strip().splitlines()[-1:]
    if v and v[0]:
        return v[0]
    print(f"no @champion in {env['MLFLOW_TRACKING_URI']}: building one ({households} households)", flush=True)
    subprocess.run([str(BIN / "fangpin"), "synth", "-n", str(households), "--out", str(out / "synth")],
                   env=env, check=True, cwd=out)
    subprocess.run([str(BIN / "fangpin"), "run", "--ledger", str(out / "synth"), "--workdir", str(out / "run")],
                   env=env, check=True, cwd=out)
    return ensure_model(out, env, households)


def make_key(env: dict, out: Path, role: str, scope: str) -> str:
    r = subprocess.run([str(BIN / "fangpin"), "keys", "add", "--role", role, "--scope", scope,
                        "--label", "bench"], env=env, capture_output=True, text=True, check=True, cwd=out)
    return r.stdout.strip().splitlines()[-1]


def ledger_households(out: Path, env: dict) -> dict:
    """A warned household of the scored quarter as ``fangpin households`` exports it, and the ID
    numbers of members of 400 other households of its county (for the events); plus its county."""
    import pandas as pd

    if not (out / "synth").is_dir():
        raise SystemExit(f"no ledger under {out} (delete {out} to rebuild it with the real pipeline)")
    wfiles = sorted((out / "run" / "data" / "warnings").glob("warnings_*.parquet"))
    if not wfiles:  # the batch leaves the online history the API scores with
        subprocess.run([str(BIN / "fangpin"), "score", "--workdir", str(out / "run"), "--no-excel"],
                       env=env, check=True, cwd=out)
        wfiles = sorted((out / "run" / "data" / "warnings").glob("warnings_*.parquet"))
    quarter = wfiles[-1].stem.split("_", 1)[1]
    w = pd.read_parquet(wfiles[-1], columns=["household_id", "county", "level"])
    pick = w.iloc[0]
    scores = pd.read_parquet(out / "run" / "data" / "warnings" / f"scores_{quarter}.parquet",
                             columns=["household_id", "county", "warning"])
    others = scores[(scores["county"] == pick["county"]) & ~scores["warning"]]["household_id"].head(400).tolist()
    body = out / "households.json"
    subprocess.run([str(BIN / "fangpin"), "households", "--ledger", str(out / "synth"), "--events", str(out / "synth"),
                    "--quarter", quarter, "--ids", ",".join([pick["household_id"], *others]), "-o", str(body)],
                   env=env, check=True, cwd=out, capture_output=True)
    hh = json.loads(body.read_text(encoding="utf-8"))["households"]
    return {"quarter": quarter, "county": pick["county"], "household": hh[0],
            "event_ids": [m["id_number"] for h in hh[1:] for m in h["members"][:1]]}


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"server at {url} not ready after {timeout}s")


def start(cmd: list[str], env: dict, out: Path, name: str) -> subprocess.Popen:
    log = (out / f"{name}.log").open("w")
    return subprocess.Popen(cmd, env=env, cwd=out, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


WRK_DONE = r"""
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "mean_us": %.1f, "max_us": %d, ' ..
    '"non_2xx": %d, "connect": %d, "read": %d, "write": %d, "timeout": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.mean,
    latency.max, e.status, e.connect, e.read, e.write, e.timeout))
end
"""
WRK_LUA = r"""
local f = io.open(os.getenv("FANGPIN_BENCH_BODY"), "rb"); wrk.body = f:read("*a"); f:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("FANGPIN_BENCH_KEY")
if key and key ~= "" then wrk.headers["X-API-Key"] = key end
""" + WRK_DONE


# One NEW event per request: a serious illness of a member of one of the county's households (the
# next one each time) with an amount no earlier request used, so every event is stored and re-scored.
WRK_EVENTS_LUA = r"""
local ids = {}
for line in io.lines(os.getenv("FANGPIN_BENCH_IDS")) do if #line > 0 then ids[#ids + 1] = line end end
local n = 0
local base = tonumber(os.getenv("FANGPIN_BENCH_BASE"))
local day = os.getenv("FANGPIN_BENCH_DAY")
local headers = {["Content-Type"] = "application/json", ["X-API-Key"] = os.getenv("FANGPIN_BENCH_KEY")}
request = function()
  n = n + 1
  local body = string.format('{"events": [{"id_number": "%s", "event_date": "%s", "department": "卫健", ' ..
    '"event_type": "重大疾病", "amount": %d}]}', ids[(n % #ids) + 1], day, base + n)
  return wrk.format("POST", nil, headers, body)
end
""" + WRK_DONE


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a server process and its children (mlflow's uvicorn is a child)."""
    import psutil

    procs = [psutil.Process(pid)]
    procs += procs[0].children(recursive=True)
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def drive(url: str, body: bytes, headers: dict, concurrency: int, seconds: float, warmup: float,
          pid: int, work: Path, events_day: str | None = None) -> dict:
    """Load one server with wrk (C, one thread, ``concurrency`` keep-alive connections, each sending
    its next request when the previous answer arrives) and return its summary plus the server's CPU
    time per request. wrk rather than a Python client: on 2 cores, the client's own CPU would be
    taken from the server being measured."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk not found: `make bench-deps` installs it (Debian package wrk)")
    (work / "wrk.lua").write_text(WRK_LUA if events_day is None else WRK_EVENTS_LUA, encoding="utf-8")
    (work / "body.json").write_bytes(body)
    env = {**os.environ, "FANGPIN_BENCH_BODY": str(work / "body.json"),
           "FANGPIN_BENCH_KEY": headers.get("X-API-Key", ""), "FANGPIN_BENCH_IDS": str(work / "event_ids.txt"),
           "FANGPIN_BENCH_DAY": events_day or ""}

    def run(c: int, secs: float) -> dict:
        cmd = [wrk, "-t1", f"-c{c}", f"-d{max(1, round(secs))}s", "--timeout", "10s", "-s", str(work / "wrk.lua"), url]
        env["FANGPIN_BENCH_BASE"] = str(int(time.time() * 1000) % 10**9 * 100)  # amounts no earlier run used
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        return json.loads(r.stdout.strip().splitlines()[-1])

    run(concurrency, warmup)
    cpu0 = cpu_seconds(pid)
    r = run(concurrency, seconds)
    cpu = cpu_seconds(pid) - cpu0
    failed = r["non_2xx"] + r["connect"] + r["read"] + r["write"] + r["timeout"]
    ok = r["requests"] - r["non_2xx"]
    wall = r["duration_us"] / 1e6
    return {"requests": ok, "errors": {k: r[k] for k in ("non_2xx", "connect", "read", "write", "timeout")
                                       if r[k]}, "failed": failed, "seconds": wall, "rps": ok / wall,
            "p50_ms": r["p50_us"] / 1000, "p99_ms": r["p99_us"] / 1000, "mean_ms": r["mean_us"] / 1000,
            "max_ms": r["max_us"] / 1000, "server_cpu_ms_per_request": 1000 * cpu / max(r["requests"], 1)}


def payloads(key: str, dept_key: str, ledger: dict, out: Path, env: dict) -> dict:
    sys.path.insert(0, str(REPO))
    os.environ.update({k: env[k] for k in ("FANGPIN_STATE_DIR", "MLFLOW_TRACKING_URI", "FANGPIN_PARAMS")})
    from fangpin.config import load_params
    from fangpin.household_json import HouseholdIn, normalise_households
    from fangpin.ids import params_key
    from fangpin.store import Store
    from serving.scoring import Context, inputs

    h = ledger["household"]
    ours = json.dumps({"households": [h]}, ensure_ascii=False).encode()
    # the same household for the generic pyfunc: canonical values, and the same history and context
    # the API looks up (serving.scoring.inputs), as the JSON columns the pyfunc signature declares
    p = load_params()
    store = Store.from_params(p)
    rec = HouseholdIn.model_validate(normalise_households([h])[0]).model_dump(mode="json")
    recs, hist, ctx, _ = inputs(Context(store, params_key(p)), [rec])
    store.dispose()
    row = {k: v for k, v in {**rec, "events": [{k: v for k, v in e.items() if k != "person_key"} for e in recs[0]["events"]],
                             "history": json.dumps(hist[0]), "context": json.dumps(ctx[0])}.items() if v is not None}
    row["members"] = [{k: v for k, v in m.items() if v is not None} for m in row["members"]]
    generic = json.dumps({"dataframe_records": [row], "params": {"explain": "none"}}, ensure_ascii=False).encode()
    (out / "event_ids.txt").write_text("\n".join(ledger["event_ids"]) + "\n", encoding="utf-8")
    return {"ours": (ours, {"X-API-Key": key}), "generic": (generic, {}),
            "events": (b"", {"X-API-Key": dept_key}, ledger["quarter"])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0, help="measured seconds per server and concurrency")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "api")
    ap.add_argument("--households", type=int, default=8000, help="synthetic county size when a model must be built")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    args = ap.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = env_for(out)
    version = ensure_model(out, env, args.households)
    ledger = ledger_households(out, env)
    key = make_key(env, out, "county_system", ledger["county"])
    dept = make_key(env, out, "department", ledger["county"])
    bodies = payloads(key, dept, ledger, out, env)
    from fangpin import quarters as fq

    day = fq.start_date(ledger["quarter"]).replace(day=10).isoformat()
    results: dict = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
                     "model": f"models:/return-risk@champion (version {version})",
                     "tracking_uri": env["MLFLOW_TRACKING_URI"], "seconds": args.seconds,
                     "load_before": os.getloadavg(), "runs": {}}

    servers = {
        "ours": ([str(BIN / "python"), "-m", "uvicorn", "serving.app:create_app", "--factory", "--host",
                  "127.0.0.1", "--port", "{port}", "--log-level", "warning", "--no-access-log"],
                 "/ready", [("ours", "/v1/score", None), ("events", "/v1/events", day)]),
        "generic": ([str(BIN / "mlflow"), "models", "serve", "-m", "models:/return-risk@champion", "--env-manager",
                     "local", "--host", "127.0.0.1", "--port", "{port}", "--workers", "1"],
                    "/ping", [("generic", "/invocations", None)]),
    }
    for name, (cmd, ready, loads) in servers.items():
        port = free_port()
        proc = start([c.replace("{port}", str(port)) for c in cmd], env, out, name)
        try:
            wait_ready(f"http://127.0.0.1:{port}{ready}", proc)
            for label, path, events_day in loads:
                body, headers = bodies[label][:2]
                for c in args.concurrency:
                    r = drive(f"http://127.0.0.1:{port}{path}", body, headers, c, args.seconds, warmup=3,
                              pid=proc.pid, work=out, events_day=events_day)
                    results["runs"][f"{label}_c{c}"] = r
                    print(f"{label:8s} c={c}: {r['rps']:8.1f} req/s  p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms"
                          f"  server CPU {r['server_cpu_ms_per_request']:5.2f} ms/request"
                          f"  ({r['requests']} ok, errors {r['errors']})", flush=True)
        finally:
            stop(proc)
    runs = results["runs"]
    results["load_after"] = os.getloadavg()
    for c in args.concurrency:
        if f"ours_c{c}" in runs and f"generic_c{c}" in runs:
            results[f"speedup_c{c}"] = runs[f"ours_c{c}"]["rps"] / runs[f"generic_c{c}"]["rps"]
    (out / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))
    print(json.dumps({k: v for k, v in results.items() if k != "runs"}, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
