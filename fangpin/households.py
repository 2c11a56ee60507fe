"""`fangpin households`: a ledger's households as a county system sends them to ``POST /v1/score``.

From the county's own export files (the ledger of a quarter and, optionally, the department event
files), one record per household of that quarter in the canonical JSON form of
fangpin.household_json: the household's contract fields (from its 户主 row, as ingest takes them),
every member with its contract fields including 证件号码, and the department events about its
members of the last ``max(4, rules.severe_event_quarters)`` quarters up to the quarter's end. The
values are the ledger's own text, exactly as the files hold them (``八年级``, ``是``, ``12,345``,
``2024/3/5``): nothing is derived or normalised here — the API reads them with ingest's normaliser.

Files are read and checked with ingest's own reader and validation (fangpin.ingest): a household
with a row that ingest would quarantine is left out (and counted), so every household written is
one that ``fangpin ingest`` + ``fangpin score`` score as well.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer


def export_households(ledger: list[Path], events: list[Path] | None, quarter: str, params,
                      household_ids: list[str] | None = None) -> dict:
    """``{"households": [...]}`` for ``quarter`` (see the module doc), plus counts under ``_``
    (not part of the request body: the CLI prints them)."""
    import numpy as np
    import pandas as pd

    from fangpin import contract
    from fangpin import quarters as fq
    from fangpin.ids import params_key
    from fangpin.ingest import normalise as nz
    from fangpin.ingest import tables as tb
    from fangpin.ingest.read import discover, header_key, read_table

    quarter = fq.fmt(*fq.parse(quarter))
    files, _, missing = discover(list(ledger) + list(events or []))
    if missing:
        raise FileNotFoundError(str(missing[0]))
    lookup = {"ledger": tb._lookup(contract.LEDGER_COLUMNS), "events": tb._lookup(contract.EVENT_COLUMNS)}
    ledger_parts, event_parts = [], []
    for f in files:
        raw = read_table(f)
        if raw.kind not in ("ledger", "events"):
            continue
        pos = {}
        for j, h in enumerate(raw.headers):
            col = lookup[raw.kind].get(header_key(h))
            if col is not None and col.name not in pos:
                pos[col.name] = j
        frame = raw.frame.reset_index(drop=True)
        extra = raw.extra_fields.reset_index(drop=True)
        if raw.kind == "ledger":
            if "quarter" in pos:
                q = nz.normalise_quarter(nz.clean_text(frame.iloc[:, pos["quarter"]].astype("str")))
                keep = (q == quarter).fillna(False).to_numpy(dtype=bool)
            else:
                keep = np.full(len(frame), nz.quarter_from_filename(f.name) == quarter)
            if not keep.any():
                continue
            frame, rows, extra = frame[keep].reset_index(drop=True), raw.rows[keep], extra[keep].reset_index(drop=True)
        else:
            rows = raw.rows
        prepared = tb.prepare(frame, raw.headers, raw.kind, f.name, rows=rows, extra_fields=extra, path=f)
        (ledger_parts if raw.kind == "ledger" else event_parts).append((prepared, frame, pos))
    if not ledger_parts:
        raise ValueError(f"no ledger rows of {quarter} in {', '.join(map(str, ledger))}")

    # rows ingest quarantines (bad cells, duplicated persons) make their household unusable
    built = tb.build_ledger([p for p, _, _ in ledger_parts], params_key(params),
                            params.ingest.income_mismatch_tolerance)
    bad_rows = set(zip(built.quarantine["file"], built.quarantine["row"].astype(int), strict=True))
    people = []
    for p, frame, pos in ledger_parts:
        bad_rows |= {(p.source_file, int(r)) for r in p.rows[p.bad_idx]}
        cells = frame.astype(object).where(frame.notna(), None)
        for i in range(len(frame)):
            people.append({"file": p.source_file, "row": int(p.rows[i]), "household_id": p.frame["household_id"].iat[i],
                           "relation": p.frame["relation"].iat[i], "id_number": p.frame["id_number"].iat[i],
                           "cells": {name: _text(cells.iat[i, j]) for name, j in pos.items()}})
    ppl = pd.DataFrame(people)
    ppl["bad"] = [(f, r) in bad_rows for f, r in zip(ppl["file"], ppl["row"], strict=True)]
    unusable = set(ppl.loc[ppl["bad"], "household_id"].dropna())
    ok = ppl[ppl["household_id"].notna() & ~ppl["household_id"].isin(unusable)]
    wanted = list(dict.fromkeys(ok["household_id"])) if household_ids is None else list(household_ids)
    unknown = [h for h in wanted if h not in set(ok["household_id"])]
    if unknown:
        raise ValueError(f"households not in the {quarter} ledger (or with rows ingest quarantines): "
                         f"{', '.join(unknown[:10])}" + (" …" if len(unknown) > 10 else ""))

    events_by_id = _events(event_parts, quarter, max(4, params.rules.severe_event_quarters))
    members = {h: g for h, g in ok.groupby("household_id", sort=False)}
    out = []
    for hid in wanted:
        g = members[hid]
        head = contract.head_rows(g.assign(quarter_idx=0), keys=("household_id",)).iloc[0]
        rec = {c: head["cells"].get(c) for c in contract.HOUSEHOLD_FIELDS if c in head["cells"]}
        rec["quarter"] = rec.get("quarter") or quarter
        rec["members"] = [{c: m.get(c) for c in contract.PERSON_FIELDS if c in m} for m in g["cells"]]
        ids = set(g["id_number"].dropna())
        rec["events"] = [e for i in sorted(ids) for e in events_by_id.get(i, [])]
        out.append(rec)
    return {"households": out, "_": {"quarter": quarter, "households": len(out),
                                      "left_out": len(unusable), "events": sum(len(r["events"]) for r in out)}}


def _text(v) -> str | None:
    if v is None:
        return None
    s = str(v)
    return s if s.strip() else None


def _events(parts, quarter: str, window: int) -> dict[str, list[dict]]:
    """Accepted department events of the ``window`` quarters up to ``quarter``'s end, by ID number
    (normalised, to match the members'), as the files hold them."""
    from fangpin import quarters as fq

    lo, hi = fq.start_date(fq.shift(quarter, -(window - 1))), fq.end_date(quarter)
    out: dict[str, list[dict]] = {}
    for p, frame, pos in parts:
        good = set(p.bad_idx.tolist())
        cells = frame.astype(object).where(frame.notna(), None)
        for i in range(len(frame)):
            d = p.frame["event_date"].iat[i]
            if i in good or d is None or d != d or not (lo <= d.date() <= hi):
                continue
            out.setdefault(p.frame["id_number"].iat[i], []).append(
                {name: _text(cells.iat[i, j]) for name, j in pos.items()})
    return out


def register(app: typer.Typer) -> None:
    app.command("households")(households_command)


def households_command(
    ledger: list[Path] = typer.Option(..., "--ledger", help="台账文件或文件夹"),
    events: list[Path] = typer.Option(None, "--events", help="部门预警数据文件或文件夹（可选）"),
    quarter: str = typer.Option(..., "--quarter", help="统计季度，如 2024Q4"),
    ids: str = typer.Option(None, "--ids", help="只导出这些户编号（逗号分隔）"),
    out: Path = typer.Option(..., "--out", "-o", help="输出的 JSON 文件（POST /v1/score 的请求体）"),
    params_file: Path = typer.Option(None, "--params", help="params.yaml（默认 ./params.yaml 或 FANGPIN_PARAMS）"),
) -> None:
    """Write a quarter's households as a county system sends them to POST /v1/score."""
    from fangpin.config import load_params

    body = export_households(ledger, events or [], quarter, load_params(params_file),
                             [x.strip() for x in ids.split(",") if x.strip()] if ids else None)
    counts = body.pop("_")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(body, ensure_ascii=False, indent=1), encoding="utf-8")
    tmp.replace(out)
    typer.echo(f"{counts['households']} 户（{counts['quarter']}），部门事件 {counts['events']} 条 → {out}"
               + (f"；{counts['left_out']} 户有导入时会被隔离的行，未导出" if counts["left_out"] else ""))
