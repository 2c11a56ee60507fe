"""`fangpin readback` and `fangpin digest`: the loop after a warning (pipelines/readback.py,
pipelines/digest.py). Thin: parse, call, print; heavy imports inside the command bodies."""

from __future__ import annotations

from pathlib import Path

import typer


def _now(today: str | None):
    """Noon (China time) of ``--today``, else now: the clock every deadline is read against."""
    from datetime import UTC, date, datetime, time

    from fangpin.warnings import LOCAL_TZ

    if not today:
        return datetime.now(UTC)
    try:
        d = date.fromisoformat(today)
    except ValueError:
        raise typer.BadParameter("YYYY-MM-DD", param_hint="--today") from None
    return datetime.combine(d, time(12), LOCAL_TZ).astimezone(UTC)


def register(app: typer.Typer) -> None:
    @app.command("readback")
    def readback_command(
        ledger: list[Path] = typer.Option(None, "--ledger", help="a new export (ledger files or folders), ingested "
                                          "to a temporary directory first; default: the ingested tables of params.paths"),
        events: list[Path] = typer.Option(None, "--events", help="department signal files or folders of the export"),
        workdir: Path = typer.Option(Path("."), "--workdir", "-w", help="working directory for every relative path"),
        params_file: Path = typer.Option(None, "--params", help="params.yaml (default ./params.yaml or FANGPIN_PARAMS)"),
        today: str = typer.Option(None, "--today", metavar="YYYY-MM-DD", help="the day deadlines start from (default: today)"),
    ) -> None:
        """台账回读：按新导出的台账更新预警的识别、帮扶、消除情况 (read the export back into the warnings)."""
        from fangpin.config import load_params
        from fangpin.store import Store
        from pipelines.common import rooted
        from pipelines.readback import read_back
        from pipelines.score import history_and, ingested_export

        if events and not ledger:
            raise typer.BadParameter("--events needs --ledger (the export's ledger files)", param_hint="--events")
        p = rooted(load_params(params_file), workdir)
        now = _now(today)
        store = Store.from_params(p)
        try:
            if ledger:
                with ingested_export(p, list(ledger), list(events or [])) as tmp:
                    res = read_back(store, history_and(p, tmp), p, now=now)
            else:
                res = read_back(store, Path(p.paths.ingested_dir), p, now=now)
        finally:
            store.dispose()
        typer.echo(f"read-back of {res['export_quarter']}: {res['warnings_matched']:,} warnings matched, "
                   f"{res['loops_changed']:,} changed; {res['closed_by_ledger']} closed by the ledger (identified), "
                   f"{res['conflicts']} conflicts with feedback (ledger wins), {res['identified']} identified, "
                   f"{res['eliminated']} eliminated, {res['return_risk']} 返贫风险; "
                   f"{res['households_state']:,} monitored households' state kept")

    @app.command("digest")
    def digest_command(
        workdir: Path = typer.Option(Path("."), "--workdir", "-w", help="working directory for every relative path"),
        params_file: Path = typer.Option(None, "--params", help="params.yaml (default ./params.yaml or FANGPIN_PARAMS)"),
        today: str = typer.Option(None, "--today", metavar="YYYY-MM-DD", help="the day of the digest (default: today)"),
        out: Path = typer.Option(None, "--out", help="output folder (default: params warnings.digest_dir)"),
        county: str = typer.Option(None, "--county", help="one county only"),
    ) -> None:
        """每周逾期督办表：每个乡镇一个 Excel（逾期的入户核实、认定、帮扶计划和保障缺口任务）."""
        from fangpin.config import load_params
        from fangpin.store import Store
        from fangpin.warnings import local_date
        from pipelines.common import rooted
        from pipelines.digest import write_digest

        p = rooted(load_params(params_file), workdir)
        store = Store.from_params(p)
        try:
            d = Path(p.warnings.digest_dir)
            out_dir = out or (d if d.is_absolute() else workdir.resolve() / d)
            res = write_digest(store, p, today=local_date(_now(today)), out_dir=out_dir, county=county)
        finally:
            store.dispose()
        steps = ", ".join(f"{k} {v}" for k, v in res["by_step"].items())
        typer.echo(f"digest {res['week']} ({res['today']}): {res['overdue_warnings']} overdue warnings ({steps}), "
                   f"{res['overdue_tasks']} overdue tasks in {res['townships']} townships; "
                   f"{len(res['workbooks'])} workbooks")
        for path in res["workbooks"]:
            typer.echo(f"  {path}")
