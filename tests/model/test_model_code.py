"""A registered version is the whole product: logged with its own code (models.registry), it scores
as it did when registered even where the installed feature code has changed since."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from online import alone
from tiny_model import tiny_model

from fangpin.config import load_params

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("model_code")]
REPO = Path(__file__).resolve().parents[2]
CHANGE = ('    out["income_ratio"] = ipc / line\n', '    out["income_ratio"] = ipc / line * 0.5  # changed\n')

CHILD = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {changed!r})
    import models.features  # the changed installation, imported before the model is loaded
    assert models.features.__file__.startswith({changed!r}), models.features.__file__
    from fangpin.config import load_params
    from models import registry
    from models.pyfunc import RiskModel

    data = json.load(open({inputs!r}, encoding="utf-8"))
    p = load_params()
    p = p.model_copy(update={{"model": p.model.model_copy(update={{"registered_name": {name!r}}})}})
    registered = registry.load_version(p, {version!r})
    installed = RiskModel.load({artifacts!r})  # the same artifacts under the changed installed code
    out = {{k: m.predict(data["records"], histories=data["histories"], contexts=data["contexts"]).columns
           for k, m in (("registered", registered), ("installed", installed))}}
    print(json.dumps({{k: {{"probability": v["probability"].tolist(), "reasons": v["reasons"].tolist()}}
                       for k, v in out.items()}}, ensure_ascii=False))
""")


def test_a_registered_version_scores_as_registered_beside_changed_feature_code(tmp_path):
    import mlflow

    from models.registry import input_example, log_model, setup_mlflow

    p = load_params()
    name = "code-pinning"
    model, fr = tiny_model(p, n=500, quarters=8, seed=4, trees=25, model_version="1")
    t = int(fr.households["quarter_idx"].max())
    with mlflow.start_run(experiment_id=setup_mlflow(p)):  # artifacts under the test's state dir
        info = log_model(model, tmp_path / "logged", input_example(fr, t, 2), name)
    recs, hist, _, batch, _, ctx = alone(model, fr, t, 80, seed=1)  # contexts with the batch's level cut-offs
    (tmp_path / "inputs.json").write_text(json.dumps({"records": recs, "histories": hist, "contexts": ctx},
                                                     ensure_ascii=False), encoding="utf-8")
    # an installation whose feature code changed after the model was registered
    changed = tmp_path / "installed"
    for pkg in ("fangpin", "models"):
        shutil.copytree(REPO / pkg, changed / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    f = changed / "models" / "features.py"
    src = f.read_text(encoding="utf-8")
    assert src.count(CHANGE[0]) == 1
    f.write_text(src.replace(*CHANGE), encoding="utf-8")

    code = CHILD.format(changed=str(changed), inputs=str(tmp_path / "inputs.json"), name=name,
                        version=str(info.registered_model_version), artifacts=str(tmp_path / "logged" / "artifacts"))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    # the registered version: exactly the scores (and reasons) it had when registered
    assert np.array_equal(np.array(out["registered"]["probability"]), batch["probability"])
    assert out["registered"]["reasons"] == json.loads(json.dumps(batch["reasons"].tolist(), ensure_ascii=False))
    # the change is real: the installed code scores the same artifacts differently
    assert not np.allclose(np.array(out["installed"]["probability"]), batch["probability"])
