"""Checks that a reason sentence names the household's own values (shared by the explain and the
batch-scoring tests).

A risk-raising sentence may end with the county's comparison (after ``；全县`` or ``；各县``): every
number there must be one of the county's reference figures the model carries (or the household's
own quarter). Every number before it must be one of the household's feature values as the explainer formats
them (yuan with thousands separators, counts, percentages of shares, one-decimal areas and
distances); windows such as 近4个季度 and the age bands (16岁以下) are definitions, not household values, and are skipped. Facts without a
number (危房, 饮水, 户类型) are checked against the household's flags. Key figures are also checked
against the canonical frames themselves (the ledger values, not the features).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

NUMBER = re.compile(r"(?<![近\d])\d[\d,]*(?:\.\d+)?")
# definitions, not household values: look-back windows and age bands
WINDOW = re.compile(r"近\d+个季度|16岁以下|60岁及以上")


def candidates(values: np.ndarray) -> set[str]:
    out: set[str] = set()
    for v in values:
        if v is None or not np.isfinite(v):
            continue
        out |= {f"{v:,.0f}", f"{abs(v):,.0f}", f"{int(round(v))}", f"{v * 100:.0f}", f"{abs(v) * 100:.0f}",
                f"{v:.1f}", f"{v * 100:.1f}"}
    return out


def numbers(text: str) -> list[str]:
    return NUMBER.findall(WINDOW.sub("", text))


COMPARISON = re.compile(r"；(全县|各县)")


def county_candidates(reference: dict | None) -> set[str]:
    """Every reference figure of a model (base rates, rates by quarter, typical values by type) as
    the explainer formats them."""
    vals: list[float] = []

    def walk(o):
        if isinstance(o, dict):
            for v in o.values():
                walk(v)
        elif isinstance(o, int | float) and not isinstance(o, bool):
            vals.append(float(o))

    for k in ("base_rate", "rate_by_quarter", "types"):
        walk((reference or {}).get(k))
    out: set[str] = set()
    for v in vals:
        out |= {f"{v:.1f}", f"{v * 100:.0f}", f"{abs(v) * 100:.0f}", f"{v * 100:.1f}", f"{v * 100:.2f}"}
    return out


def check_reason(reason: dict, x: np.ndarray, names, hh_row: pd.Series | None = None,
                 persons: pd.DataFrame | None = None, reference: dict | None = None) -> None:
    """Raise AssertionError unless the reason names real values of this household (and, in its
    comparison, real figures of the county: ``reference`` = the model's reference)."""
    text = reason["text"]
    f = dict(zip(names, x, strict=True))
    m = COMPARISON.search(text)
    if m:
        assert reason["direction"] == "up", f"only a risk-raising reason carries a comparison: {text!r}"
        own, comp = text[:m.start()], text[m.start():]
        bad = [n for n in numbers(comp) if n not in county_candidates(reference) | {f"{f.get('quarter_of_year', 0):.0f}"}]
        assert not bad, f"{reason['factor']}: {bad} in {comp!r} are not figures of the county"
        text = own
    nums = numbers(text)
    ok = candidates(x)
    bad = [n for n in nums if n not in ok]
    assert not bad, f"{reason['factor']}: {bad} in {text!r} are not values of this household"
    if not nums:  # a fact without a number must match the household's flags
        if reason["factor"] == "housing_water":
            assert ("危房" in text) == (f["unsafe_housing"] == 1), text
            assert ("未解决安全饮用水" in text) == (f["no_safe_water"] == 1), text
        elif reason["factor"] == "history":
            assert ("脱贫户" in text) == (f["is_tuopin"] == 1), text
        else:
            raise AssertionError(f"{reason['factor']}: no household value in {text!r}")
    # key figures straight from the ledger
    if hh_row is not None:
        if reason["factor"] == "income" and "人均纯收入" in text and pd.notna(hh_row["income_per_capita"]):
            assert f"人均纯收入{hh_row['income_per_capita']:,.0f}元" in text, text
        if reason["factor"] == "rigid_spending" and pd.notna(hh_row["medical_out_of_pocket"]):
            assert f"合规自付医疗支出{hh_row['medical_out_of_pocket']:,.0f}元" in text, text
    if persons is not None and "人患大病" in text:
        m = re.search(r"(\d+)人患大病", text)
        assert int(m.group(1)) == int((persons["health"] == "患有大病").sum()), text
