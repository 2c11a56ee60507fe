"""Suggested support (缺什么补什么): a table lookup from a warning's drivers and the family's labour
capacity to measures.

The table (``models/measures.yaml`` shipped with the package, or ``params.warnings.measures_table``)
maps each driver — an explanation factor key such as ``medical`` or a rule id such as
``R03_RIGID_SPENDING`` — and each labour class (无劳动力 / 弱劳动力 / 有劳动力) to measure ids of a
catalogue of measure types and Chinese texts. There is no code per measure: this module only
validates the table and looks it up.

Drivers of a warning, in priority order: its rule hits (红 before 黄), then its reasons that raise
the risk (``direction == "up"``) in their ranked order. Measures are de-duplicated and capped at
``params.warnings.max_measures``; a warning whose drivers are all absent from the table gets the
labour class's defaults.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fangpin.contract import LABOR_CLASS, LABOR_CLASSES
from fangpin.warnings import LEVEL_RANK, Measure, contains_full_id

DEFAULT_TABLE = Path(__file__).resolve().parent / "measures.yaml"
ANY = "*"
# Factor keys the explainer emits; the table must cover each for every labour class.
FACTOR_KEYS = (
    "income", "income_change", "medical", "health", "disability", "labour", "schooling", "housing",
    "water", "dibao_tekun", "monitoring_history", "dept_events_medical", "dept_events_disaster",
    "dept_events_employment", "dept_events_death", "local_disaster", "household_composition",
    "migrant_work", "industry", "other",
)


class UnknownDriver(KeyError):
    def __str__(self) -> str:
        return f"driver {self.args[0]!r} is neither a key nor an alias of the measures table"


class CatalogueEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str
    text: str = Field(min_length=1)


class MeasureTable(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    labour_classes: tuple[str, ...]
    types: tuple[str, ...]
    catalogue: dict[str, CatalogueEntry]
    map: dict[str, dict[str, list[str]]]
    aliases: dict[str, list[str]] = Field(default_factory=dict)
    defaults: dict[str, list[str]]

    @model_validator(mode="after")
    def _consistent(self) -> MeasureTable:
        problems: list[str] = []
        if set(self.labour_classes) != set(LABOR_CLASSES):
            problems.append(f"labour_classes must be {list(LABOR_CLASSES)}")
        for mid, entry in self.catalogue.items():
            if entry.type not in self.types:
                problems.append(f"catalogue.{mid}: type {entry.type!r} not in types")
            if contains_full_id(entry.text):
                problems.append(f"catalogue.{mid}: text contains an ID number")
        for key, by_class in self.map.items():
            for cls, ids in by_class.items():
                if cls != ANY and cls not in LABOR_CLASSES:
                    problems.append(f"map.{key}: unknown labour class {cls!r}")
                problems += [f"map.{key}.{cls}: unknown measure {m!r}" for m in ids if m not in self.catalogue]
            for cls in LABOR_CLASSES:
                if not (by_class.get(ANY) or by_class.get(cls)):
                    problems.append(f"map.{key}: no measure for {cls}")
        for alias, targets in self.aliases.items():
            if alias in self.map:
                problems.append(f"aliases.{alias}: also a key of map")
            problems += [f"aliases.{alias}: unknown driver {t!r}" for t in targets if t not in self.map]
            if not targets:
                problems.append(f"aliases.{alias}: empty")
        for cls in LABOR_CLASSES:
            ids = self.defaults.get(cls) or []
            if not ids:
                problems.append(f"defaults: no measure for {cls}")
            problems += [f"defaults.{cls}: unknown measure {m!r}" for m in ids if m not in self.catalogue]
        missing = [k for k in FACTOR_KEYS if k not in self.map and k not in self.aliases]
        if missing:
            problems.append(f"map: factor keys not covered: {missing}")
        if problems:
            raise ValueError("measures table is inconsistent:\n  " + "\n  ".join(problems))
        return self

    def knows(self, driver: str) -> bool:
        return driver in self.map or driver in self.aliases

    def measure_ids(self, driver: str, labour_class: str) -> list[str]:
        """Measure ids for one driver and labour class, in table order (aliases expanded)."""
        cls = normalise_labour_class(labour_class)
        if driver in self.aliases:
            keys = self.aliases[driver]
        elif driver in self.map:
            keys = [driver]
        else:
            raise UnknownDriver(driver)
        out: list[str] = []
        for k in keys:
            for m in self.map[k].get(ANY, []) + self.map[k].get(cls, []):
                if m not in out:
                    out.append(m)
        return out

    def measure(self, measure_id: str) -> Measure:
        e = self.catalogue[measure_id]
        return Measure(type=e.type, text=e.text)


def normalise_labour_class(value) -> str:
    """A labour class (fangpin.contract.LABOR_CLASSES) given as itself, as a member's 劳动技能
    (fangpin.contract.LABOR_CLASS) or as its code 0/1/2 (models.features ``labor_class_code``)."""
    if isinstance(value, str) and value.strip() in LABOR_CLASSES:
        return value.strip()
    if isinstance(value, str) and value.strip() in LABOR_CLASS:
        return LABOR_CLASS[value.strip()]
    if value is not None and not isinstance(value, bool | str):
        try:
            code = int(value)
        except (TypeError, ValueError):
            code = None
        if code is not None and code == value and 0 <= code < len(LABOR_CLASSES):
            return LABOR_CLASSES[code]
    raise ValueError(f"unknown labour class {value!r}; expected one of {LABOR_CLASSES}, a 劳动技能 value "
                     f"or a code 0/1/2")


def load_table(path: str | Path | None = None) -> MeasureTable:
    """The measures table at ``path`` (default: the packaged models/measures.yaml)."""
    return _load(Path(path).resolve() if path else DEFAULT_TABLE)


@lru_cache(maxsize=4)
def _load(path: Path) -> MeasureTable:
    if not path.exists():
        raise FileNotFoundError(f"measures table not found: {path}")
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    try:
        return MeasureTable.model_validate(raw)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def table_for(params) -> MeasureTable:
    """The measures table configured by ``params.warnings.measures_table`` (packaged default)."""
    return load_table(params.warnings.measures_table)


def drivers_of(rule_hits: Sequence = (), reasons: Sequence = ()) -> list[str]:
    """Drivers in priority order: rule ids (most urgent level first, stable), then the factors of
    reasons that raise the risk, in their ranked order. Accepts records or plain dicts."""

    def get(x, k):
        return x[k] if isinstance(x, Mapping) else getattr(x, k)

    hits = sorted(rule_hits, key=lambda h: LEVEL_RANK[get(h, "level")])
    out: list[str] = []
    for d in [get(h, "rule_id") for h in hits] + [get(r, "factor") for r in reasons
                                                  if get(r, "direction") == "up"]:
        if d not in out:
            out.append(d)
    return out


def suggest(
    drivers: Sequence[str],
    labour_class,
    *,
    table: MeasureTable | None = None,
    max_measures: int = 4,
) -> list[Measure]:
    """Measures for the drivers (in priority order) and the household's labour class.

    Each driver contributes its measures in table order; drivers are taken round-robin (first
    measure of every driver, then the second …) so the most important measure of each driver is
    kept under the cap. An unknown driver is an error (:class:`UnknownDriver`): the table and the
    explainer's factor keys / rule ids must agree."""
    table = table or load_table()
    cls = normalise_labour_class(labour_class)
    per_driver = [table.measure_ids(d, cls) for d in drivers]
    chosen: list[str] = []
    depth = max((len(x) for x in per_driver), default=0)
    for i in range(depth):
        for ids in per_driver:
            if i < len(ids) and ids[i] not in chosen:
                chosen.append(ids[i])
    if not chosen:
        chosen = list(table.defaults[cls])
    return [table.measure(m) for m in chosen[:max_measures]]

