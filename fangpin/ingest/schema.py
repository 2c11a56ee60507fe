"""Declarative pandera schemas built from fangpin.contract.

The schemas check *normalised* frames (see fangpin.ingest.normalise): value sets, numeric
ranges, required (non-null) columns and the two text formats the contract fixes (统计季度
`YYYYQn`, 证件号码 18 characters). Parsing failures (a number or date that cannot be read) are
found by the normaliser before validation; everything else is declared here.
"""

from __future__ import annotations

from functools import lru_cache

import pandera.pandas as pa

from fangpin import contract
from fangpin.contract import Column
from fangpin.ingest.normalise import values_for

ID_PATTERN = r"^\d{17}[\dX]$"
QUARTER_PATTERN = r"^\d{4}Q[1-4]$"

# Required columns (●) whose cells may be blank by the contract's own value set: 监测对象类别 is
# "blank (not a monitoring object)". Every other required column must hold a value in every row.
BLANK_ALLOWED = frozenset({"monitor_category"})

# Formats fixed by the contract for text columns, by canonical name.
_FORMATS = {"id_number": ID_PATTERN, "quarter": QUARTER_PATTERN}


def _checks(col: Column) -> list[pa.Check]:
    checks: list[pa.Check] = []
    if col.kind in ("category", "sex", "yesno"):
        checks.append(pa.Check.isin(values_for(col)))
    if col.lo is not None and col.hi is not None:
        checks.append(pa.Check.in_range(col.lo, col.hi))
    elif col.lo is not None:
        checks.append(pa.Check.ge(col.lo))
    elif col.hi is not None:
        checks.append(pa.Check.le(col.hi))
    if col.name in _FORMATS:
        checks.append(pa.Check.str_matches(_FORMATS[col.name]))
    if col.kind == "text":
        checks.append(pa.Check.str_length(max_value=contract.MAX_TEXT_CHARS))
    return checks


def schema_for(columns: tuple[Column, ...], name: str) -> pa.DataFrameSchema:
    return pa.DataFrameSchema(
        {c.name: pa.Column(nullable=not c.required or c.name in BLANK_ALLOWED, required=True, checks=_checks(c)) for c in columns},
        name=name,
        strict=False,  # other columns are carried through untouched
        coerce=False,
    )


@lru_cache(maxsize=1)
def ledger_schema() -> pa.DataFrameSchema:
    return schema_for(contract.LEDGER_COLUMNS, "户成员台账")


@lru_cache(maxsize=1)
def events_schema() -> pa.DataFrameSchema:
    return schema_for(contract.EVENT_COLUMNS, "部门预警数据")


def _from(headers: dict[str, str], name: str, kind, **kw) -> Column:
    header = next(h for h, n in headers.items() if n == name)
    return Column(header, name, kind, **kw)


# 监测线.csv and oracle.csv: headers come from the contract module, types declared here.
LINES_COLUMNS = (
    _from(contract.LINES_COLUMNS, "year", "int", required=True, lo=1990, hi=2100),
    _from(contract.LINES_COLUMNS, "line", "float", required=True, lo=0.01, hi=contract.PER_CAPITA_MAX),
    _from(contract.LINES_COLUMNS, "province", "text"),
)
ORACLE_COLUMNS = (
    _from(contract.ORACLE_COLUMNS, "household_id", "text", required=True),
    _from(contract.ORACLE_COLUMNS, "quarter", "quarter", required=True),
    _from(contract.ORACLE_COLUMNS, "true_probability", "float", required=True, lo=0.0, hi=1.0),
)


@lru_cache(maxsize=1)
def lines_schema() -> pa.DataFrameSchema:
    return schema_for(LINES_COLUMNS, "监测线")


@lru_cache(maxsize=1)
def oracle_schema() -> pa.DataFrameSchema:
    return schema_for(ORACLE_COLUMNS, "oracle")
