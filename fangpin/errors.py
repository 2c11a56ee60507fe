"""User errors: problems the user can fix, each stated as one Chinese sentence and its English twin.

The library raises :class:`UserError` (or a subclass) wherever the cause is the user's input or
working directory — too short a ledger, no positives in a split, a year without a monitoring line,
no @champion yet, a working directory without ingest output … — and says what to do about it. The
`fangpin` CLI has one handler for them (fangpin/cli.py): it prints the two sentences, no traceback,
and exits with code 2; ``fangpin --debug <command>`` shows the traceback instead.

Subclasses may also derive from the built-in exception the code raised before (``ValueError``,
``FileNotFoundError``, ``LookupError``, ``KeyError``), so library callers that catch those keep working.
"""

from __future__ import annotations

EXIT_CODE = 2


class UserError(Exception):
    """A mistake the user can fix: ``zh`` (one Chinese sentence) and ``en`` (its English twin),
    both naming what to fix."""

    exit_code = EXIT_CODE

    def __init__(self, zh: str, en: str):
        super().__init__(f"{zh}\n{en}")
        self.zh = zh
        self.en = en

    def __str__(self) -> str:
        return f"{self.zh}\n{self.en}"


class MissingInput(UserError, FileNotFoundError):
    """An input the command needs is not in the working directory (ingest output, train_info …)."""


class NotEnoughData(UserError, ValueError):
    """The ledger is too short, or a split has no positives, for an honest model."""


class NoChampion(UserError, LookupError):
    """No registered version holds the @champion alias (or nothing to roll back to)."""


class ParamsError(UserError, ValueError):
    """params.yaml cannot be read or fails validation."""


def params_error(exc: Exception, path=None) -> ParamsError:
    """A pydantic validation error of params.yaml as a user error (the CLI's handler uses it, so
    library callers of :func:`fangpin.config.load_params` still get pydantic's own error)."""
    where = f"{path}" if path else "params.yaml"
    errors = getattr(exc, "errors", None)
    detail = ""
    if callable(errors):
        try:
            first = errors()[0]
            detail = f"{'.'.join(str(x) for x in first.get('loc', ()))}: {first.get('msg', '')}"
        except Exception:  # noqa: BLE001 - only for a nicer message
            detail = ""
    detail = detail or str(exc).splitlines()[0]
    return ParamsError(f"参数文件 {where} 有误（{detail}），请按 params.yaml 的说明修改后重试。",
                       f"The parameter file {where} is invalid ({detail}): correct it as params.yaml documents and "
                       f"run again.")


def no_ingest_output(path) -> MissingInput:
    """The working directory has no ingested tables."""
    return MissingInput(
        f"{path} 中没有导入后的台账数据，请先运行 `fangpin ingest`（或 `fangpin run`），或用 --workdir 指向正确的工作目录。",
        f"{path} holds no ingested ledger tables: run `fangpin ingest` (or `fangpin run`) first, or point --workdir "
        f"at the right working directory.")


def no_champion(name: str) -> NoChampion:
    """No registered version holds @champion."""
    return NoChampion(
        f"模型 {name} 还没有 @champion 版本，请先运行 `fangpin train` 和 `fangpin promote`（或 `fangpin run`）。",
        f"Model {name} has no @champion version yet: run `fangpin train` and `fangpin promote` (or `fangpin run`) "
        f"first.")


def ingest_failed(report_path, summary: str = "") -> UserError:
    """Ingest refused a file (the report names file, row, column and reason)."""
    more = f"（{summary}）" if summary else ""
    more_en = f" ({summary})" if summary else ""
    return UserError(
        f"台账导入失败{more}，请按 {report_path} 中列出的文件、行、列和原因修正导出文件后重试。",
        f"Ingest failed{more_en}: correct the exported files as {report_path} lists (file, row, column, reason) and "
        f"run again.")
