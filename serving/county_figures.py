"""The county view's figures and charts: per township — warnings by level and channel, visits due
and overdue, verification outcomes, identified from the next export, support plans on time,
eliminated, 返贫; the funnel clue → verified → identified → supported → eliminated per quarter;
where predicted risk and identifications concentrate (townships, villages).

:func:`figures` is a pure function of the store's rows (fangpin.store.loop.county_rows) and the
day; the charts are drawn by matplotlib into SVG documents the app serves itself (no CDN, no
script: county intranets have no internet), text as paths (no font needed by the browser).
"""

from __future__ import annotations

import io
from collections import Counter, defaultdict
from datetime import date

from fangpin import clues as fc
from fangpin import quarters as fq
from fangpin.warnings import LEVELS, STATUS_EXCLUDED, STATUS_INCLUDED, STATUS_OPEN

FUNNEL = ("线索", "核实纳入", "台账识别", "帮扶计划", "风险消除")
LEVEL_COLOURS = {"红": "#c62828", "黄": "#e0a21b", "蓝": "#1565c0"}
CHANNEL_COLOURS = {fc.SCREENING: "#546e7a", fc.SELF_APPLICATION: "#8b1a1a", fc.CADRE: "#2e7d32",
                   fc.DEPARTMENT: "#6a1b9a", fc.PUBLIC: "#ef6c00", fc.VILLAGE: "#00838f"}
FUNNEL_COLOURS = ("#90a4ae", "#5c6bc0", "#8e24aa", "#43a047", "#2e7d32")
NO_WARNING = (fc.NOT_WARNED, fc.UNMATCHED, fc.MONITORED, fc.KEPT_CLOSED)  # clues outside any warning


def _q(ts) -> str:
    from fangpin.warnings import local_date

    d = local_date(ts)
    return fq.fmt(d.year, (d.month - 1) // 3 + 1)


def _township_row(township: str) -> dict:
    return {"township": township, "warnings": 0, **{lv: 0 for lv in LEVELS}, "by_origin": Counter(), "clues": 0,
            "visits_open": 0, "visits_due_soon": 0, "visits_overdue": 0, "included": 0, "excluded": 0, "open": 0,
            "decision_overdue": 0, "identified": 0, "support_on_time": 0, "support_late": 0, "support_pending": 0,
            "support_overdue": 0, "eliminated": 0, "return_risk": 0, "returned": 0, "conflicts": 0}


def figures(warnings: list[dict], clues: list[dict], households: list[dict], today: date, params, *,
            quarter: str | None = None, top: int = 10) -> dict:
    """The county view's numbers. ``quarter``: only warnings and clues of that quarter in the
    township table (None: all); the funnel always shows every quarter."""
    soon = params.warnings.due_soon_days
    ws = [w for w in warnings if quarter is None or w["quarter"] == quarter]
    cs = [c for c in clues if quarter is None or _q(c["received_at"]) == quarter]
    rows: dict[str, dict] = {}

    def row(t: str) -> dict:
        if t not in rows:
            rows[t] = _township_row(t)
        return rows[t]

    for w in ws:
        r = row(w["township"])
        r["warnings"] += 1
        r[w["level"]] += 1
        r["by_origin"][w["origin"] or fc.SCREENING] += 1
        st = w["status"]
        if st == STATUS_OPEN:
            r["open"] += 1
            if w["deadline"] < today:
                r["visits_overdue"] += 1
            else:
                r["visits_open"] += 1
                if (w["deadline"] - today).days <= soon:
                    r["visits_due_soon"] += 1
        elif st == STATUS_INCLUDED:
            r["included"] += 1
        elif st == STATUS_EXCLUDED:
            r["excluded"] += 1
        step = fc.current_step(st, w["deadline"], w, today)
        if step is not None and step.name == fc.DECISION and step.overdue:
            r["decision_overdue"] += 1
        if w["identified_at"] is not None:
            r["identified"] += 1
            if w["support_at"] is not None:
                late = w["support_due"] is not None and w["support_at"] > w["support_due"]
                r["support_late" if late else "support_on_time"] += 1
            elif w["ledger_outcome"] != fc.ELIMINATED:
                r["support_pending"] += 1
                if w["support_due"] is not None and today > w["support_due"]:
                    r["support_overdue"] += 1
        if w["ledger_outcome"] == fc.ELIMINATED:
            r["eliminated"] += 1
        if w["return_risk"]:
            r["return_risk"] += 1
            if w["identified_at"] is not None:
                r["returned"] += 1
        if w["conflict"]:
            r["conflicts"] += 1
    for c in cs:
        row(c["township"])["clues"] += 1
    table = sorted(rows.values(), key=lambda r: (-r["warnings"], r["township"]))
    total = _township_row("合计")
    for r in table:
        for k, v in r.items():
            if k == "township":
                continue
            if isinstance(v, Counter):
                total[k].update(v)
            else:
                total[k] += v
    for r in [*table, total]:
        r["by_origin"] = dict(r["by_origin"])

    funnel: dict[str, list[int]] = defaultdict(lambda: [0] * len(FUNNEL))
    for w in warnings:
        f = funnel[w["quarter"]]
        f[0] += 1
        f[1] += w["status"] == STATUS_INCLUDED
        f[2] += w["identified_at"] is not None
        f[3] += w["support_at"] is not None
        f[4] += w["ledger_outcome"] == fc.ELIMINATED
    for c in clues:
        if c["outcome"] in NO_WARNING:
            funnel[_q(c["received_at"])][0] += 1
    funnel_rows = [{"quarter": q, **dict(zip(FUNNEL, v, strict=True))} for q, v in sorted(funnel.items())]

    clue_channels = Counter(c["channel"] for c in cs)
    return {"quarter": quarter, "quarters": sorted({w["quarter"] for w in warnings}), "townships": table,
            "total": total, "funnel": funnel_rows, "clue_channels": dict(clue_channels),
            "concentration": concentration(warnings, households, top)}


def concentration(warnings: list[dict], households: list[dict], top: int) -> dict:
    """Where predicted risk and identifications concentrate: per township and village, the sum of
    the latest quarter's warning probabilities (households expected to be identified among those
    warned) and the households the newest export shows identified in its last four quarters."""
    latest = max((w["quarter"] for w in warnings), default=None)
    newest = max((h["quarter"] for h in households), default=None)
    pred_t: Counter = Counter()
    pred_v: Counter = Counter()
    for w in warnings:
        if w["quarter"] == latest:
            pred_t[w["township"]] += float(w["probability"])
            pred_v[(w["township"], w["village"])] += float(w["probability"])
    ident_t: Counter = Counter()
    ident_v: Counter = Counter()
    if newest is not None:
        lo = fq.to_index(newest) - 3
        for h in households:
            since = h["monitor_since"]
            if h["monitor_category"] and not h["risk_eliminated"] and since and \
                    (since // 100) * 4 + (since % 100 - 1) // 3 >= lo:
                ident_t[h["township"]] += 1
                ident_v[(h["township"], h["village"])] += 1

    def ranked(pred: Counter, ident: Counter, label) -> list[dict]:
        keys = set(pred) | set(ident)
        out = [{"place": label(k), "predicted": round(pred.get(k, 0.0), 2), "identified": int(ident.get(k, 0))}
               for k in keys]
        out.sort(key=lambda d: (-(d["predicted"] + d["identified"]), d["place"]))
        return out[:top]

    return {"warning_quarter": latest, "ledger_quarter": newest,
            "townships": ranked(pred_t, ident_t, lambda k: k),
            "villages": ranked(pred_v, ident_v, lambda k: f"{k[0]}·{k[1]}")}


# --------------------------------------------------------------------------------------- charts


def _svg(fig) -> bytes:
    from matplotlib.backends.backend_svg import FigureCanvasSVG

    FigureCanvasSVG(fig)
    buf = io.BytesIO()
    # no metadata block (its RDF namespaces are the only URLs matplotlib would write)
    fig.savefig(buf, format="svg", bbox_inches="tight",
                metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    return buf.getvalue()


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    from fangpin.plotting import setup_matplotlib

    setup_matplotlib()
    fig = Figure(figsize=(width, height), dpi=100)
    return fig, fig.add_subplot(1, 1, 1)


def _empty(ax, text: str = "暂无数据") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=12, color="#5f6b76", transform=ax.transAxes)
    ax.set_axis_off()


def _stacked_h(ax, labels: list[str], series: dict[str, list[float]], colours: dict[str, str], tag: str) -> None:
    left = [0.0] * len(labels)
    y = list(range(len(labels)))
    for name, vals in series.items():
        if not any(vals):
            continue
        bars = ax.barh(y, vals, left=left, color=colours.get(name, "#9e9e9e"), label=name, height=0.6)
        for i, b in enumerate(bars):
            b.set_gid(f"bar-{tag}-{i}")
        left = [a + b for a, b in zip(left, vals, strict=True)]
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), fontsize=9, frameon=False, ncols=3)


def chart_levels(fig_data: dict) -> bytes:
    rows = fig_data["townships"]
    fig, ax = _figure(6.4, 0.45 * max(len(rows), 2) + 1.2)
    if not rows:
        _empty(ax)
    else:
        _stacked_h(ax, [r["township"] for r in rows], {lv: [r[lv] for r in rows] for lv in LEVELS},
                   LEVEL_COLOURS, "level")
        ax.set_xlabel("预警户数")
    ax.set_title("各乡镇预警（按等级）", fontsize=11)
    return _svg(fig)


def chart_channels(fig_data: dict) -> bytes:
    rows = fig_data["townships"]
    fig, ax = _figure(6.4, 0.45 * max(len(rows), 2) + 1.4)
    if not rows:
        _empty(ax)
    else:
        _stacked_h(ax, [r["township"] for r in rows],
                   {ch: [r["by_origin"].get(ch, 0) for r in rows] for ch in fc.ORIGINS}, CHANNEL_COLOURS, "channel")
        ax.set_xlabel("预警户数（按生成预警的渠道）")
    ax.set_title("各乡镇预警（按渠道）", fontsize=11)
    return _svg(fig)


def chart_funnel(fig_data: dict) -> bytes:
    rows = fig_data["funnel"]
    fig, ax = _figure(6.4, 3.4)
    if not rows:
        _empty(ax)
    else:
        n = len(FUNNEL)
        width = 0.8 / n
        x = list(range(len(rows)))
        for k, stage in enumerate(FUNNEL):
            vals = [r[stage] for r in rows]
            bars = ax.bar([i - 0.4 + width * (k + 0.5) for i in x], vals, width=width, color=FUNNEL_COLOURS[k],
                          label=stage)
            for i, b in enumerate(bars):
                b.set_gid(f"bar-funnel-{k}-{i}")
        ax.set_xticks(x, [r["quarter"] for r in rows])
        ax.set_ylabel("户数")
        ax.spines[["top", "right"]].set_visible(False)
        ax.legend(fontsize=8, frameon=False, ncols=5, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    ax.set_title("各季度：线索 → 核实纳入 → 台账识别 → 帮扶计划 → 风险消除", fontsize=11)
    return _svg(fig)


def chart_concentration(fig_data: dict) -> bytes:
    from matplotlib.figure import Figure

    from fangpin.plotting import setup_matplotlib

    setup_matplotlib()
    conc = fig_data["concentration"]
    n = max(len(conc["townships"]), len(conc["villages"]), 2)
    fig = Figure(figsize=(6.4, 0.5 * n * 2 + 1.6), dpi=100)
    axes = fig.subplots(2, 1)
    for ax, key, title in ((axes[0], "townships", "乡镇"), (axes[1], "villages", "村")):
        rows = conc[key]
        if not rows:
            _empty(ax)
            ax.set_title(f"风险与识别集中的{title}", fontsize=11)
            continue
        y = list(range(len(rows)))
        b1 = ax.barh([i - 0.2 for i in y], [r["predicted"] for r in rows], height=0.4, color="#c62828",
                     label=f"预警户预测风险合计（{conc['warning_quarter'] or '—'}，预计识别户数）")
        b2 = ax.barh([i + 0.2 for i in y], [r["identified"] for r in rows], height=0.4, color="#1565c0",
                     label=f"近四个季度台账新识别户数（至 {conc['ledger_quarter'] or '—'}）")
        for i, b in enumerate(b1):
            b.set_gid(f"bar-conc-{key}-p-{i}")
        for i, b in enumerate(b2):
            b.set_gid(f"bar-conc-{key}-i-{i}")
        ax.set_yticks(y, [r["place"] for r in rows])
        ax.invert_yaxis()
        ax.spines[["top", "right"]].set_visible(False)
        ax.legend(fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncols=1)
        ax.set_title(f"风险与识别集中的{title}（前 {len(rows)} 个）", fontsize=11)
    fig.tight_layout()
    return _svg(fig)


CHARTS = {"levels": chart_levels, "channels": chart_channels, "funnel": chart_funnel,
          "concentration": chart_concentration}
