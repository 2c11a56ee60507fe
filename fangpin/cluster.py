"""The execution layer: where the tasks of ``synth``, ``ingest``, ``train`` and ``score`` run.

Every stage describes its work as independent tasks (a county to simulate, a chunk of rows to
validate, a set of whole townships to score …) and hands them to :func:`execution`, which picks,
in order:

1. an existing Dask cluster: ``--scheduler tcp://host:8786`` (the CLI sets
   ``DASK_SCHEDULER_ADDRESS``), else the ``DASK_SCHEDULER_ADDRESS`` environment variable, else
   ``cluster.scheduler`` in params.yaml — a province's cluster (``dask scheduler`` / ``dask worker``,
   dask-jobqueue, dask-kubernetes …);
2. this process, without any cluster, when the input is smaller than the stage's
   ``cluster.in_process_below`` (starting worker processes and importing pandas / LightGBM in them
   costs seconds, more than small inputs take; docs/benchmarks.md "Execution layer" measures it);
3. else a ``distributed.LocalCluster`` sized to the machine: ``cluster.workers`` worker processes
   (0: one per available core) of ``cluster.threads_per_worker`` threads, each limited to its
   share of the memory.

Tasks read and write files: the paths they get are absolute, so on a cluster of several machines
the working directory (ingested tables, scratch, outputs) must be on storage every worker sees.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

from fangpin.config import Params

log = logging.getLogger(__name__)

ENV = "DASK_SCHEDULER_ADDRESS"
Stage = Literal["synth", "ingest", "train", "score"]


# The nanny starts each worker with glibc's MALLOC_TRIM_THRESHOLD_=65536 (Dask's default, to hand
# freed memory back to the OS). Setting it also pins glibc's mmap threshold at 128 KiB, so every
# larger array is mapped, faulted in and unmapped afresh. The stages here whose workers run with
# glibc's own thresholds instead, as measured (docs/benchmarks.md, "Workers without Dask's malloc
# trim"): synth took a third to a half of the CPU, scoring and ingest ~10-20 % less, for 4-9 % more peak
# memory; training kept the same time for ~30 % more peak memory, so it keeps the trim. A
# province's workers take the setting from their own Dask configuration (README).
UNTRIMMED: frozenset[str] = frozenset({"synth", "ingest", "score"})
NO_TRIM = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}


def scheduler_address(params: Params) -> str | None:
    """The address of the cluster to use, if any (``DASK_SCHEDULER_ADDRESS``, else params)."""
    return os.environ.get(ENV) or params.cluster.scheduler


def local_workers(params: Params) -> int:
    """Worker processes of a LocalCluster on this machine (``cluster.workers``; 0 = one per core)."""
    if params.cluster.workers:
        return params.cluster.workers
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class Executor:
    """Runs a stage's tasks: on a ``distributed.Client`` (``client``), or in this process when
    ``client`` is None. Tasks are plain module-level functions (pickled by reference)."""

    def __init__(self, client=None):
        self.client = client

    @property
    def distributed(self) -> bool:
        return self.client is not None

    @property
    def workers(self) -> int:
        """Worker processes that run tasks (1 in this process)."""
        if self.client is None:
            return 1
        return max(1, len(self.client.scheduler_info(n_workers=-1).get("workers", {})))

    def share(self, obj: Any) -> Any:
        """An object every task of the stage uses (a model, a router): sent to every worker once
        (``Client.scatter(broadcast=True)``); in-process, the object itself."""
        if self.client is None:
            return obj
        return self.client.scatter(obj, broadcast=True, hash=False)

    def submit(self, fn: Callable, *args, **kw):
        """One task; returns a future (``.result()``), in-process a finished one."""
        if self.client is None:
            return _Done(fn(*args, **kw))
        return self.client.submit(fn, *args, pure=False, **kw)

    def map_unordered(self, fn: Callable, items: Iterable, *args, **kw) -> Iterator[Any]:
        """``fn(item, *args, **kw)`` for every item; results as the tasks finish (in-process: in
        item order, one at a time). The first failure cancels the tasks not yet run and raises."""
        items = list(items)
        if self.client is None:
            for it in items:
                yield fn(it, *args, **kw)
            return
        from distributed import as_completed

        futures = [self.client.submit(fn, it, *args, pure=False, **kw) for it in items]
        try:
            for _, result in as_completed(futures, with_results=True):
                yield result
        finally:
            self.client.cancel([f for f in futures if not f.done()])

    def compute(self, collection):
        """A Dask collection (DataFrame, Series …) computed on the cluster, or in this process."""
        if self.client is None:
            return collection.compute(scheduler="sync")
        return self.client.compute(collection).result()

    def map(self, fn: Callable, items: Iterable, *args, **kw) -> list[Any]:
        """``fn(item, *args, **kw)`` for every item; results in item order."""
        items = list(items)
        if self.client is None:
            return [fn(it, *args, **kw) for it in items]
        futures = [self.client.submit(fn, it, *args, pure=False, **kw) for it in items]
        try:
            return self.client.gather(futures)
        finally:
            self.client.cancel([f for f in futures if not f.done()])


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (a task reports its worker's)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


class _Done:
    """A finished in-process task (the part of a future's interface the stages use)."""

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


def in_process_below(params: Params, stage: Stage) -> int:
    return int(getattr(params.cluster.in_process_below, stage))


@contextmanager
def execution(params: Params, stage: Stage, size: int) -> Iterator[Executor]:
    """The executor of one stage run (module doc). ``size`` is the stage's input in the unit of
    its ``cluster.in_process_below`` threshold (households, bytes, rows)."""
    addr = scheduler_address(params)
    if addr:
        from distributed import Client

        client = Client(addr)
        log.info("%s: Dask cluster at %s (%d workers)", stage, addr,
                 len(client.scheduler_info(n_workers=-1).get("workers", {})))
        try:
            yield Executor(client)
        finally:
            client.close()
        return
    if size < in_process_below(params, stage):
        log.info("%s: in this process (input %d < cluster.in_process_below.%s)", stage, size, stage)
        yield Executor(None)
        return
    with local_cluster(params, stage=stage) as client:
        yield Executor(client)


@contextmanager
def local_cluster(params: Params, workers: int | None = None, stage: Stage | None = None):
    """A ``distributed.Client`` on a LocalCluster of this machine (closed on exit), for the tasks
    of ``stage`` (its workers' malloc settings: :data:`UNTRIMMED`)."""
    import dask
    from distributed import Client, LocalCluster

    c = params.cluster
    n = workers or local_workers(params)
    # LightGBM / OpenMP in a worker: one thread per worker thread, sleeping rather than spinning
    env = {"OMP_NUM_THREADS": str(c.threads_per_worker), "OMP_WAIT_POLICY": "PASSIVE"}
    logging.getLogger("distributed").setLevel(logging.WARNING)
    with dask.config.set(NO_TRIM if stage in UNTRIMMED else {}), \
            LocalCluster(n_workers=n, threads_per_worker=c.threads_per_worker, processes=True,
                         memory_limit=c.memory_limit, dashboard_address=c.dashboard or ":0", env=env,
                         silence_logs=logging.WARNING) as cluster, Client(cluster) as client:
        log.info("LocalCluster: %d workers x %d threads", n, c.threads_per_worker)
        yield client
