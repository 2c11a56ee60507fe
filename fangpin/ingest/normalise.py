"""Value normalisation: raw text cells → canonical values, vectorised per column.

Every function takes a text Series (as read, all cells text) and returns the normalised Series
plus a boolean mask of cells that held something but could not be understood. The caller turns
that mask into row-level quarantine entries; nothing is silently set to null.

Handled here (ledger contract "quirks"): full-width characters (digits, letters, punctuation,
the ideographic space), leading/trailing whitespace, `—`/`-`/blank as missing, thousands
separators, 性别 1/2, every date form of the contract plus what Excel gives for a real date cell
(``2023-02-01 00:00:00``), and grade-level school values.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandas.core.arrays.string_arrow import ArrowStringArray

from fangpin.contract import Column

# Full-width ASCII block (！..～) → ASCII, ideographic space → space.
_FULLWIDTH = {cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}
_FULLWIDTH_RE = "[\uff01-\uff5e\u3000]"  # literal characters: RE2 has no \\u escapes
# Tokens that mean "missing" in exports (after stripping and full-width folding).
NULL_TOKENS = ("", "—", "——", "-", "--", "–", "－")

_TIME_SUFFIX = r"[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?$"
_DATE_RE = (
    r"^(?P<y1>\d{4})(?P<m1>\d{2})(?P<d1>\d{2})?$"  # YYYYMM, YYYYMMDD
    r"|^(?P<y2>\d{4})[-/.](?P<m2>\d{1,2})(?:[-/.](?P<d2>\d{1,2}))?$"  # YYYY-MM, YYYY-MM-DD, YYYY/M/D
    r"|^(?P<y3>\d{4})年(?P<m3>\d{1,2})月(?:(?P<d3>\d{1,2})日)?$"  # 2023年2月(5日)
)
_NUMBER_RE = r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$"

SEX_CODES = {"1": "男", "2": "女", "男性": "男", "女性": "女"}
_CN_DIGIT = {"一": 1, "二": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_STAGE_GRADE = re.compile(r"^(小学|高中|中职|高职高专)([一二三四五六])年级$")
_MIDDLE_GRADE = re.compile(r"^([七八九])年级$")
_MAX_GRADE = {"小学": 6, "高中": 3, "中职": 3, "高职高专": 3}


_STR = pd.StringDtype("pyarrow", na_value=np.nan)  # pandas' default "str" dtype


def _pa(s: pd.Series) -> pa.ChunkedArray:
    """The Arrow strings behind a text Series (zero-copy when it already is an Arrow string)."""
    if not (isinstance(s.dtype, pd.StringDtype) and s.dtype.storage == "pyarrow"):
        s = s.astype(_STR)
    arr = s.array._pa_array
    return arr.cast(pa.large_string()) if arr.type != pa.large_string() else arr


def _str(arr, index) -> pd.Series:
    if isinstance(arr, pa.Array):
        arr = pa.chunked_array([arr])
    return pd.Series(ArrowStringArray(arr.cast(pa.large_string()), dtype=_STR), index=index, copy=False)


def _bool(arr, index) -> pd.Series:
    return pd.Series(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), index=index, dtype=bool)


def _matches(a, pattern: str):
    return pc.fill_null(pc.match_substring_regex(a, pattern), False)


def clean_text(s: pd.Series) -> pd.Series:
    """Fold full-width characters, strip whitespace (incl. U+3000, NBSP), missing tokens → NA."""
    a = _pa(s)
    wide = _matches(a, _FULLWIDTH_RE)
    if pc.any(wide).as_py():
        vals = a.to_pylist()
        hits = np.flatnonzero(wide.to_numpy(zero_copy_only=False))
        for i in hits:  # rare: only cells that hold full-width characters
            vals[i] = vals[i].translate(_FULLWIDTH)
        a = pa.chunked_array([pa.array(vals, type=pa.large_string())])
    a = pc.utf8_trim_whitespace(a)
    a = pc.if_else(pc.is_in(a, value_set=pa.array(NULL_TOKENS, type=pa.large_string())), None, a)
    return _str(a, s.index)


def filled(s: pd.Series) -> pd.Series:
    """True where a cell holds something other than whitespace."""
    return _bool(pc.not_equal(pc.utf8_trim_whitespace(_pa(s)), ""), s.index)


def upper(s: pd.Series) -> pd.Series:
    return _str(pc.utf8_upper(_pa(s)), s.index)


def clean_frame(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({c: clean_text(df[c]) for c in df.columns}, index=df.index)


def parse_number(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Text with optional thousands separators → float64. Returns (values, bad_mask)."""
    a = _pa(s)
    a = pc.replace_substring(a, " ", "")
    grouped = _matches(a, r"^[+-]?\d{1,3}(,\d{3})+(\.\d*)?$")  # 12,345.6 (and only that form)
    a = pc.if_else(grouped, pc.replace_substring(a, ",", ""), a)
    ok = _matches(a, _NUMBER_RE)
    vals = pc.cast(pc.if_else(ok, a, None), pa.float64()).to_numpy(zero_copy_only=False)
    vals = np.where(np.isfinite(vals), vals, np.nan)
    okn = ok.to_numpy(zero_copy_only=False) & ~np.isnan(vals)
    bad = s.notna().to_numpy() & ~okn
    return pd.Series(vals, index=s.index, dtype="float64"), pd.Series(bad, index=s.index)


def parse_int(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    vals, bad = parse_number(s)
    # not a whole number, or too large for an exact integer: a bad value, not a crash
    frac = vals.notna() & ((vals != np.round(vals)) | (vals.abs() > 2**53))
    return vals.where(~frac).round().astype("Int64"), bad | frac


def parse_date(s: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Any contract date form → (timestamp at day precision, has_day flag, bad_mask).

    A month-only value (YYYYMM, YYYY-MM) becomes the first day of that month with has_day False.
    """
    a = _pa(s)
    a = pc.replace_substring_regex(a, _TIME_SUFFIX, "")
    # Excel numeric cells that held YYYYMM / YYYYMMDD can come back as "202302.0".
    a = pc.replace_substring_regex(a, r"^(\d{6}|\d{8})\.0+$", r"\1")
    parts = pc.extract_regex(a, _DATE_RE)
    f = {name: parts.field(name) if isinstance(parts, pa.StructArray) else pc.struct_field(parts, name)
         for name in ("y1", "m1", "d1", "y2", "m2", "d2", "y3", "m3", "d3")}

    def pick(*names):
        # extract_regex gives "" for a group that did not take part in the match
        cols = [pc.if_else(pc.equal(f[n], ""), None, f[n]) for n in names]
        return pc.cast(pc.coalesce(*cols), pa.int32()).to_numpy(zero_copy_only=False)

    y, m, d = pick("y1", "y2", "y3"), pick("m1", "m2", "m3"), pick("d1", "d2", "d3")
    has_day = ~np.isnan(d.astype("float64"))
    frame = pd.DataFrame({"year": y, "month": m, "day": np.where(has_day, d, 1)}, index=s.index)
    ok = frame["year"].notna() & frame["month"].notna() & frame["year"].between(1900, 2100)
    dates = pd.Series(pd.NaT, index=s.index, dtype="datetime64[s]")
    if ok.any():
        dates[ok] = pd.to_datetime(frame[ok], errors="coerce").astype("datetime64[s]")
    bad = s.notna() & dates.isna()
    return dates, pd.Series(has_day, index=s.index), bad


def parse_yyyymm(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    dates, _, bad = parse_date(s)
    out = (dates.dt.year * 100 + dates.dt.month).astype("Int32")
    return out, bad


def normalise_sex(s: pd.Series) -> pd.Series:
    a = _pa(s)
    for code, val in SEX_CODES.items():
        a = pc.if_else(pc.fill_null(pc.equal(a, code), False), val, a)
    return _str(a, s.index)


def normalise_school(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Grade-level school values → (stage, grade). 八年级 → 初中/8, 小学三年级 → 小学/3."""
    stage = s.copy()
    grade = pd.Series(pd.NA, index=s.index, dtype="Int8")
    hit = _bool(_matches(_pa(s), "年级$"), s.index)
    if not hit.any():
        return stage, grade
    sub = s[hit]
    g1 = sub.astype(object).str.extract(_STAGE_GRADE)
    hit1 = g1[0].notna()
    if hit1.any():
        num = g1.loc[hit1, 1].map(_CN_DIGIT)
        fits = num <= g1.loc[hit1, 0].map(_MAX_GRADE)
        idx = fits[fits].index
        stage[idx] = g1.loc[idx, 0]
        grade[idx] = num[idx].astype("Int8")
    g2 = sub.astype(object).str.extract(_MIDDLE_GRADE)
    hit2 = g2[0].notna()
    if hit2.any():
        idx = hit2[hit2].index
        stage[idx] = "初中"
        grade[idx] = g2.loc[idx, 0].map(_CN_DIGIT).astype("Int8")
    return stage, grade


def normalise_quarter(s: pd.Series) -> pd.Series:
    """`2024q2`, `2024 Q2` → `2024Q2`; anything else is kept as is for the schema to reject."""
    a = _pa(s)
    fixed = pc.replace_substring_regex(a, r"^(\d{4})\s*[Qq]\s*([1-4])$", r"\1Q\2")
    return _str(fixed, s.index)


def quarter_from_filename(name: str) -> str | None:
    """Quarter of the export date in a file name ending `_YYYYMMDD` (before the extension)."""
    m = re.search(r"_(\d{4})(\d{2})(\d{2})$", name.rsplit(".", 1)[0])
    if not m:
        return None
    y, mo, d = (int(g) for g in m.groups())
    try:
        pd.Timestamp(year=y, month=mo, day=d)
    except ValueError:
        return None
    return f"{y}Q{(mo - 1) // 3 + 1}"


def birth_from_id(ids: pd.Series) -> pd.Series:
    """Birth date from resident-ID characters 7–14 (YYYYMMDD); NaT when not a valid date."""
    digits = pc.utf8_slice_codeunits(_pa(ids), 6, 14)
    digits = pc.if_else(_matches(digits, r"^\d{8}$"), digits, None)
    out = pd.to_datetime(pd.Series(digits.to_numpy(zero_copy_only=False), index=ids.index),
                         format="%Y%m%d", errors="coerce")
    return out.astype("datetime64[s]")


YES_NO = {"是": True, "否": False}


def yes_no(s: pd.Series) -> pd.Series:
    """是/否 → True/False (anything else → NA; the contract's value set is checked before)."""
    return s.map(YES_NO).astype("boolean")


def convert(col: Column, s: pd.Series) -> tuple[pd.Series, pd.Series | None, str | None, pd.Series | None]:
    """One column of cleaned text (:func:`clean_text`) → its canonical values, as ingest reads
    every contract column (and the API every posted text value): ``(values, bad, code, grade)`` —
    ``bad`` marks cells that held something unreadable (``code``: ``bad_number`` / ``bad_date``),
    ``grade`` is the school grade that grade-level 在校生状况 values carry. 是/否 stays text here
    (:func:`yes_no` after the value set is checked)."""
    if col.kind in ("int", "float"):
        vals, bad = (parse_int if col.kind == "int" else parse_number)(s)
        return vals, bad, "bad_number", None
    if col.kind == "date":
        vals, _, bad = parse_date(s)
        return vals, bad, "bad_date", None
    if col.kind == "yyyymm":
        vals, bad = parse_yyyymm(s)
        return vals, bad, "bad_date", None
    if col.kind == "sex":
        return normalise_sex(s), None, None, None
    if col.kind == "quarter":
        return normalise_quarter(s), None, None, None
    if col.name == "school_status":
        stage, grade = normalise_school(s)
        return stage, None, None, grade
    if col.name == "id_number":
        return upper(s), None, None, None
    return s, None, None, None


def values_for(col: Column) -> tuple[str, ...]:
    """Allowed normalised values of a column (category, sex, yes/no)."""
    if col.kind == "sex":
        return ("男", "女")
    if col.kind == "yesno":
        return ("是", "否")
    return col.values


__all__ = [
    "NULL_TOKENS", "YES_NO", "birth_from_id", "clean_frame", "clean_text", "convert", "normalise_quarter",
    "normalise_school", "normalise_sex", "parse_date", "parse_int", "parse_number", "parse_yyyymm",
    "quarter_from_filename", "values_for", "yes_no",
]
