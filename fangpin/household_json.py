"""The canonical JSON form of one household, validated.

One schema, built from :mod:`fangpin.contract` (value sets, ranges, Chinese headers as titles), is
used wherever JSON input is accepted (the scoring API, tools). A household is its household-level
fields, its members (one object per person, as in the ledger) and the department events about its
members. The one conversion of validated households into the canonical tables the feature code
reads is :func:`models.features.frames_from_records` (used by the API and the MLflow pyfunc).

Field names are the contract's canonical English names. Values may be given in every form the
ledger contract accepts — as the ledger holds them (``八年级``, ``是``/``否``, full-width digits,
thousands separators, the contract's date forms): :func:`normalise_households` reads text values
with ingest's own normaliser (fangpin.ingest.normalise), so a county system can post its ledger
rows as they are; after it, values are the contract's canonical ones (``sex`` is 男/女,
``school_status`` a stage). ``fangpin households`` writes households in this form from a ledger.
The full ID number is used only to check that events belong to a member (and, by the API, to join
events through its keyed hash); the model never sees it.

:func:`errors_zh` turns pydantic errors into ``{path, field_zh, message_zh}`` items for operators.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    create_model,
    model_validator,
)
from pydantic_core import PydanticCustomError

from fangpin import contract, quarters
from fangpin.ids import checksum_ok

MAX_MEMBERS = 30
MAX_EVENTS = 200
MAX_TEXT = contract.MAX_TEXT_CHARS

# Fields handled explicitly (identity and place of the snapshot).
_PLACE = ("quarter", "county", "township", "village", "household_id")


def _check_yyyymm(v: int) -> int:
    if not (190001 <= v <= 210012) or not (1 <= v % 100 <= 12):
        raise PydanticCustomError("yyyymm", "应为 YYYYMM 形式的年月，例如 202302")
    return v


def _check_id(v: str) -> str:
    v = v.strip().upper()
    if len(v) != 18 or not v[:17].isdigit() or v[17] not in "0123456789X":
        raise PydanticCustomError("id_format", "证件号码应为18位（前17位为数字，末位为数字或X）")
    if not checksum_ok(v):
        raise PydanticCustomError("id_checksum", "证件号码校验位不正确")
    return v


def _check_quarter(v: str) -> str:
    try:
        y, n = quarters.parse(v)
    except ValueError:
        raise PydanticCustomError("quarter", "统计季度应为 YYYYQn 形式，例如 2024Q2") from None
    if not 2000 <= y <= 2100:
        raise PydanticCustomError("quarter", "统计季度年份超出范围（2000–2100）")
    return quarters.fmt(y, n)


def _strip(v: str) -> str:
    v = v.strip()
    if not v:
        raise PydanticCustomError("blank", "不能为空")
    return v


Text = Annotated[str, Field(max_length=MAX_TEXT), AfterValidator(_strip)]
YyyyMm = Annotated[int, AfterValidator(_check_yyyymm)]
IdNumber = Annotated[str, Field(min_length=18, max_length=18), AfterValidator(_check_id)]
Quarter = Annotated[str, Field(min_length=6, max_length=8), AfterValidator(_check_quarter)]


def _type_for(col: contract.Column) -> Any:
    if col.name == "id_number":
        return IdNumber
    kind = col.kind
    if kind == "category":
        return Literal[col.values]  # type: ignore[valid-type]
    if kind == "sex":
        return Literal["男", "女"]
    if kind == "yesno":
        return bool
    if kind == "date":
        return date
    if kind == "yyyymm":
        return YyyyMm
    if kind == "quarter":
        return Quarter
    if kind == "int":
        return Annotated[int, Field(ge=col.lo, le=col.hi)]
    if kind == "float":
        return Annotated[float, Field(ge=col.lo, le=col.hi, allow_inf_nan=False)]
    return Text


# Required columns whose blank is meaningful (blank 监测对象类别 = not a monitoring object).
_NULLABLE_REQUIRED = {"monitor_category"}


def _field(col: contract.Column) -> tuple[Any, Any]:
    typ = _type_for(col)
    desc = col.header + ("（个人信息）" if col.personal else "")
    if col.required and col.name not in _NULLABLE_REQUIRED:
        return typ, Field(..., title=col.header, description=desc)
    return typ | None, Field(None, title=col.header, description=desc)


_STRICT = ConfigDict(extra="forbid", str_max_length=MAX_TEXT)


class _Base(BaseModel):
    model_config = _STRICT


def _fields(columns, level: str | None, skip=()) -> dict[str, tuple[Any, Any]]:
    return {c.name: _field(c) for c in columns if (level is None or c.level == level) and c.name not in skip}


_member_fields = _fields(contract.LEDGER_COLUMNS, "person")
_member_fields["school_grade"] = (
    Annotated[int, Field(ge=1, le=9)] | None,
    Field(None, title="年级", description="在校生的年级（小学1–6，初中7–9，其余1–3）"),
)
MemberIn = create_model("MemberIn", __base__=_Base, __doc__="一名家庭成员（台账中的一行人员信息）。",
                        **_member_fields)

EventIn = create_model("EventIn", __base__=_Base, __doc__="一条部门预警事件（关于本户某位成员）。",
                       **_fields(contract.EVENT_COLUMNS, None))


class _HouseholdChecks(_Base):
    @model_validator(mode="after")
    def _consistent(self):
        members = self.members
        seen: set[str] = set()
        for i, m in enumerate(members):
            if m.id_number in seen:
                raise PydanticCustomError("duplicate_member", "成员 {index} 的证件号码与前面的成员重复",
                                          {"index": i, "at": f"members[{i}].id_number", "field": "id_number"})
            seen.add(m.id_number)
        heads = sum(m.relation == contract.HEAD_RELATION for m in members)
        if heads > 1:
            raise PydanticCustomError("heads", "一户只能有一名户主，收到 {n} 名",
                                      {"n": heads, "at": "members", "field": "relation"})
        end = quarters.end_date(self.quarter)
        for i, e in enumerate(self.events):
            if e.id_number not in seen:
                raise PydanticCustomError("event_person", "事件 {index} 的证件号码不属于本户任何成员",
                                          {"index": i, "at": f"events[{i}].id_number", "field": "id_number"})
            if e.event_date > end:
                raise PydanticCustomError("event_date", "事件 {index} 的日期晚于统计季度末（{end}）",
                                          {"index": i, "end": end.isoformat(), "at": f"events[{i}].event_date",
                                           "field": "event_date"})
        return self


_household_fields = _fields(contract.LEDGER_COLUMNS, "household")
_household_fields["members"] = (
    Annotated[list[MemberIn], Field(min_length=1, max_length=MAX_MEMBERS)],
    Field(..., title="家庭成员", description=f"本户全部成员，1–{MAX_MEMBERS} 人"),
)
_household_fields["events"] = (
    Annotated[list[EventIn], Field(max_length=MAX_EVENTS)],
    Field(default_factory=list, title="部门预警事件",
          description="近期关于本户成员的部门事件（不晚于统计季度末）"),
)
HouseholdIn = create_model(
    "HouseholdIn", __base__=_HouseholdChecks,
    __doc__="一户在一个统计季度的台账信息（户信息、成员、近期部门事件），字段名为约定中的规范英文名。",
    **_household_fields,
)


# ---------------------------------------------------------------------------------------------
# contract value forms → canonical values (ingest's normaliser)

_BY_NAME = {
    "household": {c.name: c for c in contract.LEDGER_COLUMNS if c.level == "household"},
    "member": {c.name: c for c in contract.LEDGER_COLUMNS if c.level == "person"},
    "event": {c.name: c for c in contract.EVENT_COLUMNS},
}


def _converter(col: contract.Column) -> tuple:
    """Columns that normalise alike share one call of fangpin.ingest.normalise.convert."""
    return (col.kind, col.name if col.name in ("school_status", "id_number") else None)


def normalise_events(events: list) -> list:
    """:func:`normalise_households` for department events on their own (``POST /v1/events``)."""
    return _normalise(events, "event")


def normalise_households(households: list) -> list:
    """Households in any form of the ledger contract → the same households with canonical values.

    Every text value of a contract field (of the household, its members and its events) goes
    through ingest's normaliser — the cleaning of fangpin.ingest.normalise.clean_text (full-width
    characters, whitespace, ``—``/``-`` as missing), then that column's conversion
    (fangpin.ingest.normalise.convert: numbers with thousands separators, the contract's date
    forms, 性别 1/2, grade-level 在校生状况 → stage and 年级, ``2024q2``), and 是/否 → true/false.
    Column-wise over the whole request: one normaliser call per kind of column, not per value.
    Values that are not text pass unchanged, and a text that cannot be read stays as it was, so
    the schema's validation reports it with its path. Returns new dicts; the input is not changed.
    """
    return _normalise(households, "household")


# Normalised values by (converter, text as posted): a request's values of the small sets (categories,
# 是/否, grades) and repeated ones are read by ingest's normaliser once, not on every request.
_SEEN: dict[tuple, tuple] = {}
_SEEN_MAX = 200_000
_BAD = object()  # a value the normaliser could not read


def _normalise(households: list, level: str) -> list:
    import pandas as pd

    from fangpin.ingest import normalise as nz

    cells: list[tuple[dict, str, contract.Column]] = []
    out = []

    def take(d, lv: str):
        if not isinstance(d, dict):
            return d
        d = dict(d)
        for k, v in d.items():
            col = _BY_NAME[lv].get(k)
            if col is not None and isinstance(v, str):
                cells.append((d, k, col))
        return d

    for h in households if isinstance(households, list) else []:
        h = take(h, level)
        if isinstance(h, dict) and level == "household":
            for part, sub in (("members", "member"), ("events", "event")):
                if isinstance(h.get(part), list):
                    h[part] = [take(x, sub) for x in h[part]]
        out.append(h)
    if not isinstance(households, list):
        return households
    if not cells:
        return out
    keys = [(_converter(col), d[k]) for d, k, col in cells]
    todo = [i for i, key in enumerate(keys) if key not in _SEEN]
    if todo:
        clean = nz.clean_text(pd.Series([keys[i][1] for i in todo], dtype="str")).tolist()
        groups: dict[tuple, list[int]] = {}
        for j, i in enumerate(todo):
            groups.setdefault(keys[i][0], []).append(j)
        if len(_SEEN) > _SEEN_MAX:
            _SEEN.clear()
        for js in groups.values():
            col = cells[todo[js[0]]][2]
            vals, bad, _, grade = nz.convert(col, pd.Series([clean[j] for j in js], dtype="str"))
            vals = vals.astype(object).where(vals.notna(), None).tolist()
            bad = [False] * len(js) if bad is None else bad.tolist()
            grade = [None] * len(js) if grade is None else grade.astype(object).where(grade.notna(), None).tolist()
            for v, b, g, j in zip(vals, bad, grade, js, strict=True):
                i = todo[j]
                _SEEN[keys[i]] = (_BAD, None) if b else (_plain(v, cells[i][2]), None if g is None else int(g))
    for (d, k, _), key in zip(cells, keys, strict=True):
        value, grade = _SEEN[key]
        if value is _BAD:
            continue  # unreadable: the schema reports the value as posted
        d[k] = value
        if grade is not None and d.get("school_grade") is None:
            d["school_grade"] = grade
    return out


def _plain(v, col: contract.Column):
    """A normalised cell as the schema takes it (missing → None, 是/否 → bool, dates → date)."""
    import pandas as pd

    from fangpin.ingest.normalise import YES_NO

    if v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and v != v):
        return None
    if col.kind == "yesno":
        return YES_NO.get(v, v)
    if col.kind == "date":
        return pd.Timestamp(v).date()
    if col.kind in ("int", "yyyymm"):
        return int(v)
    if col.kind == "float":
        return float(v)
    return str(v)


# ---------------------------------------------------------------------------------------------
# errors for operators, in Chinese

_HEADERS = {c.name: c.header for c in (*contract.LEDGER_COLUMNS, *contract.EVENT_COLUMNS)}
_HEADERS.update(members="家庭成员", events="部门预警事件", households="户列表", school_grade="年级")

_MESSAGES = {
    "missing": "缺少必填字段",
    "extra_forbidden": "不认识的字段（字段名请用约定中的规范英文名）",
    "literal_error": "取值不在允许范围内，允许：{expected}",
    "greater_than_equal": "应不小于 {ge}",
    "greater_than": "应大于 {gt}",
    "less_than_equal": "应不大于 {le}",
    "less_than": "应小于 {lt}",
    "finite_number": "应为有限数值",
    "int_parsing": "应为整数",
    "int_type": "应为整数",
    "int_from_float": "应为整数",
    "float_parsing": "应为数字",
    "float_type": "应为数字",
    "bool_parsing": "应为 true 或 false",
    "bool_type": "应为 true 或 false",
    "string_type": "应为文本",
    "string_too_short": "长度不足（至少 {min_length} 个字符）",
    "string_too_long": "过长（至多 {max_length} 个字符）",
    "too_short": "至少需要 {min_length} 项",
    "too_long": "至多允许 {max_length} 项，收到 {actual_length} 项",
    "list_type": "应为列表",
    "model_type": "应为对象",
    "model_attributes_type": "应为对象",
    "dict_type": "应为对象",
    "date_parsing": "日期格式应为 YYYY-MM-DD",
    "date_from_datetime_parsing": "日期格式应为 YYYY-MM-DD",
    "date_from_datetime_inexact": "日期不应带时间",
    "date_type": "日期格式应为 YYYY-MM-DD",
    "json_invalid": "请求体不是合法的 JSON",
    "json_type": "请求体不是合法的 JSON",
}


def field_path(loc: tuple | list) -> str:
    """``('body', 'households', 0, 'members', 1, 'health')`` → ``households[0].members[1].health``."""
    out = ""
    for part in loc:
        if part in ("body", "query", "path", "header", "cookie") and not out:
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith("function-") or part.startswith("tagged-union"):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "(请求体)"


def message_zh(err: dict) -> str:
    typ = err.get("type", "")
    ctx = err.get("ctx") or {}
    template = _MESSAGES.get(typ)
    if template is None:
        # our own PydanticCustomError messages are already Chinese
        msg = err.get("msg", "")
        return msg if any("\u4e00" <= ch <= "\u9fff" for ch in msg) else f"取值无效（{typ}）"
    try:
        return template.format(**{k: _fmt(v) for k, v in ctx.items()}, **_ctx_defaults(template, ctx))
    except (KeyError, IndexError):
        return template


def _fmt(v: Any) -> str:
    return str(v).replace("'", "").replace(" or ", "、").replace(", ", "、")


def _ctx_defaults(template: str, ctx: dict) -> dict:
    return {k: "?" for k in ("expected", "ge", "gt", "le", "lt", "min_length", "max_length", "actual_length")
            if "{" + k + "}" in template and k not in ctx}


def errors_zh(errors: list[dict]) -> list[dict]:
    """pydantic errors → items naming the field path and the problem; never the input value
    (it may be an ID number, a name or a health status)."""
    out = []
    for err in errors:
        loc = tuple(err.get("loc", ()))
        ctx = err.get("ctx") or {}
        names = [p for p in loc if isinstance(p, str) and p in _HEADERS]
        path = field_path(loc)
        if ctx.get("at"):  # a cross-field check names the field it is about
            path = ctx["at"] if path == "(请求体)" else f"{path}.{ctx['at']}"
            names.append(ctx.get("field"))
        item = {
            "path": path,
            "field_zh": _HEADERS.get(names[-1]) if names else None,
            "type": err.get("type"),
            "message": err.get("msg"),
            "message_zh": message_zh(err),
        }
        out.append(item)
    return out


# ---------------------------------------------------------------------------------------------
# generated examples (never copied from real exports: IDs get a valid checksum in code)


def example_id(region: str = "610923", birth: str = "19700101", seq: str = "123") -> str:
    from fangpin.ids import check_char

    first17 = region + birth + seq
    return first17 + check_char(first17)


def example_household(quarter: str = "2024Q2", household_id: str = "610923003000101") -> dict:
    """A plausible household in canonical JSON form, for OpenAPI examples and tests."""
    head = example_id("610923", "19680315", "215")
    spouse = example_id("610923", "19700822", "326")
    son = example_id("610923", "20070509", "117")
    return {
        "quarter": quarter,
        "county": "青石县",
        "township": "兴兴镇",
        "village": "康沟村",
        "household_id": household_id,
        "household_type": "脱贫户",
        "monitor_category": None,
        "risk_eliminated": None,
        "income_per_capita": 8120.5,
        "wage_income": 18000.0,
        "business_income": 6200.0,
        "property_income": 0.0,
        "transfer_income": 2600.0,
        "business_expense": 2300.0,
        "medical_out_of_pocket": 9400.0,
        "unsafe_housing": False,
        "safe_water": True,
        "farmland_mu": 3.5,
        "road_distance_km": 1.2,
        "members": [
            {"id_number": head, "name": "王建国", "relation": "户主", "sex": "男", "ethnicity": "汉族",
             "education": "初中", "health": "长期慢性病", "labor_skill": "普通劳动力",
             "work_status": "县内务工", "work_months": 8, "medical_insured": True},
            {"id_number": spouse, "name": "李秀英", "relation": "配偶", "sex": "女", "ethnicity": "汉族",
             "education": "小学", "health": "健康", "labor_skill": "弱劳动力或半劳动力",
             "work_status": "未务工", "work_months": 0, "medical_insured": True},
            {"id_number": son, "name": "王磊", "relation": "之子", "sex": "男", "ethnicity": "汉族",
             "school_status": "中职", "school_grade": 2, "health": "健康", "labor_skill": "普通劳动力",
             "medical_insured": True},
        ],
        "events": [
            {"id_number": head, "event_date": quarters.start_date(quarter).replace(day=20).isoformat(),
             "department": "医保", "event_type": "住院", "amount": 6800.0},
        ],
    }
