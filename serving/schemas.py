"""Request and response bodies of the API. The household input is the one canonical JSON schema
(:mod:`fangpin.household_json`); warnings are the one warning record (:mod:`fangpin.warnings`)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from fangpin.clues import Channel
from fangpin.household_json import (
    EventIn,
    HouseholdIn,
    example_household,
    normalise_events,
    normalise_households,
)
from fangpin.warnings import (
    STATUS_EXCLUDED,
    STATUS_INCLUDED,
    Level,
    Measure,
    Reason,
    RuleHit,
    Status,
    WarningRecord,
)


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScoreRequest(BaseModel):
    """一户或多户（批量）待评分的台账信息。取值可按台账原样填写（如“八年级”、“是/否”、全角数字、千分位、
    约定中的各种日期格式），与导入台账时同样规范化。`fangpin households` 可从台账导出本请求体。"""

    model_config = ConfigDict(extra="forbid")
    households: Annotated[list[HouseholdIn], Field(min_length=1)] = Field(
        ..., description="待评分的户，1 户或多户（户编号不得重复）；超过配置的批量上限时返回 413"
    )

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data):
        if isinstance(data, dict) and isinstance(data.get("households"), list):
            data = {**data, "households": normalise_households(data["households"])}
        return data

    @model_validator(mode="after")
    def _unique(self):
        seen: set[str] = set()
        for i, h in enumerate(self.households):
            if h.household_id in seen:
                raise PydanticCustomError("duplicate_household", "第 {index} 户的户编号与前面的户重复",
                                          {"index": i, "at": f"households[{i}].household_id",
                                           "field": "household_id"})
            seen.add(h.household_id)
        return self


class TaskGap(_Out):
    """A 保障缺口 of a scored household and the department it goes to (fangpin/tasks.py)."""

    rule_id: str
    gap: str = Field(description="缺口，如 住房安全")
    department: str = Field(description="责任部门，如 住建")
    measure: str = Field(description="措施，如 危房改造")
    detail: str = Field(description="规则触发的情况（本户数字）")
    days: int = Field(description="办理期限（自评分之日起的天数）")


class HouseholdScore(_Out):
    household_id: str
    quarter: str
    county: str
    township: str
    village: str
    in_scope: bool = Field(description="是否在预测范围内（不是风险未消除的监测对象）；否则已在监测中，仅供参考")
    probability: float = Field(ge=0, le=1, description="校准后的概率：未来若干季度内被新识别为监测对象")
    model_level: Level | None = Field(None, description="风险等级：本乡镇本季度按风险排序的分档（红/黄/蓝），无则为 null")
    rule_level: Level | None = Field(None, description="规则等级：规则触发中最高的下限等级，无则为 null")
    level: Level | None = Field(
        None, description="综合等级 = max(规则下限, 风险等级)，红色受本乡镇核实名额限制；null 表示不预警")
    deferred: bool = Field(False, description="按风险应为红色，但本乡镇本季度核实名额已满，顺延为黄色（月度走访）")
    visit_list: str | None = Field(None, description="所在清单：入户核实（核实期限内）、月度走访或半年复核")
    rule_hits: list[RuleHit] = Field(default_factory=list, description="规则触发（含触发阈值；保障缺口见 tasks）")
    tasks: list[TaskGap] = Field(default_factory=list, description="保障缺口任务：转责任部门办理（可与预警同时存在）")
    reasons: list[Reason] | None = Field(
        None, description="主要原因（至多4条）；prob_pp 为该因素的贡献（百分点），与 other_pp 相加等于"
                          "（probability − base_rate）× 100；本部署未启用解释时为 null")
    base_rate: float | None = Field(None, description="全县基准概率（训练期在预测范围内农户的识别率）")
    other_pp: float | None = Field(None, description="其他因素（百分点）：未列出的因素与模型基准户和全县基准之差")
    reference_period: str | None = Field(None, description="基准与对比数据的时期")
    measures: list[Measure] | None = Field(
        None, description="建议帮扶措施（缺什么补什么）；本部署未启用时为 null")
    history: str = Field(description="所用的历史信息：`ledger:2024Q4` 表示台账截至该季度的历史（上次核实收入、"
                                     "上季度情况、部门事件、村和乡镇情况）；`none` 表示台账中没有该户（或所报季度早于台账）")
    model_version: str
    ruleset_version: str


class ScoreResponse(_Out):
    model_version: str
    ruleset_version: str
    results: list[HouseholdScore]


class EventsRequest(BaseModel):
    """部门推送的预警事件（部门筛查预警），一条或多条。取值可按原样填写（全角数字、千分位、各种日期格式）。"""

    model_config = ConfigDict(extra="forbid")
    events: Annotated[list[EventIn], Field(min_length=1)] = Field(
        ..., description="事件：证件号码、事件日期、来源部门、事件类型、金额；超过配置的批量上限时返回 413")

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data):
        if isinstance(data, dict) and isinstance(data.get("events"), list):
            data = {**data, "events": normalise_events(data["events"])}
        return data


class Rescored(_Out):
    household_id: str
    quarter: str = Field(description="重新评分的统计季度（台账最新季度，或新事件所在的更晚季度）")
    previous_level: Level | None = Field(None, description="事件前的综合等级")
    level: Level | None = Field(None, description="加入新事件后的综合等级")
    probability: float = Field(ge=0, le=1)
    warning: Literal["created", "raised", "kept_closed", "not_higher", "out_of_scope"] = Field(
        description="预警：新建 / 等级提高 / 已结案未改动 / 等级未提高 / 已在监测中（不预警）")
    warning_id: str | None = None


class EventsResponse(_Out):
    received: int = Field(description="本次收到的事件数")
    stored: int = Field(description="新保存的事件数")
    duplicates: int = Field(description="此前已收到过的事件数（同一事件只保存一次，不重复评分）")
    matched: int = Field(description="新事件中与本范围台账人员匹配的条数")
    unmatched: int = Field(description="新事件中未匹配到任何户的条数（已保存并计数，不丢失）")
    unmatched_total: int = Field(description="本范围累计未匹配的事件数")
    rescored: list[Rescored] = Field(description="因新事件重新评分的户")
    model_version: str


class WarningOut(WarningRecord):
    overdue: bool = Field(False, description="核实期限已过且仍待核实")


class TaskOut(_Out):
    """A 保障缺口 task as stored (fangpin.tasks.TaskRecord)."""

    id: str
    kind: str
    quarter: str
    county: str
    township: str
    village: str
    household_id: str
    head_name: str | None = None
    id_masked: str | None = None
    rule_id: str
    gap: str
    department: str
    measure: str
    detail: str
    ruleset_version: str
    created_at: datetime
    deadline: date
    status: Literal["待办理", "办理中", "已办结"]
    overdue: bool = Field(False, description="办理期限已过且未办结")


class TaskPageOut(_Out):
    items: list[TaskOut]
    total: int
    limit: int
    offset: int


class TaskStatusIn(BaseModel):
    """任务办理状态。"""

    model_config = ConfigDict(extra="forbid")
    status: Literal["办理中", "已办结"] = Field(..., description="新状态")


class WarningPageOut(_Out):
    items: list[WarningOut]
    total: int
    limit: int
    offset: int


class FeedbackIn(BaseModel):
    """入户核实结果。"""

    model_config = ConfigDict(extra="forbid")
    status: Literal["已核实·纳入监测", "已核实·排除"] = Field(..., description="核实结论")
    reason: Annotated[str, Field(max_length=500)] | None = Field(
        None, description="原因（排除时必填）；不得填写证件号码")
    actor: Annotated[str, Field(min_length=1, max_length=64)] = Field(..., description="核实人")
    visited_at: datetime | None = Field(None, description="入户核实时间（默认为提交时间）")


class ModelInfo(_Out):
    model_uri: str
    model_version: str
    ruleset_version: str
    loaded_at: datetime
    explanations: bool = Field(description="是否返回原因解释")
    card: dict = Field(default_factory=dict, description="模型卡（训练数据、评估指标、用途与限制）")


class ReloadOut(_Out):
    previous_version: str | None
    model_version: str
    ruleset_version: str
    loaded_at: datetime


class ErrorOut(BaseModel):
    detail: str | list
    message_zh: str


class HealthOut(_Out):
    status: str


class ReadyOut(_Out):
    status: str
    model_loaded: bool
    store_reachable: bool
    model_version: str | None = None


# ------------------------------------------------------------------------------------ examples


def score_examples() -> dict:
    one = example_household()
    two = example_household(household_id="610923003000102")
    two["members"] = two["members"][:2]
    two["events"] = []
    two["income_per_capita"] = 6350.0
    return {
        "single": {"summary": "一户", "value": {"households": [one]}},
        "batch": {"summary": "两户（批量）", "value": {"households": [one, two]}},
    }


def events_examples() -> dict:
    h = example_household()
    return {"one": {"summary": "一条事件", "value": {"events": [
        {"id_number": h["members"][0]["id_number"], "event_date": "2024-06-18", "department": "卫健",
         "event_type": "重大疾病", "amount": "48,000"}]}}}


def feedback_examples() -> dict:
    return {
        "included": {"summary": "纳入监测", "value": {
            "status": STATUS_INCLUDED, "reason": "户主住院，合规自付支出大，收入骤减", "actor": "张伟（包村干部）"}},
        "excluded": {"summary": "排除", "value": {
            "status": STATUS_EXCLUDED, "reason": "已享受医保报销，收入稳定在监测线以上", "actor": "张伟（包村干部）"}},
    }


__all__ = [
    "ErrorOut", "EventsRequest", "EventsResponse", "FeedbackIn", "HealthOut", "HouseholdScore", "ModelInfo",
    "ReadyOut", "ReloadOut", "Rescored", "ScoreRequest", "ScoreResponse", "Status", "TaskGap", "TaskOut",
    "TaskPageOut", "TaskStatusIn", "WarningOut", "WarningPageOut", "events_examples", "feedback_examples",
    "score_examples",
]


# ------------------------------------------------------------------------------ clues and the loop


class StepOut(_Out):
    """The step a warning waits on now (fangpin.clues.current_step)."""

    step: Literal["verification", "decision", "support_plan"]
    label: str = Field(..., description="入户核实 / 认定纳入监测 / 制定帮扶计划")
    due: date | None
    days_left: int | None = Field(None, description="剩余天数（负数：已逾期天数）")
    overdue: bool
    text: str = Field(..., description="“剩 n 天” / “已逾期 n 天”")


class LoopOut(_Out):
    """What happened to a warning after it was created: channels, later steps, read-back."""

    warning_id: str
    origin: str = Field(..., description="生成预警的渠道（大数据筛查、农户自主申报、干部排查、部门预警、群众反映、村级排查）")
    channels: list[str]
    clues: int
    floor_level: Level | None = None
    return_risk: bool = Field(..., description="返贫风险：台账显示该户风险已消除后再次预警")
    verified_at: date | None = None
    decision_due: date | None = None
    identified_at: date | None = None
    identified_quarter: str | None = None
    identified_month: int | None = None
    support_due: date | None = None
    support_at: date | None = None
    support_source: str | None = None
    eliminated_quarter: str | None = None
    eliminated_month: int | None = None
    ledger_outcome: str | None = Field(None, description="台账回读结论：未见变化 / 已识别 / 已帮扶 / 已消除")
    readback_quarter: str | None = None
    conflict: str | None = Field(None, description="核实结论与台账不一致（以台账为准）")
    step: StepOut | None = None


class OverdueItem(_Out):
    warning_id: str
    quarter: str
    county: str
    township: str
    village: str
    household_id: str
    head_name: str | None = None
    id_masked: str | None = None
    level: Level
    status: Status
    origin: str
    return_risk: bool
    step: Literal["verification", "decision", "support_plan"]
    step_label: str
    due: date
    days_overdue: int


class OverdueTownship(_Out):
    county: str
    township: str
    overdue: int
    by_step: dict[str, int]
    items: list[OverdueItem]


class OverdueOut(_Out):
    today: date
    total: int
    townships: list[OverdueTownship]


class SupportPlanIn(BaseModel):
    """帮扶计划已制定（台账显示该户已识别为监测对象之后）。"""

    model_config = ConfigDict(extra="forbid")
    planned_on: date | None = Field(None, description="制定日期（默认今天）")
    actor: Annotated[str, Field(min_length=1, max_length=64)] = Field(..., description="登记人")


class ClueIn(BaseModel):
    """一条线索：渠道、户（户编号，或证件号码——收到即转为密钥哈希，不保存号码）、反映内容、接收人。"""

    model_config = ConfigDict(extra="forbid")
    channel: Channel = Field(..., description="线索渠道")
    household_id: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(None, description="户编号")
    id_number: Annotated[str, Field(min_length=18, max_length=18, pattern=r"^\d{17}[\dXx]$")] | None = Field(
        None, description="证件号码（户编号未知时）；只用于找到户，立即转为密钥哈希")
    county: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        None, description="县（台账外的户必填；县级密钥默认本县）")
    township: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        None, description="乡镇（台账外的户必填；乡镇密钥默认本乡镇）")
    village: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    text: Annotated[str, Field(min_length=1, max_length=2000)] = Field(..., description="反映内容；不得填写证件号码或电话号码")
    received_by: Annotated[str, Field(min_length=1, max_length=64)] = Field(..., description="接收人")
    received_at: datetime | None = Field(None, description="接收时间（默认提交时间）")

    @model_validator(mode="after")
    def _household(self) -> ClueIn:
        if not self.household_id and not self.id_number:
            raise PydanticCustomError("household_missing", "户编号和证件号码至少填写一项")
        return self


class ClueOut(_Out):
    clue_id: str
    outcome: Literal["created", "joined", "merged", "not_warned", "monitored", "unmatched", "kept_closed"]
    outcome_text: str
    channel: str
    household_id: str | None = None
    county: str
    township: str
    warning_id: str | None = None
    level: Level | None = None
    probability: float | None = None
    deadline: date | None = None
    return_risk: bool = False
    repeats: int = 0
    reasons: list[Reason] = []
    model_version: str | None = None


class ClueListItem(_Out):
    id: str
    channel: str
    county: str
    township: str
    village: str | None = None
    household_id: str | None = None
    id_masked: str | None = None
    text: str
    received_by: str
    received_at: datetime
    last_received_at: datetime
    source: str
    outcome: str
    outcome_text: str
    warning_id: str | None = None
    warning_status: str | None = None
    level: Level | None = None
    deadline: date | None = None
    return_risk: bool
    repeats: int


class CluePageOut(_Out):
    items: list[ClueListItem]
    total: int
    limit: int
    offset: int
