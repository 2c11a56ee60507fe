"""Finding, classifying and reading input files into raw text frames.

A raw frame keeps every cell as text and columns by position (headers are kept separately, so a
file with duplicated or empty header cells can still be reported precisely). Row numbers are the
line numbers a spreadsheet user sees (the header row's own number + 1 for the first data row).
"""

from __future__ import annotations

import codecs
import csv
import io
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from fangpin import contract
from fangpin.ingest import normalise as nz
from fangpin.ingest.errors import FileError

DATA_SUFFIXES = (".csv", ".xlsx", ".xlsm")
HEADER_SEARCH_ROWS = 30  # the header row is looked for in the first rows of a file
PAD_FIELDS = 8  # extra positional columns that catch rows with more fields than the header


@dataclass
class RawTable:
    path: Path
    kind: str  # ledger / events / lines / oracle
    encoding: str | None
    header_row: int  # 1-based row number of the header
    headers: list[str]  # stripped header cells, by position
    frame: pd.DataFrame  # text cells, columns "c0".."cN" by position, index 0..n-1
    rows: np.ndarray  # spreadsheet row number of each frame row
    extra_fields: pd.Series  # bool: row has cells beyond the header's last column
    blank_rows: int = 0
    notes: list[str] = field(default_factory=list)


def header_key(h: object) -> str:
    """Header comparison key: stripped, parentheses folded to ASCII, inner spaces removed."""
    if h is None or (isinstance(h, float) and np.isnan(h)):
        return ""
    s = str(h).replace("\ufeff", "").strip()
    return s.replace("（", "(").replace("）", ")").replace(" ", "").replace("\u3000", "")


_LEDGER_KEY = header_key(contract.header_for("household_id"))
_ID_KEY = header_key(contract.header_for("id_number"))
_EVENT_KEY = header_key(contract.header_for("event_type", contract.EVENTS))


def discover(paths: list[Path], exclude: Path | None = None) -> tuple[list[Path], list[dict], list[FileError]]:
    """Expand folders (recursively) into data files. Returns (files, skipped entries, paths not found)."""
    files: list[Path] = []
    skipped: list[dict] = []
    missing: list[FileError] = []
    excl = exclude.resolve() if exclude else None
    for p in paths:
        p = Path(p)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if not f.is_file() or f.name.startswith((".", "~$")):
                    continue
                if excl and (f.resolve() == excl or excl in f.resolve().parents):
                    continue
                if f.suffix.lower() in DATA_SUFFIXES:
                    files.append(f)
                else:
                    skipped.append({"file": str(f), "reason": f"不是 CSV/xlsx 文件，已跳过：{f.name}"})
        elif p.is_file():
            files.append(p)
        else:
            missing.append(FileError(p, f"找不到文件或文件夹：{p}", code="not_found"))
    seen: set[Path] = set()
    unique = []
    for f in files:
        r = f.resolve()
        if r not in seen:
            seen.add(r)
            unique.append(f)
    return unique, skipped, missing


def detect_encoding(data: bytes, path: Path) -> str:
    if data.startswith(codecs.BOM_UTF8):
        try:
            data[3:].decode("utf-8")
            return "utf-8-sig"
        except UnicodeDecodeError:
            pass
    for enc in ("utf-8", "gb18030"):
        try:
            data.decode(enc)
            return enc
        except UnicodeDecodeError:
            continue
    raise FileError(path, f"文件 {path.name} 的编码无法识别（不是 UTF-8 或 GBK/GB18030）。"
                          "请用 Excel 打开后“另存为 CSV UTF-8”再导入。", code="encoding")


def classify(path: Path, header_keys: set[str]) -> str | None:
    if path.name == contract.LINES_FILE:
        return "lines"
    if path.name == contract.ORACLE_FILE:
        return "oracle"
    if _EVENT_KEY in header_keys:
        return "events"
    if _LEDGER_KEY in header_keys and _ID_KEY in header_keys:
        return "ledger"
    return None


def _find_header(rows: list[list], path: Path) -> tuple[int, str]:
    """Index of the header row among the first rows, and the file kind."""
    by_name = path.name in (contract.LINES_FILE, contract.ORACLE_FILE)
    for i, row in enumerate(rows[:HEADER_SEARCH_ROWS]):
        keys = {header_key(c) for c in row} - {""}
        if not keys:
            continue
        if by_name:
            return i, classify(path, keys)  # type: ignore[return-value]
        kind = classify(path, keys)
        if kind:
            return i, kind
        if _LEDGER_KEY in keys:
            raise FileError(path, f"文件 {path.name} 不是户成员台账：第 {i + 1} 行有“户编号”但缺少“证件号码”列。",
                            column="证件号码", code="not_a_ledger")
    raise FileError(
        path,
        f"文件 {path.name} 既不是户成员台账也不是部门预警数据：前 {HEADER_SEARCH_ROWS} 行中找不到表头行"
        "（台账的表头行有“户编号”和“证件号码”，部门预警数据的表头行有“事件类型”）。已跳过。",
        column="户编号", code="no_header",
    )


CHUNK_ROWS = 131_072  # data rows per chunk: what one read → normalise → validate step holds
_ENCODING_BLOCK = 1 << 24  # bytes per read while checking a file's encoding


@dataclass
class RawChunk:
    """One chunk of a file's data rows (blank rows already dropped, see :func:`_trim`)."""

    frame: pd.DataFrame  # text cells, columns "c0".."c{width-1}" by position, index 0..n-1
    rows: np.ndarray  # spreadsheet row number of each frame row
    extra_fields: pd.Series  # bool: row has cells beyond the header's last column
    blank_rows: int


class SlowPath(Exception):
    """The fast CSV parser met a row with far more fields than the header: read the file again
    with the csv module (``TableStream.chunks(slow=True)``), discarding what was read."""


@dataclass
class TableStream:
    """An opened input file: kind and header found, data rows read chunk by chunk (``chunks``)."""

    path: Path
    kind: str  # ledger / events / lines / oracle
    encoding: str | None
    header_row: int  # 1-based row number of the header
    headers: list[str]  # stripped header cells, by position (trailing empty cells dropped)
    _chunks: object = None  # callable(slow: bool) -> iterator of RawChunk

    def chunks(self, slow: bool = False):
        return self._chunks(slow)


def _headers(header_cells) -> list[str]:
    headers = [str(h).strip() if h is not None and not (isinstance(h, float) and np.isnan(h)) else ""
               for h in header_cells]
    while headers and headers[-1] == "":
        headers.pop()
    return headers


def _trim(frame: pd.DataFrame, width: int, row0: int) -> RawChunk:
    """Trim a chunk to the header width, flag rows with cells beyond it, drop blank rows."""
    frame = frame.reset_index(drop=True)
    frame.columns = _positional(frame.shape[1])
    for j in range(frame.shape[1], width):
        frame[f"c{j}"] = pd.Series(pd.NA, index=frame.index, dtype="str")
    filled = pd.DataFrame({c: nz.filled(frame[c]) for c in frame.columns}, index=frame.index)
    extra_cols = [f"c{j}" for j in range(width, frame.shape[1])]
    extra = filled[extra_cols].any(axis=1) if extra_cols else pd.Series(False, index=frame.index)
    blank = ~filled.any(axis=1)
    rows = np.arange(row0, row0 + len(frame), dtype=np.int64)
    keep = ~blank.to_numpy()
    frame = frame.loc[keep, _positional(width)].reset_index(drop=True)
    return RawChunk(frame=frame, rows=rows[keep], extra_fields=extra[keep].reset_index(drop=True),
                    blank_rows=int(blank.sum()))


def open_table(path: Path, chunk_rows: int | None = None) -> TableStream:
    """Open a file: detect the encoding, find the header row and the file kind. Data rows are
    read afterwards, ``chunk_rows`` at a time, by ``TableStream.chunks()``."""
    chunk_rows = chunk_rows or CHUNK_ROWS
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _open_csv(path, chunk_rows)
    if suffix in (".xlsx", ".xlsm"):
        return _open_xlsx(path, chunk_rows)
    raise FileError(path, f"文件 {path.name} 不是 CSV 或 xlsx 文件（.xls 请先在 Excel 中另存为 .xlsx）。",
                    code="format")


def read_table(path: Path) -> RawTable:
    """The whole file as one raw frame (small files, tests): the chunks of :func:`open_table` joined."""
    t = open_table(path)
    try:
        parts = list(t.chunks())
    except SlowPath:
        parts = list(t.chunks(slow=True))
    width = len(t.headers)
    frame = (pd.concat([c.frame for c in parts], ignore_index=True) if parts
             else pd.DataFrame({c: pd.Series(dtype="str") for c in _positional(width)}))
    return RawTable(path=path, kind=t.kind, encoding=t.encoding, header_row=t.header_row, headers=t.headers,
                    frame=frame, rows=np.concatenate([c.rows for c in parts]) if parts else np.array([], np.int64),
                    extra_fields=(pd.concat([c.extra_fields for c in parts], ignore_index=True) if parts
                                  else pd.Series([], dtype=bool)),
                    blank_rows=sum(c.blank_rows for c in parts))


def _positional(n: int) -> list[str]:
    return [f"c{j}" for j in range(n)]


def detect_file_encoding(path: Path) -> str:
    """:func:`detect_encoding` without holding the file: decode it block by block."""
    with open(path, "rb") as fh:
        bom = fh.read(3) == codecs.BOM_UTF8
    candidates = (["utf-8-sig"] if bom else []) + ["utf-8", "gb18030"]
    for enc in candidates:
        dec = codecs.getincrementaldecoder(enc)()
        try:
            with open(path, "rb") as fh:
                while block := fh.read(_ENCODING_BLOCK):
                    dec.decode(block)
                dec.decode(b"", final=True)
            return enc
        except UnicodeDecodeError:
            continue
    raise FileError(path, f"文件 {path.name} 的编码无法识别（不是 UTF-8 或 GBK/GB18030）。"
                          "请用 Excel 打开后“另存为 CSV UTF-8”再导入。", code="encoding")


def _open_csv(path: Path, chunk_rows: int) -> TableStream:
    enc = detect_file_encoding(path)
    with open(path, "rb") as fh:
        head = fh.read(262_144).decode(enc, errors="ignore")
    try:
        head_rows = list(csv.reader(io.StringIO(head, newline="")))[:HEADER_SEARCH_ROWS]
    except csv.Error as exc:
        raise FileError(path, f"文件 {path.name} 不是有效的 CSV 文件（{exc}）。", code="csv") from None
    if not head_rows:
        raise FileError(path, f"文件 {path.name} 是空文件。", code="empty")
    hdr_idx, kind = _find_header(head_rows, path)
    header_cells = head_rows[hdr_idx]
    headers = _headers(header_cells)
    width = len(headers)
    names = _positional(len(header_cells) + PAD_FIELDS)
    opts = dict(header=None, names=names, dtype="str", keep_default_na=False, na_filter=False,
                skip_blank_lines=False, index_col=False)
    row0 = hdr_idx + 2

    def chunks(slow: bool):
        row = row0
        if not slow:
            try:
                with pd.read_csv(path, encoding=enc, skiprows=hdr_idx + 1, chunksize=chunk_rows, **opts) as reader:
                    for frame in reader:
                        yield _trim(frame, width, row)
                        row += len(frame)
            except pd.errors.ParserError:
                raise SlowPath(path) from None
            return
        # A row with far more fields than the header: read with the csv module (slow path, only
        # for broken files) so that every row is still accounted for.
        with open(path, encoding=enc, newline="") as fh:
            reader = csv.reader(fh)
            for _ in range(hdr_idx + 1):
                next(reader, None)
            while True:
                lines = [r for _, r in zip(range(chunk_rows), reader, strict=False)]
                if not lines:
                    return
                wmax = max([len(r) for r in lines] + [len(header_cells)])
                frame = pd.DataFrame([r + [""] * (wmax - len(r)) for r in lines], columns=_positional(wmax),
                                     dtype="str")
                yield _trim(frame, width, row)
                row += len(frame)

    return TableStream(path=path, kind=kind, encoding=enc, header_row=hdr_idx + 1, headers=headers, _chunks=chunks)


def _calamine_cell(value):
    """A cell as pandas' calamine reader gives it (pandas.io.excel._calamine.get_sheet_data)."""
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, (datetime, timedelta)):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    return value


def _text_frame(rows: list[list]) -> pd.DataFrame:
    """Cells → text frame exactly as ``pd.read_excel(header=None, dtype="str")`` makes them."""
    from pandas.io.parsers import TextParser

    return TextParser(rows, header=None, dtype="str", skip_blank_lines=False).read()


def _open_xlsx(path: Path, chunk_rows: int) -> TableStream:
    """Rows come from python-calamine's row iterator, converted chunk by chunk the way
    ``pd.read_excel(engine="calamine", dtype="str")`` converts a whole sheet."""
    try:
        from python_calamine import CalamineWorkbook

        book = CalamineWorkbook.from_path(str(path))
        sheet = book.get_sheet_by_index(0)
        # iter_rows starts at row 1 but at the first used column; pandas pads from column A
        pad = [""] * (sheet.start[1] if sheet.start else 0)
        it = (pad + r if pad else r for r in sheet.iter_rows())
        first = [[_calamine_cell(c) for c in r] for _, r in zip(range(max(chunk_rows, HEADER_SEARCH_ROWS)), it,
                                                                 strict=False)]
    except Exception:  # noqa: BLE001 - fall back to the reference reader, then report
        return _open_xlsx_openpyxl(path, chunk_rows)
    if not first:
        raise FileError(path, f"文件 {path.name} 的第一个工作表是空的。", code="empty")
    frame0 = _text_frame(first)
    head = frame0.head(HEADER_SEARCH_ROWS).to_numpy(dtype=object).tolist()
    hdr_idx, kind = _find_header(head, path)
    headers = _headers(head[hdr_idx])
    width = len(headers)

    def chunks(slow: bool):
        row = hdr_idx + 2
        frame = frame0.iloc[hdr_idx + 1:]
        while True:
            if len(frame):
                yield _trim(frame, width, row)
                row += len(frame)
            rows = [[_calamine_cell(c) for c in r] for _, r in zip(range(chunk_rows), it, strict=False)]
            if not rows:
                return
            frame = _text_frame(rows)

    return TableStream(path=path, kind=kind, encoding=None, header_row=hdr_idx + 1, headers=headers, _chunks=chunks)


def _open_xlsx_openpyxl(path: Path, chunk_rows: int) -> TableStream:
    try:
        sheet = pd.read_excel(path, sheet_name=0, header=None, dtype="str", engine="openpyxl")
    except Exception as exc:  # noqa: BLE001
        raise FileError(path, f"文件 {path.name} 无法作为 xlsx 打开（{type(exc).__name__}）。"
                              "请确认文件没有损坏、没有加密。", code="unreadable") from None
    head = sheet.head(HEADER_SEARCH_ROWS).to_numpy(dtype=object).tolist()
    if not head:
        raise FileError(path, f"文件 {path.name} 的第一个工作表是空的。", code="empty")
    hdr_idx, kind = _find_header(head, path)
    headers = _headers(head[hdr_idx])
    width = len(headers)

    def chunks(slow: bool):
        for start in range(hdr_idx + 1, len(sheet), chunk_rows):
            yield _trim(sheet.iloc[start:start + chunk_rows], width, start + 1)

    return TableStream(path=path, kind=kind, encoding=None, header_row=hdr_idx + 1, headers=headers, _chunks=chunks)
