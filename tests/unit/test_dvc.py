"""dvc.yaml tells the truth: every stage declares the project code its command runs and reads only
files a stage writes or the repository holds — so `dvc status` after a code change names exactly
the stages whose outputs are stale.

The code a command runs is derived, not listed: the `fangpin` entry point (fangpin/cli.py and
what it imports), the module that registers the command, and the import closure
(fangpin.codebase.import_closure: every import statement, including those inside functions) of the
command's function and of the module-level helpers it calls.
"""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest
import yaml

from fangpin.cli import COMMAND_MODULES
from fangpin.codebase import PACKAGES, import_closure, module_file

REPO = Path(__file__).resolve().parents[2]
CODE_DIRS = PACKAGES
DATA_FILES = {"models/measures.py": "models/measures.yaml"}  # package data a module reads


def _stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def _command_function(tree: ast.Module, command: str) -> ast.FunctionDef | None:
    """The function registered as ``command``: ``app.command("x")(fn)`` or ``@app.command("x")``."""
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Call):  # app.command("x")(fn)
            inner = node.func
            if (getattr(inner.func, "attr", None) == "command" and inner.args
                    and getattr(inner.args[0], "value", None) == command and node.args
                    and isinstance(node.args[0], ast.Name)):
                return funcs.get(node.args[0].id)
        if isinstance(node, ast.FunctionDef):
            for d in node.decorator_list:
                if (isinstance(d, ast.Call) and getattr(d.func, "attr", None) == "command" and d.args
                        and getattr(d.args[0], "value", None) == command):
                    return node
    return None


def _function_imports(fn: ast.FunctionDef, funcs: dict[str, ast.FunctionDef], seen: set[str]) -> set[str]:
    """Modules imported inside ``fn`` and inside the module-level functions it calls (transitively)."""
    out: set[str] = set()
    for node in ast.walk(fn):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in funcs \
                and node.func.id not in seen:
            seen.add(node.func.id)
            out |= _function_imports(funcs[node.func.id], funcs, seen)
    return out


def command_code(command: str) -> set[str]:
    """Repository-relative paths of the project files ``fangpin <command>`` runs."""
    for mod in COMMAND_MODULES:
        path = module_file(REPO, mod)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        fn = _command_function(tree, command)
        if fn is None:
            continue
        funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
        level: set[str] = set()  # the module's own top-level imports (run when the CLI starts)
        for n in tree.body:
            if isinstance(n, ast.Import):
                level.update(a.name for a in n.names)
            elif isinstance(n, ast.ImportFrom) and n.module and not n.level:
                level |= {n.module, *(f"{n.module}.{a.name}" for a in n.names)}
        package = mod.rsplit(".", 1)[0]
        start = ["fangpin.cli", package, *sorted(level), *sorted(_function_imports(fn, funcs, {fn.name}))]
        files = import_closure(REPO, start) + [path]
        rel = {str(f.resolve().relative_to(REPO)) for f in files}
        return rel | {DATA_FILES[f] for f in rel if f in DATA_FILES}
    raise AssertionError(f"no command module registers `fangpin {command}`")


def _covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


def _deps(stage: dict) -> list[str]:
    return [d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])]


def _outs(stage: dict) -> list[str]:
    out = []
    for k in ("outs", "metrics", "plots"):
        out += [o if isinstance(o, str) else next(iter(o)) for o in stage.get(k, [])]
    return out


@pytest.mark.parametrize("name", sorted(_stages()))
def test_every_stage_declares_the_code_its_command_runs(name):
    stage = _stages()[name]
    parts = stage["cmd"].split()
    assert parts[0] == "fangpin", stage["cmd"]
    code = command_code(parts[1])
    deps = _deps(stage)
    missing = sorted(f for f in code if not _covered(f, deps))
    assert not missing, f"stage {name}: dvc.yaml does not declare {missing}"
    # and declares no project code the command does not run (it would rerun for nothing)
    extra = sorted(d for d in deps if d.split("/")[0] in CODE_DIRS and not any(_covered(f, [d]) for f in code))
    assert not extra, f"stage {name}: declares code its command does not run: {extra}"


def test_every_file_a_stage_reads_is_written_by_a_stage_or_kept_in_the_repository():
    stages = _stages()
    written = {o for s in stages.values() for o in _outs(s)}
    tracked = set(subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                                 check=True).stdout.split())
    for name, stage in stages.items():
        for d in _deps(stage):
            if d.split("/")[0] in CODE_DIRS:
                continue
            assert d in written or any(t == d or t.startswith(d + "/") for t in tracked), (
                f"stage {name} reads {d}, which no stage writes and the repository does not hold")


# What the code a stage runs reads, by the names it uses (outside pipelines/common.py, which only
# defines the readers): the canonical tables and the training record.
READERS = {"load_frames": "data/ingested", "ingested_dir": "data/ingested",
           "read_train_info": "data/model/train_info.json", "train_info_path": "data/model/train_info.json"}


def _reads(files: set[str]) -> set[str]:
    out = set()
    for f in files:
        if not f.endswith(".py") or f == "pipelines/common.py":
            continue
        for node in ast.walk(ast.parse((REPO / f).read_text(encoding="utf-8"))):
            # params.paths.ingested_dir, or a call of a reader: uses, not definitions
            name = node.attr if isinstance(node, ast.Attribute) else (
                node.func.id if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) else None)
            if name in READERS:
                out.add(READERS[name])
    return out


@pytest.mark.parametrize("name", sorted(_stages()))
def test_every_stage_declares_the_pipeline_files_its_code_reads(name):
    stage = _stages()[name]
    reads = _reads(command_code(stage["cmd"].split()[1])) - set(_outs(stage))
    missing = sorted(r for r in reads if not _covered(r, _deps(stage)))
    assert not missing, f"stage {name} reads {missing} without declaring it"


def test_the_derivation_finds_what_a_command_runs():
    """The check can fail: the closure of `fangpin score` reaches the store, the model's code and
    the Excel writer, and the evaluate command's does not reach the batch scorer."""
    score = command_code("score")
    assert {"pipelines/score.py", "fangpin/store/history.py", "models/pyfunc.py", "models/features.py",
            "fangpin/excel.py", "models/measures.yaml"} <= score
    assert "pipelines/score.py" not in command_code("evaluate")
    assert not _covered("models/features.py", ["models/rules.py", "pipelines"])
