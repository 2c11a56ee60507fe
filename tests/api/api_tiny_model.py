"""A tiny model built with the project's own training pieces (features, LightGBM with early
stopping, calibration, rules, levels) on a small generated county — seconds, not minutes.

`register_tiny` logs it as the real pyfunc and registers it in a throwaway MLflow store, so the
API's default loader (``models:/return-risk@champion``) is exercised end to end.
"""

from __future__ import annotations

from canonical_frames import make_frames
from tiny_model import tiny_model

from models.pyfunc import RiskModel


def train_tiny(params, n: int = 600, quarters: int = 8, seed: int = 0, trees: int = 30) -> RiskModel:
    model, _ = tiny_model(params, n=n, quarters=quarters, seed=seed, trees=trees, calibration="sigmoid",
                          meta={"trained_on": "tests: tiny generated county"})
    return model


def fixed_loader(model, versions=None):
    """A loader that hands out the tiny model, labelled with successive versions (reload tests)."""
    from serving.model import LoadedModel

    counter = iter(versions or range(1, 10_000))

    def load(params, uri):
        return LoadedModel(scorer=model, version=str(next(counter)), ruleset_version=model.ruleset_version,
                           uri=uri, card={"meta": model.meta})

    return load


def make_client(params, seeded, tiny_model, **kw):
    from fastapi.testclient import TestClient

    from serving.app import create_app

    app = create_app(params, store=seeded.store, loader=fixed_loader(tiny_model), **kw)
    return TestClient(app)


def register_tiny(params, workdir, model: RiskModel | None = None, name: str | None = None) -> str:
    """Log + register the tiny model as the real pyfunc and point @champion at it; returns the version."""
    import mlflow
    from mlflow import MlflowClient

    from models.registry import input_example, log_model, setup_mlflow

    model = model or train_tiny(params)
    exp = setup_mlflow(params)  # its artifacts live under the state dir, not ./mlruns
    name = name or params.model.registered_name
    fr = make_frames(50, 4, 1)
    example = input_example(fr, int(fr.households["quarter_idx"].max()), 2)
    with mlflow.start_run(experiment_id=exp):
        info = log_model(model, workdir, example, name)
    version = str(info.registered_model_version)
    MlflowClient().set_registered_model_alias(name, "champion", version)
    return version
