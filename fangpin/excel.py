"""Township warning lists as Excel workbooks (`预警清单_<乡镇>_<季度>.xlsx`), written with openpyxl.

One workbook per township: sheet 预警清单 (one row per warning, most urgent first: level, then
probability; red / yellow fills for 红 / 黄 rows; frozen, filterable header; column widths that fit
Chinese text; rule hits, reasons and measures as numbered lines), sheet 按村汇总 (counts by level
and status per village), sheet 说明 (what the columns mean, versions, units). Only masked ID
numbers are written; a full ID number anywhere in a cell is refused.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable
from copy import copy
from datetime import UTC, date, datetime
from pathlib import Path

from fangpin.warnings import (
    LEVEL_LABEL,
    LEVELS,
    STATUS_OPEN,
    STATUSES,
    WarningRecord,
    contains_full_id,
    local_date,
    sort_key,
)

HEADERS = (
    "序号", "村", "户编号", "户主姓名", "证件号码(脱敏)", "预警等级", "风险概率", "规则触发", "主要原因",
    "建议帮扶措施", "核实期限", "状态", "核实说明",
)
WRAPPED = {"规则触发": 46, "主要原因": 60, "建议帮扶措施": 52, "核实说明": 30}  # max widths
SUMMARY_HEADERS = ("村", *LEVELS, "合计", *STATUSES, "逾期未核实")
FILLS = {"红": "FFC7CE", "黄": "FFEB9C"}
HEADER_FILL = "D9E1F2"
LINE_HEIGHT = 16.0  # points per text line (11 pt CJK text)
_BAD_FILENAME = re.compile(r'[\\/:*?"<>|\s]+')


def cjk_width(text: str) -> int:
    """Display width of a line: East Asian wide / full-width characters count double."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def text_width(text: str) -> int:
    return max((cjk_width(line) for line in str(text).split("\n")), default=0)


def workbook_name(township: str, quarter: str) -> str:
    return f"预警清单_{_BAD_FILENAME.sub('_', township)}_{quarter}.xlsx"


def _numbered(lines: list[str]) -> str:
    return "\n".join(f"{i}. {s}" for i, s in enumerate(lines, 1))


def format_rule_hits(w: WarningRecord) -> str:
    return _numbered([f"【{h.level}】{h.text}（触发条件：{h.threshold}）" for h in w.rule_hits])


def format_reasons(w: WarningRecord) -> str:
    """Each reason with its direction and probability-scale weight (percentage points)."""
    out = []
    for r in w.reasons:
        arrow = "↑升高风险" if r.direction == "up" else "↓降低风险"
        # the explainer labels risk-lowering sentences itself; here the label goes with the weight
        text = r.text.removesuffix("（降低风险）")
        out.append(f"{text}（{arrow}，约{abs(r.prob_pp):.1f}个百分点）")
    return _numbered(out)


def format_measures(w: WarningRecord) -> str:
    return _numbered([f"【{m.type}】{m.text}" for m in w.measures])


def _as_records(warnings) -> list[WarningRecord]:
    """Records from WarningRecord objects, dicts, or a DataFrame (JSON columns as lists or JSON text)."""
    if hasattr(warnings, "to_dict") and hasattr(warnings, "columns"):  # a pandas DataFrame
        warnings = warnings.to_dict(orient="records")
    out = []
    for i, w in enumerate(warnings):
        if isinstance(w, WarningRecord):
            out.append(w)
            continue
        d = dict(w)
        for k in ("rule_hits", "reasons", "measures"):
            if isinstance(d.get(k), str):
                d[k] = json.loads(d[k])
            elif d.get(k) is not None and not isinstance(d[k], list | tuple):
                d[k] = list(d[k])  # e.g. numpy arrays from Parquet
        for k, v in list(d.items()):
            if v is not None and not isinstance(v, list | tuple | dict | str) and _isnan(v):
                d[k] = None
        try:
            out.append(WarningRecord.model_validate(d))
        except ValueError as exc:
            raise ValueError(f"warning row {i} (household {d.get('household_id')}): {exc}") from exc
    return out


def _isnan(v) -> bool:
    try:
        return isinstance(v, float) and math.isnan(v)
    except TypeError:
        return False


def _row_values(n: int, w: WarningRecord) -> list:
    return [
        n, w.village, w.household_id, w.head_name or "", w.id_masked or "", LEVEL_LABEL[w.level],
        w.probability, format_rule_hits(w), format_reasons(w), format_measures(w), w.deadline,
        w.status, w.status_reason or "",
    ]


def write_township_workbook(
    warnings: Iterable,
    path: str | Path,
    *,
    township: str | None = None,
    quarter: str | None = None,
    today: date | None = None,
) -> Path:
    """Write one township's warning list to ``path``; returns the path."""
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Border, Font, PatternFill, Side

    records = sorted(_as_records(warnings), key=sort_key)
    if not records and (township is None or quarter is None):
        raise ValueError("an empty list needs township and quarter")
    townships = {(w.county, w.township) for w in records}
    if len(townships) > 1:
        raise ValueError(f"one workbook per township, got {sorted(townships)}")
    quarters = {w.quarter for w in records}
    if len(quarters) > 1:
        raise ValueError(f"one workbook per quarter, got {sorted(quarters)}")
    township = township or records[0].township
    quarter = quarter or records[0].quarter
    county = records[0].county if records else ""
    today = today or local_date(datetime.now(UTC))

    wb = Workbook()
    ws = wb.active
    ws.title = "预警清单"
    thin = Side(style="thin", color="BFBFBF")
    border = Border(left=thin, right=thin, top=thin, bottom=thin)
    top_wrap = Alignment(vertical="top", wrap_text=True)
    top = Alignment(vertical="top")
    fills = {lvl: PatternFill("solid", start_color=c, end_color=c) for lvl, c in FILLS.items()}

    ws.append(list(HEADERS))
    for cell in ws[1]:
        cell.font = Font(bold=True)
        cell.fill = PatternFill("solid", start_color=HEADER_FILL, end_color=HEADER_FILL)
        cell.alignment = Alignment(horizontal="center", vertical="center", wrap_text=True)
        cell.border = border

    widths = {h: cjk_width(h) for h in HEADERS}
    col = {h: i for i, h in enumerate(HEADERS)}
    rows_text: list[list] = []
    styles: dict = {}  # (wrapped column, row fill) → the cell style array set once
    for n, w in enumerate(records, 1):
        vals = _row_values(n, w)
        rows_text.append(vals)
        ws.append(vals)
        r = n + 1  # header is row 1 (ws.max_row / ws[r] scan every cell: quadratic over a long list)
        fill = fills.get(w.level)
        for j, cell in enumerate(next(ws.iter_rows(min_row=r, max_row=r, max_col=len(HEADERS)))):
            h = HEADERS[j]
            key = (h in WRAPPED, w.level if fill is not None else None)
            proto = styles.get(key)
            if proto is not None:  # copying a registered style skips openpyxl's per-assignment hashing
                cell._style = copy(proto)
                continue
            cell.border = border
            cell.alignment = top_wrap if h in WRAPPED else top
            if fill is not None:
                cell.fill = fill
            styles[key] = copy(cell._style)
        ws.cell(r, col["风险概率"] + 1).number_format = "0.0%"
        ws.cell(r, col["核实期限"] + 1).number_format = "yyyy-mm-dd"
        if w.status == STATUS_OPEN and today > w.deadline:
            ws.cell(r, col["核实期限"] + 1).font = Font(color="C00000", bold=True)
        for h in HEADERS:
            v = vals[col[h]]
            shown = f"{v:.1%}" if h == "风险概率" else (v.isoformat() if isinstance(v, date) else str(v))
            widths[h] = max(widths[h], text_width(shown))

    letters = [ws.cell(1, j + 1).column_letter for j in range(len(HEADERS))]
    final: dict[str, float] = {}
    for h, letter in zip(HEADERS, letters, strict=True):
        wdt = min(widths[h], WRAPPED[h]) if h in WRAPPED else widths[h]
        final[h] = max(6, wdt) + 2
        ws.column_dimensions[letter].width = final[h]
    # Row heights: wrapped cells need as many lines as their text takes at the column width.
    ws.row_dimensions[1].height = LINE_HEIGHT * 1.3
    for i, vals in enumerate(rows_text, start=2):
        lines = 1
        for h in WRAPPED:
            text = str(vals[col[h]])
            usable = max(1.0, final[h] - 2)
            lines = max(lines, sum(max(1, math.ceil(cjk_width(t) / usable)) for t in text.split("\n")))
        ws.row_dimensions[i].height = LINE_HEIGHT * lines + 4

    ws.freeze_panes = "A2"
    ws.auto_filter.ref = f"A1:{letters[-1]}{max(ws.max_row, 1)}"
    ws.print_title_rows = "1:1"
    ws.page_setup.orientation = "landscape"
    ws.page_setup.fitToWidth = 1
    ws.page_setup.fitToHeight = 0
    ws.sheet_properties.pageSetUpPr.fitToPage = True

    _summary_sheet(wb, records, today, border)
    _notes_sheet(wb, records, county, township, quarter, today)

    for sheet in wb.worksheets:  # last line of defence: never a full ID number in the file
        for row in sheet.iter_rows(values_only=True):
            for v in row:
                if isinstance(v, str) and contains_full_id(v):
                    raise ValueError(f"refusing to write a full ID number into {path}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(path)
    return path


def _summary_sheet(wb, records: list[WarningRecord], today: date, border) -> None:
    from openpyxl.styles import Alignment, Font, PatternFill

    ws = wb.create_sheet("按村汇总")
    ws.append(list(SUMMARY_HEADERS))
    by_village: dict[str, Counter] = defaultdict(Counter)
    for w in records:
        c = by_village[w.village]
        c[w.level] += 1
        c[w.status] += 1
        c["合计"] += 1
        if w.status == STATUS_OPEN and today > w.deadline:
            c["逾期未核实"] += 1
    # villages with the most red warnings first, then most warnings, then name
    order = sorted(by_village, key=lambda v: (-by_village[v]["红"], -by_village[v]["合计"], v))
    total: Counter = Counter()
    for v in order:
        ws.append([v, *(by_village[v][k] for k in SUMMARY_HEADERS[1:])])
        total.update(by_village[v])
    ws.append(["合计", *(total[k] for k in SUMMARY_HEADERS[1:])])
    for cell in ws[1]:
        cell.font = Font(bold=True)
        cell.fill = PatternFill("solid", start_color=HEADER_FILL, end_color=HEADER_FILL)
        cell.alignment = Alignment(horizontal="center", vertical="center")
    for cell in ws[ws.max_row]:
        cell.font = Font(bold=True)
    for row in ws.iter_rows():
        for cell in row:
            cell.border = border
    for j, h in enumerate(SUMMARY_HEADERS, 1):
        width = max([cjk_width(h)] + [cjk_width(str(ws.cell(r, j).value)) for r in range(2, ws.max_row + 1)])
        ws.column_dimensions[ws.cell(1, j).column_letter].width = max(6, width) + 2
    ws.freeze_panes = "A2"


def _notes_sheet(wb, records, county: str, township: str, quarter: str, today: date) -> None:
    from openpyxl.styles import Alignment, Font

    ws = wb.create_sheet("说明")
    models = sorted({w.model_version for w in records})
    rulesets = sorted({w.ruleset_version for w in records})
    rows = [
        ("县(市、区)", county), ("乡(镇)", township), ("统计季度", quarter), ("预警户数", len(records)),
        ("生成日期", today.isoformat()), ("模型版本", "、".join(models) or "—"),
        ("规则版本", "、".join(rulesets) or "—"),
        ("排序", "按预警等级（红→黄→蓝），同等级按风险概率从高到低；请优先核实排在前面的农户"),
        ("预警等级", "红（一级）：极易返贫致贫；黄（二级）：较易返贫致贫；蓝（三级）：需关注"),
        ("风险概率", "模型估计的未来两个季度内被识别为监测对象的概率（已校准）"),
        ("规则触发", "按政策规则直接触发的预警及其触发条件；规则触发的农户一律列入预警"),
        ("主要原因", "模型认为影响最大的因素（最多4条），括号内为该因素使风险概率大约升高或降低的百分点"),
        ("建议帮扶措施", "按“缺什么补什么”和家庭劳动力状况给出的建议，须经入户核实后确定"),
        ("核实期限", "入户核实的截止日期；红色字体表示已逾期未核实"),
        ("隐私", "证件号码已脱敏（仅显示前4位和后4位）；本表不得张贴公示，不得外传"),
    ]
    for k, v in rows:
        ws.append([k, v])
    for r in range(1, ws.max_row + 1):
        ws.cell(r, 1).font = Font(bold=True)
        ws.cell(r, 2).alignment = Alignment(wrap_text=True, vertical="top")
    ws.column_dimensions["A"].width = 16
    ws.column_dimensions["B"].width = 90


def write_township_workbooks(warnings: Iterable, out_dir: str | Path, *, today: date | None = None) -> list[Path]:
    """One workbook per (county, township) and quarter, at
    ``out_dir/<县>/预警清单_<乡镇>_<季度>.xlsx`` (one folder per county keeps townships of the same
    name in different counties apart). Returns the written paths."""
    groups: dict[tuple[str, str, str], list[WarningRecord]] = defaultdict(list)
    for w in _as_records(warnings):
        groups[(w.county, w.township, w.quarter)].append(w)
    out = []
    for (county, township, quarter), ws in sorted(groups.items()):
        path = Path(out_dir) / _BAD_FILENAME.sub("_", county) / workbook_name(township, quarter)
        out.append(write_township_workbook(ws, path, today=today))
    return out
