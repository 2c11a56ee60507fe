"""Scoring API latency and throughput, beside `mlflow models serve` on the same registered model.

Both servers run as uvicorn subprocesses on 127.0.0.1 and are driven, in turn, by a load process
of their own (httpx, asyncio, C requests in flight). Each request scores ONE household:

- fangpin (`serving.app`): POST /v1/score with an API key (verified against the store), the
  household in the canonical JSON form (validated), features + LightGBM + calibration + rules,
  TreeSHAP reasons in Chinese and suggested measures (the benchmark household always gets a
  warning, so every request is explained), an audit row written to the store.
- generic: `mlflow models serve -m models:/return-risk@champion --env-manager local`, POST
  /invocations with the same household as one ``dataframe_records`` row: the same pyfunc
  (probability, levels, rule hits, raw explanation inputs), no auth, no audit, no reasons.

The model: ``models:/return-risk@champion`` of the tracking store in MLFLOW_TRACKING_URI; when it
has none, one is built first with the real pipeline (`fangpin synth` + `fangpin run`) under the
work dir. Run:

    .venv/bin/python bench/bench_api.py [--seconds 20] [--out bench/out/api]

Results are printed and written to <out>/results.json; docs/benchmarks.md records them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
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
    code = ("from fangpin.config import load_params; from models.pyfunc import champion_version; "
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


def make_key(env: dict, out: Path) -> str:
    r = subprocess.run([str(BIN / "fangpin"), "keys", "add", "--role", "county_system", "--scope", "青石县",
                        "--label", "bench"], env=env, capture_output=True, text=True, check=True, cwd=out)
    return r.stdout.strip().splitlines()[-1]


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


def drive(url: str, body: bytes, headers: dict, concurrency: int, seconds: float, warmup: int) -> dict:
    """Run the load generator in its own process; returns its JSON summary."""
    spec = json.dumps({"url": url, "headers": headers, "concurrency": concurrency, "seconds": seconds,
                       "warmup": warmup})
    r = subprocess.run([sys.executable, __file__, "--drive", spec], input=body, capture_output=True, check=True)
    return json.loads(r.stdout)


async def _load(url: str, body: bytes, headers: dict, concurrency: int, seconds: float, warmup: int) -> dict:
    import httpx

    lat: list[float] = []
    errors: dict[str, int] = {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(headers={"Content-Type": "application/json", **headers}, limits=limits,
                                 timeout=120) as client:
        for _ in range(warmup):
            r = await client.post(url, content=body)
            r.raise_for_status()
        stop_at = time.perf_counter() + seconds

        async def worker():
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                r = await client.post(url, content=body)
                dt = time.perf_counter() - t0
                if r.status_code == 200:
                    lat.append(dt)
                else:
                    errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    lat.sort()
    q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else [lat[0] * 1] * 99
    return {"requests": len(lat), "errors": errors, "seconds": wall, "rps": len(lat) / wall,
            "p50_ms": 1000 * statistics.median(lat), "p99_ms": 1000 * q[98], "mean_ms": 1000 * statistics.fmean(lat)}


def payloads(key: str) -> dict:
    sys.path.insert(0, str(REPO))
    from fangpin.household_json import HouseholdIn, example_household

    h = example_household()
    ours = json.dumps({"households": [h]}, ensure_ascii=False).encode()
    # the same household as one pyfunc input row, in the fields its MLflow signature declares
    rec = HouseholdIn.model_validate(h).model_dump(mode="json", exclude_none=True)
    for m in rec["members"]:
        m.pop("school_grade", None)
    for e in rec["events"]:
        e.pop("id_number", None)
    generic = json.dumps({"dataframe_records": [rec]}, ensure_ascii=False).encode()
    return {"ours": (ours, {"X-API-Key": key}), "generic": (generic, {})}


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
    key = make_key(env, out)
    bodies = payloads(key)
    results: dict = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
                     "model": f"models:/return-risk@champion (version {version})",
                     "tracking_uri": env["MLFLOW_TRACKING_URI"], "seconds": args.seconds, "runs": {}}

    servers = {
        "ours": ([str(BIN / "python"), "-m", "uvicorn", "serving.app:create_app", "--factory", "--host",
                  "127.0.0.1", "--port", "{port}", "--log-level", "warning", "--no-access-log"],
                 "/ready", "/v1/score"),
        "generic": ([str(BIN / "mlflow"), "models", "serve", "-m", "models:/return-risk@champion", "--env-manager",
                     "local", "--host", "127.0.0.1", "--port", "{port}", "--workers", "1"],
                    "/ping", "/invocations"),
    }
    for name, (cmd, ready, path) in servers.items():
        port = free_port()
        proc = start([c.replace("{port}", str(port)) for c in cmd], env, out, name)
        try:
            wait_ready(f"http://127.0.0.1:{port}{ready}", proc)
            body, headers = bodies[name]
            for c in args.concurrency:
                r = drive(f"http://127.0.0.1:{port}{path}", body, headers, c, args.seconds, warmup=20)
                results["runs"][f"{name}_c{c}"] = r
                print(f"{name:8s} c={c}: {r['rps']:8.1f} req/s  p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms"
                      f"  ({r['requests']} ok, errors {r['errors']})", flush=True)
        finally:
            stop(proc)
    runs = results["runs"]
    for c in args.concurrency:
        if f"ours_c{c}" in runs and f"generic_c{c}" in runs:
            results[f"speedup_c{c}"] = runs[f"ours_c{c}"]["rps"] / runs[f"generic_c{c}"]["rps"]
    (out / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))
    print(json.dumps({k: v for k, v in results.items() if k != "runs"}, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--drive":
        s = json.loads(sys.argv[2])
        body = sys.stdin.buffer.read()
        print(json.dumps(asyncio.run(_load(s["url"], body, s["headers"], s["concurrency"], s["seconds"],
                                           s["warmup"]))))
    else:
        main()
