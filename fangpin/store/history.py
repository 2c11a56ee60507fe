"""The online history in the warning store: what scoring one household alone needs of the ledger.

``fangpin score`` writes, for the counties it scored and as of the quarter it scored (when that
is not older than what is stored), every household (its place, level, history and snapshot, keyed
by the keyed hash of 户编号), the person → household map and every place's context
(fangpin.store.schema). The API reads them per request (:func:`histories`, :func:`contexts`) and
``POST /v1/events`` adds department events (:func:`add_events`) and raises warnings
(:func:`raise_warning`; clues raise a household's level with :func:`raise_level`). Functions take
the :class:`fangpin.store.Store` they work on.

Why a table and not a memory-mapped file: ``/v1/events`` writes (new events, the household's new
level, warnings) in transactions that several API processes share, and a primary-key lookup of a
request's households costs well under a millisecond on both SQLite and PostgreSQL
(docs/benchmarks.md, "Online history").

Blocks: a household's history and snapshot are not a JSON text of its own (building and
inserting one per household was most of a province's scoring time) but a row of a block: the
Arrow record batch of up to :data:`BLOCK_HOUSEHOLDS` neighbouring households of one county
(:func:`encode_blocks`, built column by column in the scoring tasks), stored once per block with
its schema stored once per run (content-addressed); :func:`histories` decodes the blocks a
request needs (a request for one village's households reads few blocks).

Households in blocks too: a household's key, place, level and where its history is are a row of
a household block (:func:`encode_household_blocks`: the households of one county and chunk whose
keys share their first :data:`HOUSEHOLD_BUCKET_BITS` bits), not a row of their own, which cost a
million inserts a million households in the batch's one writing process. A lookup probes its
county's blocks of the key's bucket (all counties' when the county is not known). The level a
department event or a clue raises after the batch is a row of ``household_levels`` (the
household's level is the more urgent of the two); raising it locks that row. Rows a household
each (``household_history``, before migration 0009) are still read until the county's next run.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime

from sqlalchemy import delete, func, select, text, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite

from fangpin.store.bulk import bulk_insert
from fangpin.store.schema import (
    DepartmentEventRow,
    HistoryBlockRow,
    HistorySchemaRow,
    HouseholdBlockRow,
    HouseholdHistoryRow,
    HouseholdLevelRow,
    PersonBlockRow,
    PlaceContextRow,
    WarningRow,
)
from fangpin.warnings import LEVEL_RANK, STATUS_OPEN, max_level, severity

BLOCK_HOUSEHOLDS = 64  # households per history block: a block is decoded whole for any of them
PERSON_BUCKET_BITS = 12  # person map blocks: a county's chunk's persons by their key's first 12 bits
HOUSEHOLD_BUCKET_BITS = 8  # household blocks: ~200 households each in a 50,000-household chunk of a county
_KEY_BYTES = 16  # a keyed hash (fangpin.ids.keyed_hash): 32 hexadecimal characters
# page cache of a bulk history write (SQLite): a province's key indexes (~1.5 GB at 5 M households)
_SQLITE_BULK_CACHE_KIB = 2048 * 1024


def _now() -> datetime:
    return datetime.now(UTC)


def _dialect(conn):
    if conn.dialect.name not in ("postgresql", "sqlite"):
        raise NotImplementedError(f"unsupported store dialect {conn.dialect.name}")
    return postgresql if conn.dialect.name == "postgresql" else sqlite


def _bulk_cache(conn, on: bool) -> None:
    """SQLite: a page cache that holds the key indexes for a bulk write (keys are hashes, so
    index pages are hit at random), set once for the whole write — shrinking it between inserts
    would spill the transaction's dirty pages each time — and SQLite's default again after (the
    connection is pooled)."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(f"PRAGMA cache_size=-{_SQLITE_BULK_CACHE_KIB if on else 2000}")


def _struct(t):
    import pyarrow as pa

    t = t.combine_chunks()
    cols = [c.chunk(0) if c.num_chunks else pa.array([], type=c.type) for c in t.columns]
    return pa.StructArray.from_arrays(cols, names=t.column_names)


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # a zstd frame's first bytes (an Arrow IPC message starts with 0xFFFFFFFF)


def _compressed(message) -> bytes:
    """One block's Arrow IPC message as a zstd frame (level 1): ~1/4 of the plain size to write
    and keep (a block's text repeats), for ~0.15 s a 50,000-household chunk (docs/decisions.md).
    One call of the codec: a compressing stream per block cost a fifth more."""
    import pyarrow as pa

    return pa.Codec("zstd", compression_level=1).compress(message, asbytes=True)


def _message(payload: bytes):
    """The Arrow IPC message of a stored block: zstd frames are decompressed, plain messages
    (blocks written before compression) read as they are."""
    import pyarrow as pa

    if payload[:4] == _ZSTD_MAGIC:
        return pa.CompressedInputStream(pa.BufferReader(payload), "zstd").read_buffer()
    return pa.py_buffer(payload)


def encode_blocks(places, history, snapshot, prefix: str, quarter: str) -> dict:
    """Cut households into history blocks. ``places``: a DataFrame of ``county``, ``township``,
    ``village``, ``household_id`` (one row per household); ``history`` / ``snapshot``: Arrow tables of
    the same rows (models.features.history_table / snapshot_table). Households are ordered by
    place and 户编号 and cut into blocks of :data:`BLOCK_HOUSEHOLDS` that never span two
    counties; block keys are ``prefix`` + a number (``prefix``: unique to the run and chunk, at
    most 26 characters). Returns ``order`` (row positions in block order), ``block_key`` and
    ``block_row`` (per ordered row), ``blocks`` (rows of :class:`HistoryBlockRow`) and ``schema``
    (one row of :class:`HistorySchemaRow`)."""
    import numpy as np
    import pyarrow as pa

    n = len(places)
    order = places.reset_index(drop=True).sort_values(
        ["county", "township", "village", "household_id"], kind="stable").index.to_numpy()
    data = pa.table({"history": _struct(history), "snapshot": _struct(snapshot)}).take(pa.array(order))
    data = data.combine_chunks()
    county = places["county"].astype(str).to_numpy()[order]
    first = np.ones(n, dtype=bool)
    first[1:] = county[1:] != county[:-1]
    pos = np.arange(n) - np.maximum.accumulate(np.where(first, np.arange(n), 0))
    new_block = first | (pos % BLOCK_HOUSEHOLDS == 0)
    starts = np.flatnonzero(new_block)
    number = np.cumsum(new_block) - 1
    keys = [f"{prefix}{b:06d}" for b in range(len(starts))]
    schema = data.schema.serialize().to_pybytes()
    schema_key = hashlib.blake2b(schema, digest_size=16).hexdigest()
    ends = [*starts[1:].tolist(), n]
    payload = [_compressed(data.slice(a, b - a).to_batches()[0].serialize())
               for a, b in zip(starts.tolist(), ends, strict=True)]
    return {"order": order, "block_key": [keys[b] for b in number.tolist()],
            "block_row": (pos % BLOCK_HOUSEHOLDS).tolist(),
            "blocks": {"block_key": keys, "county": county[starts].tolist(), "quarter": [quarter] * len(keys),
                       "schema_key": [schema_key] * len(keys), "payload": payload},
            "schema": {"schema_key": [schema_key], "payload": [schema]}}


def _key_bytes(column, name: str):
    """(n, 16) uint8 array of n keyed hashes (32 hexadecimal characters each)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    refused = ValueError(f"{name} must be a keyed hash: {2 * _KEY_BYTES} hexadecimal characters")
    col = pa.chunked_array(column).combine_chunks() if isinstance(column, pa.ChunkedArray) else pa.array(column)
    if col.null_count or (len(col) and not pc.all(pc.equal(pc.binary_length(col), 2 * _KEY_BYTES)).as_py()):
        raise refused
    fixed = col.cast(pa.binary(2 * _KEY_BYTES))
    text = np.frombuffer(fixed.buffers()[1], dtype=np.uint8, count=len(col) * 2 * _KEY_BYTES,
                         offset=fixed.offset * 2 * _KEY_BYTES).reshape(len(col), 2 * _KEY_BYTES)
    nibble = _HEX[text]
    if (nibble > 15).any():
        raise refused
    return (nibble[:, 0::2] << 4) | nibble[:, 1::2]


def _hex_table():
    import numpy as np

    t = np.full(256, 255, dtype=np.uint8)
    for i, c in enumerate(b"0123456789abcdef"):
        t[c] = i
    for i, c in enumerate(b"ABCDEF"):
        t[c] = 10 + i
    return t


_HEX = _hex_table()


def _buckets(keys, bits: int = PERSON_BUCKET_BITS):
    """The bucket of each key: its first ``bits`` bits (at most 16; the person map's
    :data:`PERSON_BUCKET_BITS` by default). ``keys``: an (n, 16) uint8 array of keys
    (:func:`_key_bytes`)."""
    import numpy as np

    return ((keys[:, 0].astype(np.int64) << 8) | keys[:, 1]) >> (16 - bits)


def _runs(county, bucket) -> tuple[list[int], list[int]]:
    """Starts and ends of the runs of equal (county, bucket) in rows sorted by them: a block each."""
    import numpy as np

    n = len(bucket)
    new = np.ones(n, dtype=bool)
    new[1:] = (county[1:] != county[:-1]) | (bucket[1:] != bucket[:-1])
    starts = np.flatnonzero(new).tolist()
    return starts, [*starts[1:], n]


def _given_keys(keys: Iterable[str]) -> dict[bytes, str]:
    """The 16 bytes of each key that is a keyed hash → the key as given (others are left out:
    they are known nowhere)."""
    given: dict[bytes, str] = {}
    for k in dict.fromkeys(keys):
        try:
            b = bytes.fromhex(k)
        except (TypeError, ValueError):
            continue
        if len(b) == _KEY_BYTES:
            given.setdefault(b, k)
    return given


def _by_bucket(given: Iterable[bytes], bits: int) -> dict[int, list[bytes]]:
    """Keys (16 bytes each) by their bucket of ``bits`` bits."""
    import numpy as np

    keys = list(given)
    out: dict[int, list[bytes]] = {}
    if keys:
        for b, bucket in zip(keys, _buckets(np.frombuffer(b"".join(keys), np.uint8).reshape(-1, _KEY_BYTES),
                                            bits).tolist(), strict=True):
            out.setdefault(bucket, []).append(b)
    return out


# what a household block holds per household (its county is the block's)
HOUSEHOLD_FIELDS = ("household_key", "household_id", "township", "village", "level", "head_name", "id_masked",
                    "data", "block_key", "block_row")


def _household_schema():
    import pyarrow as pa

    return pa.schema([(f, pa.int32() if f == "block_row" else pa.string()) for f in HOUSEHOLD_FIELDS])


def encode_household_blocks(households, part: str):
    """Households of the online history as rows of :class:`HouseholdBlockRow` without their
    quarter (an Arrow table of ``county``, ``bucket``, ``part``, ``households``, ``payload``):
    ``households``, an Arrow table or dicts of ``county`` and :data:`HOUSEHOLD_FIELDS` (a
    missing field is null; ``data``: JSON text, for a household whose history is not in a
    block); ``part``: unique to the run and chunk. Each block holds the households of one county
    whose keys share their first :data:`HOUSEHOLD_BUCKET_BITS` bits, sorted by key (keys in lower
    case), as a zstd frame of an Arrow IPC stream."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    schema = _household_schema()
    full = pa.schema([("county", pa.string()), *schema])
    if hasattr(households, "column_names"):
        t = pa.table({f.name: (households.column(f.name).cast(f.type) if f.name in households.column_names
                               else pa.nulls(households.num_rows, f.type)) for f in full}, schema=full)
    else:
        t = pa.Table.from_pylist([{f: h.get(f) for f in full.names} for h in households], full)
    out = pa.schema([("county", pa.string()), ("bucket", pa.int64()), ("part", pa.string()),
                     ("households", pa.int64()), ("payload", pa.binary())])
    if t.num_rows == 0:
        return out.empty_table()
    t = t.set_column(t.schema.get_field_index("household_key"), "household_key",
                     pc.utf8_lower(t.column("household_key")))  # text order = byte order
    t = t.take(pc.sort_indices(t, [("county", "ascending"), ("household_key", "ascending")]))
    bucket = _buckets(_key_bytes(t.column("household_key"), "household_key"), HOUSEHOLD_BUCKET_BITS)
    county = t.column("county").to_numpy(zero_copy_only=False)
    starts, ends = _runs(county, bucket)
    body = t.drop_columns(["county"]).combine_chunks()
    payload = []
    for a, b in zip(starts, ends, strict=True):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, schema) as w:
            w.write_table(body.slice(a, b - a))
        payload.append(_compressed(sink.getvalue()))
    return pa.table({"county": pa.array(county[starts], pa.string()), "bucket": pa.array(bucket[starts]),
                     "part": pa.array([part] * len(starts), pa.string()),
                     "households": pa.array(np.subtract(ends, starts), pa.int64()),
                     "payload": pa.array(payload, pa.binary())}, schema=out)


def household_count(blocks) -> int:
    """Households in rows of :class:`HouseholdBlockRow` (dicts or an Arrow table / record batch)."""
    import pyarrow.compute as pc

    if hasattr(blocks, "column_names"):
        return int(pc.sum(blocks.column("households")).as_py() or 0)
    return sum(int(b["households"]) for b in blocks)


def _decode_households(payload: bytes):
    """A household block's households (an Arrow table of :data:`HOUSEHOLD_FIELDS`)."""
    import pyarrow as pa

    return pa.ipc.open_stream(pa.BufferReader(_message(payload))).read_all()


def encode_person_blocks(persons, part: str):
    """The person → household map of a batch chunk as rows of :class:`PersonBlockRow` (an Arrow
    table): ``persons``, an Arrow table or dicts of ``person_key``, ``household_key`` (keyed
    hashes) and ``county``; ``part``: unique to the run and chunk (a county's blocks are read in
    its order). Each block holds the persons of one county whose keys share their first
    :data:`PERSON_BUCKET_BITS` bits, sorted by key (a person twice: both, the first household
    by key first)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    cols = ["county", "person_key", "household_key"]
    schema = pa.schema([(c, pa.string()) for c in cols])
    t = persons.select(cols) if hasattr(persons, "column_names") else pa.Table.from_pylist(list(persons), schema)
    out = pa.schema([("county", pa.string()), ("bucket", pa.int64()), ("part", pa.string()),
                     ("payload", pa.binary())])
    if t.num_rows == 0:
        return out.empty_table()
    t = pa.table({"county": t.column("county"), "person_key": pc.utf8_lower(t.column("person_key")),
                  "household_key": pc.utf8_lower(t.column("household_key"))})  # text order = byte order
    t = t.take(pc.sort_indices(t, [(c, "ascending") for c in cols]))
    pk = _key_bytes(t.column("person_key"), "person_key")
    pairs = np.ascontiguousarray(np.concatenate([pk, _key_bytes(t.column("household_key"), "household_key")],
                                                axis=1))
    bucket = _buckets(pk)
    county = t.column("county").to_numpy(zero_copy_only=False)
    starts, ends = _runs(county, bucket)
    buf = pairs.tobytes()
    w = 2 * _KEY_BYTES
    return pa.table({"county": pa.array(county[starts], pa.string()), "bucket": pa.array(bucket[starts]),
                     "part": pa.array([part] * len(starts), pa.string()),
                     "payload": pa.array([buf[a * w:b * w] for a, b in zip(starts, ends, strict=True)],
                                         pa.binary())}, schema=out)


def person_count(blocks) -> int:
    """Persons in rows of :class:`PersonBlockRow` (dicts or an Arrow table / record batch)."""
    import pyarrow.compute as pc

    if hasattr(blocks, "column_names"):
        return int(pc.sum(pc.binary_length(blocks.column("payload"))).as_py() or 0) // (2 * _KEY_BYTES)
    return sum(len(b["payload"]) for b in blocks) // (2 * _KEY_BYTES)


def _pairs(payload: bytes):
    """(person key, household key) of every person in a block, 16 bytes each, in its order."""
    w = 2 * _KEY_BYTES
    for i in range(0, len(payload), w):
        yield payload[i:i + _KEY_BYTES], payload[i + _KEY_BYTES:i + w]


def decode_person_block(payload: bytes) -> list[tuple[str, str]]:
    """(person_key, household_key) of every person in a block, in its order."""
    return [(p.hex(), h.hex()) for p, h in _pairs(payload)]


def _in_block(payload: bytes, wanted: set[bytes]) -> dict[bytes, bytes]:
    """Person key → household key (16 bytes each) of the ``wanted`` persons in a block (a person
    twice: the first)."""
    out: dict[bytes, bytes] = {}
    for p, h in _pairs(payload):
        if p in wanted and p not in out:
            out[p] = h
    return out


_SCHEMAS: dict[str, object] = {}  # schema_key → pyarrow.Schema (content-addressed: never stale)


def _from_blocks(conn, wanted: dict[str, list[tuple[str, int]]]) -> dict[str, dict]:
    """The history and snapshot (JSON form) of households in blocks: ``wanted`` maps a block key
    to its (household_key, block_row) pairs. Each block is read and decoded once."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    from models.features import record_of

    rows = conn.execute(select(HistoryBlockRow.block_key, HistoryBlockRow.schema_key, HistoryBlockRow.payload)
                        .where(HistoryBlockRow.block_key.in_(list(wanted)))).all()
    missing = sorted({r.schema_key for r in rows} - set(_SCHEMAS))
    if missing:
        for k, payload in conn.execute(select(HistorySchemaRow.schema_key, HistorySchemaRow.payload)
                                       .where(HistorySchemaRow.schema_key.in_(missing))):
            _SCHEMAS[k] = ipc.read_schema(pa.py_buffer(payload))
    out = {}
    for r in rows:
        batch = ipc.read_record_batch(_message(r.payload), _SCHEMAS[r.schema_key])
        pairs = wanted[r.block_key]
        for (key, _), d in zip(pairs, batch.take(pa.array([i for _, i in pairs])).to_pylist(), strict=True):
            out[key] = {"history": d["history"], "snapshot": record_of(d["snapshot"])}
    return out


def stored_quarter(store, counties: Sequence[str]) -> str | None:
    """The newest quarter of the stored history of these counties (None when there is none)."""
    with store.engine.connect() as conn:
        return _newest(conn, counties)


def _newest(conn, counties: Sequence[str]) -> str | None:
    from fangpin import quarters as fq

    found = [conn.scalar(select(func.max(t.quarter)).where(t.county.in_(list(counties))))
             for t in (HouseholdBlockRow, HouseholdHistoryRow)]  # the latter: rows before 0009
    return max((q for q in found if q is not None), key=fq.to_index, default=None)


class HistoryWrite:
    """Replacing the online history of ``counties`` by that of ``quarter`` inside a transaction:
    :meth:`begin` (nothing is written when the store already holds a newer quarter for them:
    scoring an old quarter again never takes the online history back in time; else their rows
    are deleted), then :meth:`add` for each part of the rows (batch scoring: each chunk as it
    finishes, in the warnings' transaction, so the quarter's warnings and history appear together),
    then :meth:`finish`.
    ``households``: rows of :func:`encode_household_blocks`, whose households point at their row
    of a history block (``blocks``, ``schemas``: rows of :func:`encode_blocks`); ``persons``: rows
    of :func:`encode_person_blocks`; ``data`` of places is JSON text; rows are dicts or Arrow
    record batches. ``counts`` counts households and persons, not their blocks."""

    def __init__(self, quarter: str, counties: Sequence[str]):
        self.quarter, self.counties = quarter, sorted(set(counties))
        self.now = _now()
        self.skipped: str | None = None
        self.counts = {"households": 0, "persons": 0, "places": 0, "blocks": 0}
        self.seconds = dict.fromkeys(self.counts, 0.0)  # inserting each table's rows

    def begin(self, conn) -> None:
        from fangpin import quarters as fq

        newest = _newest(conn, self.counties)  # in the write transaction: no other run between
        if newest is not None and fq.to_index(newest) > fq.to_index(self.quarter):
            self.skipped = f"the store holds {newest}"
            return
        _bulk_cache(conn, True)
        for table in (HouseholdBlockRow, HouseholdLevelRow, HouseholdHistoryRow, PersonBlockRow, PlaceContextRow,
                      HistoryBlockRow):
            conn.execute(delete(table).where(table.county.in_(self.counties)))

    def add(self, conn, households: Iterable, persons: Iterable, places: Iterable, blocks: Iterable = (),
            schemas: Iterable = ()) -> None:
        if self.skipped:
            return
        def insert(name, table, rows, constants, count=None):
            """``count``: what a row counts for (default one)."""
            t = time.perf_counter()
            if count is None:
                self.counts[name] += bulk_insert(conn, table, rows, constants)
            else:
                bulk_insert(conn, table, counted(rows, name, count), constants)
            self.seconds[name] += time.perf_counter() - t

        def counted(rows, name, count):
            for r in rows:
                self.counts[name] += count(r if hasattr(r, "column_names") else [r])
                yield r

        bulk_insert(conn, HistorySchemaRow, schemas, {}, skip_conflicts=("schema_key",))
        insert("blocks", HistoryBlockRow, blocks, {})
        # blocks count what they hold
        insert("households", HouseholdBlockRow, households, {"quarter": self.quarter}, count=household_count)
        insert("persons", PersonBlockRow, persons, {}, count=person_count)
        insert("places", PlaceContextRow, places, {"updated_at": self.now})

    def finish(self, conn) -> None:
        """After the last :meth:`add`, in the same transaction."""
        if not self.skipped:
            _bulk_cache(conn, False)

    def result(self) -> dict:
        return {**({"skipped": self.skipped} if self.skipped else {}),
                **(dict.fromkeys(self.counts, 0) if self.skipped else self.counts)}


def write_history(store, quarter: str, counties: Sequence[str], households: Iterable, persons: Iterable,
                  places: Iterable, blocks: Iterable = (), schemas: Iterable = ()) -> dict:
    """:class:`HistoryWrite` of these rows in a transaction of its own (``households``: dicts, an
    Arrow table or record batches of ``county`` and :data:`HOUSEHOLD_FIELDS`; ``persons``: dicts of
    ``person_key``, ``household_key``, ``county``). Returns the counts written (or ``skipped``)."""
    w = HistoryWrite(quarter, counties)
    if not hasattr(households, "column_names"):
        households = list(households)
        if households and hasattr(households[0], "column_names"):  # Arrow record batches
            import pyarrow as pa

            households = pa.Table.from_batches(households)
    household_blocks = encode_household_blocks(households, "0").to_batches()
    person_blocks = encode_person_blocks(persons, "0").to_batches()

    def run(conn):
        w.begin(conn)
        try:
            w.add(conn, household_blocks, person_blocks, places, blocks, schemas)
        finally:
            w.finish(conn)

    store.write(run, retry=False)  # the rows may be generators: consumed once
    return w.result()


def histories(store, household_keys: Sequence[str], counties: Iterable[str] | None = None) -> dict[str, dict]:
    """The stored rows of these households (by keyed 户编号 hash), each with the department
    events received since (``api_events``). ``counties``: where to look (None: every county; a
    household stored in two counties is given the first by name)."""
    if not household_keys:
        return {}
    keys = list(dict.fromkeys(household_keys))
    with store.engine.connect() as conn:
        rows = _household_rows(conn, keys, None if counties is None else sorted(set(counties)))
        raised = dict(conn.execute(select(HouseholdLevelRow.household_key, HouseholdLevelRow.level)
                                   .where(HouseholdLevelRow.household_key.in_(list(rows)))).all()) if rows else {}
        wanted: dict[str, list[tuple[str, int]]] = {}
        for k, m in rows.items():
            m["level"] = max_level((m["level"], raised.get(k)))
            block, i = m.pop("block_key"), m.pop("block_row")
            if block is not None:
                wanted.setdefault(block, []).append((k, i))
            elif isinstance(m["data"], str):
                m["data"] = json.loads(m["data"])
            m["api_events"] = []
        if wanted:
            for k, data in _from_blocks(conn, wanted).items():
                rows[k]["data"] = data
        if rows:
            ev = conn.execute(select(DepartmentEventRow).where(DepartmentEventRow.household_key.in_(list(rows))))
            for e in ev.mappings():
                rows[e["household_key"]]["api_events"].append(
                    {"person_key": e["person_key"], "event_date": e["event_date"].isoformat(),
                     "department": e["department"], "event_type": e["event_type"], "amount": e["amount"]})
    return rows


def _household_rows(conn, keys: list[str], counties: list[str] | None) -> dict[str, dict]:
    """The stored households of these keys, as of their run (the batch's level; ``block_key``
    and ``block_row``, or ``data``): from their county's household blocks, else from rows
    written before migration 0009."""
    given = _given_keys(keys)
    rows: dict[str, dict] = {}
    if given:
        t = HouseholdBlockRow
        buckets = sorted(_by_bucket(given, HOUSEHOLD_BUCKET_BITS))
        # the key is (county, bucket, part): probed per county and bucket (a loose index scan of
        # the counties when they are not given), never a scan of the table
        stmt = (select(t.county, t.quarter, t.payload)
                .where(t.county.in_(counties if counties is not None else _counties_of(conn, t)),
                       t.bucket.in_(buckets))
                .order_by(t.county, t.part))
        wanted = set(given.values())
        for r in conn.execute(stmt):
            block = _decode_households(r.payload)
            # a block holds ~200 households: only the wanted become dicts, value by value
            for i, k in enumerate(block.column("household_key").to_pylist()):
                if k in wanted and k not in rows:
                    rows[k] = {**{f: c[i].as_py() for f, c in zip(block.column_names, block.columns, strict=True)},
                               "county": r.county, "quarter": r.quarter}
    rest = [k for k in keys if k not in rows]
    if rest:  # households stored a row each (before migration 0009)
        old = HouseholdHistoryRow
        stmt = select(old.household_key, old.county, old.quarter, old.data,
                      *(getattr(old, f) for f in HOUSEHOLD_FIELDS if f not in ("household_key", "data")))
        stmt = stmt.where(old.household_key.in_(rest))
        if counties is not None:
            stmt = stmt.where(old.county.in_(counties))
        for r in conn.execute(stmt):
            rows[r.household_key] = dict(r._mapping)
    return rows


def contexts(store, places: Iterable[tuple[str, str, str]]) -> dict[tuple[str, str, str], dict]:
    """Context of each (county, township, village): the township's values merged with the
    village's (models.features.context_columns), when both describe the same quarter."""
    places = list(dict.fromkeys(places))
    if not places:
        return {}
    wanted = {k for c, t, v in places for k in ((c, t, ""), (c, t, v))}
    with store.engine.connect() as conn:
        rows = conn.execute(select(PlaceContextRow.county, PlaceContextRow.township, PlaceContextRow.village,
                                   PlaceContextRow.quarter, PlaceContextRow.data).where(
            tuple_(PlaceContextRow.county, PlaceContextRow.township, PlaceContextRow.village).in_(sorted(wanted))))
        got = {(r.county, r.township, r.village): {**r.data, "quarter": r.quarter} for r in rows}
    out = {}
    for c, t, v in places:
        m = merge_context(got.get((c, t, "")), got.get((c, t, v)))
        if m is not None:
            out[(c, t, v)] = m
    return out


def merge_context(township: dict | None, village: dict | None) -> dict | None:
    """A place's context: its township's values with its village's, when both describe the same
    quarter (else the township's alone)."""
    if township is None and village is None:
        return None
    if township is not None and village is not None and township["quarter"] != village["quarter"]:
        village = None
    return {**(township or {}), **(village or {})}


def households_of(store, person_keys: Sequence[str], county: str | None) -> dict[str, tuple[str, str]]:
    """person_key → (household_key, county) for the persons known in ``county`` (None: any; a
    person mapped in two counties, e.g. scored in separate runs, is given the first by name).
    A key that is not a keyed hash is known nowhere."""
    given = _given_keys(person_keys)
    if not given:
        return {}
    wanted = {b: set(keys) for b, keys in _by_bucket(given, PERSON_BUCKET_BITS).items()}
    t = PersonBlockRow
    found: dict[bytes, tuple[str, str]] = {}
    with store.engine.connect() as conn:
        counties = [county] if county is not None else _counties_of(conn, t)
        # the key is (county, bucket, part): probed per county and bucket, never a scan
        stmt = (select(t.county, t.bucket, t.payload)
                .where(t.county.in_(counties), t.bucket.in_(sorted(wanted)))
                .order_by(t.county, t.part))
        for r in conn.execute(stmt):
            for pk, hk in _in_block(r.payload, wanted[r.bucket]).items():
                found.setdefault(pk, (hk.hex(), r.county))
    return {given[pk]: v for pk, v in found.items()}


def _counties_of(conn, table) -> list[str]:
    """The distinct counties of a table keyed by county first, one index seek each (a loose
    index scan)."""
    name = table.__tablename__
    return list(conn.scalars(text(
        f"WITH RECURSIVE c(county) AS (SELECT min(county) FROM {name} UNION ALL "
        f"SELECT (SELECT min(county) FROM {name} WHERE county > c.county) FROM c "
        "WHERE c.county IS NOT NULL) SELECT county FROM c WHERE county IS NOT NULL")))


def add_events(store, rows: Sequence[dict]) -> set[str]:
    """Store department events (:class:`fangpin.store.schema.DepartmentEventRow` fields); an event
    already stored (same ``event_key``) is not stored again. Returns the keys stored now."""
    if not rows:
        return set()
    now = _now()
    unique = [{**r, "received_at": now} for r in {r["event_key"]: r for r in rows}.values()]

    def run(conn):
        # one statement that says which rows it inserted (the same event again: not inserted)
        stmt = (_dialect(conn).insert(DepartmentEventRow).on_conflict_do_nothing(index_elements=["event_key"])
                .returning(DepartmentEventRow.event_key))
        return set(conn.execute(stmt, unique).scalars())

    return store.write(run)


def event_counts(store, county: str | None = None) -> dict:
    """Stored department events: total and unmatched (no household), optionally in one county."""
    conds = [] if county is None else [DepartmentEventRow.county == county]
    with store.engine.connect() as conn:
        total = conn.scalar(select(func.count()).select_from(DepartmentEventRow).where(*conds))
        unmatched = conn.scalar(select(func.count()).select_from(DepartmentEventRow).where(
            *conds, DepartmentEventRow.household_key.is_(None)))
    return {"events": int(total or 0), "unmatched": int(unmatched or 0)}


def raise_warning(store, household_key: str, record: dict, previous_level: str | None) -> str:
    """Record a household's new combined level after a department event, in one transaction: its
    history row takes ``record["level"]``, and the warning (``record``: a WarningRecord in its JSON
    form) is created, or an open one of the same quarter and model version is raised to it; a
    closed (verified) warning is left as it is. Only when the level is higher than both
    ``previous_level`` and the household's stored level. Returns what happened: ``created``,
    ``raised``, ``kept_closed`` or ``not_higher``."""
    level = record["level"]

    def run(conn) -> str:
        # the household's level row is locked first (PostgreSQL; SQLite: the write transaction
        # holds the store's lock), so concurrent events of one household decide one after the other
        raised = _lock_level(conn, household_key, record["county"])
        batch = _household_rows(conn, [household_key], [record["county"]]).get(household_key, {}).get("level")
        if severity(level) <= max(severity(previous_level), severity(raised), severity(batch)):
            return "not_higher"
        _set_level(conn, household_key, level)
        existing = conn.execute(select(WarningRow.id, WarningRow.status, WarningRow.level).where(
            WarningRow.quarter == record["quarter"], WarningRow.household_id == record["household_id"],
            WarningRow.model_version == record["model_version"])).first()
        now = _now()
        if existing is None:
            row = {**record, "level_rank": LEVEL_RANK[level], "created_at": datetime.fromisoformat(record["created_at"]),
                   "deadline": date.fromisoformat(record["deadline"]), "updated_at": now,
                   "run_id": "event"}
            conn.execute(WarningRow.__table__.insert(), [row])
            return "created"
        if existing.status != STATUS_OPEN:
            return "kept_closed"
        conn.execute(update(WarningRow).where(WarningRow.id == existing.id).values(
            level=level, level_rank=LEVEL_RANK[level], probability=record["probability"],
            rule_hits=record["rule_hits"], reasons=record["reasons"], measures=record["measures"],
            ruleset_version=record["ruleset_version"], base_rate=record.get("base_rate"),
            other_pp=record.get("other_pp"), reference_period=record.get("reference_period"),
            deferred=record.get("deferred", False), deadline=date.fromisoformat(record["deadline"]),
            updated_at=now))
        return "raised"

    return store.write(run)


def _lock_level(conn, household_key: str, county: str) -> str | None:
    """The household's raised level, its row locked for the transaction (made when missing)."""
    t = HouseholdLevelRow
    conn.execute(_dialect(conn).insert(t).values(household_key=household_key, county=county, level=None,
                                                  updated_at=_now())
                 .on_conflict_do_nothing(index_elements=["household_key"]))
    stmt = select(t.level).where(t.household_key == household_key)
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return conn.scalar(stmt)


def _set_level(conn, household_key: str, level: str) -> None:
    conn.execute(update(HouseholdLevelRow).where(HouseholdLevelRow.household_key == household_key)
                 .values(level=level, updated_at=_now()))


def raise_level(conn, household_key: str | None, county: str, level: str | None) -> None:
    """Inside a write transaction: the household's level (what ``/v1/events`` compares a new level
    with) follows ``level`` upwards (a clue's warning level)."""
    if household_key is None or level is None:
        return
    raised = _lock_level(conn, household_key, county)
    if severity(level) > severity(raised):
        _set_level(conn, household_key, level)
