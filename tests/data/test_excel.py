"""Township Excel lists: opened back with openpyxl and checked as a cadre would see them."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime

import pandas as pd
import pytest
from openpyxl import load_workbook

from fangpin.config import Params
from fangpin.excel import HEADERS, cjk_width, write_township_workbook, write_township_workbooks
from fangpin.ids import check_char, mask
from fangpin.warnings import STATUS_EXCLUDED, WarningRecord

FULL_ID = re.compile(r"\d{17}[\dXx]")


def full_id(i: int) -> str:
    first17 = f"410102198{i % 10}0{(i % 9) + 1}1{i:04d}"[:17]
    return first17 + check_char(first17)


def make(n: int, township: str = "东镇", county: str = "甲县", quarter: str = "2025Q3"):
    created = datetime(2025, 10, 1, 1, 0, tzinfo=UTC)
    out = []
    for i in range(n):
        lvl = ["蓝", "红", "黄"][i % 3]
        out.append(WarningRecord.create(
            params=Params(), created_at=created, quarter=quarter, county=county, township=township,
            village=f"{'一二三'[i % 3]}村", household_id=f"{township}-{i:04d}", head_name=f"户主{i}",
            id_masked=mask(full_id(i)), level=lvl, probability=round(0.05 + 0.9 * ((i * 37) % 100) / 100, 3),
            rule_hits=[{"rule_id": "R01_INCOME_BELOW_LINE", "level": "红",
                        "text": f"人均纯收入{5200 + i:,}元，低于2025年监测线7,600元",
                        "threshold": "人均纯收入低于当年监测线"}] if lvl == "红" else [],
            reasons=[
                {"factor": "medical", "text": f"家庭成员1人患大病，今年合规自付医疗支出{23400 + i:,}元，占家庭年收入61%",
                 "direction": "up", "logodds": 0.91, "prob_pp": 8.4},
                {"factor": "labour", "text": "家中2人务工，月数合计20个月", "direction": "down",
                 "logodds": -0.3, "prob_pp": -2.1},
            ],
            measures=[{"type": "健康帮扶", "text": "落实基本医保、大病保险、医疗救助三重保障"},
                      {"type": "综合保障", "text": "按程序评估纳入农村低保"}],
            model_version="5", ruleset_version="rules-2026.1",
            base_rate=0.0071, other_pp=0.75, reference_period="2022Q1–2023Q4",
        ))
    return out


def all_cells(wb):
    for ws in wb.worksheets:
        for row in ws.iter_rows(values_only=True):
            yield from (v for v in row if v is not None)


def test_workbook_as_a_cadre_sees_it(tmp_path):
    ws_in = make(30)
    path = write_township_workbook(ws_in, tmp_path / "x.xlsx", today=date(2025, 10, 20))
    wb = load_workbook(path)
    assert wb.sheetnames == ["预警清单", "保障缺口任务", "按村汇总", "说明"]
    sh = wb["预警清单"]
    assert [c.value for c in sh[1]] == list(HEADERS)
    assert sh.freeze_panes == "A2"
    rows = list(sh.iter_rows(min_row=2, values_only=True))
    assert len(rows) == 30 and [r[0] for r in rows] == list(range(1, 31))
    col = {h: i for i, h in enumerate(HEADERS)}
    levels = [r[col["预警等级"]][0] for r in rows]
    # by deadline (红 within 15 days, 黄 the next monthly visit, 蓝 the half-yearly review), then risk
    assert levels == ["红"] * 10 + ["黄"] * 10 + ["蓝"] * 10
    assert [r[col["清单"]] for r in rows[::10]] == ["入户核实（15日内）", "月度走访", "半年复核"]
    dues = [r[col["核实期限"]] for r in rows]
    assert dues == sorted(dues)
    for lvl in "红黄蓝":
        probs = [r[col["风险概率"]] for r, lv in zip(rows, levels, strict=True) if lv == lvl]
        assert probs == sorted(probs, reverse=True)

    # fills: red and yellow rows coloured (solid), blue rows not (colours compared as RRGGBB: the
    # alpha byte depends on the writer)
    for i, lvl in enumerate(levels, start=2):
        cells = [sh.cell(i, j) for j in (1, col["主要原因"] + 1, len(HEADERS))]
        fill = {(c.fill.fill_type, c.fill.fgColor.rgb[-6:]) for c in cells}
        expected = {"红": ("solid", "FFC7CE"), "黄": ("solid", "FFEB9C")}.get(lvl, (None, "000000"))
        assert fill == {expected}, (i, lvl, fill)

    # who: masked IDs present, no full ID anywhere in the file
    by_hh = {w.household_id: w for w in ws_in}
    for r in rows:
        assert r[col["证件号码(脱敏)"]] == by_hh[r[col["户编号"]]].id_masked
        assert re.fullmatch(r"\d{4}\*{10}[\dX]{4}", r[col["证件号码(脱敏)"]])
    assert not any(FULL_ID.search(str(v)) for v in all_cells(wb))

    # why and what: numbered, wrapped lines; dates and percentages as typed cells
    reason = rows[0][col["主要原因"]]
    assert reason.startswith("1. 家庭成员1人患大病") and "\n2. 家中2人务工" in reason
    assert "↑升高风险，+8.40个百分点" in reason and "↓降低风险，−2.10个百分点" in reason
    assert "\n其他因素+0.75个百分点（全县基准概率0.71%，2022Q1–2023Q4 → 本户" in reason
    assert rows[0][col["规则触发"]].startswith("1. 【红】人均纯收入")
    assert rows[0][col["建议帮扶措施"]] == "1. 【健康帮扶】落实基本医保、大病保险、医疗救助三重保障\n2. 【综合保障】按程序评估纳入农村低保"
    assert sh.cell(2, col["主要原因"] + 1).alignment.wrap_text
    assert sh.cell(2, col["风险概率"] + 1).number_format == "0.0%"
    assert rows[0][col["核实期限"]].date() == date(2025, 10, 16)
    assert sh.cell(2, col["核实期限"] + 1).font.color.rgb[-6:] == "C00000"  # overdue on 2025-10-20
    assert sh.cell(2, col["核实期限"] + 1).font.b

    # widths fit Chinese text (CJK counts double); wrapped columns are capped
    letter = {h: sh.cell(1, j + 1).column_letter for j, h in enumerate(HEADERS)}
    for h in ("户编号", "户主姓名", "证件号码(脱敏)", "预警等级", "村"):
        longest = max(cjk_width(str(r[col[h]])) for r in rows)
        assert sh.column_dimensions[letter[h]].width >= max(longest, cjk_width(h))
    # capped at 60 characters + 2; the file stores the width with Excel's 5-pixel cell padding
    # (XlsxWriter: +0.71 characters), so the cap reads back below 63
    assert 40 <= sh.column_dimensions[letter["主要原因"]].width < 63
    assert sh.row_dimensions[2].height >= 2 * 16

    # summary per village
    summ = wb["按村汇总"]
    head = [c.value for c in summ[1]]
    assert head[:5] == ["村", "红", "黄", "蓝", "合计"]
    body = {r[0]: dict(zip(head, r, strict=True)) for r in summ.iter_rows(min_row=2, values_only=True)}
    for v in ("一村", "二村", "三村"):
        mine = [w for w in ws_in if w.village == v]
        assert body[v]["合计"] == len(mine) == 10
        for lvl in "红黄蓝":
            assert body[v][lvl] == sum(w.level == lvl for w in mine)
    assert body["合计"]["合计"] == 30 and body["合计"]["待核实"] == 30 and body["合计"]["逾期未核实"] == 10  # only 红 (15 days) is overdue by 2025-10-20


def test_one_workbook_per_township_from_a_dataframe(tmp_path):
    recs = make(7, "东镇") + make(5, "西镇") + make(3, "东镇", county="乙县")
    recs[0] = recs[0].model_copy(update={"status": STATUS_EXCLUDED, "status_reason": "收入已稳定超线"})
    df = pd.DataFrame([w.model_dump(mode="json") for w in recs])
    df["reasons"] = df["reasons"].map(lambda x: json.dumps(x, ensure_ascii=False))  # as from Parquet/CSV
    paths = write_township_workbooks(df, tmp_path, today=date(2025, 10, 5))
    names = sorted(str(p.relative_to(tmp_path)) for p in paths)
    assert names == ["乙县/预警清单_东镇_2025Q3.xlsx", "甲县/预警清单_东镇_2025Q3.xlsx",
                     "甲县/预警清单_西镇_2025Q3.xlsx"]
    wb = load_workbook(tmp_path / "甲县" / "预警清单_东镇_2025Q3.xlsx")
    assert wb["预警清单"].max_row == 8
    total = list(wb["按村汇总"].iter_rows(values_only=True))[-1]
    head = [c.value for c in wb["按村汇总"][1]]
    assert dict(zip(head, total, strict=True))["已核实·排除"] == 1 and dict(zip(head, total, strict=True))["逾期未核实"] == 0


def test_refuses_mixed_townships_and_full_ids(tmp_path):
    with pytest.raises(ValueError, match="one workbook per township"):
        write_township_workbook(make(2, "东镇") + make(2, "西镇"), tmp_path / "x.xlsx")
    row = make(1)[0].model_dump(mode="json")
    row["id_masked"] = full_id(3)
    with pytest.raises(ValueError, match="household 东镇-0000"):
        write_township_workbooks([row], tmp_path)
    assert not list(tmp_path.rglob("*.xlsx"))


def test_a_risk_lowering_reason_is_labelled_once():
    from fangpin.excel import format_reasons

    rec = make(1)[0]
    down = rec.reasons[0].model_copy(update={"text": "家中2人稳定务工（降低风险）", "direction": "down",
                                             "prob_pp": -2.1})
    text = format_reasons(rec.model_copy(update={"reasons": [down]}))
    assert text.count("降低风险") == 1
    assert "−2.10个百分点" in text


def test_bulk_widths_equal_the_per_line_width():
    from fangpin.excel import cjk_widths

    lines = ["", "abc", "家庭成员1人患大病，今年合规自付医疗支出23,400元", "↑升高风险（约8.4个百分点）", "Ｘ全角", "𠀀x"]
    assert cjk_widths(lines).tolist() == [cjk_width(s) for s in lines]
    assert cjk_widths(lines).tolist()[1:4] == [3, cjk_width(lines[2]), cjk_width(lines[3])]


def test_tasks_have_their_own_sheet_with_text_cells_and_a_township_with_only_tasks_gets_a_list(tmp_path):
    from fangpin.tasks import TaskRecord, task_id

    created = datetime(2025, 10, 1, 1, 0, tzinfo=UTC)
    tasks = [TaskRecord(id=task_id("2025Q3", f"东镇-{i:04d}", rid), quarter="2025Q3", county="甲县", township="东镇",
                        village="一村", household_id=f"东镇-{i:04d}", head_name=f"户主{i}", id_masked=mask(full_id(i)),
                        rule_id=rid, gap=gap, department=dept, measure=measure, detail=detail,
                        ruleset_version="rules-2026.1", created_at=created, deadline=due)
             for i, (rid, gap, dept, measure, detail, due) in enumerate([
                 ("R04_UNSAFE_HOUSING", "住房安全", "住建", "危房改造", "住房为危房（是否危房户：是）", date(2025, 12, 30)),
                 ("R06_NO_MEDICAL_INSURANCE", "基本医疗", "医保", "参保及资助参保",
                  "家庭成员1人患病或残疾，未参加城乡居民基本医疗保险", date(2025, 10, 31)),
                 ("R07_OUT_OF_SCHOOL", "义务教育", "教育", "控辍保学（劝返复学）", "=1+1 义务教育阶段适龄儿童1人未在校",
                  date(2025, 10, 31))])]
    path = write_township_workbook(make(3), tmp_path / "x.xlsx", tasks=tasks, today=date(2025, 10, 5))
    sh = load_workbook(path)["保障缺口任务"]
    rows = list(sh.iter_rows(values_only=True))
    assert rows[0] == ("序号", "村", "户编号", "户主姓名", "证件号码(脱敏)", "缺口", "责任部门", "措施", "情况", "办理期限", "状态")
    body = rows[1:]
    assert [r[6] for r in body] == ["医保", "教育", "住建"]  # earliest deadline first, then department
    assert [r[9] for r in body] == ["2025-10-31", "2025-10-31", "2025-12-30"] and body[0][10] == "待办理"
    assert all(c.data_type == "s" for row in sh.iter_rows(min_row=2) for c in row)  # text, never a formula
    assert body[1][8].startswith("=1+1")
    assert not any(FULL_ID.search(str(v)) for v in all_cells(load_workbook(path)))
    # a township with tasks but no warning still gets its list
    only = write_township_workbook([], tmp_path / "y.xlsx", tasks=tasks[:1], township="东镇", quarter="2025Q3")
    wb = load_workbook(only)
    assert wb["预警清单"].max_row == 1 and wb["保障缺口任务"].max_row == 2
    notes = dict(r for r in wb["说明"].iter_rows(values_only=True))
    assert notes["县(市、区)"] == "甲县" and notes["保障缺口任务数"] == 1


FORMULA_LIKE = ("=1+1", "+1+1", "-1+1", "@SUM(A1)", '=HYPERLINK("http://example.invalid","点我")',
                'HYPERLINK("http://example.invalid")', "=cmd|' /C calc'!A0")


def test_values_from_data_are_never_formulas(tmp_path):
    """Formula-like ledger / store / user values in every field that reaches a sheet (村, 户编号,
    户主姓名, county and township on 说明, rule hits, reasons, measures, 核实说明, versions) are
    written as text: the saved XML holds no <f> (formula) and no hyperlink from data."""
    import zipfile

    ws_in = []
    for i, v in enumerate(FORMULA_LIKE):
        w = make(1, township=v, county=v)[0]
        d = w.model_dump(mode="json")
        d.update(village=v, household_id=f"{v}{i}", head_name=v, status=STATUS_EXCLUDED, status_reason=v,
                 model_version=v, ruleset_version=v)
        d["rule_hits"] = [{"rule_id": "R", "level": "红", "text": v, "threshold": v}]
        d["reasons"] = [{**d["reasons"][0], "text": v}]
        d["measures"] = [{"type": v, "text": v}]
        ws_in.append(d)
    paths = [write_township_workbook([d], tmp_path / f"{i}.xlsx", today=date(2025, 10, 20))
             for i, d in enumerate(ws_in)]
    for v, path in zip(FORMULA_LIKE, paths, strict=True):
        with zipfile.ZipFile(path) as z:
            sheets = [n for n in z.namelist() if n.startswith("xl/worksheets/")]
            assert len(sheets) >= 3
            for n in sheets:
                xml = z.read(n).decode("utf-8")
                assert "<f>" not in xml and "<f " not in xml, f"formula in {n} for {v!r}"
                assert "<hyperlink" not in xml
            assert not any(n.startswith("xl/worksheets/_rels/") for n in z.namelist())
        texts = [c for c in all_cells(load_workbook(path)) if isinstance(c, str)]
        # the values are there, as typed (sheets 预警清单, 按村汇总 and 说明)
        assert texts.count(v) >= 4, (v, texts.count(v))
