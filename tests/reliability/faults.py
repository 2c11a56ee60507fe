"""Helpers of the fault suite: settings for tests, a small load runner over real HTTP, figures."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np


def serving_params(params, **over):
    """``params`` with serving / store settings changed (``store_*`` go to ``warnings``)."""
    w = {k: v for k, v in over.items() if k.startswith("store_")}
    s = {k: v for k, v in over.items() if not k.startswith("store_")}
    return params.model_copy(update={"warnings": params.warnings.model_copy(update=w),
                                     "serving": params.serving.model_copy(update=s)})


@dataclass
class Load:
    """Results of concurrent clients: (kind, status, seconds) per request, thread-safe."""

    results: list[tuple[str, int, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # client-side exceptions (timeouts, resets)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def call(self, kind: str, fn):
        t = time.perf_counter()
        try:
            r = fn()
        except Exception as exc:  # noqa: BLE001 - a failed request is a result
            with self._lock:
                self.errors.append(f"{kind}: {type(exc).__name__}")
            return None
        with self._lock:
            self.results.append((kind, r.status_code, time.perf_counter() - t))
        return r

    def statuses(self, kind: str | None = None) -> list[int]:
        return [s for k, s, _ in self.results if kind is None or k == kind]

    def server_errors(self) -> list[tuple[str, int]]:
        return [(k, s) for k, s, _ in self.results if s >= 500]

    def p99_ms(self, kind: str | None = None) -> float:
        lat = [t for k, _, t in self.results if kind is None or k == kind]
        return float(np.percentile(lat, 99) * 1000) if lat else float("nan")

    def summary(self) -> dict:
        kinds = sorted({k for k, _, _ in self.results})
        return {
            "requests": len(self.results), "client_errors": len(self.errors),
            "5xx": len(self.server_errors()), "p99_ms": round(self.p99_ms(), 1),
            "by_kind": {k: {"n": len(self.statuses(k)), "statuses": sorted(set(self.statuses(k))),
                            "p99_ms": round(self.p99_ms(k), 1)} for k in kinds},
        }


def run_threads(workers, seconds: float | None = None):
    """Run ``workers`` (callables taking a stop Event) in threads; stop them after ``seconds``
    (or when they return by themselves) and re-raise the first exception."""
    stop = threading.Event()
    errs: list[BaseException] = []

    def wrap(fn):
        try:
            fn(stop)
        except BaseException as exc:  # noqa: BLE001
            errs.append(exc)
            stop.set()

    threads = [threading.Thread(target=wrap, args=(w,), daemon=True) for w in workers]
    for t in threads:
        t.start()
    if seconds is not None:
        stop.wait(seconds)
        stop.set()
    for t in threads:
        t.join(120)
    if errs:
        raise errs[0]


def record(name: str, summary: dict) -> None:
    """Keep a test's figures when ``FANGPIN_RELIABILITY_OUT`` names a folder (bench/bench_reliability.py
    collects them into docs/benchmarks.md); otherwise nothing is written."""
    import json
    import os
    from pathlib import Path

    out = os.environ.get("FANGPIN_RELIABILITY_OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / f"{name}.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1), encoding="utf-8")
