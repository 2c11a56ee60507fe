"""From raw text frames to the canonical tables of docs/data-model.md.

``prepare`` maps headers, normalises values and validates one frame against the declared schema
(fangpin.ingest.schema), returning the normalised frame and the row-level errors. The ``build_*``
functions combine prepared frames into the canonical person, household and event tables and list
the findings that keep rows (duplicates, invalid ID checksums, income disagreements, household
fields that differ between members, unmatched events). All of it works on in-memory frames, so
the scoring API can build the same tables from JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pandera.pandas as pandera
import pyarrow as pa
import pyarrow.compute as pc

from fangpin import contract, ids
from fangpin.config import IngestParams
from fangpin.contract import Column
from fangpin.ingest import normalise as nz
from fangpin.ingest import schema as sc
from fangpin.ingest.errors import FileError
from fangpin.ingest.read import header_key

TABLE_COLUMNS: dict[str, tuple[Column, ...]] = {
    "ledger": contract.LEDGER_COLUMNS,
    "events": contract.EVENT_COLUMNS,
    "lines": sc.LINES_COLUMNS,
    "oracle": sc.ORACLE_COLUMNS,
}
TABLE_LABEL = {"ledger": "户成员台账", "events": "部门预警数据", "lines": "监测线", "oracle": "oracle"}
_SCHEMAS = {"ledger": sc.ledger_schema, "events": sc.events_schema, "lines": sc.lines_schema,
            "oracle": sc.oracle_schema}

QUARANTINE_COLUMNS = ["file", "row", "column", "field", "code", "reason", "value"]
ROW_FIELD = "(整行)"

PERSON_OUT = (
    "quarter", "quarter_idx", "household_id", "person_key", "id_masked", "id_valid", "name",
    "relation", "sex", "ethnicity", "education", "school_status", "school_grade", "health",
    "labor_skill", "work_status", "birth_date", "age", "work_months", "medical_insured",
    "pension_insured", *contract.PROVENANCE,
)
HOUSEHOLD_OUT = (
    "quarter", "quarter_idx", *[f for f in contract.HOUSEHOLD_FIELDS if f != "quarter"],
    "n_members", "source_file",
)
EVENT_OUT = ("person_key", "id_masked", "household_id", "event_date", "quarter", "quarter_idx",
             "department", "event_type", "amount", "id_valid", *contract.PROVENANCE)
# Column types of the canonical events table, also when it is empty (an export without department
# signals is valid; readers compare quarter_idx and amount as numbers).
EVENT_DTYPES = {"person_key": "str", "id_masked": "str", "household_id": "str", "event_date": "datetime64[s]",
                "quarter": "str", "quarter_idx": "int32", "department": "str", "event_type": "str",
                "amount": "float64", "id_valid": "bool", "source_file": "str", "source_row": "int64"}
INCOME_PARTS = ("wage_income", "business_income", "property_income", "transfer_income")


# dtype of an absent optional column (all null), by contract kind
_NULL_DTYPE = {"int": "Int64", "float": "float64", "date": "datetime64[s]", "yyyymm": "Int32"}


@dataclass
class Prepared:
    """One normalised, validated frame (all rows, errors listed separately)."""

    table: str
    source_file: str
    frame: pd.DataFrame  # canonical columns (+ carried-through extras), index 0..n-1
    rows: np.ndarray  # spreadsheet row numbers
    errors: pd.DataFrame  # idx, field, code
    quarantine: pd.DataFrame  # QUARANTINE_COLUMNS, one line per problem
    header_of: dict[str, str]
    extras: list[str] = field(default_factory=list)
    quarter_from_name: str | None = None

    @property
    def bad_idx(self) -> np.ndarray:
        return np.unique(self.errors["idx"].to_numpy()) if len(self.errors) else np.array([], dtype=int)

    @property
    def accepted(self) -> pd.DataFrame:
        keep = np.ones(len(self.frame), dtype=bool)
        keep[self.bad_idx] = False
        return self.frame[keep]


def _lookup(columns: tuple[Column, ...]) -> dict[str, Column]:
    out: dict[str, Column] = {}
    for c in columns:
        for h in (c.header, *c.aliases, c.name):
            out[header_key(h)] = c
    return out


def _reason(code: str, col: Column | None, header: str, **kw) -> str:
    h = f"“{header}”"
    if code == "missing":
        return f"{h}为必填项，不能为空"
    if code == "not_allowed":
        allowed = "、".join(nz.values_for(col)) if col else ""
        if len(allowed) > 60:
            allowed = allowed[:60] + "…"
        return f"{h}的值不在允许范围内（允许：{allowed}）"
    if code == "out_of_range":
        lo, hi = (col.lo, col.hi) if col else (None, None)
        lo, hi = (_num(lo) if lo is not None else None), (_num(hi) if hi is not None else None)
        rng = f"{lo} 至 {hi}" if lo is not None and hi is not None else (f"≥{lo}" if lo is not None else f"≤{hi}")
        return f"{h}超出范围（应为 {rng}）"
    if code == "bad_number":
        return f"{h}不是有效数字"
    if code == "bad_date":
        return f"{h}不是有效日期（支持 YYYYMM、YYYY-MM、YYYYMMDD、YYYY-MM-DD、YYYY/M/D）"
    if code == "bad_format" and col is not None and col.name == "id_number":
        return f"{h}格式错误（应为18位，前17位为数字，末位为数字或X）"
    if code == "bad_format" and col is not None and col.name == "quarter":
        return f"{h}格式错误（应为 YYYYQn，如 2024Q2）"
    if code == "too_long":
        return f"{h}过长（至多 {contract.MAX_TEXT_CHARS} 个字符）"
    if code == "cell_too_long":
        return f"{h}的单元格过长（超过 {kw.get('limit', '?')} 个字符，params.yaml 中 ingest.max_cell_chars）"
    if code == "formula_no_value":
        return (f"{h}是公式但没有计算结果（文件由不计算公式的软件生成）；"
                "请在 Excel 中打开、重新计算并保存后再导入")
    if code == "extra_fields":
        return "该行的单元格多于表头的列数（CSV 中可能有未加引号的逗号，如千分位“12,345”）"
    if code == "duplicate":
        return f"同一季度重复出现的人员（证件号码相同），已保留{kw.get('kept', '第一条')}"
    if code == "duplicate_line":
        return f"同一年度的监测线重复且数值不同，已保留{kw.get('kept', '第一条')}"
    return f"{h}的值无效"


def _num(v: float) -> str:
    return f"{int(v):,}" if float(v).is_integer() else f"{v:,g}"


def _check_code(check: str) -> str:
    if check == "not_nullable":
        return "missing"
    if check.startswith("isin"):
        return "not_allowed"
    if check.startswith(("in_range", "greater_than", "less_than")):
        return "out_of_range"
    if check.startswith("str_matches"):
        return "bad_format"
    if check.startswith("str_length"):
        return "too_long"
    return "invalid"


def _err(idx, fld: str, code: str) -> pd.DataFrame:
    idx = np.asarray(idx, dtype=np.int64)
    return pd.DataFrame({"idx": idx, "field": np.full(len(idx), fld, dtype=object),
                         "code": np.full(len(idx), code, dtype=object)})


def prepare(
    raw: pd.DataFrame,
    headers: list[str],
    table: str,
    source_file: str,
    rows: np.ndarray | None = None,
    extra_fields: pd.Series | None = None,
    path=None,
    cell_errors: pd.DataFrame | None = None,
    limits: IngestParams | None = None,
) -> Prepared:
    """Map headers, normalise and validate one text frame (columns by position, see read.py).

    ``cell_errors`` (frame row, column position, code) are cells the reader could not take as
    values (fangpin.ingest.read.RawChunk): their rows are quarantined with that reason. The
    quarantine keeps at most ``limits.quarantine_value_chars`` characters of a value.

    Raises FileError for problems with the whole frame (missing required column, duplicated
    column, ledger without 统计季度 and without an export date in its file name).
    """
    limits = limits or IngestParams()
    columns = TABLE_COLUMNS[table]
    lookup = _lookup(columns)
    raw = raw.reset_index(drop=True)
    n = len(raw)
    rows = np.arange(2, n + 2, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    where = path or source_file
    pos_of: dict[str, int] = {}
    header_of: dict[str, str] = {}
    extras: dict[str, int] = {}
    for j, h in enumerate(headers):
        key = header_key(h)
        col = lookup.get(key)
        if col is None:
            if key and key not in extras:
                extras[str(h).strip()] = j
            continue
        if col.name in pos_of:
            raise FileError(where, f"文件 {source_file} 中“{header_of[col.name]}”与“{h}”是同一列，重复出现。"
                                   "请删除其中一列后重新导入。", column=str(h), code="duplicate_column")
        pos_of[col.name] = j
        header_of[col.name] = str(h).strip()
    quarter_from_name = None
    if table == "ledger" and "quarter" not in pos_of:
        quarter_from_name = nz.quarter_from_filename(source_file)
        if quarter_from_name is None:
            raise FileError(where, f"文件 {source_file} 缺少“统计季度”列，且文件名不以 _YYYYMMDD（导出日期）结尾，"
                                   "无法确定季度。请加上“统计季度”列，或把文件名改为如 台账_20240628.xlsx。",
                            column="统计季度", code="missing_column")
    missing = [c.header for c in columns if c.required and c.name not in pos_of
               and not (c.name == "quarter" and quarter_from_name)]
    if missing:
        cols = "、".join(f"“{m}”" for m in missing)
        raise FileError(where, f"文件 {source_file} 缺少必填列 {cols}。请在导出时勾选这些列后重新导出。",
                        column=missing[0], code="missing_column")

    errors: list[pd.DataFrame] = []
    out: dict[str, pd.Series] = {}
    cleaned = _clean_columns(raw, [pos_of[c.name] for c in columns if c.name in pos_of] + list(extras.values()))
    if cell_errors is not None and len(cell_errors):
        # a flagged cell is reported once, with its own reason, and read as empty afterwards
        field_at = {j: name for name, j in pos_of.items()} | {j: h for h, j in extras.items()}
        ce = cell_errors[cell_errors["idx"] < n]
        errors.append(pd.DataFrame({"idx": ce["idx"].to_numpy(dtype=np.int64),
                                    "field": [field_at.get(int(j), ROW_FIELD) for j in ce["pos"]],
                                    "code": ce["code"].to_numpy(dtype=object)}))
        for j, g in ce.groupby("pos"):
            if int(j) in cleaned:
                hit = np.zeros(n, dtype=bool)
                hit[g["idx"].to_numpy(dtype=np.int64)] = True
                cleaned[int(j)] = cleaned[int(j)].mask(hit)
    for col in columns:
        if col.name not in pos_of:
            header_of.setdefault(col.name, col.header)
            if col.name == "quarter" and quarter_from_name:
                out[col.name] = pd.Series(quarter_from_name, index=raw.index, dtype="str")
            else:
                out[col.name] = pd.Series(None, index=raw.index, dtype=_NULL_DTYPE.get(col.kind, "str"))
            continue
        s, bad, code, grade = nz.convert(col, cleaned[pos_of[col.name]])
        if bad is not None:
            errors.append(_err(np.flatnonzero(bad.to_numpy()), col.name, code))
        if grade is not None:
            out["school_grade"] = grade
        out[col.name] = s
    if table == "ledger" and "school_grade" not in out:
        out["school_grade"] = pd.Series(pd.NA, index=raw.index, dtype="Int8")
    frame = pd.DataFrame(out, index=raw.index)

    parse_errs = pd.concat(errors, ignore_index=True) if errors else _err([], "", "")
    try:
        _SCHEMAS[table]().validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        fc = exc.failure_cases
        fc = fc[fc["index"].notna() & fc["column"].notna()]
        schema_errs = pd.DataFrame({"idx": fc["index"].astype(np.int64).to_numpy(),
                                    "field": fc["column"].astype(object).to_numpy(),
                                    "code": fc["check"].astype(str).map(_check_code).to_numpy()})
        # a cell that could not be parsed is already reported; do not report it again as missing
        if len(parse_errs):
            seen = pd.MultiIndex.from_frame(parse_errs[["idx", "field"]])
            dup = pd.MultiIndex.from_frame(schema_errs[["idx", "field"]]).isin(seen)
            schema_errs = schema_errs[~dup]
        errors.append(schema_errs)
    if extra_fields is not None and bool(np.asarray(extra_fields).any()):
        errors.append(_err(np.flatnonzero(np.asarray(extra_fields, dtype=bool)), ROW_FIELD, "extra_fields"))
    err = pd.concat(errors, ignore_index=True) if errors else _err([], "", "")
    err = err[err["field"] != ""].drop_duplicates(["idx", "field", "code"]).reset_index(drop=True)

    # typed conversions after validation
    for col in columns:
        if col.kind == "yesno":
            frame[col.name] = nz.yes_no(frame[col.name])
    if extras:  # all at once: inserting columns one by one copies the column index each time
        frame = pd.concat([frame, pd.DataFrame({h: cleaned[j] for h, j in extras.items()}, index=frame.index)],
                          axis=1)

    quarantine = quarantine_rows(err, raw, pos_of | extras, header_of, columns, source_file, rows,
                                 value_chars=limits.quarantine_value_chars, cell_chars=limits.max_cell_chars)
    return Prepared(table=table, source_file=source_file, frame=frame, rows=rows, errors=err,
                    quarantine=quarantine, header_of=header_of, extras=list(extras),
                    quarter_from_name=quarter_from_name)


def _clean_columns(raw: pd.DataFrame, positions: list[int]) -> dict[int, pd.Series]:
    """Clean many text columns in one pass (one long Series), then slice them back: the same work
    as column by column, with a fraction of the per-call overhead on small frames."""
    positions = sorted(set(positions))
    n = len(raw)
    if not positions:
        return {}
    long = nz._pa(nz.clean_text(pd.concat([raw.iloc[:, j].astype("str") for j in positions], ignore_index=True)))
    return {j: nz._str(long.slice(k * n, n), raw.index) for k, j in enumerate(positions)}


def _masked_values(values: pd.Series, personal: bool) -> pd.Series:
    v = values.astype("str")
    return ids.mask_series(v) if personal else v


def quarantine_rows(err: pd.DataFrame, raw: pd.DataFrame, pos_of: dict[str, int], header_of: dict[str, str],
                    columns: tuple[Column, ...], source_file: str, rows: np.ndarray, *,
                    value_chars: int = 100, cell_chars: int = 1000) -> pd.DataFrame:
    """One quarantine line per problem; ``value`` keeps at most ``value_chars`` characters of the
    cell (masked first when the column holds personal data), then "…"."""
    by_name = {c.name: c for c in columns}
    parts = []
    for (fld, code), g in err.groupby(["field", "code"], sort=False):
        idx = g["idx"].to_numpy()
        col = by_name.get(fld)
        header = header_of.get(fld, ROW_FIELD if fld == ROW_FIELD else fld)
        if fld in pos_of:
            cells = raw.iloc[idx, pos_of[fld]].reset_index(drop=True).astype("str")
            value = _masked_values(cells.str.slice(0, value_chars + 8), bool(col and col.personal))
            value = value.where(value.str.len().fillna(0) <= value_chars, value.str.slice(0, value_chars) + "…")
        else:
            value = pd.Series(pd.NA, index=range(len(idx)), dtype="str")
        parts.append(pd.DataFrame({
            "file": source_file, "row": rows[idx], "column": header, "field": fld, "code": code,
            "reason": _reason(code, col, header, limit=cell_chars), "value": value.to_numpy(),
        }))
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c == "row" else "str") for c in QUARANTINE_COLUMNS})
    return pd.concat(parts, ignore_index=True).sort_values(["row", "field"], kind="stable", ignore_index=True)


# ---------------------------------------------------------------------------------------------
# shared helpers


def quarter_index(q: pd.Series) -> pd.Series:
    q = q.astype("str")
    return (q.str.slice(0, 4).astype("int32") * 4 + q.str.slice(5, 6).astype("int32") - 1).astype("int32")


def mask_ids(s: pd.Series) -> pd.Series:
    """:func:`fangpin.ids.mask` for a Series: first 4 + stars + last 4 (18-character IDs in Arrow,
    any other length through fangpin.ids)."""
    a = nz._pa(s)
    n = pc.utf8_length(a)
    std = pc.binary_join_element_wise(pc.utf8_slice_codeunits(a, 0, 4), pa.scalar("*" * 10, pa.large_string()),
                                      pc.utf8_slice_codeunits(a, 14, 18), pa.scalar("", pa.large_string()))
    out = nz._str(pc.if_else(pc.fill_null(pc.equal(n, 18), False), std, None), s.index)
    other = s.notna() & out.isna()
    if other.any():
        out[other] = ids.mask_series(s[other]).astype("str")
    return out


def person_ids(id_numbers: pd.Series, key: bytes) -> pd.DataFrame:
    """person_key (keyed hash), id_masked and id_valid for a Series of ID numbers."""
    s = id_numbers.astype("str")
    codes, uniq = pd.factorize(s, use_na_sentinel=True)
    hashed = np.array(ids.keyed_hashes(list(uniq.astype(object)), key) + [None], dtype=object)
    return pd.DataFrame({
        "person_key": pd.Series(hashed[codes], index=s.index).astype("str"),
        "id_masked": mask_ids(s),
        "id_valid": ids.checksum_ok_series(s).astype(bool).to_numpy(),
    }, index=s.index)


def age_at_quarter_end(birth: pd.Series, qidx: pd.Series) -> pd.Series:
    year = qidx // 4
    month = (qidx % 4) * 3 + 3
    by, bm = birth.dt.year, birth.dt.month
    age = year - by - (bm > month).astype("int64")
    return age.astype("Int16")


@dataclass
class Finding:
    code: str
    message: str
    count: int
    examples: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "count": int(self.count),
                "examples": self.examples}


def _examples(df: pd.DataFrame, cols: list[str], n: int = 20) -> list[dict]:
    sub = df[cols].head(n)
    return [{k: (None if pd.isna(v) else (v.item() if hasattr(v, "item") else v)) for k, v in r.items()}
            for r in sub.to_dict("records")]


# ---------------------------------------------------------------------------------------------
# ledger


@dataclass
class LedgerBuild:
    persons: pd.DataFrame
    households: pd.DataFrame
    quarantine: pd.DataFrame  # duplicates dropped at this stage
    duplicates_by_file: dict[str, int]
    findings: list[Finding]
    invalid_ids: int


def ledger_rows(p: Prepared, order: int, key: bytes, seq0: int = 0) -> pd.DataFrame:
    """Accepted rows of one prepared ledger frame (a whole file or one chunk of it) with the
    row-wise columns of the persons table: source_file/source_row, person_key/id_masked/id_valid,
    quarter_idx, birth date (from the ID number when blank), age, work_months; plus ``_order``
    (file order), ``_seq`` (row order over all files, from ``seq0``) and ``_not_head``."""
    acc = p.accepted
    a = acc.copy()
    a["source_file"] = p.source_file
    a["source_row"] = p.rows[acc.index.to_numpy()]
    a["_order"] = order
    a = a.reset_index(drop=True)
    a = pd.concat([a, person_ids(a["id_number"], key)], axis=1)
    a["quarter_idx"] = quarter_index(a["quarter"])
    # birth date: 出生日期 when given, else ID characters 7–14
    from_id = nz.birth_from_id(a["id_number"])
    a["birth_date"] = a["birth_date"].fillna(from_id).astype("datetime64[s]")
    a["age"] = age_at_quarter_end(a["birth_date"], a["quarter_idx"])
    a["work_months"] = a["work_months"].astype("Int8")
    a["_not_head"] = a["relation"].ne(contract.HEAD_RELATION)
    a["_seq"] = np.arange(seq0, seq0 + len(a), dtype=np.int64)
    return a


def duplicate_quarantine(d: pd.DataFrame, kept: pd.DataFrame) -> pd.DataFrame:
    """Quarantine lines (plus ``_seq``) for duplicated person rows ``d``; ``kept`` holds the kept
    row of each of their (quarter, person_key) (it may hold other rows too)."""
    first = kept.set_index(["quarter", "person_key"])[["source_file", "source_row"]]
    k = first.reindex(pd.MultiIndex.from_frame(d[["quarter", "person_key"]]))
    kept_txt = ("第 " + k["source_row"].astype("int64").astype(str).to_numpy() + " 行（"
                + k["source_file"].astype(str).to_numpy() + "）")
    return pd.DataFrame({
        "file": d["source_file"].to_numpy(), "row": d["source_row"].to_numpy(),
        "column": contract.header_for("id_number"), "field": "id_number", "code": "duplicate",
        "reason": [_reason("duplicate", None, "", kept=t) for t in kept_txt],
        "value": d["id_masked"].to_numpy(), "_seq": d["_seq"].to_numpy(),
    })


def _head(parts: list[pd.DataFrame], by: str | None = "_seq", n: int = 20) -> pd.DataFrame:
    df = pd.concat(parts, ignore_index=True)
    return (df.sort_values(by, kind="stable") if by else df).head(n)


class LedgerAgg:
    """Persons, households and findings of deduplicated ledger rows, fed in parts (``add``) that
    each hold whole household-quarters, in output order; findings and their examples (the first
    20 in row order over all files) come out as if computed on all rows at once."""

    def __init__(self, tolerance: float, extras: list[str]):
        self.tolerance = tolerance
        self.extras = extras
        self.dq: list[pd.DataFrame] = []
        self.duplicates_by_file: dict[str, int] = {}
        self.invalid, self.invalid_ex = 0, []
        self.no_birth, self.no_birth_ex = 0, []
        self.differ_fields: dict[str, int] = {}
        self.n_differ, self.differ_ex = 0, []
        self.mismatch, self.mismatch_ex = 0, []
        self.persons = 0
        self.households = 0

    def add_duplicates(self, dq: pd.DataFrame) -> None:
        if len(dq):
            self.dq.append(dq)
            for f, c in dq["file"].value_counts().items():
                self.duplicates_by_file[f] = self.duplicates_by_file.get(f, 0) + int(c)

    def quarantine(self) -> pd.DataFrame:
        if not self.dq:
            return _empty_quarantine()
        dq = pd.concat(self.dq, ignore_index=True).sort_values("_seq", kind="stable")
        return dq.drop(columns="_seq").reset_index(drop=True)

    def add(self, df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Persons (sorted) and households of deduplicated rows in row order (``ledger_rows``)."""
        invalid = ~df["id_valid"]
        if invalid.any():
            self.invalid += int(invalid.sum())
            self.invalid_ex.append(df.loc[invalid, ["source_file", "source_row", "id_masked", "_seq"]].head(20))
        no_birth = df["birth_date"].isna()
        if no_birth.any():
            self.no_birth += int(no_birth.sum())
            self.no_birth_ex.append(df.loc[no_birth, ["source_file", "source_row", "id_masked", "_seq"]].head(20))

        # households: values of the 户主 row, else the first accepted row
        order = df.sort_values(["quarter_idx", "household_id", "_not_head", "_order", "source_row"], kind="stable")
        keys = ["quarter", "household_id"]
        rep = order.drop_duplicates(keys, keep="first")
        n_members = df.groupby(keys, sort=False).size().rename("n_members")
        hh = rep.set_index(keys).join(n_members).reset_index()
        hh["n_members"] = hh["n_members"].astype("int16")
        hh = hh[list(HOUSEHOLD_OUT)].sort_values(["quarter_idx", "household_id"], ignore_index=True)

        # household fields that differ between members of one household-quarter
        gid = df.groupby(keys, sort=False).ngroup().to_numpy()
        rep_pos = np.empty(gid.max() + 1, dtype=np.int64)
        rep_pos[gid[rep.index.to_numpy()]] = rep.index.to_numpy()
        fields = [f for f in contract.HOUSEHOLD_FIELDS if f not in keys]
        any_differ = np.zeros(gid.max() + 1, dtype=bool)
        a = df[fields].reset_index(drop=True)
        ref = a.iloc[rep_pos[gid]].reset_index(drop=True)
        same = a.eq(ref).fillna(False).astype(bool) | (a.isna() & ref.isna())
        for f in same.columns[~same.all().to_numpy()]:
            g = np.unique(gid[~same[f].to_numpy()])
            any_differ[g] = True
            self.differ_fields[f] = self.differ_fields.get(f, 0) + int(len(g))
        if any_differ.any():
            groups = np.flatnonzero(any_differ)
            self.n_differ += int(len(groups))
            _, first_pos = np.unique(gid, return_index=True)
            ex = df.loc[rep_pos[groups[:20]], ["source_file", "quarter", "household_id"]]
            self.differ_ex.append(ex.assign(_seq=df["_seq"].to_numpy()[first_pos[groups[:20]]]))

        # income components vs recorded per-capita income
        parts = hh[list(INCOME_PARTS) + ["business_expense"]]
        have = parts.notna().any(axis=1)
        net = parts[list(INCOME_PARTS)].fillna(0).sum(axis=1) - parts["business_expense"].fillna(0)
        computed = net / hh["n_members"].astype("float64")
        rec = hh["income_per_capita"]
        diff = (computed - rec).abs()
        mismatch = have & (diff > self.tolerance * rec.abs()) & ~((rec == 0) & (diff == 0))
        if mismatch.any():
            self.mismatch += int(mismatch.sum())
            if sum(len(e) for e in self.mismatch_ex) < 20:
                ex = hh[mismatch].assign(computed=computed[mismatch].round(2))
                self.mismatch_ex.append(
                    ex[["source_file", "quarter", "household_id", "income_per_capita", "computed"]].head(20))

        missing = [e for e in self.extras if e not in df.columns]
        if missing:
            df = pd.concat([df, pd.DataFrame({e: pd.Series(pd.NA, index=df.index, dtype="str") for e in missing})],
                           axis=1)
        persons = df[list(PERSON_OUT) + list(self.extras)]
        persons = persons.sort_values(["quarter_idx", "household_id", "source_file", "source_row"], ignore_index=True)
        self.persons += len(persons)
        self.households += len(hh)
        return persons, hh

    def merge(self, part: LedgerAgg) -> None:
        """Take in the findings of a LedgerAgg that saw only the next part (``add`` on another
        process); merging parts in order gives what ``add`` on each part in order gives."""
        self.invalid += part.invalid
        self.invalid_ex += part.invalid_ex
        self.no_birth += part.no_birth
        self.no_birth_ex += part.no_birth_ex
        for f, c in part.differ_fields.items():
            self.differ_fields[f] = self.differ_fields.get(f, 0) + c
        self.n_differ += part.n_differ
        self.differ_ex += part.differ_ex
        self.mismatch += part.mismatch
        for ex in part.mismatch_ex:  # as add: examples only while fewer than 20 are kept
            if sum(len(e) for e in self.mismatch_ex) < 20:
                self.mismatch_ex.append(ex)
        self.persons += part.persons
        self.households += part.households

    def findings(self) -> list[Finding]:
        out: list[Finding] = []
        if self.dq:
            dq = _head(self.dq)
            out.append(Finding("duplicate_person_rows",
                               "同一季度同一人（证件号码相同）出现多行：保留第一行，其余写入 quarantine.csv",
                               sum(self.duplicates_by_file.values()), _examples(dq, ["file", "row", "value"])))
        if self.invalid:
            out.append(Finding("invalid_id_numbers", "证件号码校验位错误（行已保留，请核对证件号码）", self.invalid,
                               _examples(_head(self.invalid_ex), ["source_file", "source_row", "id_masked"])))
        if self.no_birth:
            out.append(Finding("birth_date_unknown", "出生日期为空且无法从证件号码第7–14位得出", self.no_birth,
                               _examples(_head(self.no_birth_ex), ["source_file", "source_row", "id_masked"])))
        if self.differ_fields:
            fields = [f for f in contract.HOUSEHOLD_FIELDS if f in self.differ_fields]
            detail = "、".join(f"{contract.header_for(f)}（{self.differ_fields[f]} 户）" for f in fields)
            out.append(Finding("household_field_disagreement",
                               f"同一户同一季度的成员行之间，户级字段取值不一致（以户主行为准）：{detail}",
                               self.n_differ,
                               _examples(_head(self.differ_ex), ["source_file", "quarter", "household_id"])))
        if self.mismatch:
            out.append(Finding(
                "income_mismatch",
                f"收入构成（工资性+生产经营性+财产性+转移性−生产经营性支出）÷ 人数 与 人均纯收入相差超过 "
                f"{self.tolerance:.0%}（保留记录的人均纯收入）",
                self.mismatch,
                _examples(_head(self.mismatch_ex, by=None),
                          ["source_file", "quarter", "household_id", "income_per_capita", "computed"])))
        return out


def ledger_extras(prepared: list[Prepared]) -> list[str]:
    return sorted({e for p in prepared for e in p.extras})


def build_ledger(prepared: list[Prepared], key: bytes, tolerance: float) -> LedgerBuild:
    """Combine prepared ledger frames into persons and households (all in memory; ``fangpin
    ingest`` streams the same steps: ledger_rows per chunk, duplicates per quarter, LedgerAgg per
    part of whole households)."""
    frames = [ledger_rows(p, order, key) for order, p in enumerate(prepared)]
    if not frames or sum(len(f) for f in frames) == 0:
        empty = pd.DataFrame(columns=list(PERSON_OUT))
        return LedgerBuild(empty, pd.DataFrame(columns=list(HOUSEHOLD_OUT)), _empty_quarantine(), {}, [], 0)
    df = pd.concat(frames, ignore_index=True)
    df["_seq"] = np.arange(len(df), dtype=np.int64)
    agg = LedgerAgg(tolerance, [e for e in ledger_extras(prepared) if e in df.columns])
    # duplicated person rows in one snapshot: keep the first (file order, then row)
    dup = df.duplicated(["quarter", "person_key"], keep="first").to_numpy()
    if dup.any():
        agg.add_duplicates(duplicate_quarantine(df[dup], df[~dup]))
        df = df[~dup].reset_index(drop=True)
    persons, hh = agg.add(df)
    return LedgerBuild(persons, hh, agg.quarantine(), agg.duplicates_by_file, agg.findings(), agg.invalid)


def _empty_quarantine() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="int64" if c == "row" else "str") for c in QUARANTINE_COLUMNS})


# ---------------------------------------------------------------------------------------------
# events


def build_events(prepared: list[Prepared], key: bytes) -> pd.DataFrame:
    """Accepted department events with person_key/id_masked/id_valid and the event's quarter
    (household_id not yet joined: see :func:`join_households`)."""
    frames = []
    for p in prepared:
        acc = p.accepted
        a = acc[[c.name for c in contract.EVENT_COLUMNS]].copy()
        a["source_file"] = p.source_file
        a["source_row"] = p.rows[acc.index.to_numpy()]
        frames.append(a.reset_index(drop=True))
    frames = [f for f in frames if len(f)]
    if not frames:
        return empty_events(with_household=False)
    ev = pd.concat(frames, ignore_index=True)
    ev = pd.concat([ev, person_ids(ev["id_number"], key)], axis=1).drop(columns="id_number")
    ev["event_date"] = ev["event_date"].astype("datetime64[s]")
    y, m = ev["event_date"].dt.year, ev["event_date"].dt.month
    ev["quarter_idx"] = (y * 4 + (m - 1) // 3).astype("int32")
    ev["quarter"] = (y.astype(str) + "Q" + ((m - 1) // 3 + 1).astype(str)).astype("str")
    return ev


def empty_events(with_household: bool = True) -> pd.DataFrame:
    """The events table with no rows, in its canonical column types (:data:`EVENT_DTYPES`)."""
    return pd.DataFrame({c: pd.Series(dtype=EVENT_DTYPES[c]) for c in EVENT_OUT
                         if with_household or c != "household_id"})


def join_households(ev: pd.DataFrame, persons: pd.DataFrame) -> tuple[pd.DataFrame, list[Finding], int]:
    """household_id through the keyed ID hash: the person's household in the latest snapshot at or
    before the event's quarter, else the earliest after; null (and reported) when no person matches."""
    ev = ev.drop(columns=[c for c in ("household_id",) if c in ev.columns]).reset_index(drop=True)
    if len(ev) == 0:
        return empty_events(), [], 0
    ev["_i"] = np.arange(len(ev))
    hh = pd.Series(pd.NA, index=ev.index, dtype="str")
    if len(persons):
        pk = (persons[["person_key", "quarter_idx", "household_id"]]
              .drop_duplicates(["person_key", "quarter_idx"]).copy())
        pk["quarter_idx"] = pk["quarter_idx"].astype("int32")
        pk = pk.sort_values("quarter_idx")
        left = ev[["_i", "person_key", "quarter_idx"]].astype({"quarter_idx": "int32"}).sort_values("quarter_idx")
        back = pd.merge_asof(left, pk, on="quarter_idx", by="person_key", direction="backward")
        fwd = pd.merge_asof(left, pk, on="quarter_idx", by="person_key", direction="forward")
        b = back.set_index("_i")["household_id"].reindex(ev["_i"])
        f = fwd.set_index("_i")["household_id"].reindex(ev["_i"])
        hh = pd.Series(b.fillna(f).to_numpy(), index=ev.index).astype("str")
    ev["household_id"] = hh
    unmatched = ev["household_id"].isna()
    findings = []
    if unmatched.any():
        findings.append(Finding("events_unmatched", "部门预警事件的证件号码在台账中找不到对应人员（事件已保留，户编号为空）",
                                int(unmatched.sum()),
                                _examples(ev[unmatched], ["source_file", "source_row", "id_masked"])))
    bad_ids = ~ev["id_valid"].astype(bool)
    if bad_ids.any():
        findings.append(Finding("event_invalid_id_numbers", "部门预警数据中证件号码校验位错误（事件已保留）",
                                int(bad_ids.sum()),
                                _examples(ev[bad_ids], ["source_file", "source_row", "id_masked"])))
    out = ev[list(EVENT_OUT)].sort_values(["event_date", "source_file", "source_row"], ignore_index=True)
    return out, findings, int(unmatched.sum())


# ---------------------------------------------------------------------------------------------
# monitoring lines and oracle


def build_lines(prepared: list[Prepared], configured: dict[int, float]) -> tuple[dict, pd.DataFrame, list[Finding]]:
    """Lines in force: configured values overridden year by year by 监测线.csv rows."""
    lines = {int(y): {"line": float(v), "source": "params.yaml"} for y, v in configured.items()}
    q = _empty_quarantine()
    seen: dict[int, tuple[float, str]] = {}
    dq = []
    for p in prepared:
        acc = p.accepted
        for i, (y, v) in zip(acc.index, zip(acc["year"], acc["line"], strict=True), strict=True):
            y, v = int(y), float(v)
            if y in seen and seen[y][0] != v:
                dq.append({"file": p.source_file, "row": int(p.rows[i]), "column": p.header_of["line"],
                           "field": "line", "code": "duplicate_line",
                           "reason": _reason("duplicate_line", None, "", kept=seen[y][1]), "value": str(v)})
                continue
            seen[y] = (v, f"第 {int(p.rows[i])} 行（{p.source_file}）")
            lines[y] = {"line": v, "source": p.source_file}
    if dq:
        q = pd.DataFrame(dq, columns=QUARANTINE_COLUMNS)
    return dict(sorted(lines.items())), q, []


def build_oracle(prepared: list[Prepared]) -> pd.DataFrame:
    frames = [p.accepted[["household_id", "quarter", "true_probability"]] for p in prepared]
    if not frames:
        return pd.DataFrame(columns=["household_id", "quarter", "quarter_idx", "true_probability"])
    o = pd.concat(frames, ignore_index=True).drop_duplicates(["household_id", "quarter"], keep="last")
    o["quarter_idx"] = quarter_index(o["quarter"])
    return o[["household_id", "quarter", "quarter_idx", "true_probability"]].reset_index(drop=True)
