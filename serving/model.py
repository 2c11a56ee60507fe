"""The served model: loaded fully, then swapped in by replacing one reference.

A request takes the current :class:`LoadedModel` once (``holder.current``) and uses that object to
the end, so a reload never changes the model under a request in flight; the old model is freed
when the last request holding it returns.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    scorer: Any  # the registered version's models.pyfunc.RiskModel (its one method: predict)
    version: str
    ruleset_version: str
    uri: str
    card: dict = field(default_factory=dict)
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    explanations: bool = True  # reasons and measures in the API's results


Loader = Callable[[Any, str], LoadedModel]


class ModelHolder:
    """The current model; :meth:`reload` loads the new one completely before swapping."""

    def __init__(self, loader: Loader, params, uri: str):
        self._loader = loader
        self._params = params
        self.uri = uri
        self._current: LoadedModel | None = None
        self._reload_lock = threading.Lock()  # one reload at a time; scoring never takes it
        self.last_error: str | None = None

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    def load(self) -> LoadedModel:
        with self._reload_lock:
            new = self._loader(self._params, self.uri)
            self._current = new  # a single reference assignment: atomic for readers
            self.last_error = None
            log.info("model loaded: %s version %s", self.uri, new.version)
            return new

    def try_load(self) -> LoadedModel | None:
        """Load at start-up; the API still starts without a model (``/ready`` says so)."""
        try:
            return self.load()
        except Exception as exc:  # noqa: BLE001 - reported by /ready and the log
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("model not loaded from %s: %s", self.uri, self.last_error)
            return None


def resolve_uri(uri: str) -> tuple[str, str]:
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` → (name, version) via the registry."""
    from mlflow import MlflowClient

    if not uri.startswith("models:/"):
        raise ValueError(f"model_uri must be a registry URI (models:/NAME@ALIAS or models:/NAME/VERSION): {uri}")
    rest = uri[len("models:/"):]
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return name, str(MlflowClient().get_model_version_by_alias(name, alias).version)
    name, _, version = rest.partition("/")
    if not version:
        raise ValueError(f"model_uri names no version or alias: {uri}")
    return name, version


def default_loader(params, uri: str) -> LoadedModel:
    """The registered pyfunc's :class:`models.pyfunc.RiskModel` for ``uri``, unwrapped, so the hot
    path is the model's own code (logged with it, models.registry), not MLflow's generic DataFrame
    conversion. The alias is resolved to a version first, so the version reported is the one loaded."""
    from mlflow import MlflowClient

    from models import registry

    registry.setup_mlflow(params)
    name, version = resolve_uri(uri)
    scorer = registry.load_version(params.model_copy(update={"model": params.model.model_copy(
        update={"registered_name": name})}), version)
    mv = MlflowClient().get_model_version(name, version)
    card = {
        "name": name, "version": version, "run_id": mv.run_id, "aliases": list(mv.aliases or []),
        "registered_at": mv.creation_timestamp, "description": mv.description or "",
        "tags": dict(mv.tags or {}), "meta": dict(getattr(scorer, "meta", {}) or {}),
        "features": len(scorer.feature_names),
    }
    return LoadedModel(scorer=scorer, version=version, ruleset_version=scorer.ruleset_version, uri=uri, card=card)
