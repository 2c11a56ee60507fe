"""Opportunistic micro-batching of scoring requests.

Building features for one household costs almost as much as for dozens (the feature code is
columnar pandas), so concurrent requests are scored together: one scoring thread takes whatever
requests are waiting (up to ``max_households``) and scores them in one call. An idle server scores
a lone request at once — there is no waiting window, so batching adds no latency at concurrency 1.

Each batch uses the model current when the batch starts (hot reload swaps the reference between
batches). Each household is scored with its own history (serving.scoring), so requests never share
one; if a batch fails, its requests are retried one by one so only the faulty one fails.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


class ModelNotLoaded(LookupError):
    """No model is loaded yet (the API answers 503). Its own class: a ``KeyError`` raised while
    scoring (e.g. no monitoring line for a year) is a different matter."""


@dataclass
class _Job:
    households: list
    future: Future = field(default_factory=Future)


class Batcher:
    def __init__(self, holder, score_fn, max_households: int = 256, workers: int = 1):
        self._holder = holder
        self._score = score_fn  # (LoadedModel, households) -> list[result]
        self._max = max_households
        self._q: queue.Queue[_Job | None] = queue.Queue()
        self._threads = [threading.Thread(target=self._run, name=f"scorer-{i}", daemon=True)
                         for i in range(workers)]
        self._started = False

    def start(self) -> None:
        if not self._started:
            for t in self._threads:
                t.start()
            self._started = True

    def stop(self) -> None:
        if self._started:
            for _ in self._threads:
                self._q.put(None)
            for t in self._threads:
                t.join(timeout=10)
            self._started = False

    def submit(self, households: list) -> Future:
        job = _Job(households)
        self._q.put(job)
        return job.future

    # ---------------------------------------------------------------------------------------

    def _take(self) -> list[_Job] | None:
        first = self._q.get()
        if first is None:
            return None
        jobs, n = [first], len(first.households)
        while n < self._max:
            try:
                nxt = self._q.get_nowait()
            except queue.Empty:
                break
            if nxt is None:  # stop after this batch
                self._q.put(None)
                break
            jobs.append(nxt)
            n += len(nxt.households)
        return jobs

    def _run(self) -> None:
        while True:
            jobs = self._take()
            if jobs is None:
                return
            model = self._holder.current
            if model is None:
                for j in jobs:
                    j.future.set_exception(ModelNotLoaded("model not loaded"))
                continue
            try:
                results = self._score(model, [h for j in jobs for h in j.households])
            except Exception:  # noqa: BLE001 - isolate the failing request below
                if len(jobs) == 1:
                    self._fail(jobs[0])
                    continue
                for j in jobs:
                    try:
                        j.future.set_result((model, self._score(model, j.households)))
                    except Exception:  # noqa: BLE001
                        self._fail(j)
                continue
            k = 0
            for j in jobs:
                j.future.set_result((model, results[k:k + len(j.households)]))
                k += len(j.households)

    @staticmethod
    def _fail(job: _Job) -> None:
        import sys

        exc = sys.exc_info()[1]
        log.error("scoring failed: %s", type(exc).__name__)  # the message may quote input data
        job.future.set_exception(exc)
