"""`fangpin promote` / `fangpin rollback`: the @champion alias of the registered model.

Promotion compares the challenger (the version just trained, or ``--version``) with the current
@champion on the same test quarters of the same data, both scored now:

- challenger AUC ≥ champion AUC − promotion.max_auc_drop,
- challenger recall at the rules' workload ≥ champion's − promotion.max_recall_drop,
- challenger calibration error ≤ promotion.max_calibration_error.

The first version (no champion yet) is promoted. The decision and its numbers are logged as an
MLflow run (tag ``stage=promote``), as tags on the challenger version, and in
<reports_dir>/promotion.json. The registered model keeps the champion history in its tag
``champion_history`` (JSON list of versions), which `fangpin rollback` walks back.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

from fangpin.config import Params
from pipelines.common import load_frames, read_train_info, write_json

log = logging.getLogger(__name__)
ALIAS = "champion"
HISTORY_TAG = "champion_history"


def gate_metrics(model, frames, test_quarters: list[str], params: Params, split=None) -> dict:
    """Gate metrics on the test rows (the quarters; in a village test also only its villages:
    ``split`` is the challenger's :class:`models.train.Split`)."""
    from fangpin.quarters import to_index
    from pipelines.evaluate import compute_metrics, scored_frame

    test_q = [to_index(q) for q in test_quarters]
    scored = scored_frame(model, frames, params, min(test_q))
    metrics, detail, _ = compute_metrics(scored, test_q, params, split)
    m = metrics["systems"]["model"]
    return {"auc": m["auc"], "recall_at_rules_workload": m["recall_at_rules_workload"],
            "calibration_error": detail["systems"]["model"]["calibration_error"],
            "n_test": metrics["n_test"], "positives": metrics["positives"]}


def decide(challenger: dict, champion: dict | None, params: Params) -> tuple[bool, list[str]]:
    pp = params.promotion
    if champion is None:
        return True, ["no @champion yet: the first version is promoted"]
    reasons, ok = [], True
    checks = (
        ("auc", challenger["auc"] >= champion["auc"] - pp.max_auc_drop,
         f"AUC {challenger['auc']:.4f} vs champion {champion['auc']:.4f} (allowed drop {pp.max_auc_drop})"),
        ("recall", challenger["recall_at_rules_workload"] >= champion["recall_at_rules_workload"] - pp.max_recall_drop,
         f"recall at the rules' workload {challenger['recall_at_rules_workload']:.4f} vs champion "
         f"{champion['recall_at_rules_workload']:.4f} (allowed drop {pp.max_recall_drop})"),
        ("calibration", challenger["calibration_error"] <= pp.max_calibration_error,
         f"calibration error {challenger['calibration_error']:.4f} (max {pp.max_calibration_error})"),
    )
    for _name, passed, text in checks:
        reasons.append(("pass: " if passed else "FAIL: ") + text)
        ok &= bool(passed)
    return ok, reasons


def _history(client, name: str) -> list[str]:
    rm = client.get_registered_model(name)
    return json.loads(rm.tags.get(HISTORY_TAG, "[]"))


def promote(params: Params, version: str | None = None) -> dict:
    import mlflow
    from mlflow import MlflowClient

    from models.registry import champion_version, load_version, setup_mlflow
    from models.train import Split

    info = read_train_info(params)
    name = params.model.registered_name
    challenger_v = str(version or info["version"])
    exp_id = setup_mlflow(params)
    client = MlflowClient()
    known = sorted((str(v.version) for v in client.search_model_versions(f"name='{name}'")), key=int)
    if challenger_v not in known:
        from fangpin.errors import UserError

        raise UserError(f"模型 {name} 没有第 {challenger_v} 版（已登记：{', '.join(known) or '无'}），"
                        f"请用 --version 指定已登记的版本，或先运行 `fangpin train`。",
                        f"Model {name} has no version {challenger_v} (registered: {', '.join(known) or 'none'}): give a "
                        f"registered version with --version, or run `fangpin train` first.")
    champ_v = champion_version(params)
    frames = load_frames(params)
    test_quarters = info["test_quarters"]
    split = Split.from_dict(info["split"])
    chal = gate_metrics(load_version(params, challenger_v), frames, test_quarters, params, split)
    champ = None
    if champ_v is not None and champ_v != challenger_v:
        champ = gate_metrics(load_version(params, champ_v), frames, test_quarters, params, split)
    if champ_v == challenger_v:
        promoted, reasons = False, [f"version {challenger_v} is already @{ALIAS}"]
    else:
        promoted, reasons = decide(chal, champ, params)
    history = _history(client, name)
    if promoted:
        client.set_registered_model_alias(name, ALIAS, challenger_v)
        history.append(challenger_v)
        client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    decision = {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "registered_name": name, "challenger": challenger_v, "champion_before": champ_v,
        "champion_after": challenger_v if promoted else champ_v, "promoted": promoted, "reasons": reasons,
        "test_quarters": test_quarters, "challenger_metrics": chal, "champion_metrics": champ,
        "thresholds": params.promotion.model_dump(),
    }
    with mlflow.start_run(experiment_id=exp_id, run_name=f"promote-v{challenger_v}"):
        mlflow.set_tags({"stage": "promote", "decision": "promoted" if promoted else "rejected",
                         "challenger": challenger_v, "champion_before": str(champ_v)})
        mlflow.log_metrics({f"challenger.{k}": float(v) for k, v in chal.items()})
        if champ:
            mlflow.log_metrics({f"champion.{k}": float(v) for k, v in champ.items()})
        mlflow.log_dict(decision, "promotion.json")
    client.set_model_version_tag(name, challenger_v, "promotion_decision",
                                 "promoted" if promoted else "rejected: " + "; ".join(r for r in reasons if
                                                                                     r.startswith("FAIL")))
    write_json(Path(params.paths.reports_dir) / "promotion.json", decision)
    log.info("promotion of %s v%s: %s (%s)", name, challenger_v, "promoted" if promoted else "not promoted",
             "; ".join(reasons))
    return decision


def rollback(params: Params) -> dict:
    """Move @champion back to the version that held it before the current one."""
    import mlflow
    from mlflow import MlflowClient

    from models.registry import champion_version, setup_mlflow

    exp_id = setup_mlflow(params)
    client = MlflowClient()
    name = params.model.registered_name
    current = champion_version(params)
    history = _history(client, name) if current is not None else []
    if current is None or len(history) < 2:
        from fangpin.errors import NoChampion

        raise NoChampion(f"没有可以回退到的版本：模型 {name} 的 @{ALIAS} 是 {current}，历任冠军 {history}；"
                         f"至少需要两次晋升后才能回退。",
                         f"Nothing to roll back to: @{ALIAS} of '{name}' is {current}, champion history {history}; "
                         f"a rollback needs at least two promotions.")  # a LookupError
    if history[-1] != current:  # the alias was moved by hand: step back from where it is now
        history = history[: history.index(current) + 1] if current in history else history + [current]
    history.pop()
    previous = history[-1]
    client.set_registered_model_alias(name, ALIAS, previous)
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    decision = {"time": datetime.now(UTC).isoformat(timespec="seconds"), "registered_name": name,
                "rolled_back_from": current, "champion_after": previous}
    with mlflow.start_run(experiment_id=exp_id, run_name=f"rollback-v{current}-to-v{previous}"):
        mlflow.set_tags({"stage": "rollback", "from": current, "to": previous})
        mlflow.log_dict(decision, "rollback.json")
    write_json(Path(params.paths.reports_dir) / "rollback.json", decision)
    log.info("rolled back @%s of %s from v%s to v%s", ALIAS, name, current, previous)
    return decision
