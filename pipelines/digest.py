"""`fangpin digest`: the weekly overdue digest, one Excel workbook per township.

Every warning whose current step (入户核实, 认定纳入监测, 制定帮扶计划; fangpin/clues.py) is past
its deadline on ``today``, and every 保障缺口 task past its deadline, grouped per township into
``<digest_dir>/<县>/逾期督办_<乡镇>_<YYYY>W<ww>.xlsx`` (ISO week of ``today``). Townships with
nothing overdue get no workbook (they are counted). Every data cell is written as a string
(XlsxWriter with formulas, URLs and numbers from strings off: fangpin.excel.WORKBOOK_OPTIONS), so
nothing from the ledger or a user becomes a formula. No full ID number, no health status: the
head of household's name and the masked ID, as on the township's own list.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from fangpin import clues as fc

WARNING_HEADERS = ("序号", "逾期环节", "期限", "逾期天数", "村", "户编号", "户主姓名", "证件号码(脱敏)", "预警等级", "渠道",
                   "返贫风险", "状态", "预警季度", "预警编号")
TASK_HEADERS = ("序号", "责任部门", "缺口", "措施", "期限", "逾期天数", "村", "户编号", "户主姓名", "证件号码(脱敏)", "状态",
                "任务编号")


def week_of(today: date) -> str:
    y, w, _ = today.isocalendar()
    return f"{y}W{w:02d}"


def digest_path(out_dir: Path, county: str, township: str, today: date) -> Path:
    from fangpin.excel import _BAD_FILENAME

    return Path(out_dir) / _BAD_FILENAME.sub("_", county) / f"逾期督办_{_BAD_FILENAME.sub('_', township)}_{week_of(today)}.xlsx"


def _sheet(wb, name: str, headers: Sequence[str], rows: list[list[str]]) -> None:
    from fangpin.excel import cjk_width, text_width

    ws = wb.add_worksheet(name)
    head = wb.add_format({"bold": True, "bg_color": "#F2F2F2", "border": 1})
    cell = wb.add_format({"border": 1})
    bad = wb.add_format({"border": 1, "font_color": "#C62828", "bold": True})
    for j, h in enumerate(headers):
        ws.set_column(j, j, min(40, max([cjk_width(h)] + [text_width(r[j]) for r in rows]) + 2))
        ws.write_string(0, j, h, head)
    ws.freeze_panes(1, 0)
    ws.autofilter(0, 0, max(len(rows), 1), len(headers) - 1)
    for i, r in enumerate(rows, start=1):
        for j, v in enumerate(r):
            ws.write_string(i, j, v, bad if headers[j] == "逾期天数" else cell)


def write_workbook(path: Path, county: str, township: str, today: date, warnings: list[dict], tasks: list) -> Path:
    """One township's digest (module doc); written to a temporary name, then moved into place."""
    import xlsxwriter

    from fangpin.excel import WORKBOOK_OPTIONS

    wrows = [[str(i), d["step_label"], d["due"].isoformat(), str(-d["days_left"]), d["village"], d["household_id"],
              d["head_name"] or "", d["id_masked"] or "", d["level"], "、".join(d["channels"]),
              "是" if d["return_risk"] else "", d["status"], d["quarter"], d["id"]]
             for i, d in enumerate(warnings, start=1)]
    trows = [[str(i), t.department, t.gap, t.measure, t.deadline.isoformat(), str((today - t.deadline).days), t.village,
              t.household_id, t.head_name or "", t.id_masked or "", t.status, t.id]
             for i, t in enumerate(tasks, start=1)]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.xlsx")
    wb = xlsxwriter.Workbook(str(tmp), WORKBOOK_OPTIONS)
    try:
        _sheet(wb, "逾期预警", WARNING_HEADERS, wrows)
        _sheet(wb, "逾期任务", TASK_HEADERS, trows)
        notes = wb.add_worksheet("说明")
        bold = wb.add_format({"bold": True})
        wrap = wb.add_format({"text_wrap": True, "valign": "top"})
        notes.set_column(0, 0, 16)
        notes.set_column(1, 1, 90)
        by_step = {s: sum(1 for d in warnings if d["step"] == s) for s in fc.STEPS}
        lines = [
            ("县 / 乡镇", f"{county} / {township}"),
            ("统计日期", f"{today.isoformat()}（{week_of(today)}）"),
            ("逾期预警", f"{len(warnings)} 户：" + "，".join(f"{fc.STEP_LABEL[s]} {n}" for s, n in by_step.items())),
            ("逾期任务", f"{len(tasks)} 项保障缺口任务超过办理期限"),
            ("环节说明", "入户核实：预警的核实期限（红色 15 日内入户，黄色下次月度走访，蓝色半年复核；农户自主申报 2 日内村级核查）；"
                     "认定纳入监测：核实纳入监测后须在期限内完成认定；制定帮扶计划：台账显示已识别后须在期限内制定。"),
            ("说明", "本表每周生成，只列逾期事项；不含完整证件号码。"),
        ]
        for i, (k, v) in enumerate(lines):
            notes.write_string(i, 0, k, bold)
            notes.write_string(i, 1, v, wrap)
    finally:
        wb.close()
    os.replace(tmp, path)
    return path


def overdue_tasks(store, today: date, county: str | None = None) -> list:
    """Open (待办理 / 办理中) 保障缺口 tasks past their deadline."""
    from fangpin.tasks import TASK_DOING, TASK_OPEN

    out, offset = [], 0
    while True:
        page = store.query_tasks(county=county, status=[TASK_OPEN, TASK_DOING], limit=500, offset=offset)
        out.extend(t for t in page.items if t.deadline < today)
        offset += len(page.items)
        if len(page.items) < 500:
            return out


def write_digest(store, params, *, today: date, out_dir: Path | None = None, county: str | None = None) -> dict:
    """The week's digest workbooks (module doc). Returns the counts and the paths written."""
    from fangpin.store.loop import open_steps

    out_dir = Path(out_dir or params.warnings.digest_dir)
    items = open_steps(store, today, county=county, overdue_only=True)
    tasks = overdue_tasks(store, today, county)
    places: dict[tuple[str, str], tuple[list, list]] = {}
    for d in items:
        places.setdefault((d["county"], d["township"]), ([], []))[0].append(d)
    for t in tasks:
        places.setdefault((t.county, t.township), ([], []))[1].append(t)
    paths = []
    for (c, t), (ws, ts) in sorted(places.items()):
        ws.sort(key=lambda d: (d["days_left"], -d["probability"], d["id"]))
        ts.sort(key=lambda x: (x.deadline, x.department, x.household_id))
        paths.append(str(write_workbook(digest_path(out_dir, c, t, today), c, t, today, ws, ts)))
    return {"week": week_of(today), "today": today.isoformat(), "overdue_warnings": len(items),
            "overdue_tasks": len(tasks), "townships": len(places), "workbooks": paths,
            "by_step": {s: sum(1 for d in items if d["step"] == s) for s in fc.STEPS}}
