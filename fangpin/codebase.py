"""The project's own code as files: which project modules a module imports (its import closure).

Used where code must be tracked as data: the model logged with the code it runs
(models.registry) and the check that every DVC stage declares the code its command runs
(tests/unit/test_dvc.py). Imports are read with :mod:`ast` (every ``import`` statement, including
those inside functions), never executed.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGES = ("fangpin", "models", "pipelines", "serving")  # the project's top-level packages


def module_file(root: Path, module: str) -> Path | None:
    """The file of a project module (``a.b`` → ``a/b.py`` or ``a/b/__init__.py``), or None."""
    if module.split(".")[0] not in PACKAGES:
        return None
    base = Path(root).joinpath(*module.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def _module_of(root: Path, path: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path: Path, module: str) -> set[str]:
    """Every module name an ``import`` statement of ``path`` names (with ``from a import b``
    also ``a.b``, which is a module when ``b`` is one); relative imports resolved against
    ``module``."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"), filename=str(path))
    is_pkg = Path(path).name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".")
                keep = len(parts) - node.level + (1 if is_pkg else 0)
                base = ".".join(parts[:keep] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names if a.name != "*")
    return out


def import_closure(root: Path, modules: list[str] | tuple[str, ...]) -> list[Path]:
    """The project files the given modules run: the modules themselves, every project module
    they import (transitively), and the ``__init__.py`` of every package on the way. Sorted."""
    root = Path(root).resolve()
    seen: dict[str, Path] = {}
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        f = module_file(root, name)
        if f is None:
            continue
        seen[name] = f
        parts = name.split(".")
        todo += [".".join(parts[:k]) for k in range(1, len(parts))]  # parent packages run first
        todo += sorted(imported_modules(f, name))
    return sorted(set(seen.values()))


def module_names(root: Path, files: list[Path]) -> list[str]:
    root = Path(root).resolve()
    return [_module_of(root, Path(f).resolve()) for f in files]
