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

from fangpin.contract import Column

# Full-width ASCII block (！..～) → ASCII, ideographic space → space.
_FULLWIDTH = {cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}
_FULLWIDTH_RE = r"[\uff01-\uff5e\u3000]"
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


def clean_text(s: pd.Series) -> pd.Series:
    """Fold full-width characters, strip whitespace (incl. U+3000, NBSP), missing tokens → NA."""
    s = s.astype("str")
    wide = s.str.contains(_FULLWIDTH_RE, regex=True, na=False)
    if wide.any():
        s = s.copy()
        s[wide] = s[wide].map(lambda v: v.translate(_FULLWIDTH))
    s = s.str.strip()
    return s.where(~s.isin(NULL_TOKENS))


def clean_frame(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({c: clean_text(df[c]) for c in df.columns}, index=df.index)


def parse_number(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Text with optional thousands separators → float64. Returns (values, bad_mask)."""
    t = s.str.replace(r"(?<=\d),(?=\d{3}(?:\D|$))", "", regex=True).str.replace(" ", "", regex=False)
    ok = t.str.fullmatch(_NUMBER_RE, na=False)
    vals = pd.to_numeric(t.where(ok), errors="coerce").astype("float64")
    finite = np.isfinite(vals.to_numpy())
    vals = vals.where(finite)
    bad = s.notna() & ~(ok & finite)
    return vals, bad


def parse_int(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    vals, bad = parse_number(s)
    frac = vals.notna() & (vals != np.round(vals))
    return vals.where(~frac).round().astype("Int64"), bad | frac


def parse_date(s: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Any contract date form → (timestamp at day precision, has_day flag, bad_mask).

    A month-only value (YYYYMM, YYYY-MM) becomes the first day of that month with has_day False.
    """
    t = s.str.replace(_TIME_SUFFIX, "", regex=True)
    # Excel numeric cells that held YYYYMM / YYYYMMDD come back as "202302" or "202302.0".
    t = t.str.replace(r"^(\d{6}|\d{8})\.0+$", r"\1", regex=True)
    parts = t.str.extract(_DATE_RE)
    y = parts["y1"].fillna(parts["y2"]).fillna(parts["y3"])
    m = parts["m1"].fillna(parts["m2"]).fillna(parts["m3"])
    d = parts["d1"].fillna(parts["d2"]).fillna(parts["d3"])
    has_day = d.notna()
    frame = pd.DataFrame({
        "year": pd.to_numeric(y, errors="coerce"),
        "month": pd.to_numeric(m, errors="coerce"),
        "day": pd.to_numeric(d, errors="coerce").fillna(1),
    })
    ok = frame["year"].notna() & frame["month"].notna() & frame["year"].between(1900, 2100)
    dates = pd.Series(pd.NaT, index=s.index, dtype="datetime64[s]")
    if ok.any():
        dates[ok] = pd.to_datetime(frame[ok], errors="coerce").astype("datetime64[s]")
    bad = s.notna() & dates.isna()
    return dates, has_day.astype(bool), bad


def parse_yyyymm(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    dates, _, bad = parse_date(s)
    out = (dates.dt.year * 100 + dates.dt.month).astype("Int32")
    return out, bad


def normalise_sex(s: pd.Series) -> pd.Series:
    return s.replace(SEX_CODES)


def normalise_school(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Grade-level school values → (stage, grade). 八年级 → 初中/8, 小学三年级 → 小学/3."""
    stage = s.copy()
    grade = pd.Series(pd.NA, index=s.index, dtype="Int8")
    g1 = s.str.extract(_STAGE_GRADE)
    hit1 = g1[0].notna()
    if hit1.any():
        num = g1.loc[hit1, 1].map(_CN_DIGIT)
        fits = num <= g1.loc[hit1, 0].map(_MAX_GRADE)
        idx = fits[fits].index
        stage[idx] = g1.loc[idx, 0]
        grade[idx] = num[idx].astype("Int8")
    g2 = s.str.extract(_MIDDLE_GRADE)
    hit2 = g2[0].notna()
    if hit2.any():
        stage[hit2] = "初中"
        grade[hit2] = g2.loc[hit2, 0].map(_CN_DIGIT).astype("Int8")
    return stage, grade


def normalise_quarter(s: pd.Series) -> pd.Series:
    """`2024q2`, `2024 Q2` → `2024Q2`; anything else is kept as is for the schema to reject."""
    m = s.str.extract(r"^(\d{4})\s*[Qq]\s*([1-4])$")
    return (m[0] + "Q" + m[1]).where(m[0].notna(), s)


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
    digits = ids.str.slice(6, 14)
    return pd.to_datetime(digits.where(digits.str.fullmatch(r"\d{8}", na=False)),
                          format="%Y%m%d", errors="coerce").astype("datetime64[s]")


def values_for(col: Column) -> tuple[str, ...]:
    """Allowed normalised values of a column (category, sex, yes/no)."""
    if col.kind == "sex":
        return ("男", "女")
    if col.kind == "yesno":
        return ("是", "否")
    return col.values


__all__ = [
    "NULL_TOKENS", "birth_from_id", "clean_frame", "clean_text", "normalise_quarter",
    "normalise_school", "normalise_sex", "parse_date", "parse_int", "parse_number", "parse_yyyymm",
    "quarter_from_filename", "values_for",
]
