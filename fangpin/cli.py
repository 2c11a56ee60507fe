"""The `fangpin` console command.

Each area registers its own commands from its own module (``register(app)``), so this file only
lists the modules. Command modules import their heavy dependencies inside the command bodies:
starting the CLI does no work beyond parsing arguments.
"""

from __future__ import annotations

import importlib
import os

import typer
from typer.core import TyperGroup

from fangpin.logs import setup_logging

_DEBUG = "fangpin.debug"


class _Group(TyperGroup):
    """The one handler of user errors (fangpin/errors.py): every command's :class:`UserError`
    prints its Chinese sentence and its English twin, without a traceback, and exits with code 2.
    ``fangpin --debug <command>`` (or FANGPIN_DEBUG=1) lets the error through with its traceback."""

    def invoke(self, ctx):
        from pydantic import ValidationError

        from fangpin.errors import UserError, params_error

        try:
            return super().invoke(ctx)
        except (UserError, ValidationError) as exc:
            if ctx.meta.get(_DEBUG) or os.environ.get("FANGPIN_DEBUG") == "1":
                raise
            err = exc if isinstance(exc, UserError) else params_error(exc)
            typer.echo(f"错误：{err.zh}", err=True)
            typer.echo(f"Error: {err.en}", err=True)
            raise typer.Exit(err.exit_code) from None


app = typer.Typer(
    name="fangpin",
    help="防贫 fangpin: risk of households being newly identified for monitoring (防止返贫动态监测).",
    no_args_is_help=True,
    cls=_Group,
    pretty_exceptions_show_locals=False,  # locals may hold personal data
)

COMMAND_MODULES = (
    "fangpin.synth.cli",
    "fangpin.ingest.cli",
    "fangpin.households",
    "pipelines.cli",
    "pipelines.score_cli",
    "serving.cli",
    "pipelines.retrain_cli",
    "pipelines.loop_cli",
)


@app.callback()
def _main(ctx: typer.Context,
          verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging"),
          debug: bool = typer.Option(False, "--debug", help="show the traceback of an error instead of "
                                     "its two sentences (显示错误的详细信息)"),
          scheduler: str = typer.Option(None, "--scheduler", metavar="tcp://HOST:PORT",
                                        help="run the tasks on this Dask cluster (sets DASK_SCHEDULER_ADDRESS; "
                                             "default: that variable, else params cluster.scheduler, else this "
                                             "machine)")) -> None:
    ctx.meta[_DEBUG] = debug
    setup_logging(verbose)
    if scheduler:
        import os

        from fangpin.cluster import ENV

        os.environ[ENV] = scheduler


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)
