"""Bulk inserts straight to the database driver, for the batch's millions of rows.

SQLAlchemy's ``conn.execute(table.insert(), rows)`` processes every parameter of every row in
Python; a province's history (millions of rows) and a quarter's tasks spend more time there than
in the database. :func:`bulk_insert` builds one INSERT statement of the table's columns and hands
value tuples (built column by column from Arrow record batches, or from dicts) to the driver's
``executemany``, converting only the columns that need SQLAlchemy's bind processing (dates and
times on SQLite), once per distinct value.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from operator import itemgetter

from sqlalchemy import JSON


def tuples(rows: Iterable, fields: list[str], n: int = 20_000):
    """Batches of value tuples (``fields`` in order; a field a row lacks is null) from dicts or
    from Arrow record batches / tables (converted column by column)."""
    batch: list[tuple] = []
    get = None
    for r in rows:
        if hasattr(r, "column_names"):  # pyarrow.RecordBatch / Table
            if batch:
                yield batch
                batch = []
            cols = [r.column(f).to_pylist() if f in r.column_names else [None] * r.num_rows for f in fields]
            yield list(zip(*cols, strict=True))
            continue
        if get is None:
            get = (itemgetter(*fields) if len(fields) > 1 and all(f in r for f in fields)
                   else (lambda d: tuple(d.get(f) for f in fields)))
        batch.append(get(r))
        if len(batch) >= n:
            yield batch
            batch = []
    if batch:
        yield batch


def first_repeat(keys: list, seen: set):
    """The first of ``keys`` already in ``seen`` or earlier in ``keys``, or None: then ``seen``
    has taken them all (a batch run's check that no row comes twice, chunk after chunk)."""
    fresh = set(keys)
    if len(fresh) == len(keys) and fresh.isdisjoint(seen):
        seen |= fresh
        return None
    met: set = set()
    for k in keys:
        if k in seen or k in met:
            return k
        met.add(k)
    return None  # pragma: no cover - a repeat was found above


def _processor(conn, table, name: str):
    col = table.__table__.c[name]
    return col.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)


def bulk_insert(conn, table, rows: Iterable, constants: dict, skip_conflicts: tuple[str, ...] = (), *,
                update: tuple[Sequence[str], Sequence[str]] | None = None, update_where: str | None = None,
                convert: Sequence[str] = ()) -> int:
    """Insert ``rows`` (dicts of the table's columns or Arrow record batches of them, ``data`` as
    JSON text; a missing nullable column is null) into the ORM class ``table`` with the same
    ``constants`` on every row, in executemany batches. ``skip_conflicts``: ON CONFLICT (these)
    DO NOTHING; ``update`` = (key columns, refreshed columns): ON CONFLICT (key) DO UPDATE the
    refreshed ones (an upsert), where the SQL condition ``update_where`` holds. ``convert``:
    columns whose values go through the column type's bind processor (what SQLAlchemy would send
    for a date, a datetime or a JSON value; a JSON null stays SQL NULL). Returns the rows sent."""
    cols = [c for c in table.__table__.columns if c.name not in constants]
    ph = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    pg = conn.dialect.name == "postgresql"
    names = [c.name for c in cols] + list(constants)
    marks = [f"CAST({ph} AS JSON)" if (pg and n == "data") else ph for n in names]
    sql = f"INSERT INTO {table.__tablename__} ({', '.join(names)}) VALUES ({', '.join(marks)})"
    if skip_conflicts:
        sql += f" ON CONFLICT ({', '.join(skip_conflicts)}) DO NOTHING"
    elif update is not None:
        key, refreshed = update
        sql += (f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET "
                + ", ".join(f"{c} = excluded.{c}" for c in refreshed))
        if update_where:
            sql += f" WHERE {update_where}"

    def processed(name, value):  # the driver value of a constant, as SQLAlchemy would bind it
        proc = _processor(conn, table, name)
        return proc(value) if proc else value

    tail = tuple(processed(n, v) for n, v in constants.items())
    fields = [c.name for c in cols]
    procs = [(i, p, not isinstance(table.__table__.c[f].type, JSON)) for i, f in enumerate(fields)
             if f in convert and (p := _processor(conn, table, f)) is not None]
    n = 0
    for batch in tuples(rows, fields):
        if procs:
            columns = list(zip(*batch, strict=True))
            for i, proc, cache in procs:
                if cache:  # a date or time: few distinct values
                    seen: dict = {}
                    columns[i] = [seen[v] if v in seen else seen.setdefault(v, proc(v)) for v in columns[i]]
                else:
                    columns[i] = [None if v is None else proc(v) for v in columns[i]]
            batch = list(zip(*columns, strict=True))
        conn.exec_driver_sql(sql, [r + tail for r in batch] if tail else batch)
        n += len(batch)
    return n
