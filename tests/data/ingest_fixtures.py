"""Small ledger/event fixture files for the ingest tests, with ID numbers generated in code.

No real or sample ID number is written into the repository: every ID here is built from a region
code, a birth date and a sequence number, with a correct (or deliberately wrong) check character.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from fangpin import contract
from fangpin.ids import check_char

H = contract.header_for  # canonical name -> Chinese header


def make_id(birth: str = "19800101", seq: int = 1, valid: bool = True, region: str = "520122") -> str:
    first17 = f"{region}{birth}{seq:03d}"
    c = check_char(first17)
    if not valid:
        c = "0" if c != "0" else "1"
    return first17 + c


def person(hh: str = "520122001000001", seq: int = 1, **over) -> dict[str, str]:
    """One valid ledger row keyed by Chinese header (household fields included)."""
    row = {
        H("quarter"): "2024Q1",
        H("county"): "青石县",
        H("township"): "兴兴镇",
        H("village"): "康沟村",
        H("household_id"): hh,
        H("id_number"): make_id(birth=f"19{50 + int(hh[-2:]) % 50:02d}0101", seq=seq),
        H("name"): "测试",
        H("relation"): "户主" if seq == 1 else "之子",
        H("sex"): "男",
        H("health"): "健康",
        H("labor_skill"): "普通劳动力",
        H("work_status"): "未务工",
        H("work_months"): "0",
        H("household_type"): "脱贫户",
        H("monitor_category"): "",
        H("monitor_since"): "",
        H("risk_eliminated"): "",
        H("income_per_capita"): "10000.0",
        H("wage_income"): "20000.0",
        H("business_income"): "0",
        H("property_income"): "0",
        H("transfer_income"): "0",
        H("business_expense"): "0",
    }
    row.update({(H(k) if k in _NAMES else k): v for k, v in over.items()})
    return row


_NAMES = {c.name for c in contract.LEDGER_COLUMNS}


def household(hh: str, n: int = 2, **over) -> list[dict[str, str]]:
    """n members (the first is 户主); per-capita income consistent with the wage income."""
    over.setdefault("income_per_capita", f"{20000.0 / n:.2f}")
    return [person(hh, i + 1, **over) for i in range(n)]


def csv_text(rows: list[dict[str, str]], headers: list[str] | None = None) -> str:
    headers = headers or list(rows[0])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")  # as Excel on Windows writes; quotes \r and \n in cells
    w.writerow(headers)
    for r in rows:
        w.writerow([r.get(h, "") for h in headers])
    return buf.getvalue()


def write_csv(path: Path, rows: list[dict[str, str]], encoding: str = "utf-8", headers=None) -> Path:
    path.write_bytes(csv_text(rows, headers).encode(encoding))
    return path


def write_xlsx(path: Path, rows: list[dict], title_rows: int = 2, headers=None) -> Path:
    """An export as the national system writes it: title rows above the header row."""
    from openpyxl import Workbook

    headers = headers or list(rows[0])
    wb = Workbook()
    ws = wb.active
    for i in range(title_rows):
        ws.append(["防止返贫监测对象信息" if i == 0 else "导出时间：2024年6月28日"])
    ws.append(headers)
    for r in rows:
        ws.append([r.get(h) for h in headers])
    wb.save(path)
    return path


def event(id_number: str, date: str = "2024-02-03", dept: str = "医保", etype: str = "住院",
          amount: str = "1200") -> dict[str, str]:
    return {"证件号码": id_number, "事件日期": date, "来源部门": dept, "事件类型": etype, "金额（元）": amount}
