"""The ledger data contract (../shared/ledger-contract.md, v1) as data.

This module is the single place where Chinese export headers, their aliases, the canonical
English names, value sets and column kinds are declared. The synthetic generator writes files
with these headers and ingest reads them back through the same table, so both sides of the edge
follow one definition. Nothing here does work at import time beyond building small constants.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["text", "int", "float", "yesno", "sex", "date", "yyyymm", "quarter", "category"]


@dataclass(frozen=True)
class Column:
    header: str  # the Chinese header as the national system exports it
    name: str  # canonical English name used in code
    kind: Kind
    required: bool = False
    aliases: tuple[str, ...] = ()
    values: tuple[str, ...] = ()  # allowed values for kind == "category" (after normalisation)
    level: Literal["person", "household"] = "person"
    personal: bool = False  # personal data: never logged, masked or hashed before display
    lo: float | None = None  # inclusive numeric range (every number column has one: finite, plausible)
    hi: float | None = None


# Plausibility bounds, declared once and enforced at ingest (row quarantined, reason named) and at
# the API (422 naming the field): a value outside is a typing or export error, never data.
YUAN_MAX = 100_000_000.0  # yuan per year, one household
PER_CAPITA_MIN, PER_CAPITA_MAX = -1_000_000.0, 10_000_000.0  # net income per person (losses possible)
MAX_TEXT_CHARS = 200  # any text cell (names, places, support measures)


RELATIONS = (
    "户主", "配偶", "之子", "之女", "之儿媳", "之女婿", "之孙子", "之孙女", "之外孙子", "之外孙女",
    "之父", "之母", "之公公", "之婆婆", "之岳父", "之岳母", "之祖父", "之祖母", "之兄弟姐妹",
    "之兄弟媳妇", "之侄儿", "之侄女", "其他",
)
EDUCATION = ("文盲或半文盲", "小学", "初中", "高中", "中专", "大专及以上")
# School status after normalisation: grade-level values collapse onto the stage they belong to.
SCHOOL_STATUS = ("非在校生", "学前教育", "小学", "初中", "高中", "中职", "高职高专", "本科及以上")
HEALTH = ("健康", "长期慢性病", "患有大病", "残疾")
LABOR_SKILL = ("普通劳动力", "技能劳动力", "弱劳动力或半劳动力", "丧失劳动力", "无劳动力")
WORK_STATUS = ("省外务工", "省内县外务工", "县内务工", "未务工")
HOUSEHOLD_TYPE = ("脱贫户", "一般农户")
MONITOR_CATEGORY = ("脱贫不稳定户", "边缘易致贫户", "突发严重困难户")
RISK_TYPES = (
    "因病", "因残", "因学", "因自然灾害", "因意外事故", "因产业项目失败", "因务工就业不稳",
    "缺劳动力", "因安全住房", "因安全饮水", "其他",
)
ELIMINATION_MODE = ("帮扶消除", "自然消除")
DIBAO = ("农村低保", "城市低保")
TEKUN = ("农村特困", "城市特困")
# channels a clue reaches the county through (domain.md; fangpin/clues.py)
CLUE_CHANNELS = ("农户自主申报", "干部排查", "部门预警", "群众反映", "村级排查")
DEPARTMENTS = ("医保", "民政", "残联", "住建", "应急管理", "教育", "人社", "公安", "卫健", "农业农村")
EVENT_TYPES = (
    "住院", "大额医疗自付", "重大疾病", "新增残疾", "房屋受损", "自然灾害受灾", "交通事故",
    "失业登记", "死亡", "辍学", "低保停发", "产业项目受损",
)
SUPPORT_HEADERS = {
    "产业帮扶": "support_industry",
    "就业帮扶": "support_employment",
    "公益岗位帮扶": "support_public_job",
    "健康帮扶": "support_health",
    "教育帮扶": "support_education",
    "综合保障": "support_social",
    "金融帮扶": "support_finance",
    "社会帮扶": "support_society",
    "搬迁": "support_relocation",
}

# Labour capacity classes used across the product (domain.md, Pinggui): with / weak / no labour.
# Their order is the feature code ``labor_class_code`` (0, 1, 2); a household's class is that of its
# best member (models.features).
LABOR_CLASSES = ("有劳动力", "弱劳动力", "无劳动力")
LABOR_CLASS = {
    "普通劳动力": "有劳动力",
    "技能劳动力": "有劳动力",
    "弱劳动力或半劳动力": "弱劳动力",
    "丧失劳动力": "无劳动力",
    "无劳动力": "无劳动力",
}


def _c(header: str, name: str, kind: Kind, **kw) -> Column:
    return Column(header=header, name=name, kind=kind, **kw)


LEDGER_COLUMNS: tuple[Column, ...] = (
    # snapshot and place
    _c("统计季度", "quarter", "quarter", required=True, level="household"),
    _c("县(市、区、旗)", "county", "text", required=True, aliases=("县",), level="household"),
    _c("乡(镇)", "township", "text", required=True, aliases=("乡",), level="household"),
    _c("行政村", "village", "text", required=True, aliases=("村",), level="household"),
    _c("户编号", "household_id", "text", required=True, level="household"),
    # person
    _c("证件号码", "id_number", "text", required=True, personal=True),
    _c("姓名", "name", "text", personal=True),
    _c("与户主关系", "relation", "category", required=True, values=RELATIONS),
    _c("性别", "sex", "sex"),
    _c("出生日期", "birth_date", "date"),
    _c("民族", "ethnicity", "text"),
    _c("文化程度", "education", "category", values=EDUCATION),
    _c("在校生状况", "school_status", "category", values=SCHOOL_STATUS),
    _c("健康状况", "health", "category", required=True, values=HEALTH, personal=True),
    _c("劳动技能", "labor_skill", "category", required=True, values=LABOR_SKILL),
    _c("务工状况", "work_status", "category", values=WORK_STATUS),
    _c("务工时间（月）", "work_months", "int", lo=0, hi=12),
    _c("是否参加城乡居民基本医疗保险", "medical_insured", "yesno"),
    _c("是否参加城乡居民基本养老保险", "pension_insured", "yesno"),
    # household
    _c("户类型", "household_type", "category", required=True, values=HOUSEHOLD_TYPE, level="household"),
    _c("监测对象类别", "monitor_category", "category", required=True, values=MONITOR_CATEGORY,
       level="household"),
    _c("识别监测时间", "monitor_since", "yyyymm", level="household"),
    *(
        _c(f"致贫/返贫风险{i}", f"risk_{i}", "category", values=RISK_TYPES, level="household")
        for i in range(1, 6)
    ),
    _c("风险是否已消除", "risk_eliminated", "yesno", level="household"),
    _c("消除监测时间", "eliminated_at", "yyyymm", level="household"),
    _c("风险消除方式", "elimination_mode", "category", values=ELIMINATION_MODE, level="household"),
    _c("人均纯收入（元）", "income_per_capita", "float", required=True, level="household",
       lo=PER_CAPITA_MIN, hi=PER_CAPITA_MAX),
    _c("工资性收入（元）", "wage_income", "float", level="household", lo=0, hi=YUAN_MAX),
    _c("生产经营性收入（元）", "business_income", "float", level="household", lo=-YUAN_MAX, hi=YUAN_MAX),
    _c("财产性收入（元）", "property_income", "float", level="household", lo=0, hi=YUAN_MAX),
    _c("转移性收入（元）", "transfer_income", "float", level="household", lo=0, hi=YUAN_MAX),
    _c("生产经营性支出（元）", "business_expense", "float", level="household", lo=0, hi=YUAN_MAX),
    _c("合规自付支出（元）", "medical_out_of_pocket", "float", level="household", lo=0, hi=YUAN_MAX),
    _c("享受低保政策情况", "dibao", "category", values=DIBAO, level="household"),
    _c("享受特困供养政策情况", "tekun", "category", values=TEKUN, level="household"),
    _c("是否危房户", "unsafe_housing", "yesno", level="household"),
    _c("是否解决安全饮用水", "safe_water", "yesno", level="household"),
    _c("耕地面积（亩）", "farmland_mu", "float", level="household", lo=0, hi=100_000),
    _c("与村主干路距离（公里）", "road_distance_km", "float", level="household", lo=0, hi=1_000),
    *(_c(h, n, "text", level="household") for h, n in SUPPORT_HEADERS.items()),
)

EVENT_COLUMNS: tuple[Column, ...] = (
    _c("证件号码", "id_number", "text", required=True, personal=True),
    _c("事件日期", "event_date", "date", required=True),
    _c("来源部门", "department", "category", required=True, values=DEPARTMENTS),
    _c("事件类型", "event_type", "category", required=True, values=EVENT_TYPES),
    _c("金额（元）", "amount", "float", lo=0, hi=YUAN_MAX),
)

LINES_FILE = "监测线.csv"
LINES_COLUMNS = {"年度": "year", "监测线（元）": "line", "省份": "province"}
ORACLE_FILE = "oracle.csv"
ORACLE_COLUMNS = {"户编号": "household_id", "统计季度": "quarter", "真实风险概率": "true_probability"}

LEDGER_FILE_PATTERN = "户成员台账_{quarter}.csv"
EVENTS_FILE_PATTERN = "部门预警数据_{year}.csv"


@dataclass(frozen=True)
class HeaderMap:
    """Header → column lookup including aliases, built once per table."""

    columns: tuple[Column, ...]
    by_header: dict[str, Column] = field(init=False)

    def __post_init__(self) -> None:
        lookup: dict[str, Column] = {}
        for col in self.columns:
            for h in (col.header, *col.aliases):
                lookup[h] = col
        object.__setattr__(self, "by_header", lookup)

    def get(self, header: str) -> Column | None:
        return self.by_header.get(header.strip())

    @property
    def required(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.required)

    def by_name(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


LEDGER = HeaderMap(LEDGER_COLUMNS)
EVENTS = HeaderMap(EVENT_COLUMNS)

HOUSEHOLD_FIELDS = tuple(c.name for c in LEDGER_COLUMNS if c.level == "household")
PERSON_FIELDS = tuple(c.name for c in LEDGER_COLUMNS if c.level == "person")
RISK_FIELDS = tuple(f"risk_{i}" for i in range(1, 6))
# Where a canonical row came from (export file, row number): kept for the quarantine, its messages
# and retraining's new-quarter check; never a feature, so batch scoring and training leave it out
# of their partitions (pipelines.partition).
PROVENANCE = ("source_file", "source_row")


# The head of household: the member whose 与户主关系 is 户主; a household without one is represented
# by its first member row (household fields, head name and masked ID, the head's age and sex).
HEAD_RELATION = "户主"


def head_rows(persons, keys=("household_id", "quarter_idx")):
    """One row per household (per ``keys``) of a persons DataFrame: its 户主 row, else its first
    row (input order)."""
    not_head = (persons["relation"] != HEAD_RELATION).to_numpy(dtype=bool, na_value=True)
    order = persons.assign(_not_head=not_head).sort_values([*keys, "_not_head"], kind="stable")
    return order.drop_duplicates(list(keys), keep="first").drop(columns="_not_head")


def header_for(name: str, table: HeaderMap = LEDGER) -> str:
    """The Chinese header for a canonical name (used by writers at the edge)."""
    return table.by_name(name).header
