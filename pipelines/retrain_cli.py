"""`fangpin retrain`: the analyst's quarterly command (pipelines/retrain.py). Thin: parse, call, print.

Heavy imports happen inside the command body (starting the CLI loads nothing of this).
"""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("retrain")(retrain_command)


def retrain_command(
    ledger: list[Path] = typer.Option(..., "--ledger", help="the new quarter's ledger export (files or folders)"),
    events: list[Path] = typer.Option(None, "--events", help="department signal files of the new period (optional)"),
    feedback: Path = typer.Option(None, "--feedback", help="verification outcomes exported with the ledger "
                                  "(CSV; default: read the warning store)"),
    workdir: Path = typer.Option(Path("."), "--workdir", "-w", help="working directory of the demo / pipeline"),
    params_file: Path = typer.Option(None, "--params", help="params.yaml (default ./params.yaml or FANGPIN_PARAMS)"),
    force: bool = typer.Option(False, "--force", help="retrain even when the data did not change"),
    reload_url: str = typer.Option(None, "--reload-url", help="running API to reload when promoted, e.g. "
                                   "http://127.0.0.1:8000 (admin key from FANGPIN_ADMIN_KEY)"),
) -> None:
    """Append a new quarter, retrain, compare with @champion on the newest labelled quarters, gate,
    and report drift, fairness, cadres' feedback and the model card."""
    import os

    from rich.console import Console

    from fangpin.config import load_params
    from fangpin.progress import progress
    from pipelines.common import rooted
    from pipelines.retrain import RetrainError, reload_api, retrain

    console = Console()
    params = rooted(load_params(params_file), workdir)
    with progress(transient=True) as prog:
        task = prog.add_task("retrain", total=9)

        def step(desc: str) -> None:
            prog.update(task, description=desc)
            prog.advance(task)

        v = retrain(ledger, events or [], params, feedback_csv=feedback, force=force, step=step)
    print_verdict(v, console)
    if v.get("promoted") and not v.get("unchanged"):
        if reload_url:
            key = os.environ.get("FANGPIN_ADMIN_KEY")
            if not key:
                raise RetrainError("--reload-url 需要管理员密钥：请在环境变量 FANGPIN_ADMIN_KEY 中提供。",
                                   "--reload-url needs an admin API key: provide it in FANGPIN_ADMIN_KEY.")
            try:
                r = reload_api(reload_url, key)
            except OSError as exc:
                raise RetrainError(f"无法连接运行中的服务 {reload_url}，请检查地址和服务是否在运行。",
                                   f"Cannot reach the running API at {reload_url} ({exc}): check the address and that "
                                   f"the service runs.") from exc
            console.print(f"API 已切换 reloaded: v{r.get('previous_version')} → v{r.get('model_version')}")
        else:
            console.print("API: 运行中的服务请调用 POST /v1/admin/reload（管理员密钥）切换到新模型 / "
                          "reload a running API with POST /v1/admin/reload")


def _pct(v) -> str:
    return "—" if v is None else f"{v:.1%}"


def _f(v) -> str:
    return "—" if v is None else f"{v:.4f}"


def print_verdict(v: dict, console) -> None:
    from rich.panel import Panel
    from rich.table import Table

    if v.get("unchanged"):
        console.print(Panel(
            f"数据未变化：{', '.join(v['appended']['new_quarters'])} 已在历史中，未重新训练（--force 可强制）。\n"
            f"No change: the export was already in the history; nothing retrained. Last verdict "
            f"({v['new_quarter']}): {v['decision']} v{v['challenger']}, @champion v{v['champion_after']}.",
            title="fangpin retrain"))
        return
    lab = v["labels_resolved"]
    head = (f"新季度 new quarter [bold]{v['new_quarter']}[/bold]: {v['appended']['rows_accepted']:,} rows accepted, "
            f"{v['appended']['rows_quarantined']:,} quarantined. 新增标签 newly labelled: "
            f"{', '.join(lab['quarters']) or '—'} ({lab['rows']:,} household-quarters, {lab['positives']:,} positive).")
    t = Table(title=f"测试季度 test quarters {', '.join(v['test_quarters'])}", show_lines=False)
    t.add_column("")
    t.add_column(f"挑战者 challenger v{v['challenger']}", justify="right")
    t.add_column(f"冠军 champion v{v['champion_before'] or '—'}", justify="right")
    t.add_column("规则 rules", justify="right")
    ch, cp, ru = v["challenger_metrics"], v["champion_metrics"] or {}, v["rules_metrics"]
    t.add_row("AUC", _f(ch.get("auc")), _f(cp.get("auc")), _f(ru.get("auc")))
    t.add_row("召回率@规则工作量 recall@k", _pct(ch.get("recall_at_rules_workload")),
              _pct(cp.get("recall_at_rules_workload")), _pct(ru.get("recall_at_rules_workload")))
    t.add_row("校准误差 calibration error", _f(ch.get("calibration_error")), _f(cp.get("calibration_error")), "—")
    decision = ("[bold green]晋升 PROMOTE[/bold green]" if v["promoted"] else "[bold yellow]保持 KEEP[/bold yellow]")
    lines = [head, "", f"结论 verdict: {decision} — @champion v{v['champion_after']}"]
    lines += [f"  {r}" for r in v["reasons"]]
    d = v["drift"]
    c = d["counts"]
    lines += ["", f"漂移 drift (PSI vs training window): 稳定 {c['stable']} · 关注 {c['watch']} · 告警 {c['alarm']} · "
                  f"已知变化 {c['known']}"]
    for a in d["alarms"][:5]:
        lines.append(f"  告警 alarm: {a['column']} {a['label']} PSI {a['psi']:.3f}")
    for k in d["known"][:3]:
        lines.append(f"  已知变化 known: {k['column']} PSI {k['psi']:.3f} — {k['note']}")
    fl = v["fairness"]["flags"]
    o = v["fairness"]["overall"]
    lines += ["", f"公平性 fairness (combined warnings): recall {_pct(o['recall'])}, precision {_pct(o['precision'])}, "
                  f"FPR {_pct(o['fpr'])}; {len(fl)} disparity flag(s)"]
    lines += [f"  ⚠ {f['text_zh']}" for f in fl[:6]]
    fb = v["feedback"]
    if fb.get("available"):
        lines += ["", f"核实反馈 feedback: {fb['warnings']:,} warnings — 纳入监测 confirmed {fb['confirmed']:,}, "
                      f"排除 excluded {fb['excluded']:,}, 待核实 open {fb['open']:,}"]
        lines += [f"  {lvl}: confirmed {x['confirmed']}, excluded {x['excluded']}, open {x['open']}"
                  for lvl, x in fb["by_level"].items()]
        lines += [f"  排除原因 reason「{r}」: {n}" for r, n in list(fb["excluded_by_reason"].items())[:6]]
    else:
        lines += ["", "核实反馈 feedback: 无预警库 no warning store yet"]
    lines += ["", f"报告 reports: {v['reports']['dir']}"]
    console.print(Panel("\n".join(lines), title="fangpin retrain"))
    console.print(t)
