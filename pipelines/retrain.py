"""`fangpin retrain`: fold a new quarter's export into the history, retrain, and say plainly whether
the new model should replace the one in service.

Steps (every one reuses the stage that owns it; nothing here trains, scores or gates by itself):

1. **Append** the new export to the ingested history: ``fangpin.ingest.ingest(..., append=True)``
   replaces the quarters present in the new ledger files and de-duplicates events on their
   identity, so the same export twice leaves the tables unchanged. A fingerprint of the tables is
   kept with every retrain: when it equals the last one, nothing is retrained (``--force`` to
   retrain anyway).
2. **Labels** the new quarter resolves (quarter t − H becomes labelled) are recomputed from the
   whole history by :func:`pipelines.labels.make_labels` inside training; the counts are reported.
3. **Train** (:func:`pipelines.train.train`) → a new registered version (the challenger);
   **evaluate** (:func:`pipelines.evaluate.evaluate`) on its test quarters, which are the newest
   labelled ones; **promote** (:func:`pipelines.promote.promote`) scores challenger and @champion on
   those same quarters and moves @champion only if the challenger passes the gate.
4. **Drift** (pipelines/drift.py): the new quarter against the training window of the model in
   service, per feature and for both models' score distributions.
5. **Fairness** (pipelines/fairness.py): the challenger's combined warnings on its test quarters.
6. **Feedback** from cadres (verification outcomes in the warning store, or ``--feedback`` CSV):
   exported beside the reports (no names, no ID numbers) and counted by level, status and reason.
7. **Model card** (pipelines/model_card.py) in Chinese and English, logged with the version.

Writes <reports_dir>/retrain/<quarter>/: verdict.json, drift.{json,md,png},
fairness.{json,md,png}, feedback.csv, feedback.json, model_card_v<N>_{zh,en}.md; logs them to an
MLflow run tagged ``stage=retrain``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from fangpin.config import Params
from fangpin.errors import UserError, ingest_failed, no_ingest_output
from pipelines.common import write_json

log = logging.getLogger(__name__)

FEEDBACK_COLUMNS = ("warning_id", "quarter", "county", "township", "village", "household_id", "level",
                    "probability", "model_version", "status", "status_reason",
                    # the loop (fangpin/clues.py): channels and what the next exports said
                    "origin", "channels", "clues", "return_risk", "ledger_outcome", "identified_quarter",
                    "eliminated_quarter", "conflict")
HISTORY_FILE = "retrain_history.json"


class RetrainError(UserError, RuntimeError):
    """A retrain the user must fix (no history, a refused export, a bad feedback file, a failed reload)."""


# ------------------------------------------------------------------------------------ append


def table_fingerprint(ingested_dir: Path) -> str:
    """Content hash of the canonical tables (row order and source bookkeeping ignored)."""
    h = hashlib.sha256()
    for name in ("households.parquet", "persons.parquet", "events.parquet"):
        p = Path(ingested_dir) / name
        if not p.exists():
            continue
        df = pd.read_parquet(p)
        df = df.drop(columns=[c for c in ("source_file", "source_row") if c in df.columns])
        rows = pd.util.hash_pandas_object(df, index=False).to_numpy()
        h.update(name.encode())
        h.update(np.sort(rows).tobytes())
    return h.hexdigest()[:16]


def append_export(ledger: list[Path], events: list[Path], params: Params) -> dict:
    """Append a new export to the ingested history (idempotent). Returns the new quarters, the
    row counts and the ingest report's summary."""
    from fangpin.ingest import ingest

    out = Path(params.paths.ingested_dir)
    if not (out / "households.parquet").exists():
        raise no_ingest_output(out)
    before = pd.read_parquet(out / "households.parquet", columns=["quarter"])["quarter"]
    report = ingest(ledger, events, out, params, append=True, show_progress=False)
    if not report.ok:
        raise ingest_failed(out / "ingest_report.json",
                            "; ".join(f"{e.get('file', '?')}: {e.get('message', '')}" for e in report.errors[:3]))
    new_files = {e["file"] for e in report.files if e.get("kind") == "ledger" and e.get("status") == "ok"}
    hh = pd.read_parquet(out / "households.parquet", columns=["quarter", "quarter_idx", "source_file"])
    quarters = sorted(hh.loc[hh["source_file"].isin(new_files), "quarter"].unique().tolist(),
                      key=lambda q: (q[:4], q[5:]))
    if not quarters:
        raise RetrainError("新的导出中没有户成员台账行，没有可并入的季度；请在 --ledger 中给出本季度的户成员台账文件。",
                           "The export holds no ledger rows (户成员台账), so there is no quarter to append: give this "
                           "quarter's ledger file with --ledger.")
    return {
        "new_quarters": quarters,
        "quarters_before": sorted(before.unique().tolist()),
        "quarters_after": sorted(hh["quarter"].unique().tolist()),
        "households_rows": int(len(hh)),
        "rows_read": report.rows_read, "rows_accepted": report.rows_accepted,
        "rows_quarantined": report.rows_quarantined, "events_read": report.events_read,
        "events_unmatched": report.events_unmatched, "summary": report.summary(),
    }


def resolved_labels(households_before: pd.DataFrame | None, households_after: pd.DataFrame, horizon: int) -> dict:
    """Household-quarters that became labelled with the new quarter, and their positives."""
    from fangpin.quarters import from_index
    from pipelines.labels import make_labels

    after = make_labels(households_after, horizon)
    usable_after = after[after["labelled"] & after["in_scope"]]
    if households_before is not None and len(households_before):
        before = make_labels(households_before, horizon)
        prev = set(before.loc[before["labelled"], "quarter_idx"].unique().tolist())
    else:
        prev = set()
    new = usable_after[~usable_after["quarter_idx"].isin(prev)]
    by_q = new.groupby("quarter_idx")["label"].agg(["size", "sum"])
    return {"quarters": [from_index(int(q)) for q in by_q.index],
            "rows": int(by_q["size"].sum()) if len(by_q) else 0,
            "positives": int(by_q["sum"].sum()) if len(by_q) else 0,
            "labelled_total": int(len(usable_after)), "positives_total": int(usable_after["label"].sum())}


# ----------------------------------------------------------------------------------- feedback


def feedback_frame(params: Params, feedback_csv: Path | None = None) -> pd.DataFrame | None:
    """Verification outcomes: from a CSV exported with the ledger (columns FEEDBACK_COLUMNS), else
    from the configured warning store. None when there is no store yet."""
    if feedback_csv is not None:
        df = pd.read_csv(feedback_csv, dtype=str, encoding="utf-8-sig", keep_default_na=False)
        missing = [c for c in ("quarter", "level", "status") if c not in df.columns]
        if missing:
            raise RetrainError(f"核实反馈文件 {feedback_csv} 缺少列 {missing}，请导出包含这些列的文件后重试。",
                               f"The feedback file {feedback_csv} lacks the column(s) {missing}: export it with these "
                               f"columns and run again.")
        return df.replace({"": None})
    store = existing_store(params)
    if store is None:
        return None
    from fangpin.store.loop import loop_view, loops, origin_of_run

    try:
        ws = list(store.iter_warnings())
        lp = loops(store, [w.id for w in ws])
        rows = []
        for w in ws:
            v = loop_view(lp.get(w.id))
            if w.id not in lp:
                v.update(origin=origin_of_run(None), channels=[origin_of_run(None)])
            rows.append({"warning_id": w.id, "quarter": w.quarter, "county": w.county, "township": w.township,
                         "village": w.village, "household_id": w.household_id, "level": w.level,
                         "probability": w.probability, "model_version": w.model_version, "status": w.status,
                         "status_reason": w.status_reason, "origin": v["origin"], "channels": "、".join(v["channels"]),
                         "clues": int(v["clues"]), "return_risk": bool(v["return_risk"]),
                         "ledger_outcome": v["ledger_outcome"], "identified_quarter": v["identified_quarter"],
                         "eliminated_quarter": v["eliminated_quarter"], "conflict": bool(v["conflict"])})
    finally:
        store.dispose()
    return pd.DataFrame(rows, columns=list(FEEDBACK_COLUMNS))


def existing_store(params: Params):
    """The configured warning store, or None when it does not exist yet (no SQLite file)."""
    from fangpin.store.repo import Store, store_url

    url = store_url(params)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        return None
    return Store.from_params(params)


def feedback_summary(df: pd.DataFrame | None) -> dict:
    """Counts of confirmed (纳入监测) and excluded (排除) warnings, by level and by reason."""
    from fangpin.warnings import LEVEL_RANK, STATUS_EXCLUDED, STATUS_INCLUDED, STATUS_OPEN

    if df is None:
        return {"available": False}
    out: dict = {"available": True, "warnings": int(len(df)),
                 "confirmed": int((df["status"] == STATUS_INCLUDED).sum()),
                 "excluded": int((df["status"] == STATUS_EXCLUDED).sum()),
                 "open": int((df["status"] == STATUS_OPEN).sum())}
    by_level = {}
    for lvl, g in df.groupby("level", sort=False):
        by_level[str(lvl)] = {"warnings": int(len(g)), "confirmed": int((g["status"] == STATUS_INCLUDED).sum()),
                              "excluded": int((g["status"] == STATUS_EXCLUDED).sum()),
                              "open": int((g["status"] == STATUS_OPEN).sum())}
    out["by_level"] = dict(sorted(by_level.items(), key=lambda kv: LEVEL_RANK.get(kv[0], len(LEVEL_RANK))))
    ex = df[df["status"] == STATUS_EXCLUDED]
    reasons = ex["status_reason"].fillna("（未填写）").astype(str).str.strip()
    out["excluded_by_reason"] = {str(k): int(v) for k, v in reasons.value_counts().items()}
    out["by_quarter"] = {str(q): {"warnings": int(len(g)), "confirmed": int((g["status"] == STATUS_INCLUDED).sum()),
                                  "excluded": int((g["status"] == STATUS_EXCLUDED).sum())}
                         for q, g in df.groupby("quarter")}
    decided = out["confirmed"] + out["excluded"]
    out["confirmed_share_of_verified"] = out["confirmed"] / decided if decided else None
    out.update(loop_summary(df))
    return out


def loop_summary(df: pd.DataFrame) -> dict:
    """Channels and ledger read-backs (reported beside the labels, docs/retraining.md): per channel
    of origin the warnings, confirmed, excluded and identified by a later export; the read-back
    outcomes, conflicts (ledger vs feedback) and 返贫. Empty when the frame has no loop columns (a
    feedback CSV exported before them)."""
    from fangpin import clues as fc
    from fangpin.warnings import STATUS_EXCLUDED, STATUS_INCLUDED

    if "origin" not in df.columns or "ledger_outcome" not in df.columns:
        return {}
    known = {fc.IDENTIFIED, fc.SUPPORTED, fc.ELIMINATED}
    identified = df["ledger_outcome"].isin(known)
    by_channel = {}
    for ch, g in df.groupby(df["origin"].fillna(fc.SCREENING), sort=True):
        idg = g["ledger_outcome"].isin(known)
        read = g["ledger_outcome"].notna()
        by_channel[str(ch)] = {"warnings": int(len(g)), "confirmed": int((g["status"] == STATUS_INCLUDED).sum()),
                               "excluded": int((g["status"] == STATUS_EXCLUDED).sum()),
                               "read_back": int(read.sum()), "identified_by_ledger": int(idg.sum()),
                               "identified_share_of_read_back": float(idg.sum() / read.sum()) if read.any() else None}
    flag = df["return_risk"].astype(str).str.lower().isin(["true", "1"])
    conflict = df["conflict"].astype(str).str.lower().isin(["true", "1"]) if "conflict" in df.columns else flag & False
    return {"by_channel": by_channel,
            "readback": {"read_back": int(df["ledger_outcome"].notna().sum()),
                         **{o: int((df["ledger_outcome"] == o).sum()) for o in fc.LEDGER_OUTCOMES},
                         "conflicts": int(conflict.sum()), "return_risk": int(flag.sum()),
                         "returned": int((flag & identified).sum())}}


# ---------------------------------------------------------------------------------- the command


def _in_scope_rows(model, frames, quarters: list[str]):
    from fangpin.quarters import to_index

    s = model.predict(frames, quarters=[to_index(q) for q in quarters], explain="none")
    scores, feats = s.frame(), s.features.to_frame()  # the model's own features
    keep = scores["in_scope"].astype(bool).to_numpy()
    return scores[keep].reset_index(drop=True), feats[keep].reset_index(drop=True)


def compute_drift(frames, new_quarter: str, reference_model, challenger, params: Params):
    """Drift of ``new_quarter`` against the training window of ``reference_model`` (the model in
    service), for its features and for both models' score distributions (each against its own
    training window)."""
    from pipelines.drift import drift_report

    ref_q = list(reference_model.meta["split"]["train"])
    ref_scores, ref_feats = _in_scope_rows(reference_model, frames, ref_q)
    cur_scores, cur_feats = _in_scope_rows(reference_model, frames, [new_quarter])
    scores = {f"score_v{reference_model.model_version}": (ref_scores["probability"].to_numpy(),
                                                          cur_scores["probability"].to_numpy())}
    if challenger is not None and challenger.model_version != reference_model.model_version:
        c_ref, _ = _in_scope_rows(challenger, frames, list(challenger.meta["split"]["train"]))
        c_cur, _ = _in_scope_rows(challenger, frames, [new_quarter])
        scores[f"score_v{challenger.model_version}"] = (c_ref["probability"].to_numpy(),
                                                       c_cur["probability"].to_numpy())
    names = list(reference_model.spec.names)
    ref_def, cur_def = warm_up_masks(frames, names, ref_feats), warm_up_masks(frames, names, cur_feats)
    return drift_report(ref_feats, cur_feats, names, params=params, scores=scores,
                        labels=dict(reference_model.spec.labels), lines=frames.lines,
                        reference_quarters=ref_q, current_quarter=new_quarter,
                        reference_defined=ref_def, current_defined=cur_def)


def warm_up_masks(frames, names: list[str], feats: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per feature, the rows of ``feats`` past their warm-up (models.features.defined_after_warm_up),
    counted from the first quarter of the ledger (of the department events, for event features)."""
    from models.features import defined_after_warm_up

    ledger_start = int(frames.households["quarter_idx"].min())
    ev = frames.events
    events_start = int(ev["quarter_idx"].min()) if ev is not None and len(ev) else None
    return defined_after_warm_up(names, feats["quarter_idx"].to_numpy(), ledger_start, events_start)


def compute_fairness(frames, model, test_quarters: list[str], params: Params, split=None):
    """Fairness audit of ``model`` on the test rows (``split``: the challenger's
    :class:`models.train.Split`, for a village test)."""
    from fangpin.quarters import to_index
    from pipelines.evaluate import scored_frame, test_frame
    from pipelines.fairness import audit

    test_q = [to_index(q) for q in test_quarters]
    scored = scored_frame(model, frames, params, min(test_q))
    return audit(test_frame(scored, test_q, split), params, quarters=test_quarters)


def _history(params: Params) -> list[dict]:
    p = Path(params.paths.reports_dir) / HISTORY_FILE
    return json.loads(p.read_text(encoding="utf-8")) if p.exists() else []


def retrain(ledger: list[Path], events: list[Path] | None, params: Params, *, feedback_csv: Path | None = None,
            force: bool = False, step: Callable[[str], None] | None = None) -> dict:
    """The `fangpin retrain` command (see the module doc). ``params`` must be rooted
    (:func:`pipelines.common.rooted`). ``step(description)`` is called before each step (progress).
    Returns the verdict dict (also written to verdict.json)."""
    import mlflow

    from models.registry import champion_version, load_version, setup_mlflow
    from pipelines.common import load_frames
    from pipelines.evaluate import evaluate
    from pipelines.model_card import build_cards, log_cards, write_cards
    from pipelines.promote import promote
    from pipelines.train import train

    step = step or (lambda _s: None)
    t0 = datetime.now(UTC)
    ingested = Path(params.paths.ingested_dir)
    step("并入新季度 append the new export")
    hh_before = (pd.read_parquet(ingested / "households.parquet") if (ingested / "households.parquet").exists()
                 else None)
    appended = append_export(list(ledger), list(events or []), params)
    fingerprint = table_fingerprint(ingested)
    step("台账回读 read-back")
    readback = None
    store = existing_store(params)
    if store is not None:  # the export closes the loop of the warnings it answers (pipelines/readback.py)
        from pipelines.readback import read_back

        try:
            readback = read_back(store, ingested, params)
        finally:
            store.dispose()
    new_quarter = appended["new_quarters"][-1]
    rdir = Path(params.paths.reports_dir) / "retrain" / new_quarter
    history = _history(params)
    if history and history[-1].get("data_fingerprint") == fingerprint and not force:
        last = dict(history[-1])
        last.update(unchanged=True, appended=appended)
        return last

    step("重新计算标签 labels")
    frames = load_frames(params)
    labels = resolved_labels(hh_before, frames.households, params.labels.horizon_quarters)

    setup_mlflow(params)
    champ_before = champion_version(params)
    champ_before = None if champ_before is None else str(champ_before)
    step("训练挑战者模型 train the challenger")
    info = train(params)
    step("评估 evaluate (challenger vs rules)")
    metrics = evaluate(params)
    detail = json.loads((Path(params.paths.reports_dir) / "metrics_detail.json").read_text(encoding="utf-8"))
    step("晋升门槛 promotion gate (challenger vs champion, same quarters)")
    decision = promote(params)

    step("数据漂移 drift")
    challenger = load_version(params, info["version"])
    reference = load_version(params, champ_before) if champ_before else challenger
    drift = compute_drift(frames, new_quarter, reference, challenger, params)
    drift_paths = drift.write(rdir, "drift")

    step("公平性审计 fairness audit")
    from models.train import Split

    fair = compute_fairness(frames, challenger, info["test_quarters"], params, Split.from_dict(info["split"]))
    fair_paths = fair.write(rdir, "fairness")

    step("核实反馈 feedback")
    fb = feedback_frame(params, feedback_csv)
    fb_summary = feedback_summary(fb)
    if fb is not None:
        fb.to_csv(rdir / "feedback.csv", index=False, encoding="utf-8-sig")
    write_json(rdir / "feedback.json", fb_summary)

    step("模型卡 model card")
    from models.features import FeatureSpec

    spec = challenger.spec if isinstance(challenger.spec, FeatureSpec) else FeatureSpec.default()
    cards = build_cards(info=info, metrics=metrics, detail=detail, spec=spec, params=params, promotion=decision,
                        fairness=fair.to_dict(), drift=drift.to_dict())
    card_paths = write_cards(cards, rdir, info["version"])
    log_cards(params, info, cards)

    rules = metrics["systems"]["rules"]
    verdict = {
        "time": t0.isoformat(timespec="seconds"),
        "seconds": round((datetime.now(UTC) - t0).total_seconds(), 1),
        "new_quarter": new_quarter,
        "appended": appended,
        "data_fingerprint": fingerprint,
        "labels_resolved": labels,
        "challenger": info["version"],
        "champion_before": champ_before,
        "champion_after": None if decision["champion_after"] is None else str(decision["champion_after"]),
        "promoted": bool(decision["promoted"]),
        "decision": "promote" if decision["promoted"] else "keep",
        "reasons": decision["reasons"],
        "test_quarters": info["test_quarters"],
        "challenger_metrics": decision["challenger_metrics"],
        "champion_metrics": decision["champion_metrics"],
        "rules_metrics": {"recall_at_rules_workload": rules["recall_at_rules_workload"],
                          "recall_at_2x_rules_workload": rules["recall_at_2x_rules_workload"],
                          "auc": rules["auc"]},
        "combined_recall_at_2x_rules_workload": metrics["systems"]["combined"]["recall_at_2x_rules_workload"],
        "drift": {"counts": drift.counts(),
                  "alarms": drift.alarms[["column", "label", "psi"]].to_dict("records"),
                  "known": drift.known[["column", "label", "psi", "note"]].to_dict("records"),
                  "line_changed": bool(drift.line and drift.line.changed)},
        "fairness": {"flags": fair.flags, "overall": fair.overall},
        "feedback": fb_summary,
        "readback": readback,
        "reports": {"dir": str(rdir), "drift": str(drift_paths["md"]), "fairness": str(fair_paths["md"]),
                    "model_card_zh": str(card_paths["zh"]), "model_card_en": str(card_paths["en"]),
                    "evaluation": str(Path(params.paths.reports_dir) / "report.md")},
    }
    write_json(rdir / "verdict.json", verdict)
    with mlflow.start_run(experiment_id=info["experiment_id"], run_name=f"retrain-{new_quarter}-v{info['version']}"):
        mlflow.set_tags({"stage": "retrain", "new_quarter": new_quarter, "challenger": info["version"],
                         "decision": verdict["decision"], "data_fingerprint": fingerprint,
                         "train_run_id": info["run_id"]})
        cm = decision["challenger_metrics"]
        mlflow.log_metrics({f"challenger.{k}": float(v) for k, v in cm.items() if v is not None})
        if decision["champion_metrics"]:
            mlflow.log_metrics({f"champion.{k}": float(v) for k, v in decision["champion_metrics"].items()
                                if v is not None})
        mlflow.log_metrics({"rules.recall_at_rules_workload": float(rules["recall_at_rules_workload"]),
                            "drift.alarms": len(verdict["drift"]["alarms"]),
                            "fairness.flags": len(fair.flags)})
        mlflow.log_artifacts(str(rdir), "retrain")
    history.append({k: verdict[k] for k in ("time", "new_quarter", "data_fingerprint", "challenger", "champion_before",
                                            "champion_after", "promoted", "decision", "reasons", "test_quarters",
                                            "challenger_metrics", "champion_metrics", "rules_metrics", "reports")})
    write_json(Path(params.paths.reports_dir) / HISTORY_FILE, history)
    return verdict


def reload_api(url: str, api_key: str, timeout: float = 60.0) -> dict:
    """Ask a running API to switch to the current @champion (POST /v1/admin/reload)."""
    import httpx

    r = httpx.post(url.rstrip("/") + "/v1/admin/reload", headers={"X-API-Key": api_key}, timeout=timeout)
    if r.status_code != 200:
        raise RetrainError(f"通知服务切换模型失败（HTTP {r.status_code}），请检查 --reload-url 和管理员密钥 FANGPIN_ADMIN_KEY。",
                           f"The API reload failed (HTTP {r.status_code} {r.text[:200]}): check --reload-url and the "
                           f"admin key in FANGPIN_ADMIN_KEY.")
    return r.json()
