"""`fangpin ingest`: county exports → canonical tables. Heavy imports happen inside the command."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest_command)


def ingest_command(
    ledger: list[Path] = typer.Option(..., "--ledger", help="台账文件或文件夹（可多个；文件夹中可同时放部门预警数据、监测线.csv、oracle.csv）"),
    events: list[Path] = typer.Option(None, "--events", help="部门预警数据文件或文件夹（可选，可多个）"),
    out: Path = typer.Option(..., "--out", help="输出目录"),
    params_file: Path = typer.Option(None, "--params", help="params.yaml（默认 ./params.yaml 或 FANGPIN_PARAMS）"),
    append: bool = typer.Option(False, "--append", help="追加到已有输出目录（同一季度会被替换）"),
) -> None:
    """Ingest ledger exports (CSV/xlsx, any contract encoding) into canonical Parquet tables."""
    from fangpin.config import load_params
    from fangpin.ingest.core import OUTPUT_FILES, ingest

    params = load_params(params_file)
    report = ingest(ledger, events or [], out, params, append=append, show_progress=True)
    typer.echo(report.summary())
    typer.echo(f"输出目录：{out}（报告：{OUTPUT_FILES['report']}，隔离行：{OUTPUT_FILES['quarantine']}）")
    if not report.ok:
        raise typer.Exit(1)
