"""A warning store seeded through the store's own functions, for API and browser tests.

Two counties, two townships each; warnings with rule hits, reasons (figures that add up with
其他因素 to the probability minus the county base rate) and measures shaped as the explain step
writes them; 保障缺口 tasks (one on a warned household, one on a household without a warning, per
township); one key per role. Names and ID numbers are generated here (valid
checksums), never copied from sample files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from fangpin.household_json import example_id
from fangpin.ids import mask
from fangpin.store import Store
from fangpin.tasks import records
from fangpin.warnings import WarningRecord

SECRET = b"api-test-secret"
QUARTER = "2024Q2"
MODEL_VERSION = "7"
BASE_RATE = 0.0071
PLACES = [("青石县", "兴兴镇"), ("青石县", "安乐镇"), ("白河县", "河口镇"), ("白河县", "柳林镇")]
NAMES = ["王建国", "李秀英", "张德明", "刘桂兰", "陈志强", "杨淑芬", "赵永福", "黄玉珍"]


@dataclass
class Seeded:
    store: Store
    warnings: list[WarningRecord]
    keys: dict[str, str] = field(default_factory=dict)  # label -> plaintext key
    key_ids: dict[str, str] = field(default_factory=dict)
    id_numbers: list[str] = field(default_factory=list)  # full IDs used (for log greps)
    tasks: list = field(default_factory=list)  # fangpin.tasks.TaskRecord

    def of(self, county: str, township: str | None = None) -> list[WarningRecord]:
        return [w for w in self.warnings if w.county == county and (township is None or w.township == township)]



def record_tables(warnings, batch_size: int = 2000):
    """WarningRecords as the Arrow tables Store.write_quarter_tables takes (lazily, in batches)."""
    import pyarrow as pa

    from fangpin.warnings import record_schema

    schema, batch = record_schema(), []
    for w in warnings:
        batch.append(w.model_dump(mode="json"))
        if len(batch) >= batch_size:
            yield pa.Table.from_pylist(batch, schema=schema)
            batch = []
    if batch:
        yield pa.Table.from_pylist(batch, schema=schema)

def _warning(params, i: int, county: str, township: str, level: str, created: datetime, id_number: str):
    reasons = [
        {"factor": "medical", "text": f"家庭成员1人患大病，今年合规自付医疗支出{12000 + 800 * i:,}元，占家庭年收入{40 + i}%",
         "direction": "up", "logodds": 0.9 - 0.05 * i, "prob_pp": 8.5 - 0.3 * i},
        {"factor": "income", "text": f"人均纯收入{7400 + 50 * i:,}元，仅高于监测线{100 + 50 * i}元", "direction": "up",
         "logodds": 0.55, "prob_pp": 4.2},
        {"factor": "labour", "text": "家中有2名普通劳动力稳定务工", "direction": "down", "logodds": -0.3, "prob_pp": -2.1},
    ]
    hits = [{"rule_id": "R2-income-margin", "level": "黄",
             "text": f"人均纯收入{7400 + 50 * i:,}元，在监测线7,300元以上20%以内",
             "threshold": "监测线以上 20% 以内（7,300–8,760 元）"}]
    measures = [{"type": "健康帮扶", "text": "落实大病保险和医疗救助，协助办理慢病卡"},
                {"type": "就业帮扶", "text": "推荐就近务工或公益岗位"}]
    probability = round(0.05 + 0.08 * (i % 7), 3)
    other = round(100 * (probability - BASE_RATE) - sum(r["prob_pp"] for r in reasons), 2)
    return WarningRecord.create(
        params=params, created_at=created,
        quarter=QUARTER, county=county, township=township, village=f"{township[:2]}{i % 3 + 1}村",
        household_id=f"6109230{i:08d}", head_name=NAMES[i % len(NAMES)], id_masked=mask(id_number),
        level=level, probability=probability, rule_hits=hits if i % 2 == 0 else [],
        reasons=reasons, measures=measures, model_version=MODEL_VERSION, ruleset_version="rules-2026.1",
        base_rate=BASE_RATE, other_pp=other, reference_period="2022Q1–2023Q4",
    )


def _tasks(params, warnings: list[WarningRecord], created: datetime):
    """Per township: an unsafe-housing task on a warned household with a rule hit (the third when
    there is one), and a school task on a household without a warning."""
    from fangpin.tasks import task_table

    rows = []
    for county, township in PLACES:
        mine = [x for x in warnings if x.county == county and x.township == township]
        w = next((x for x in mine[2:] if x.rule_hits), next((x for x in mine if x.rule_hits), mine[0]))
        rows.append({"quarter": QUARTER, "county": county, "township": township, "village": w.village,
                     "household_id": w.household_id, "head_name": w.head_name, "id_masked": w.id_masked,
                     "ruleset_version": "rules-2026.1",
                     "hits": [{"rule_id": "R04_UNSAFE_HOUSING", "text": "住房为危房（是否危房户：是）"}]})
        rows.append({"quarter": QUARTER, "county": county, "township": township, "village": w.village,
                     "household_id": f"{w.household_id[:-3]}9{w.household_id[-2:]}", "head_name": "周小梅",
                     "id_masked": None, "ruleset_version": "rules-2026.1",
                     "hits": [{"rule_id": "R07_OUT_OF_SCHOOL", "text": "义务教育阶段适龄儿童1人未在校"}]})
    return task_table(rows, params, created)


def seed_store(url: str, params, per_township: int = 4) -> Seeded:
    store = Store(url, SECRET, migrate=True)
    now = datetime.now(UTC)
    warnings, ids = [], []
    i = 0
    for county, township in PLACES:
        for k in range(per_township):
            idn = example_id("610923", f"19{60 + i % 30:02d}0{1 + i % 9}1{i % 9}", f"{100 + i:03d}")
            ids.append(idn)
            # one overdue warning per township (created 20 days ago)
            created = now - timedelta(days=20) if k == 0 else now - timedelta(days=k)
            warnings.append(_warning(params, i, county, township, ("红", "黄", "蓝", "黄")[k % 4], created, idn))
            i += 1
    tasks = _tasks(params, warnings, now)
    store.write_quarter_tables(record_tables(warnings), QUARTER, MODEL_VERSION, tasks=lambda: [tasks])
    seeded = Seeded(store, warnings, id_numbers=ids, tasks=records(tasks))
    for label, role, scope in [
        ("county_a", "county_system", "青石县"),
        ("county_b", "county_system", "白河县"),
        ("cadre_a1", "township_cadre", "青石县/兴兴镇"),
        ("cadre_b1", "township_cadre", "白河县/河口镇"),
        ("analyst", "analyst", "*"),
        ("admin", "admin", "*"),
    ]:
        info, key = store.add_key(role, scope, label=label)
        seeded.keys[label] = key
        seeded.key_ids[label] = info.id
    return seeded


def hdr(seeded: Seeded, label: str) -> dict:
    return {"X-API-Key": seeded.keys[label]}
