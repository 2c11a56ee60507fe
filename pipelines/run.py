"""`fangpin run`: ingest → train → evaluate → register → promote, in one working directory.

Any ledger in the contract's format: ``fangpin run --ledger DIR --events DIR --workdir W``. Every
path of params.yaml (paths.*, model.out_dir) is taken relative to W, so W holds the ingested
tables, the model, the reports (W/reports/metrics.json) and — unless MLFLOW_TRACKING_URI or
FANGPIN_STATE_DIR say otherwise — the MLflow store (W/.fangpin/mlflow.db).
"""

from __future__ import annotations

import logging
from pathlib import Path

from fangpin.config import Params
from pipelines.common import rooted

log = logging.getLogger(__name__)


def run(ledger: list[Path], events: list[Path] | None, workdir: Path, params: Params) -> dict:
    from fangpin.ingest import ingest
    from pipelines.evaluate import evaluate
    from pipelines.promote import promote
    from pipelines.train import train

    p = rooted(params, workdir)
    report = ingest(ledger, events or [], p.paths.ingested_dir, p, show_progress=False)
    if not report.ok:
        from fangpin.errors import ingest_failed

        raise ingest_failed(Path(p.paths.ingested_dir) / "ingest_report.json",
                            "; ".join(f"{e.get('file', '?')}: {e.get('message', '')}" for e in report.errors[:3]))
    info = train(p)
    metrics = evaluate(p)
    decision = promote(p)
    return {"train": info, "metrics": metrics, "promotion": decision}
