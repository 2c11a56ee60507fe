"""`fangpin score`: the quarterly batch (pipelines/score.py). Thin: parse, call, print.

Heavy imports happen inside the command body (starting the CLI loads nothing of this).
"""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("score")(score_command)


def score_command(
    quarter: str = typer.Option(None, "--quarter", "-q", help="YYYYQn (default: the latest quarter in the data)"),
    ledger: list[Path] = typer.Option(None, "--ledger", help="a new export: ledger files or folders (ingested to a "
                                      "temporary directory first); default: the ingested tables of params.paths"),
    events: list[Path] = typer.Option(None, "--events", help="department signal files or folders of the export"),
    workdir: Path = typer.Option(Path("."), "--workdir", "-w", help="working directory for every relative path"),
    params_file: Path = typer.Option(None, "--params", help="params.yaml (default ./params.yaml or FANGPIN_PARAMS)"),
    excel: bool = typer.Option(True, "--excel/--no-excel", help="write the township workbooks"),
) -> None:
    """按季度批量评分：预警写入预警库、Parquet 和各乡镇 Excel 清单 (score a quarter with @champion)."""
    from fangpin.config import load_params
    from fangpin.quarters import parse
    from pipelines.common import rooted
    from pipelines.score import score_export, score_quarter

    if quarter:
        try:
            parse(quarter)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--quarter") from None
    if events and not ledger:
        raise typer.BadParameter("--events needs --ledger (the export's ledger files)", param_hint="--events")
    p = rooted(load_params(params_file), workdir)
    kw = dict(quarter=quarter, root=workdir, write_excel=excel)
    res = score_export(p, list(ledger), list(events or []), **kw) if ledger else score_quarter(p, **kw)
    s = res.seconds
    typer.echo(f"{res.quarter} model v{res.model_version}: {res.households:,} in-scope households, "
               f"{res.warnings:,} warnings {res.by_level} ({res.rule_warnings:,} with rule hits), "
               f"{res.chunks} chunks, {s.get('total', 0):.1f}s "
               f"({res.households / max(s.get('total', 1e-9), 1e-9):,.0f} households/s)")
    wl = res.report.get("workload", {})
    if wl:
        typer.echo("levels: " + ", ".join(f"{k} {v['households']:,} ({v['share']:.2%})" for k, v in res.report["levels"].items())
                   + f"; warned {wl['warned_share']:.2%}; largest 红 list {wl['visits_per_township_max']} "
                   f"(capacity {wl['capacity_per_township']}); shortfall {wl['shortfall']} in "
                   f"{wl['townships_over_capacity']} of {wl['townships']} townships")
    typer.echo(f"tasks (保障缺口): {res.tasks:,} " + str(res.tasks_by_department))
    typer.echo(f"store: {res.store['inserted']} new, {res.store['updated']} updated, {res.store['removed']} removed")
    rb = res.readback
    if rb:
        typer.echo(f"read-back ({rb['export_quarter']}): {rb['warnings_matched']:,} warnings matched, "
                   f"{rb['closed_by_ledger']} closed by the ledger, {rb['conflicts']} conflicts, "
                   f"{rb['return_risk']} 返贫风险")
    if res.report_path:
        typer.echo(f"report: {res.report_path}")
    typer.echo(f"parquet: {res.warnings_parquet}")
    typer.echo(f"excel: {len(res.workbooks)} workbooks")
