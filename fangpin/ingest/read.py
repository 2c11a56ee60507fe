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


def read_table(path: Path) -> RawTable:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path)
    if suffix in (".xlsx", ".xlsm"):
        return _read_xlsx(path)
    raise FileError(path, f"文件 {path.name} 不是 CSV 或 xlsx 文件（.xls 请先在 Excel 中另存为 .xlsx）。",
                    code="format")


def _positional(n: int) -> list[str]:
    return [f"c{j}" for j in range(n)]


def _finish(path, kind, enc, hdr_idx, header_cells, frame: pd.DataFrame, row0: int) -> RawTable:
    """Trim to the header width, flag rows with cells beyond it, drop blank rows."""
    headers = [str(h).strip() if h is not None and not (isinstance(h, float) and np.isnan(h)) else ""
               for h in header_cells]
    while headers and headers[-1] == "":
        headers.pop()
    width = len(headers)
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
    return RawTable(path=path, kind=kind, encoding=enc, header_row=hdr_idx + 1, headers=headers,
                    frame=frame, rows=rows[keep], extra_fields=extra[keep].reset_index(drop=True),
                    blank_rows=int(blank.sum()))


def _read_csv(path: Path) -> RawTable:
    data = path.read_bytes()
    enc = detect_encoding(data, path)
    head = data[:262_144].decode(enc, errors="ignore")
    try:
        head_rows = list(csv.reader(io.StringIO(head, newline="")))[:HEADER_SEARCH_ROWS]
    except csv.Error as exc:
        raise FileError(path, f"文件 {path.name} 不是有效的 CSV 文件（{exc}）。", code="csv") from None
    if not head_rows:
        raise FileError(path, f"文件 {path.name} 是空文件。", code="empty")
    hdr_idx, kind = _find_header(head_rows, path)
    header_cells = head_rows[hdr_idx]
    width = len(header_cells)
    names = _positional(width + PAD_FIELDS)
    opts = dict(header=None, names=names, dtype="str", keep_default_na=False, na_filter=False,
                skip_blank_lines=False, index_col=False)
    try:
        frame = pd.read_csv(io.BytesIO(data), encoding=enc, skiprows=hdr_idx + 1, **opts)
    except pd.errors.ParserError:
        # A row with far more fields than the header: read with the csv module (slow path, only
        # for broken files) so that every row is still accounted for.
        text = data.decode(enc)
        lines = list(csv.reader(io.StringIO(text, newline="")))[hdr_idx + 1:]
        wmax = max([len(r) for r in lines] + [width])
        frame = pd.DataFrame([r + [""] * (wmax - len(r)) for r in lines], columns=_positional(wmax),
                             dtype="str")
    return _finish(path, kind, enc, hdr_idx, header_cells, frame, row0=hdr_idx + 2)


def _read_xlsx(path: Path) -> RawTable:
    try:
        sheet = pd.read_excel(path, sheet_name=0, header=None, dtype="str", engine="calamine")
    except Exception:  # noqa: BLE001 - fall back to the reference reader, then report
        try:
            sheet = pd.read_excel(path, sheet_name=0, header=None, dtype="str", engine="openpyxl")
        except Exception as exc:  # noqa: BLE001
            raise FileError(path, f"文件 {path.name} 无法作为 xlsx 打开（{type(exc).__name__}）。"
                                  "请确认文件没有损坏、没有加密。", code="unreadable") from None
    head = sheet.head(HEADER_SEARCH_ROWS).to_numpy(dtype=object).tolist()
    if not head:
        raise FileError(path, f"文件 {path.name} 的第一个工作表是空的。", code="empty")
    hdr_idx, kind = _find_header(head, path)
    header_cells = head[hdr_idx]
    frame = sheet.iloc[hdr_idx + 1:]
    return _finish(path, kind, None, hdr_idx, header_cells, frame, row0=hdr_idx + 2)
