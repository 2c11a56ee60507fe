"""Pipeline commands: train, evaluate, promote, rollback, run. Thin: parse, call, print.

Heavy imports happen inside the command bodies (starting the CLI loads nothing of this).
"""

from __future__ import annotations

from pathlib import Path

import typer

WORKDIR = typer.Option(Path("."), "--workdir", "-w", help="working directory for every relative path of params.yaml")
PARAMS = typer.Option(None, "--params", help="params.yaml (default ./params.yaml or FANGPIN_PARAMS)")


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
    app.command("evaluate")(evaluate_command)
    app.command("promote")(promote_command)
    app.command("rollback")(rollback_command)
    app.command("run")(run_command)


def _params(params_file: Path | None, workdir: Path):
    from fangpin.config import load_params
    from models.train import quiet_openmp

    quiet_openmp()
    from pipelines.common import rooted

    return rooted(load_params(params_file), workdir)


def train_command(workdir: Path = WORKDIR, params_file: Path = PARAMS) -> None:
    """Labels + features from the ingested tables, train and calibrate, log and register the model."""
    from pipelines.train import train

    info = train(_params(params_file, workdir))
    typer.echo(f"registered {info['registered_name']} version {info['version']} (run {info['run_id']})")


def evaluate_command(workdir: Path = WORKDIR, params_file: Path = PARAMS) -> None:
    """Rules vs model vs combined (vs oracle) on the test quarters; writes reports/metrics.json and the report."""
    from pipelines.evaluate import evaluate

    p = _params(params_file, workdir)
    m = evaluate(p)
    s = m["systems"]
    typer.echo(f"test {','.join(m['test_quarters'])}: n={m['n_test']} positives={m['positives']} "
               f"rules workload k={m['rules_workload']}")
    for name, v in s.items():
        typer.echo(f"  {name:9s} AUC {v['auc']:.4f}  recall@k {v['recall_at_rules_workload']:.3f}  "
                   f"recall@2k {v['recall_at_2x_rules_workload']:.3f}  recall@5% {v['recall_at_5pct']:.3f}")
    typer.echo(f"report: {Path(p.paths.reports_dir) / 'report.md'}")


def promote_command(workdir: Path = WORKDIR, params_file: Path = PARAMS,
                    version: str = typer.Option(None, "--version", help="challenger version (default: last trained)")) -> None:
    """Move @champion to the challenger if it is not worse than the current champion."""
    from pipelines.promote import promote

    d = promote(_params(params_file, workdir), version)
    typer.echo(("promoted" if d["promoted"] else "not promoted") + f": v{d['challenger']} "
               f"(@champion now v{d['champion_after']})")
    for r in d["reasons"]:
        typer.echo(f"  {r}")


def rollback_command(workdir: Path = WORKDIR, params_file: Path = PARAMS) -> None:
    """Move @champion back to the previous champion version."""
    from pipelines.promote import rollback

    d = rollback(_params(params_file, workdir))
    typer.echo(f"@champion: v{d['rolled_back_from']} → v{d['champion_after']}")


def run_command(
    ledger: list[Path] = typer.Option(..., "--ledger", help="ledger files or folders (oracle.csv / 监测线.csv beside them are picked up)"),
    events: list[Path] = typer.Option(None, "--events", help="department signal files or folders (optional)"),
    workdir: Path = typer.Option(..., "--workdir", "-w", help="working directory for all outputs"),
    params_file: Path = PARAMS,
) -> None:
    """Ingest, train, evaluate, register and promote on any ledger in the contract's format."""
    from fangpin.config import load_params
    from models.train import quiet_openmp
    from pipelines.run import run

    quiet_openmp()
    res = run(ledger, events or [], workdir, load_params(params_file))
    m = res["metrics"]["systems"]
    typer.echo(f"model v{res['train']['version']}: AUC {m['model']['auc']:.4f}; recall@k rules "
               f"{m['rules']['recall_at_rules_workload']:.3f} model {m['model']['recall_at_rules_workload']:.3f}; "
               f"promoted: {res['promotion']['promoted']}")
    typer.echo(f"metrics: {Path(workdir) / load_params(params_file).paths.reports_dir / 'metrics.json'}")
