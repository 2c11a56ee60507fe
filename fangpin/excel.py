"""Township warning lists as Excel workbooks (`预警清单_<乡镇>_<季度>.xlsx`), written with XlsxWriter.

One workbook per township: sheet 预警清单 (one row per warning, earliest deadline first, then
probability — deadlines follow the level: 红 入户核实 within the verification days, 黄 the next
monthly visit, 蓝 the half-yearly review — with the list each household is on; red / yellow fills
for 红 / 黄 rows; frozen, filterable header; column widths that fit Chinese text; rule hits,
reasons with their figures and the 其他因素 line, and measures as numbered lines), sheet 保障缺口任务
(the township's tasks routed to departments, earliest deadline first; every data cell a string),
sheet 按村汇总 (counts by level and status per village), sheet 说明 (what the columns mean,
versions, units, the township's verification capacity and shortfall). Only masked ID
numbers are written; a full ID number anywhere in a cell is refused before the file is created.

Warnings come as WarningRecord objects, dicts or a DataFrame in the record's JSON form, or an
Arrow table of :func:`fangpin.warnings.record_schema` (what batch scoring writes); all are checked
with :func:`fangpin.warnings.validate_table` (the WarningRecord rules, in bulk). A workbook is
built in memory (XlsxWriter's default mode: shared strings, faster here than constant_memory), so
memory follows the largest township, not the county.

Every cell that comes from a ledger, the store or a user is text, never a formula, a link or a
number guessed from text: workbooks are opened with XlsxWriter's string conversions switched off
(:data:`WORKBOOK_OPTIONS`), so a village called ``=HYPERLINK(…)`` stays those characters.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import UTC, date, datetime
from functools import lru_cache
from pathlib import Path

import numpy as np

from fangpin.warnings import (
    LEVEL_LABEL,
    LEVEL_RANK,
    LEVELS,
    STATUS_OPEN,
    STATUSES,
    WarningRecord,
    local_date,
    visit_list,
)

HEADERS = (
    "序号", "村", "户编号", "户主姓名", "证件号码(脱敏)", "预警等级", "清单", "风险概率", "规则触发", "主要原因",
    "建议帮扶措施", "核实期限", "状态", "核实说明",
)
TASK_SHEET = "保障缺口任务"
TASK_HEADERS = ("序号", "村", "户编号", "户主姓名", "证件号码(脱敏)", "缺口", "责任部门", "措施", "情况", "办理期限",
                "状态")
TASK_WRAPPED = {"情况": 40, "措施": 24}
WRAPPED = {"规则触发": 46, "主要原因": 60, "建议帮扶措施": 52, "核实说明": 30}  # max widths
SUMMARY_HEADERS = ("村", *LEVELS, "合计", *STATUSES, "逾期未核实")
FILLS = {"红": "FFC7CE", "黄": "FFEB9C"}
HEADER_FILL = "D9E1F2"
BORDER_COLOR = "BFBFBF"
OVERDUE_COLOR = "C00000"
LINE_HEIGHT = 16.0  # points per text line (11 pt CJK text)
_BAD_FILENAME = re.compile(r'[\\/:*?"<>|\s]+')
# No formula, URL or number is ever made from a string (a ledger value "=…" or "@…" stays text).
WORKBOOK_OPTIONS = {"strings_to_formulas": False, "strings_to_urls": False, "strings_to_numbers": False}
_RECORD_DEFAULTS = {"head_name": None, "id_masked": None, "rule_hits": [], "reasons": [], "measures": [],
                    "status": STATUS_OPEN, "status_reason": None, "base_rate": None, "other_pp": None,
                    "reference_period": None, "deferred": False}


# ------------------------------------------------------------------------------------------ widths


def cjk_width(text: str) -> int:
    """Display width of a line: East Asian wide / full-width characters count double."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


@lru_cache(maxsize=1)
def _bmp_widths() -> np.ndarray:
    """cjk_width of every Basic Multilingual Plane code point (1 or 2), built once."""
    return np.fromiter((2 if unicodedata.east_asian_width(chr(c)) in ("W", "F") else 1 for c in range(0x10000)),
                       dtype=np.int64, count=0x10000)


def cjk_widths(lines: list[str]) -> np.ndarray:
    """cjk_width of many lines at once (the same numbers, one numpy pass over the code points)."""
    if not lines:
        return np.zeros(0, dtype=np.int64)
    lens = np.fromiter((len(s) for s in lines), dtype=np.int64, count=len(lines))
    cps = np.frombuffer("".join(lines).encode("utf-32-le"), dtype=np.uint32)
    table = _bmp_widths()
    w = table[np.minimum(cps, 0xFFFF)]
    astral = np.flatnonzero(cps > 0xFFFF)
    for i in astral:
        w[i] = 2 if unicodedata.east_asian_width(chr(int(cps[i]))) in ("W", "F") else 1
    out = np.zeros(len(lines), dtype=np.int64)
    nz = lens > 0
    if nz.any():
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]])[nz]
        out[nz] = np.add.reduceat(w, starts)
    return out


def _line_widths(texts: list[str]) -> np.ndarray:
    """:func:`text_width` of many texts at once (the widest line of each)."""
    parts: list[str] = []
    owner: list[int] = []
    for i, t in enumerate(texts):
        ls = str(t).split("\n")
        parts += ls
        owner += [i] * len(ls)
    out = np.zeros(len(texts), dtype=np.int64)
    np.maximum.at(out, np.asarray(owner, dtype=np.int64), cjk_widths(parts))
    return out


def text_width(text: str) -> int:
    return max((cjk_width(line) for line in str(text).split("\n")), default=0)


def workbook_name(township: str, quarter: str) -> str:
    return f"预警清单_{_BAD_FILENAME.sub('_', township)}_{quarter}.xlsx"


# ---------------------------------------------------------------------------------------- formatting


def _get(obj, key):
    return obj[key] if isinstance(obj, dict) else getattr(obj, key)


def _numbered(lines: list[str]) -> str:
    return "\n".join(f"{i}. {s}" for i, s in enumerate(lines, 1))


def format_rule_hits(w) -> str:
    """Numbered rule hits with the threshold that fired (``w``: a WarningRecord or its JSON dict)."""
    return _numbered([_hit_text(_get(h, "level"), _get(h, "text"), _get(h, "threshold")) for h in _get(w, "rule_hits")])


def format_reasons(w) -> str:
    """Each reason with its direction and figure (percentage points), then the 其他因素 line."""
    text = _numbered([_reason_text(_get(r, "text"), _get(r, "direction"), _get(r, "prob_pp"))
                      for r in _get(w, "reasons")])
    return text + _other_line(_get(w, "other_pp"), _get(w, "base_rate"), _get(w, "probability"),
                              _get(w, "reference_period"))


def pp(v: float) -> str:
    """A figure in percentage points as shown beside a reason: ``+8.53个百分点``."""
    return f"{'+' if v >= 0 else '−'}{abs(v):.2f}个百分点"


def _other_line(other, base, prob, period) -> str:
    """'其他因素 +0.12个百分点（全县基准概率0.71%，2022Q1–2023Q4 → 本户23.40%）' after the reasons."""
    if other is None or base is None:
        return ""
    when = f"，{period}" if period else ""
    return f"\n其他因素{pp(other)}（全县基准概率{base:.2%}{when} → 本户{prob:.2%}）"


def format_measures(w) -> str:
    return _numbered([_measure_text(_get(m, "type"), _get(m, "text")) for m in _get(w, "measures")])


# -------------------------------------------------------------------------------------------- input


def _isnan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _json_row(i: int, w) -> dict:
    """One warning in its JSON form (what record_schema holds)."""
    if isinstance(w, WarningRecord):
        return w.model_dump(mode="json")
    d = {**_RECORD_DEFAULTS, **dict(w)}
    for k in ("rule_hits", "reasons", "measures"):
        v = d.get(k)
        if isinstance(v, str):
            d[k] = json.loads(v)
        elif v is None:
            d[k] = []
        elif not isinstance(v, list):
            d[k] = [x.model_dump(mode="json") if hasattr(x, "model_dump") else dict(x) for x in v]
        d[k] = [x.model_dump(mode="json") if hasattr(x, "model_dump") else dict(x) for x in d[k]]
    for k, v in list(d.items()):
        if _isnan(v):
            d[k] = None
        elif isinstance(v, datetime):
            d[k] = (v.replace(tzinfo=UTC) if v.tzinfo is None else v).isoformat()
        elif isinstance(v, date):
            d[k] = v.isoformat()
        elif hasattr(v, "item") and not isinstance(v, list | dict | str):  # numpy scalars
            d[k] = v.item()
    return d


def warning_table(warnings):
    """An Arrow table of record_schema from records, dicts, a DataFrame or a table; checked with
    :func:`fangpin.warnings.validate_table` (errors name the row and household)."""
    import pyarrow as pa

    from fangpin.warnings import record_schema, validate_table

    schema = record_schema()
    if isinstance(warnings, pa.Table):
        table = warnings
    else:
        if hasattr(warnings, "to_dict") and hasattr(warnings, "columns"):  # a pandas DataFrame
            warnings = warnings.to_dict(orient="records")
        rows = [_json_row(i, w) for i, w in enumerate(warnings)]
        for i, d in enumerate(rows):
            extra = set(d) - set(schema.names)
            if extra:
                raise ValueError(f"warning row {i} (household {d.get('household_id')}): unknown fields {sorted(extra)}")
        try:
            table = pa.Table.from_pylist(rows, schema=schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, KeyError, TypeError) as exc:
            raise ValueError(f"warning rows do not match the warning record: {exc}") from exc
    validate_table(table)
    return table.select(schema.names).cast(schema)


def _hit_text(level, text, threshold) -> str:
    return f"【{level}】{text}（触发条件：{threshold}）"


def _reason_text(text, direction, prob_pp) -> str:
    arrow = "↑升高风险" if direction == "up" else "↓降低风险"
    # the explainer labels risk-lowering sentences itself; here the label goes with the figure
    return f"{text.removesuffix('（降低风险）')}（{arrow}，{pp(prob_pp)}）"


def _measure_text(type_, text) -> str:
    return f"【{type_}】{text}"


def _nested(col, fields: tuple[str, ...], item) -> list[str]:
    """A numbered text per row from a list-of-struct column (one Arrow flatten, no per-row dicts)."""
    import pyarrow.compute as pc

    arr = col.combine_chunks() if hasattr(col, "combine_chunks") else col
    lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False)
    ends = np.cumsum(lengths)
    flat = pc.list_flatten(arr)
    items = [item(*v) for v in zip(*(pc.struct_field(flat, f).to_pylist() for f in fields), strict=True)]
    return [_numbered(items[e - n:e]) for n, e in zip(lengths.tolist(), ends.tolist(), strict=True)]


def _columns(table, w=None) -> dict[str, list]:
    """The table's columns as lists, rows in cadre order: earliest deadline first, then
    probability (highest first), then level, then household id. ``w``: params.warnings (the
    list labels)."""
    import pyarrow as pa

    from fangpin.config import WarningParams

    w = w or WarningParams()
    rank = np.array([LEVEL_RANK[v] for v in table.column("level").to_pylist()], dtype=np.int64)
    prob = table.column("probability").to_numpy(zero_copy_only=False)
    hid = np.array(table.column("household_id").to_pylist(), dtype=object)
    due = np.array([date.fromisoformat(d).toordinal() for d in table.column("deadline").to_pylist()], dtype=np.int64)
    order = np.lexsort((hid, rank, -prob, due)) if len(rank) else np.zeros(0, dtype=np.int64)
    t = table.take(pa.array(order, type=pa.int64()))
    cols = {c: t.column(c).to_pylist() for c in ("quarter", "county", "township", "village", "household_id",
                                                   "head_name", "id_masked", "level", "probability", "status",
                                                   "status_reason", "model_version", "ruleset_version",
                                                   "base_rate", "other_pp", "reference_period", "deferred")}
    cols["deadline"] = [date.fromisoformat(d) for d in t.column("deadline").to_pylist()]
    cols["清单"] = [visit_list(lvl, w, bool(d)) for lvl, d in zip(cols["level"], cols["deferred"], strict=True)]
    cols["规则触发"] = _nested(t.column("rule_hits"), ("level", "text", "threshold"), _hit_text)
    reasons = _nested(t.column("reasons"), ("text", "direction", "prob_pp"), _reason_text)
    cols["主要原因"] = [r + _other_line(o, b, p, per) for r, o, b, p, per in zip(
        reasons, cols["other_pp"], cols["base_rate"], cols["probability"], cols["reference_period"], strict=True)]
    cols["建议帮扶措施"] = _nested(t.column("measures"), ("type", "text"), _measure_text)
    return cols


# ------------------------------------------------------------------------------------------ writing


def _check_no_full_id(strings: Iterable[str], path) -> None:
    """Last line of defence: never a full ID number in the file (one regex pass over every text)."""
    from fangpin.ids import contains_id_number

    if contains_id_number("\x00".join(strings)):
        raise ValueError(f"refusing to write a full ID number into {path}")


def _wrapped_lines(texts: list[str], usable: float) -> np.ndarray:
    """Lines each text takes at a column width of ``usable`` characters (CJK counts double)."""
    parts: list[str] = []
    owner: list[int] = []
    for i, t in enumerate(texts):
        ls = t.split("\n")
        parts += ls
        owner += [i] * len(ls)
    per_line = np.maximum(1, np.ceil(cjk_widths(parts) / usable)).astype(np.int64)
    return np.bincount(np.asarray(owner, dtype=np.int64), weights=per_line, minlength=len(texts)).astype(np.int64)


def write_township_workbook(
    warnings,
    path: str | Path,
    *,
    township: str | None = None,
    quarter: str | None = None,
    today: date | None = None,
    tasks=None,
    county: str | None = None,
    workload: dict | None = None,
    params=None,
) -> Path:
    """Write one township's warning list to ``path``; returns the path.

    ``tasks``: the township's 保障缺口 tasks (fangpin.tasks records, dicts or an Arrow table of
    task_schema) for their own sheet; ``workload``: the township's counts from models.levels
    (红 wanted / kept, shortfall, capacity) for 说明; ``params``: for the list labels
    (``warnings.verification_days``)."""
    import xlsxwriter

    c = _columns(warning_table(warnings), params.warnings if params is not None else None)
    task_rows = _task_rows(tasks)
    n_rows = len(c["level"])
    if not n_rows and (township is None or quarter is None):
        raise ValueError("an empty list needs township and quarter")
    townships = set(zip(c["county"], c["township"], strict=True)) | {(t["county"], t["township"]) for t in task_rows}
    if len(townships) > 1:
        raise ValueError(f"one workbook per township, got {sorted(townships)}")
    quarters = set(c["quarter"]) | {t["quarter"] for t in task_rows}
    if len(quarters) > 1:
        raise ValueError(f"one workbook per quarter, got {sorted(quarters)}")
    township = township or c["township"][0]
    quarter = quarter or c["quarter"][0]
    county = county or (c["county"][0] if n_rows else (task_rows[0]["county"] if task_rows else ""))
    today = today or local_date(datetime.now(UTC))

    columns = {
        "村": c["village"], "户编号": c["household_id"], "户主姓名": [v or "" for v in c["head_name"]],
        "证件号码(脱敏)": [v or "" for v in c["id_masked"]], "预警等级": [LEVEL_LABEL[v] for v in c["level"]],
        "清单": c["清单"], "规则触发": c["规则触发"], "主要原因": c["主要原因"], "建议帮扶措施": c["建议帮扶措施"],
        "状态": c["status"], "核实说明": [v or "" for v in c["status_reason"]],
    }
    overdue = [st == STATUS_OPEN and today > d for st, d in zip(c["status"], c["deadline"], strict=True)]
    summary_rows = _summary_rows(c["village"], c["level"], c["status"], overdue)
    notes = _notes_rows(c, n_rows, county, township, quarter, today, len(task_rows), workload)
    task_cells = [[str(i), t["village"], t["household_id"], t["head_name"] or "", t["id_masked"] or "", t["gap"],
                   t["department"], t["measure"], t["detail"], t["deadline"], t["status"]]
                  for i, t in enumerate(task_rows, 1)]
    _check_no_full_id([s for vals in columns.values() for s in vals]
                      + [str(v) for r in summary_rows for v in r] + [str(v) for r in notes for v in r]
                      + [v for r in task_cells for v in r], path)

    # column widths that fit (CJK counts double; wrapped columns capped), then row heights
    widths = {h: cjk_width(h) for h in HEADERS}
    widths["序号"] = max(widths["序号"], len(str(n_rows)))
    widths["风险概率"] = max([widths["风险概率"]] + [len(f"{v:.1%}") for v in c["probability"]])
    widths["核实期限"] = max(widths["核实期限"], 10 if n_rows else 0)
    for h, vals in columns.items():
        if not vals:
            continue
        parts = [line for v in vals for line in v.split("\n")]
        widths[h] = max(widths[h], int(cjk_widths(parts).max()))
    final = {h: max(6, min(widths[h], WRAPPED[h]) if h in WRAPPED else widths[h]) + 2 for h in HEADERS}
    lines = np.ones(n_rows, dtype=np.int64)
    for h in WRAPPED:
        if n_rows:
            lines = np.maximum(lines, _wrapped_lines(columns[h], max(1.0, final[h] - 2)))

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wb = xlsxwriter.Workbook(str(path), WORKBOOK_OPTIONS)
    try:
        border = {"border": 1, "border_color": "#" + BORDER_COLOR, "valign": "top"}
        head = wb.add_format({**border, "bold": True, "bg_color": "#" + HEADER_FILL, "align": "center",
                              "valign": "vcenter", "text_wrap": True})
        fmt: dict = {}
        for lvl in (*LEVELS,):
            base = {**border}
            if lvl in FILLS:
                base.update(pattern=1, bg_color="#" + FILLS[lvl])
            fmt[(lvl, "plain")] = wb.add_format(base)
            fmt[(lvl, "wrap")] = wb.add_format({**base, "text_wrap": True})
            fmt[(lvl, "pct")] = wb.add_format({**base, "num_format": "0.0%"})
            fmt[(lvl, "date")] = wb.add_format({**base, "num_format": "yyyy-mm-dd"})
            fmt[(lvl, "overdue")] = wb.add_format({**base, "num_format": "yyyy-mm-dd", "font_color": "#" + OVERDUE_COLOR,
                                                   "bold": True})
        ws = wb.add_worksheet("预警清单")
        for j, h in enumerate(HEADERS):
            ws.set_column(j, j, final[h])
        ws.freeze_panes(1, 0)
        ws.autofilter(0, 0, max(n_rows, 1), len(HEADERS) - 1)
        ws.repeat_rows(0)
        ws.set_landscape()
        ws.fit_to_pages(1, 0)
        ws.set_row(0, LINE_HEIGHT * 1.3)
        ws.write_row(0, 0, HEADERS, head)
        kinds = ["wrap" if h in WRAPPED else "plain" for h in HEADERS]
        text_cols = [(j, columns[h], kinds[j]) for j, h in enumerate(HEADERS) if h in columns]
        j_prob, j_due = HEADERS.index("风险概率"), HEADERS.index("核实期限")
        for n in range(n_rows):
            lvl, r = c["level"][n], n + 1
            ws.set_row(r, LINE_HEIGHT * int(lines[n]) + 4)
            ws.write_number(r, 0, r, fmt[(lvl, "plain")])
            for j, vals, kind in text_cols:
                ws.write_string(r, j, vals[n], fmt[(lvl, kind)])
            ws.write_number(r, j_prob, round(c["probability"][n], 6), fmt[(lvl, "pct")])  # no false precision
            ws.write_datetime(r, j_due, c["deadline"][n], fmt[(lvl, "overdue" if overdue[n] else "date")])
        _task_sheet(wb, task_cells, border, head)
        _summary_sheet(wb, summary_rows, border, head)
        _notes_sheet(wb, notes)
    finally:
        wb.close()
    return path


def _task_rows(tasks) -> list[dict]:
    """Tasks as plain dicts in cadre order (earliest deadline, then department, household)."""
    if tasks is None:
        return []
    if hasattr(tasks, "to_pylist"):
        rows = tasks.to_pylist()
    else:
        rows = [t.model_dump(mode="json") if hasattr(t, "model_dump") else dict(t) for t in tasks]
    for r in rows:
        r["deadline"] = r["deadline"].isoformat() if isinstance(r["deadline"], date) else str(r["deadline"])
    return sorted(rows, key=lambda r: (r["deadline"], r["department"], r["household_id"], r["rule_id"]))


def _task_sheet(wb, cells: list[list[str]], border: dict, head) -> None:
    """保障缺口任务: one row per task; every data cell is written as a string."""
    ws = wb.add_worksheet(TASK_SHEET)
    plain = wb.add_format(border)
    wrap = wb.add_format({**border, "text_wrap": True})
    widths = []
    lines = np.ones(len(cells), dtype=np.int64)
    for j, h in enumerate(TASK_HEADERS):
        col = [r[j] for r in cells]
        w = max([cjk_width(h)] + ([int(_line_widths(col).max())] if col else []))
        widths.append(max(6, min(w, TASK_WRAPPED[h]) if h in TASK_WRAPPED else w) + 2)
        ws.set_column(j, j, widths[j])
        if h in TASK_WRAPPED and col:  # lines a cell takes: its whole text over the usable width
            lines = np.maximum(lines, np.ceil(cjk_widths(col) / max(1, widths[j] - 2)).astype(np.int64))
    ws.freeze_panes(1, 0)
    ws.autofilter(0, 0, max(len(cells), 1), len(TASK_HEADERS) - 1)
    ws.write_row(0, 0, TASK_HEADERS, head)
    for i, r in enumerate(cells, start=1):
        ws.set_row(i, LINE_HEIGHT * int(lines[i - 1]) + 4)
        for j, (h, v) in enumerate(zip(TASK_HEADERS, r, strict=True)):
            ws.write_string(i, j, v, wrap if h in TASK_WRAPPED else plain)


def _summary_rows(villages: list, levels: list, statuses: list, overdue: list) -> list[list]:
    by_village: dict[str, Counter] = defaultdict(Counter)
    for v, lvl, st, late in zip(villages, levels, statuses, overdue, strict=True):
        cnt = by_village[v]
        cnt[lvl] += 1
        cnt[st] += 1
        cnt["合计"] += 1
        if late:
            cnt["逾期未核实"] += 1
    # villages with the most red warnings first, then most warnings, then name
    order = sorted(by_village, key=lambda v: (-by_village[v]["红"], -by_village[v]["合计"], v))
    total: Counter = Counter()
    rows = []
    for v in order:
        rows.append([v, *(by_village[v][k] for k in SUMMARY_HEADERS[1:])])
        total.update(by_village[v])
    rows.append(["合计", *(total[k] for k in SUMMARY_HEADERS[1:])])
    return rows


def _summary_sheet(wb, rows: list[list], border: dict, head) -> None:
    ws = wb.add_worksheet("按村汇总")
    cell = wb.add_format(border)
    bold = wb.add_format({**border, "bold": True})
    for j, h in enumerate(SUMMARY_HEADERS):
        width = max([cjk_width(h)] + [cjk_width(str(r[j])) for r in rows])
        ws.set_column(j, j, max(6, width) + 2)
    ws.freeze_panes(1, 0)
    ws.write_row(0, 0, SUMMARY_HEADERS, head)
    for i, r in enumerate(rows, start=1):
        ws.write_row(i, 0, r, bold if i == len(rows) else cell)


def _notes_rows(c: dict, n_rows: int, county: str, township: str, quarter: str, today: date, n_tasks: int = 0,
                workload: dict | None = None) -> list[tuple]:
    models = sorted(set(c["model_version"]))
    rulesets = sorted(set(c["ruleset_version"]))
    periods = sorted({p for p in c["reference_period"] if p})
    rows = [
        ("县(市、区)", county), ("乡(镇)", township), ("统计季度", quarter), ("预警户数", n_rows),
        ("保障缺口任务数", n_tasks),
        ("生成日期", today.isoformat()), ("模型版本", "、".join(models) or "—"),
        ("规则版本", "、".join(rulesets) or "—"),
    ]
    if workload:
        rows.append(("核实名额", f"本季度本乡镇红色预警（{workload.get('capacity')}户以内须在核实期限内入户）："
                                  f"候选{workload['n_red_wanted']}户，列入{workload['n_red']}户，"
                                  f"顺延至月度走访{workload['shortfall']}户"))
    rows += [
        ("排序", "按期限从近到远，同一期限按风险概率从高到低；请优先核实排在前面的农户"),
        ("预警等级", "按风险排序分级：本乡镇风险最高的一批为红（一级），其次为黄（二级）、蓝（三级）；"
                     "政策规则触发的农户至少为该规则的等级"),
        ("清单", "红：入户核实清单，须在核实期限内入户；黄：下次月度走访时核实；蓝：半年复核时核实；"
                 "“核实名额已满，顺延”表示按风险应为红色，但本乡镇本季度入户核实名额已满，改在月度走访时核实"),
        ("风险概率", "模型估计的未来两个季度内被识别为监测对象的概率（已校准）"),
        ("规则触发", "按政策规则直接触发的预警及其触发条件；规则触发的农户一律列入预警或保障缺口任务"),
        ("主要原因", "模型认为影响最大的因素（最多4条），括号内为该因素对风险概率的贡献（百分点）；各因素与"
                     "“其他因素”相加，等于本户风险概率减去全县基准概率（全县在预测范围内农户的平均识别率"
                     + (f"，{'、'.join(periods)}" if periods else "") + "）；升高风险的原因后附全县同类农户的对比数"),
        ("建议帮扶措施", "按“缺什么补什么”和家庭劳动力状况给出的建议，须经入户核实后确定"),
        ("核实期限", "红色预警为入户核实截止日期，黄色为下次月度走访，蓝色为半年复核；红色字体表示已逾期未核实"),
        (TASK_SHEET, "住房、饮水、医保、义务教育和兜底保障的缺口，转责任部门在办理期限内解决；"
                     "同一户可同时有预警和任务"),
        ("隐私", "证件号码已脱敏（仅显示前4位和后4位）；本表不得张贴公示，不得外传"),
    ]
    return rows


def _notes_sheet(wb, rows: list[tuple]) -> None:
    ws = wb.add_worksheet("说明")
    bold = wb.add_format({"bold": True})
    wrap = wb.add_format({"text_wrap": True, "valign": "top"})
    ws.set_column(0, 0, 16)
    ws.set_column(1, 1, 90)
    for i, (k, v) in enumerate(rows):
        ws.write(i, 0, k, bold)
        ws.write(i, 1, v, wrap)


def township_path(out_dir: str | Path, county: str, township: str, quarter: str) -> Path:
    """``out_dir/<县>/预警清单_<乡镇>_<季度>.xlsx`` (one folder per county keeps townships of the same
    name in different counties apart)."""
    return Path(out_dir) / _BAD_FILENAME.sub("_", county) / workbook_name(township, quarter)


def write_township_workbooks(warnings, out_dir: str | Path, *, today: date | None = None) -> list[Path]:
    """One workbook per (county, township) and quarter, at :func:`township_path`. Returns the
    written paths. Everything is checked before the first file is written."""
    import pyarrow.compute as pc

    table = warning_table(warnings)
    keys = sorted(set(zip(table.column("county").to_pylist(), table.column("township").to_pylist(),
                          table.column("quarter").to_pylist(), strict=True)))
    out = []
    for county, township, quarter in keys:
        m = pc.and_(pc.and_(pc.equal(table.column("county"), county), pc.equal(table.column("township"), township)),
                    pc.equal(table.column("quarter"), quarter))
        out.append(write_township_workbook(table.filter(m), township_path(out_dir, county, township, quarter),
                                           today=today))
    return out
