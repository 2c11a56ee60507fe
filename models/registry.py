"""The MLflow registry: models logged with the code they run, registered, and loaded back.

Code travels with the model. MLflow's ``code_paths`` copies code into the logged model and, on
``mlflow.pyfunc.load_model``, puts that copy first on ``sys.path`` — but it does nothing about
modules already imported (mlflow.utils.model_utils._add_code_to_system_path prepends the path
and nothing more), and a process that scores always has ``models`` and ``fangpin`` imported
already, so the copy would silently never run. So :func:`log_model` copies the model's import
closure (fangpin.codebase, from ``models.pyfunc``) into a package of its own,
``fangpin_model_<hash of the code>``, with the project's imports in those files rewritten to point
into it, and logs THAT package's ``ReturnRiskPyfunc`` with ``code_paths``: loading a registered
version anywhere (this process, a batch worker, ``mlflow models serve``) imports its own copy
under its own name and scores exactly as when it was registered, beside whatever code is installed.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import os
import re
import shutil
import sys
from pathlib import Path

from fangpin.codebase import PACKAGES, import_closure
from fangpin.config import Params

ROOT = Path(__file__).resolve().parents[1]  # the project's source tree (models/ and fangpin/ inside)
MODEL_MODULE = "models.pyfunc"
PACKAGE_PREFIX = "fangpin_model_"
DATA_FILES = ("models/measures.yaml",)  # package data the copied modules refer to
_IMPORT = re.compile(r"^(\s*)(from|import)(\s+)(" + "|".join(PACKAGES) + r")\b")


# ------------------------------------------------------------------------------ code with the model


def model_code(root: Path = ROOT) -> tuple[list[Path], str]:
    """The files the model's code consists of and their hash (contents and relative paths)."""
    files = import_closure(root, [MODEL_MODULE])
    files += [root / f for f in DATA_FILES if (root / f).is_file()]
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    return sorted(files), h.hexdigest()


def _rewrite(source: str, package: str, path: Path) -> str:
    """``source`` with every import of a project package pointed into ``package``."""
    lines = source.splitlines(keepends=True)
    targets = set()
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] in PACKAGES:
            targets.add(node.lineno - 1)
        elif isinstance(node, ast.Import) and any(a.name.split(".")[0] in PACKAGES for a in node.names):
            if any(a.asname is None and "." in a.name for a in node.names):
                raise ValueError(f"{path}:{node.lineno}: `import a.b` without `as` cannot be relocated")
            targets.add(node.lineno - 1)
    for i in targets:
        new, n = _IMPORT.subn(rf"\1\2\3{package}.\4", lines[i], count=1)
        if n != 1:
            raise ValueError(f"{path}:{i + 1}: cannot relocate the import {lines[i].strip()!r}")
        lines[i] = new
    return "".join(lines)


def package_code(dest: Path, root: Path = ROOT) -> tuple[Path, str]:
    """Write the model's code into ``dest/<package>/`` as package ``fangpin_model_<hash>`` (see
    the module doc); returns the package directory and its name."""
    files, digest = model_code(root)
    package = PACKAGE_PREFIX + digest[:16]
    pkg_dir = Path(dest) / package
    if pkg_dir.exists():
        shutil.rmtree(pkg_dir)
    pkg_dir.mkdir(parents=True)
    (pkg_dir / "__init__.py").write_text(f'"""fangpin model code {digest} (models.registry)."""\n',
                                         encoding="utf-8")
    for f in files:
        out = pkg_dir / f.relative_to(root)
        out.parent.mkdir(parents=True, exist_ok=True)
        if f.suffix == ".py":
            out.write_text(_rewrite(f.read_text(encoding="utf-8"), package, f), encoding="utf-8")
        else:
            shutil.copy2(f, out)
    return pkg_dir, package


def import_model_module(code_dir: Path, package: str):
    """``<package>.models.pyfunc`` from ``code_dir`` (the directory holding the package)."""
    path = str(Path(code_dir).resolve())
    if path not in sys.path:
        sys.path.insert(0, path)
    return importlib.import_module(f"{package}.{MODEL_MODULE}")


def code_path(model) -> str | None:
    """The directory to put on ``sys.path`` (e.g. in worker processes) so that ``model`` — a
    loaded registered version — can be unpickled there; None for a model of the installed code."""
    top = type(model).__module__.split(".")[0]
    if not top.startswith(PACKAGE_PREFIX):
        return None
    return str(Path(sys.modules[top].__file__).resolve().parents[1])


def input_example(frames, qidx: int, n: int = 2) -> list[dict]:
    """Up to ``n`` households of quarter ``qidx`` of canonical tables as the pyfunc takes them (the
    logged model's input example): their snapshot records without the join keys."""
    from models.features import snapshot_records

    hh = frames.households
    ids = hh.loc[hh["quarter_idx"] == qidx, "household_id"].head(n).tolist()
    recs = snapshot_records(frames, qidx, ids)
    for r in recs:
        r["members"] = [{k: v for k, v in m.items() if k not in ("person_key", "id_masked")} for m in r["members"]]
        r["events"] = [{k: v for k, v in e.items() if k != "person_key"} for e in r["events"]]
    return recs


# ------------------------------------------------------------------------------ MLflow plumbing


def tracking_uri(params: Params, root: Path | None = None) -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    if params.model.tracking_uri:
        return params.model.tracking_uri
    state = (Path(root or ".") / params.paths.state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{state}/mlflow.db"


def setup_mlflow(params: Params, root: Path | None = None) -> str:
    """Point MLflow at the configured store and make sure the experiment exists (artifacts under
    <state_dir>/mlartifacts for the embedded store). Returns the experiment id."""
    import mlflow

    uri = tracking_uri(params, root)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    exp = mlflow.get_experiment_by_name(params.model.experiment)
    if exp is not None:
        return exp.experiment_id
    artifact_location = None
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        artifact_location = (db.parent / "mlartifacts").resolve().as_uri()
    return mlflow.create_experiment(params.model.experiment, artifact_location=artifact_location)


def load_version(params: Params, version: str | int, root: Path | None = None):
    """The registered version's own RiskModel (its own code; artifacts downloaded once)."""
    import mlflow

    setup_mlflow(params, root)
    pm = mlflow.pyfunc.load_model(f"models:/{params.model.registered_name}/{version}")
    model = pm.unwrap_python_model().model
    model.model_version = str(version)
    return model


def champion_version(params: Params, root: Path | None = None, alias: str = "champion") -> str | None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    setup_mlflow(params, root)
    try:
        return str(MlflowClient().get_model_version_by_alias(params.model.registered_name, alias).version)
    except MlflowException:
        return None


def load_champion(params: Params, root: Path | None = None, alias: str = "champion"):
    """The RiskModel behind ``models:/<registered_name>@champion`` (batch scoring and the API)."""
    v = champion_version(params, root, alias)
    if v is None:
        from fangpin.errors import no_champion

        raise no_champion(params.model.registered_name)  # a LookupError
    return load_version(params, v, root)


def log_model(model, workdir: Path, input_example: list[dict], registered_name: str, root: Path = ROOT):
    """Log the model once as a pyfunc — its parts as artifacts, its code as its own package
    (module doc) — and register it. Returns MLflow's ModelInfo."""
    import mlflow
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec

    from models.pyfunc import input_schema

    workdir = Path(workdir)
    paths = model.save(workdir / "artifacts")
    pkg_dir, package = package_code(workdir / "code", root)
    logged = import_model_module(pkg_dir.parent, package)
    sig = ModelSignature(inputs=input_schema(), params=ParamSchema([ParamSpec("explain", "string", "warnings")]))
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=logged.ReturnRiskPyfunc(),
        artifacts=paths,
        code_paths=[str(pkg_dir)],
        signature=sig,
        input_example=pd.DataFrame(input_example),
        registered_model_name=registered_name,
        pip_requirements=_requirements(),
        metadata={"code_package": package},
    )


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("lightgbm", "numpy", "pandas", "scikit-learn", "mlflow", "pyarrow",
                                           "pydantic", "pyyaml", "holidays")]
