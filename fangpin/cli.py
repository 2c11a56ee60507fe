"""The `fangpin` console command.

Each area registers its own commands from its own module (``register(app)``), so this file only
lists the modules. Command modules import their heavy dependencies inside the command bodies:
starting the CLI does no work beyond parsing arguments.
"""

from __future__ import annotations

import importlib

import typer

from fangpin.logs import setup_logging

app = typer.Typer(
    name="fangpin",
    help="防贫 fangpin: risk of households being newly identified for monitoring (防止返贫动态监测).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold personal data
)

COMMAND_MODULES = (
    "fangpin.synth.cli",
    "fangpin.ingest.cli",
    "pipelines.cli",
    "pipelines.score_cli",
    "serving.cli",
    "pipelines.retrain_cli",
)


@app.callback()
def _main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging"),
    scheduler: str = typer.Option(None, "--scheduler", metavar="tcp://HOST:PORT",
                                  help="run the tasks on this Dask cluster (sets DASK_SCHEDULER_ADDRESS; "
                                       "default: that variable, else params cluster.scheduler, else this machine)"),
) -> None:
    setup_logging(verbose)
    if scheduler:
        import os

        from fangpin.cluster import ENV

        os.environ[ENV] = scheduler


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)
