"""Shared plumbing of the pipeline stages: paths resolved against a working directory, frames."""

from __future__ import annotations

import json
from pathlib import Path

from fangpin.config import Params


def rooted(params: Params, root: Path | str = ".") -> Params:
    """Params whose relative paths (paths.*, model.out_dir) are resolved against ``root``."""
    root = Path(root).resolve()
    paths = params.paths.model_copy(update={k: root / v for k, v in params.paths.model_dump().items()})
    model = params.model.model_copy(update={"out_dir": root / params.model.out_dir})
    return params.model_copy(update={"paths": paths, "model": model})


def load_frames(params: Params):
    from fangpin.errors import no_ingest_output
    from models.features import Frames

    d = Path(params.paths.ingested_dir)
    if not (d / "households.parquet").exists() or not (d / "persons.parquet").exists():
        raise no_ingest_output(d)
    return Frames.from_dir(d, lines=params.lines)


def train_info_path(params: Params) -> Path:
    return Path(params.model.out_dir) / "train_info.json"


def read_train_info(params: Params) -> dict:
    from fangpin.errors import MissingInput

    p = train_info_path(params)
    if not p.exists():
        raise MissingInput(f"找不到训练记录 {p}，请先运行 `fangpin train`（或 `fangpin run`），或用 --workdir 指向正确的工作目录。",
                           f"{p} not found: run `fangpin train` (or `fangpin run`) first, or point --workdir at the "
                           f"right working directory.")
    return json.loads(p.read_text(encoding="utf-8"))


def write_json(path: Path, obj) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2, default=_default), encoding="utf-8")


def write_report_bundle(report, out_dir: Path, stem: str) -> dict[str, Path]:
    """Write a report object (``to_dict()``, ``plot(path)``, ``markdown(figure_name)``) as
    ``<stem>.json``, ``<stem>.png`` and ``<stem>.md`` in ``out_dir``; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"{stem}.json", "md": out_dir / f"{stem}.md", "png": out_dir / f"{stem}.png"}
    write_json(paths["json"], report.to_dict())
    report.plot(paths["png"])
    paths["md"].write_text(report.markdown(paths["png"].name), encoding="utf-8")
    return paths


def _default(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return None if np.isnan(o) else float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o))


def records(df) -> list[dict]:
    """The rows of ``df`` as dicts of Python values, every missing value (NaN, NA, NaT) None: what
    ``df.astype(object).where(df.notna(), None).to_dict("records")`` gives, equal with types, but
    column by column (3.3× faster on 2 M ledger rows: 3.8 s against 12.3 s)."""
    names = list(df.columns)
    cols = [df[c].astype(object).where(df[c].notna(), None).tolist() for c in names]
    return [dict(zip(names, v, strict=True)) for v in zip(*cols, strict=True)]
