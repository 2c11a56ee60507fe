"""Calendar quarters as used by the ledger (`YYYYQn`)."""

from __future__ import annotations

import calendar
import re
from datetime import date
from functools import lru_cache

import numpy as np
import pandas as pd

_Q = re.compile(r"^\s*(\d{4})\s*[Qq]\s*([1-4])\s*$")


def parse(q: str) -> tuple[int, int]:
    m = _Q.match(str(q))
    if not m:
        raise ValueError(f"not a quarter (expected YYYYQn): {q!r}")
    return int(m.group(1)), int(m.group(2))


def fmt(year: int, qn: int) -> str:
    return f"{year}Q{qn}"


@lru_cache(maxsize=4096)
def to_index(q: str) -> int:
    """Quarters as consecutive integers (year*4 + n-1), for arithmetic and ordering (memoised:
    a batch asks for the same few quarters hundreds of thousands of times)."""
    y, n = parse(q)
    return y * 4 + n - 1


def from_index(i: int) -> str:
    return fmt(i // 4, i % 4 + 1)


def shift(q: str, k: int) -> str:
    return from_index(to_index(q) + k)


def span(start: str, n: int) -> list[str]:
    return [shift(start, k) for k in range(n)]


def end_date(q: str) -> date:
    y, n = parse(q)
    return date(y, 3 * n, calendar.monthrange(y, 3 * n)[1])


def start_date(q: str) -> date:
    y, n = parse(q)
    return date(y, 3 * n - 2, 1)


def of_date(d: date | pd.Timestamp) -> str:
    return fmt(d.year, (d.month - 1) // 3 + 1)


def of_yyyymm(v: int) -> str:
    """Quarter of a YYYYMM integer, e.g. 202302 -> '2023Q1'."""
    return fmt(v // 100, ((v % 100) - 1) // 3 + 1)


def index_of_yyyymm(v) -> np.ndarray:
    """Quarter index (:func:`to_index`) of YYYYMM values, vectorised: float64, missing → NaN."""
    v = pd.to_numeric(pd.Series(v) if not isinstance(v, np.ndarray | pd.Series) else v, errors="coerce")
    v = np.asarray(v, dtype=np.float64)
    out = np.full(v.shape, np.nan)
    ok = np.isfinite(v)  # numpy's mod of NaN is ~20x slower than of a number: compute the known values only
    x = v[ok]
    out[ok] = np.floor(x / 100) * 4 + np.floor((np.mod(x, 100) - 1) / 3)
    return out
