"""The loop after a warning seeded through the store's own functions (for the county view and API
tests): verification outcomes (the decision step started), a read-back of a later export
(identified, supported, eliminated, a conflict with a cadre's 排除, 返贫风险), the monitored
households' ledger state, and clues of several channels."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fangpin import clues as fc
from fangpin.store.loop import ClueIn, Scored, apply_readback, loops, record_clue, verified_hook
from fangpin.warnings import STATUS_EXCLUDED, STATUS_INCLUDED, STATUS_OPEN, local_date


def seed_loop(seeded, params, now: datetime | None = None) -> dict:
    """Returns what was seeded (warning ids by role in the loop)."""
    store = seeded.store
    now = now or datetime.now(UTC)
    today = local_date(now)
    mine = seeded.of("青石县", "兴兴镇")
    other = seeded.of("青石县", "安乐镇")
    included, excluded, returned = mine[1], mine[2], other[1]
    for w, status, reason in ((included, STATUS_INCLUDED, None), (excluded, STATUS_EXCLUDED, "收入稳定"),
                              (returned, STATUS_INCLUDED, None), (other[2], STATUS_INCLUDED, None)):
        store.record_feedback(w.id, status, actor="张伟", reason=reason, hook=verified_hook(params, now - timedelta(days=30)),
                              visited_at=now - timedelta(days=30))
    lp = loops(store, [w.id for w in seeded.warnings])

    def change(w, status_from, **loop):
        row = {**lp[w.id], **loop, "updated_at": now} if w.id in lp else {
            "warning_id": w.id, "origin": fc.SCREENING, "channels": [fc.SCREENING], "clues": 0, "floor_level": None,
            "return_risk": False, "verified_at": None, "decision_due": None, "identified_at": None,
            "identified_quarter": None, "identified_month": None, "support_due": None, "support_at": None,
            "support_source": None, "eliminated_quarter": None, "eliminated_month": None, "ledger_outcome": None,
            "readback_quarter": None, "conflict": None, "updated_at": now, **loop}
        new_status = STATUS_INCLUDED if status_from != STATUS_INCLUDED and loop.get("identified_at") else None
        return {"warning_id": w.id, "loop": row, "loop_existed": w.id in lp, "status": new_status,
                "from_status": status_from, "reason": "2024Q3 台账显示已识别为监测对象" if new_status else None,
                "household_id": w.household_id}

    ident = {"identified_at": today - timedelta(days=20), "identified_quarter": "2024Q3", "identified_month": 202408,
             "support_due": today - timedelta(days=6), "readback_quarter": "2024Q3"}
    changes = [
        # identified and supported on time
        change(included, STATUS_INCLUDED, **ident, support_at=today - timedelta(days=10), support_source="ledger",
               ledger_outcome=fc.SUPPORTED),
        # the cadre excluded, the ledger identified: the ledger wins, listed
        change(excluded, STATUS_EXCLUDED, **ident, ledger_outcome=fc.IDENTIFIED,
               conflict="干部核实为“已核实·排除”，2024Q3 台账显示已识别为监测对象：以台账为准"),
        # eliminated before, warned again and identified again: 返贫
        change(returned, STATUS_INCLUDED, **ident, return_risk=True, ledger_outcome=fc.ELIMINATED,
               eliminated_quarter="2024Q4", eliminated_month=202411, support_at=today - timedelta(days=2),
               support_source="ledger"),
        # nothing in the export yet
        change(mine[3], STATUS_OPEN, ledger_outcome=fc.NOTHING, readback_quarter="2024Q3"),
    ]
    households = [{"county": "青石县", "household_id": f"61092399{i:06d}", "township": t, "village": v,
                   "quarter": "2024Q3", "monitor_category": "边缘易致贫户", "monitor_since": 202407 + i % 2,
                   "risk_eliminated": False, "eliminated_at": None, "updated_at": now}
                  for i, (t, v) in enumerate([("兴兴镇", "兴兴1村")] * 3 + [("安乐镇", "安乐2村")] * 2)]
    apply_readback(store, changes, households, now=now)

    clues = []
    for ch, text in ((fc.SELF_APPLICATION, "家中老人住院，自付费用较高，申请纳入监测"), (fc.PUBLIC, "邻居反映该户因灾房屋受损"),
                     (fc.VILLAGE, "村级排查发现务工收入中断")):
        c = ClueIn(channel=ch, county="青石县", township="兴兴镇", village="兴兴1村", household_id=None,
                   person_key=f"pk{len(clues):030d}", id_masked="6109**********001X", text=text, received_by="李娜",
                   received_at=now - timedelta(days=1), key_id=seeded.key_ids["county_a"], source="api")
        clues.append(record_clue(store, c, None, params, now=now))  # not in the ledger: the village checks
    scored = Scored(in_scope=True, level=None, probability=0.002, reasons=[])
    c = ClueIn(channel=fc.CADRE, county="青石县", township="安乐镇", village="安乐2村", household_id=other[3].household_id,
               person_key=None, id_masked=None, text="走访发现子女辍学", received_by="王强", received_at=now,
               key_id=seeded.key_ids["county_a"], source="api")
    clues.append(record_clue(store, c, scored, params, now=now))  # joins the household's open warning
    return {"included": included.id, "excluded": excluded.id, "returned": returned.id, "clues": clues,
            "today": today}
