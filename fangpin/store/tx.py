"""Write transactions of the warning store that wait, then succeed or say why.

- A write transaction takes the write lock up front: SQLite ``BEGIN IMMEDIATE`` (chosen per
  connection by the ``fangpin_write`` execution option, read by the engine's ``begin`` listener in
  :func:`fangpin.store.repo.make_engine`), PostgreSQL row locks (``SELECT … FOR UPDATE`` where a
  read decides a write) under a ``lock_timeout``. A deferred SQLite transaction that reads and then
  writes is refused at once when another connection holds the lock (the busy timeout never applies
  to that upgrade); an immediate one waits in SQLite's busy handler.
- Writers of one process queue on a semaphore first (one at a time on SQLite, where only one can
  write anyway: no busy-handler polling between them; half the connections on PostgreSQL, so
  readers always find a connection).
- Every wait is bounded by ``wait_s``: a lock that is not free by then (another process holds it, a
  long batch write) raises :class:`StoreBusy`, which the API answers with 503 and ``Retry-After``.
  Deadlocks and serialisation failures (PostgreSQL) are retried within the same bound.
- :class:`AuditWriter` batches audit rows of reads in a background thread, so a read never takes
  the write lock; rows are written in order, kept while the store is busy, and flushed on close.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc

from fangpin.errors import UserError

log = logging.getLogger(__name__)
T = TypeVar("T")

WRITE_OPTION = "fangpin_write"  # execution option: this connection's transactions are writes
_RETRY_SQLSTATES = {"40001", "40P01", "55P03"}  # serialization failure, deadlock, lock not available
_SQLITE_BUSY = ("database is locked", "database table is locked", "database is busy")


class StoreBusy(UserError, RuntimeError):
    """The store could not take the write lock (or a connection) within the configured wait: the
    API answers 503 with ``Retry-After``, the CLI its two sentences (exit 2). ``what`` is for the
    log and never holds data."""

    def __init__(self, what: str, retry_after: float = 1.0):
        super().__init__("预警库正忙（另一进程正在写入），请稍后重试。",
                         f"The warning store is busy ({what}); retry later.")
        self.what = what
        self.retry_after = max(1, int(round(retry_after)))


def is_busy(exc: BaseException) -> bool:
    """Whether a database error means "locked / conflicting, try again" (not a bug, not bad data)."""
    if isinstance(exc, sa_exc.TimeoutError):  # no pooled connection within pool_timeout
        return True
    orig = getattr(exc, "orig", None)
    if orig is None:
        return False
    if getattr(orig, "sqlstate", None) in _RETRY_SQLSTATES:
        return True
    msg = str(orig).lower() if type(orig).__module__.startswith("sqlite3") else ""
    return any(m in msg for m in _SQLITE_BUSY)


class Writer:
    """Runs write transactions for one engine (see the module doc)."""

    def __init__(self, engine: Engine, wait_s: float, connections: int):
        self.engine = engine
        self.wait_s = float(wait_s)
        self.sqlite = engine.dialect.name == "sqlite"
        self._slots = threading.BoundedSemaphore(1 if self.sqlite else max(1, connections // 2))
        self._held = threading.local()

    def run(self, fn: Callable[..., T], *, retry: bool = True, wait_s: float | None = None) -> T:
        """``fn(conn)`` in one write transaction; returns its result. ``retry=False`` when ``fn``
        cannot run twice (it consumes a lazy input): only a failure before ``fn`` started (taking
        the lock) is retried then. ``wait_s`` overrides the wait (a batch job may wait longer)."""
        wait = self.wait_s if wait_s is None else float(wait_s)
        deadline = time.monotonic() + wait
        if getattr(self._held, "depth", 0):  # a write inside a write of this thread: same slot
            return self._attempts(fn, retry, deadline)
        if not self._slots.acquire(timeout=wait):
            raise StoreBusy(f"no write slot within {wait:g} s", wait)
        self._held.depth = 1
        try:
            return self._attempts(fn, retry, deadline)
        finally:
            self._held.depth = 0
            self._slots.release()

    def _attempts(self, fn, retry: bool, deadline: float):
        delay = 0.01
        while True:
            started = [False]
            try:
                return self._once(fn, deadline, started)
            except (sa_exc.OperationalError, sa_exc.DBAPIError, sa_exc.TimeoutError) as exc:
                if not is_busy(exc):
                    raise
                left = deadline - time.monotonic()
                if (started[0] and not retry) or left <= delay:
                    # the message never carries statement parameters (the exception is dropped)
                    raise StoreBusy(f"write lock not free ({type(getattr(exc, 'orig', exc)).__name__})",
                                    self.wait_s) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.25)

    def _once(self, fn, deadline: float, started: list):
        with self.engine.connect() as conn:
            conn.execution_options(**{WRITE_OPTION: True})
            with conn.begin():  # SQLite: BEGIN IMMEDIATE, the lock is taken (or waited for) here
                if not self.sqlite:
                    ms = max(1, int((deadline - time.monotonic()) * 1000))
                    conn.exec_driver_sql(f"SET LOCAL lock_timeout = {ms}")
                started[0] = True
                return fn(conn)


class AuditWriter:
    """Audit rows written in batches by a background thread (one short write transaction per batch).

    ``put`` never touches the store; ``flush`` waits until everything put so far is written;
    ``close`` flushes and stops. While the store is busy the rows stay queued (in order) and are
    retried; more than ``max_pending`` queued rows makes ``put`` raise :class:`StoreBusy` (the
    request fails with 503 rather than go unaudited)."""

    def __init__(self, write_rows: Callable[[list[dict]], None], *, interval_s: float = 0.05,
                 max_pending: int = 100_000):
        self._write_rows = write_rows
        self._interval = interval_s
        self._max = max_pending
        self._rows: list[dict] = []
        self._cond = threading.Condition()
        self._written = 0  # rows written so far (monotonic)
        self._queued = 0  # rows put so far
        self._stop = False
        self._thread: threading.Thread | None = None

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="fangpin-audit", daemon=True)
            self._thread.start()

    def put(self, row: dict) -> None:
        with self._cond:
            if len(self._rows) >= self._max:
                raise StoreBusy(f"{len(self._rows)} audit rows waiting for the store")
            self._rows.append(row)
            self._queued += 1
            self._ensure_thread()
            self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._rows and not self._stop:
                    self._cond.wait()
                if not self._rows and self._stop:
                    return
                batch = list(self._rows)
            try:
                self._write_rows(batch)
            except StoreBusy:
                time.sleep(self._interval)
                continue
            except Exception as exc:  # noqa: BLE001 - keep the rows, say what failed (type only)
                log.error("audit rows not written yet (%s); retrying", type(exc).__name__)
                time.sleep(max(self._interval, 0.5))
                continue
            with self._cond:
                del self._rows[:len(batch)]
                self._written += len(batch)
                self._cond.notify_all()
            if not self._stop:
                time.sleep(self._interval)  # let the next rows gather into one transaction

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every row put so far is written; False if ``timeout`` passed first."""
        with self._cond:
            target = self._queued
            if self._written >= target:
                return True
            self._ensure_thread()
            self._cond.notify_all()
            return self._cond.wait_for(lambda: self._written >= target, timeout)

    def close(self, timeout: float = 30.0) -> None:
        ok = self.flush(timeout)
        with self._cond:
            self._stop = True
            self._cond.notify_all()
            pending = len(self._rows)
        if not ok and pending:
            log.error("%d audit rows could not be written before shutdown (store busy)", pending)
