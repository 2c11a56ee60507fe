"""Finding, classifying and reading input files into raw text frames.

A raw frame keeps every cell as text and columns by position (headers are kept separately, so a
file with duplicated or empty header cells can still be reported precisely). Row numbers are the
line numbers a spreadsheet user sees (the header row's own number + 1 for the first data row).

Inputs are bounded (``params.ingest``, :class:`fangpin.config.IngestParams`): a header wider than
``max_columns`` or an .xlsx whose sheet XML is larger than ``max_xlsx_sheet_bytes`` (or compresses
suspiciously well: a decompression bomb) or holds more than ``max_xlsx_rows`` rows is refused
before its data is read, with the file named. Cells the reader cannot take as values are flagged
per cell (``RawChunk.cell_errors``: longer than ``max_cell_chars``, a formula without a cached
value), so their rows are quarantined with the reason; a CSV line that decodes in no supported
encoding is named by its line number.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import zipfile
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from fangpin import contract
from fangpin.config import IngestParams
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
            before = len(files)
            for f in sorted(p.rglob("*")):
                if not f.is_file() or f.name.startswith((".", "~$")):
                    continue
                if any(part.startswith(".") for part in f.relative_to(p).parts[:-1]):
                    continue  # hidden folders (an interrupted ingest's staging folder, .git …)
                if excl and (f.resolve() == excl or excl in f.resolve().parents):
                    continue
                if f.suffix.lower() in DATA_SUFFIXES:
                    files.append(f)
                else:
                    skipped.append({"file": str(f), "reason": f"不是 CSV/xlsx 文件，已跳过：{f.name}"})
            if len(files) == before:  # a folder given but nothing in it to read: never "0 rows, done"
                missing.append(FileError(p, f"文件夹中没有 CSV 或 xlsx 文件：{p}", code="no_files"))
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


CELL_ERROR_COLUMNS = ("idx", "pos", "code")  # frame row, column position, too_long / formula_no_value


def no_cell_errors() -> pd.DataFrame:
    return pd.DataFrame({"idx": pd.Series(dtype="int64"), "pos": pd.Series(dtype="int64"),
                         "code": pd.Series(dtype="str")})


@dataclass
class RawChunk:
    """One chunk of a file's data rows (blank rows already dropped, see :func:`_trim`)."""

    frame: pd.DataFrame  # text cells, columns "c0".."c{width-1}" by position, index 0..n-1
    rows: np.ndarray  # spreadsheet row number of each frame row
    extra_fields: pd.Series  # bool: row has cells beyond the header's last column
    blank_rows: int
    cell_errors: pd.DataFrame = field(default_factory=no_cell_errors)  # cells that are not values


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
    limits: IngestParams = field(default_factory=IngestParams)

    def chunks(self, slow: bool = False):
        return self._chunks(slow)


def _headers(header_cells) -> list[str]:
    headers = [str(h).strip() if h is not None and not (isinstance(h, float) and np.isnan(h)) else ""
               for h in header_cells]
    while headers and headers[-1] == "":
        headers.pop()
    return headers


def _trim(frame: pd.DataFrame, width: int, row0: int, limits: IngestParams | None = None,
          flagged: dict[int, list[tuple[int, str]]] | None = None) -> RawChunk:
    """Trim a chunk to the header width, flag rows with cells beyond it, flag cells longer than
    ``limits.max_cell_chars`` (cut to that length: nothing downstream copies more) and the cells in
    ``flagged`` (spreadsheet row → [(column position, code)]), drop blank rows."""
    frame = frame.reset_index(drop=True)
    frame.columns = _positional(frame.shape[1])
    if frame.shape[1] < width:  # all at once (one insert per column is quadratic in columns)
        frame = pd.concat([frame, pd.DataFrame({f"c{j}": pd.Series(pd.NA, index=frame.index, dtype="str")
                                                for j in range(frame.shape[1], width)})], axis=1)
    filled = pd.DataFrame({c: nz.filled(frame[c]) for c in frame.columns}, index=frame.index)
    extra_cols = [f"c{j}" for j in range(width, frame.shape[1])]
    extra = filled[extra_cols].any(axis=1) if extra_cols else pd.Series(False, index=frame.index)
    blank = ~filled.any(axis=1)
    rows = np.arange(row0, row0 + len(frame), dtype=np.int64)
    keep = ~blank.to_numpy()
    frame = frame.loc[keep, _positional(width)].reset_index(drop=True)
    rows = rows[keep]
    errs = []
    max_chars = (limits or IngestParams()).max_cell_chars
    for j in range(width):
        a = nz._pa(frame[f"c{j}"])
        long = pc.fill_null(pc.greater(pc.utf8_length(a), max_chars), False)
        if pc.any(long).as_py():
            idx = np.flatnonzero(long.to_numpy(zero_copy_only=False))
            frame[f"c{j}"] = nz._str(pc.if_else(long, pc.utf8_slice_codeunits(a, 0, max_chars), a), frame.index)
            errs.append(pd.DataFrame({"idx": idx, "pos": j, "code": "cell_too_long"}))
    if flagged:
        pos_of_row = {int(r): i for i, r in enumerate(rows)}
        hits = [(pos_of_row[r], j, code) for r, cells in flagged.items() if r in pos_of_row
                for j, code in cells if j < width]
        if hits:
            errs.append(pd.DataFrame(hits, columns=list(CELL_ERROR_COLUMNS)))
    cell_errors = (pd.concat(errs, ignore_index=True).astype({"idx": "int64", "pos": "int64"}) if errs
                   else no_cell_errors())
    return RawChunk(frame=frame, rows=rows, extra_fields=extra[keep].reset_index(drop=True),
                    blank_rows=int(blank.sum()), cell_errors=cell_errors)


def open_table(path: Path, chunk_rows: int | None = None, limits: IngestParams | None = None) -> TableStream:
    """Open a file: detect the encoding, find the header row and the file kind, check the input
    limits (``limits``, default :class:`IngestParams`). Data rows are read afterwards,
    ``chunk_rows`` at a time, by ``TableStream.chunks()``."""
    chunk_rows = chunk_rows or CHUNK_ROWS
    limits = limits or IngestParams()
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _open_csv(path, chunk_rows, limits)
    if suffix in (".xlsx", ".xlsm"):
        return _open_xlsx(path, chunk_rows, limits)
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
    """:func:`detect_encoding` without holding the file: decode it block by block. When no
    encoding decodes the whole file, the error names the line where the encoding that got
    furthest failed (a file mixing GBK and UTF-8 lines fails there)."""
    with open(path, "rb") as fh:
        bom = fh.read(3) == codecs.BOM_UTF8
    candidates = (["utf-8-sig"] if bom else []) + ["utf-8", "gb18030"]
    furthest = 0
    for enc in candidates:
        dec = codecs.getincrementaldecoder(enc)()
        offset = 0
        try:
            with open(path, "rb") as fh:
                while block := fh.read(_ENCODING_BLOCK):
                    # the decoder may hold back a few bytes of an incomplete character
                    held = len(dec.getstate()[0])
                    try:
                        dec.decode(block)
                    except UnicodeDecodeError as exc:
                        raise UnicodeDecodeError(exc.encoding, exc.object, offset - held + exc.start,
                                                 offset - held + exc.end, exc.reason) from None
                    offset += len(block)
                dec.decode(b"", final=True)
            return enc
        except UnicodeDecodeError as exc:
            furthest = max(furthest, max(0, exc.start))
            continue
    line = _line_at(path, furthest)
    raise FileError(path, f"文件 {path.name} 的第 {line} 行无法按 UTF-8 或 GBK/GB18030 解码"
                          "（文件可能混用了两种编码）。请用 Excel 打开后“另存为 CSV UTF-8”再导入。",
                    code="encoding")


def _line_at(path: Path, offset: int) -> int:
    """1-based line number of byte ``offset`` of a file (counting newlines block by block)."""
    line, seen = 1, 0
    with open(path, "rb") as fh:
        while seen < offset and (block := fh.read(min(_ENCODING_BLOCK, offset - seen))):
            line += block.count(b"\n")
            seen += len(block)
    return line


def _check_columns(path: Path, header_cells: list, limits: IngestParams) -> None:
    n = len(_headers(header_cells))
    if n > limits.max_columns:
        raise FileError(path, f"文件 {path.name} 的表头有 {n} 列，超过上限 {limits.max_columns} 列"
                              "（params.yaml 中 ingest.max_columns）。请只导出台账约定中的列。",
                        code="too_many_columns")


def _open_csv(path: Path, chunk_rows: int, limits: IngestParams) -> TableStream:
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
    _check_columns(path, header_cells, limits)
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
                        yield _trim(frame, width, row, limits)
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
                lines = [_cap(r, cap) for _, r in zip(range(chunk_rows), reader, strict=False)]
                if not lines:
                    return
                wmax = max([len(r) for r in lines] + [len(header_cells)])
                frame = pd.DataFrame([r + [""] * (wmax - len(r)) for r in lines], columns=_positional(wmax),
                                     dtype="str")
                yield _trim(frame, width, row, limits)
                row += len(frame)

    cap = len(header_cells) + PAD_FIELDS
    return TableStream(path=path, kind=kind, encoding=enc, header_row=hdr_idx + 1, headers=headers, _chunks=chunks,
                       limits=limits)


def _cap(cells: list[str], cap: int) -> list[str]:
    """A row cut to ``cap`` cells (a line of a million commas must not become a million columns);
    when a dropped cell held something, the last kept one says so, so the row is still flagged
    as having cells beyond the header."""
    if len(cells) <= cap:
        return cells
    dropped = any(c.strip() for c in cells[cap:])
    return cells[:cap - 1] + ["…" if dropped else cells[cap - 1]]


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


def _first_sheet_member(z: zipfile.ZipFile) -> str | None:
    """The zip member of the workbook's first sheet (the one read), from workbook.xml and its rels."""
    import xml.etree.ElementTree as ET

    try:
        wb = ET.fromstring(z.read("xl/workbook.xml"))
        rels = ET.fromstring(z.read("xl/_rels/workbook.xml.rels"))
    except (KeyError, ET.ParseError):
        return None
    sheet = next((e for e in wb.iter() if e.tag.endswith("}sheet")), None)
    if sheet is None:
        return None
    rid = next((v for k, v in sheet.attrib.items() if k.endswith("}id")), None)
    target = next((r.get("Target") for r in rels if r.get("Id") == rid), None)
    if not target:
        return None
    return target.lstrip("/") if target.startswith("/") else f"xl/{target}"


_MIB = 1 << 20


def _check_xlsx(path: Path, limits: IngestParams) -> str | None:
    """Refuse an .xlsx before parsing it when a member would unpack beyond the limits (sheet XML
    larger than ``max_xlsx_sheet_bytes``, or a member over 1 MiB compressed more than
    ``max_xlsx_ratio`` times: a decompression bomb). Returns the first sheet's member name."""
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        return None  # not a zip: the reader reports the file as unreadable
    with z:
        for info in z.infolist():
            if info.file_size > limits.max_xlsx_sheet_bytes:
                raise FileError(path, f"文件 {path.name} 解压后过大（{info.filename} 为 {info.file_size // _MIB} MB，"
                                      f"上限 {limits.max_xlsx_sheet_bytes // _MIB} MB，params.yaml 中 "
                                      "ingest.max_xlsx_sheet_bytes）。请另存为 CSV 后导入。", code="xlsx_too_large")
            if info.file_size > _MIB and info.file_size > limits.max_xlsx_ratio * max(info.compress_size, 1):
                raise FileError(path, f"文件 {path.name} 的压缩比异常（{info.filename} 解压后是压缩时的 "
                                      f"{info.file_size / max(info.compress_size, 1):.0f} 倍，上限 "
                                      f"{limits.max_xlsx_ratio:g} 倍），疑似压缩炸弹，已拒绝。", code="xlsx_bomb")
        return _first_sheet_member(z)


_REF = re.compile(r"([A-Z]{1,3})(\d+)")


def _col_index(letters: str) -> int:
    n = 0
    for ch in letters:
        n = n * 26 + (ord(ch) - 64)
    return n - 1


def formula_cells_without_value(path: Path, member: str | None, limits: IngestParams) -> dict[int, list]:
    """Cells of the sheet that hold a formula but no cached value (written by a tool that does not
    calculate): spreadsheet row → [(column position, "formula_no_value")]. A fast byte scan first;
    the XML is parsed (streaming) only when it holds a formula at all."""
    import xml.etree.ElementTree as ET

    if member is None:
        return {}
    with zipfile.ZipFile(path) as z:
        try:
            info = z.getinfo(member)
        except KeyError:
            return {}
        with z.open(info) as fh:
            tail, found, read = b"", False, 0
            while block := fh.read(1 << 22):
                read += len(block)
                if read > limits.max_xlsx_sheet_bytes:  # the declared size lied
                    raise FileError(path, f"文件 {path.name} 解压后过大（上限 "
                                          f"{limits.max_xlsx_sheet_bytes // _MIB} MB）。请另存为 CSV 后导入。",
                                    code="xlsx_too_large")
                if re.search(rb"<(?:\w+:)?f[ >/]", tail + block):
                    found = True
                    break
                tail = block[-16:]
        if not found:
            return {}
        out: dict[int, list] = {}
        with z.open(info) as fh:
            for _, el in ET.iterparse(fh, events=("end",)):
                if not el.tag.endswith("}c") and el.tag != "c":
                    continue
                f = v = None
                for child in el:
                    name = child.tag.rsplit("}", 1)[-1]
                    if name == "f":
                        f = child
                    elif name in ("v", "is"):
                        v = child
                if f is not None and (v is None or not "".join(v.itertext()).strip()):
                    m = _REF.fullmatch(el.get("r", ""))
                    if m:
                        out.setdefault(int(m.group(2)), []).append((_col_index(m.group(1)), "formula_no_value"))
                el.clear()
        return out


def _open_xlsx(path: Path, chunk_rows: int, limits: IngestParams) -> TableStream:
    """Rows come from python-calamine's row iterator, converted chunk by chunk the way
    ``pd.read_excel(engine="calamine", dtype="str")`` converts a whole sheet. The zip is checked
    against the limits first (:func:`_check_xlsx`)."""
    member = _check_xlsx(path, limits)
    try:
        from python_calamine import CalamineWorkbook

        book = CalamineWorkbook.from_path(str(path))
        sheet = book.get_sheet_by_index(0)
        if sheet.total_height > limits.max_xlsx_rows:
            raise FileError(path, f"文件 {path.name} 的第一个工作表有 {sheet.total_height} 行，超过上限 "
                                  f"{limits.max_xlsx_rows} 行（params.yaml 中 ingest.max_xlsx_rows）。"
                                  "请另存为 CSV 后导入。", code="xlsx_too_many_rows")
        # iter_rows starts at row 1 but at the first used column; pandas pads from column A
        pad = [""] * (sheet.start[1] if sheet.start else 0)
        it = (pad + r if pad else r for r in sheet.iter_rows())
        first = [[_calamine_cell(c) for c in r] for _, r in zip(range(max(chunk_rows, HEADER_SEARCH_ROWS)), it,
                                                                 strict=False)]
    except FileError:
        raise
    except Exception:  # noqa: BLE001 - fall back to the reference reader, then report
        return _open_xlsx_openpyxl(path, chunk_rows, limits, member)
    if not first:
        raise FileError(path, f"文件 {path.name} 的第一个工作表是空的。", code="empty")
    frame0 = _text_frame(first)
    head = frame0.head(HEADER_SEARCH_ROWS).to_numpy(dtype=object).tolist()
    hdr_idx, kind = _find_header(head, path)
    _check_columns(path, head[hdr_idx], limits)
    headers = _headers(head[hdr_idx])
    width = len(headers)
    formulas = formula_cells_without_value(path, member, limits)

    def chunks(slow: bool):
        row = hdr_idx + 2
        frame = frame0.iloc[hdr_idx + 1:]
        while True:
            if len(frame):
                yield _trim(frame, width, row, limits, formulas)
                row += len(frame)
            rows = [[_calamine_cell(c) for c in r] for _, r in zip(range(chunk_rows), it, strict=False)]
            if not rows:
                return
            frame = _text_frame(rows)

    return TableStream(path=path, kind=kind, encoding=None, header_row=hdr_idx + 1, headers=headers, _chunks=chunks,
                       limits=limits)


def _open_xlsx_openpyxl(path: Path, chunk_rows: int, limits: IngestParams, member: str | None) -> TableStream:
    try:
        sheet = pd.read_excel(path, sheet_name=0, header=None, dtype="str", engine="openpyxl")
    except Exception as exc:  # noqa: BLE001
        raise FileError(path, f"文件 {path.name} 无法作为 xlsx 打开（{type(exc).__name__}）。"
                              "请确认文件没有损坏、没有加密。", code="unreadable") from None
    head = sheet.head(HEADER_SEARCH_ROWS).to_numpy(dtype=object).tolist()
    if not head:
        raise FileError(path, f"文件 {path.name} 的第一个工作表是空的。", code="empty")
    hdr_idx, kind = _find_header(head, path)
    _check_columns(path, head[hdr_idx], limits)
    headers = _headers(head[hdr_idx])
    width = len(headers)
    formulas = formula_cells_without_value(path, member, limits)

    def chunks(slow: bool):
        for start in range(hdr_idx + 1, len(sheet), chunk_rows):
            yield _trim(sheet.iloc[start:start + chunk_rows], width, start + 1, limits, formulas)

    return TableStream(path=path, kind=kind, encoding=None, header_row=hdr_idx + 1, headers=headers, _chunks=chunks,
                       limits=limits)
