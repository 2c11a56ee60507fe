"""One typed configuration: params.yaml read through one pydantic model.

Every pipeline stage, the CLI and the API call :func:`load_params`; nothing is read at import
time. The file is found from, in order: an explicit path, ``FANGPIN_PARAMS``, ``./params.yaml``.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fangpin.errors import ParamsError, UserError


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PathsParams(_Model):
    """Where the default pipeline keeps its files (relative to the working directory)."""

    synth_dir: Path = Path("data/synthetic")
    ingested_dir: Path = Path("data/ingested")
    reports_dir: Path = Path("reports")
    warnings_dir: Path = Path("data/warnings")
    state_dir: Path = Path(".fangpin")  # local secrets and embedded stores (gitignored)


class SynthShift(_Model):
    """A known shift injected into the simulation (drift checks, demos). Nothing happens when
    ``quarter`` is null. Quarters before it are generated exactly as without the shift."""

    quarter: str | None = None  # YYYYQn: the quarter of the job-loss wave; the line rise applies from its year
    county: int = Field(0, ge=0)  # index of the county hit by the wave (0 … synth.counties-1)
    job_loss: float = Field(0.0, ge=0, le=1)  # share of that county's migrant workers losing their job
    line_rise: float = Field(0.0, ge=0, le=1)  # the monitoring line of the shift's year and later × (1+rise);
    # the generator then writes the lines it used as 监测线.csv beside the exports


class SynthParams(_Model):
    households: int = Field(50_000, gt=0)
    quarters: int = Field(12, gt=0)
    start_quarter: str = "2022Q1"
    seed: int = 20240628
    counties: int = Field(3, gt=0)
    townships_per_county: int = Field(8, gt=0)
    villages_per_township: int = Field(12, gt=0)
    oracle_draws: int = Field(16, ge=2)  # Monte-Carlo draws of the oracle look-ahead (risky households)
    # a province: each county simulated on its own, as a task (fangpin.cluster), into <out>/<county code>/;
    # false: one simulation of all counties (the demo's ledger, byte-stable)
    by_county: bool = False
    # "annual": the simulation runs quarterly but only each year's Q4 snapshot is written (a province
    # that verifies once a year); department signals stay dated. Run such a ledger with
    # labels.horizon_quarters: 4.
    snapshots: Literal["quarterly", "annual"] = "quarterly"
    shift: SynthShift = Field(default_factory=lambda: SynthShift())


class IdsParams(_Model):
    """Keyed hashing of ID numbers. The key itself never lives in the repo: it comes from the
    environment variable named here, else from a file under the state dir, created on first use."""

    key_env: str = "FANGPIN_ID_KEY"
    key_file: str = "id_key"


class IngestParams(_Model):
    income_mismatch_tolerance: float = Field(0.10, ge=0)  # share; >10% is a finding
    chunk_rows: int = Field(200_000, gt=0)
    # Input limits: a file beyond one is refused with its name (nothing half-written).
    max_columns: int = Field(512, gt=0)  # header cells of one file (the contract has ~60)
    max_cell_chars: int = Field(1000, gt=0)  # a longer cell quarantines its row
    quarantine_value_chars: int = Field(100, gt=0)  # quarantine.csv keeps this prefix of a value
    max_xlsx_sheet_bytes: int = Field(2_000_000_000, gt=0)  # uncompressed XML of the sheet read
    max_xlsx_ratio: float = Field(200.0, gt=1)  # uncompressed / compressed size of any xlsx member
    max_xlsx_rows: int = Field(5_000_000, gt=0)  # rows read from one sheet


class LabelParams(_Model):
    horizon_quarters: int = Field(2, ge=1, le=8)


class RuleParams(_Model):
    version: str = "rules-2026.1"
    income_margin: float = Field(0.2, ge=0)  # "within 20% above the line" is a yellow hit
    rigid_spending_share: float = Field(0.5, ge=0)  # OOP medical / household income
    severe_event_quarters: int = Field(1, ge=1)  # look-back for severe department events
    severe_event_types: tuple[str, ...] = ("重大疾病", "房屋受损", "死亡", "自然灾害受灾")
    severe_event_min_amount: float = Field(0.0, ge=0)


class ModelParams(_Model):
    seed: int = 7
    num_leaves: int = Field(31, ge=2)
    max_depth: int = -1
    learning_rate: float = Field(0.05, gt=0)
    n_estimators: int = Field(600, gt=0)
    early_stopping_rounds: int = Field(50, gt=0)
    min_child_samples: int = Field(100, gt=0)
    feature_fraction: float = Field(0.9, gt=0, le=1)
    bagging_fraction: float = Field(0.9, gt=0, le=1)
    bagging_freq: int = Field(1, ge=0)
    lambda_l2: float = Field(1.0, ge=0)
    scale_pos_weight: float | Literal["balanced"] = 1.0
    # centred_isotonic: isotonic regression through the centres of its flat steps, with logistic
    # tails (strictly increasing: reason figures of different factors never coincide); isotonic:
    # the step function itself; sigmoid: Platt scaling
    calibration: Literal["centred_isotonic", "isotonic", "sigmoid"] = "centred_isotonic"
    # How early stopping and calibration are held out (models/train.py, docs/decisions.md "Splits"):
    # "quarters": the validation_quarters and calibration_quarters after the training quarters;
    # "grouped": villages held out inside the training quarters (GroupShuffleSplit by village);
    # "auto": quarters when the ledger has enough labelled quarters, else grouped.
    split: Literal["auto", "quarters", "grouped"] = "auto"
    validation_quarters: int = Field(1, ge=0)  # 0: early stopping on held-out villages (grouped)
    calibration_quarters: int = Field(1, ge=0)  # 0: calibration on held-out villages (grouped)
    # The test: "quarters": the last test_quarters labelled quarters (auto: fewer when the ledger is
    # short, at least 1); "villages": held-out villages of the same quarters (a ledger with a single
    # labelled quarter; says so in the report); "auto": quarters when possible, else villages.
    test_split: Literal["auto", "quarters", "villages"] = "auto"
    test_quarters: int = Field(2, ge=1)
    group_valid_share: float = Field(0.2, gt=0, lt=0.5)  # grouped: share of villages for early stopping
    group_calib_share: float = Field(0.25, gt=0, lt=0.5)  # grouped: share of villages for calibration
    group_test_share: float = Field(0.3, gt=0, lt=0.6)  # test_split villages: share of villages tested
    registered_name: str = "return-risk"
    num_threads: int = Field(2, ge=1)  # fixed thread count: part of determinism
    out_dir: Path = Path("data/model")  # train_info.json (run id, registered version, split)
    experiment: str = "fangpin-return-risk"
    # MLflow tracking store; None = sqlite:///<state_dir>/mlflow.db with artifacts under
    # <state_dir>/mlartifacts. MLFLOW_TRACKING_URI in the environment overrides both.
    tracking_uri: str | None = None
    explain_sample: int = Field(5000, gt=0)  # test rows for global SHAP importance
    # Training on a cluster (pipelines.train, fangpin.cluster): household-quarter rows per feature
    # partition (whole townships), and the share of negative training / validation rows kept
    # (weighted by its inverse; every positive is kept). 1.0: every row (the in-process model).
    partition_rows: int = Field(500_000, gt=0)
    negative_sample: float = Field(1.0, gt=0, le=1)

    @model_validator(mode="after")
    def _quarters_split_needs_quarters(self) -> ModelParams:
        if self.split == "quarters" and (self.validation_quarters == 0 or self.calibration_quarters == 0):
            raise ValueError("model.split 'quarters' needs validation_quarters ≥ 1 and calibration_quarters ≥ 1 "
                             "(use 'grouped' or 'auto' to hold out villages instead)")
        return self


class LevelParams(_Model):
    """Warning levels by measured risk (models/levels.py, docs/warnings.md "Levels").

    Each township and quarter, the in-scope households are ranked by the model's risk: the top
    ``red_share`` are 红 by risk, the next ``yellow_share`` 黄, the next ``blue_share`` 蓝 (shares of
    the township's in-scope households, so a county with another base rate warns the same share).
    A rule hit lifts a household to at least its rule's floor (``rule_floors``; a rule without a
    floor is routed as a task, ``tasks.routes``). Then at most ``capacity_per_township`` households
    per township and quarter stay 红 (due within ``warnings.verification_days``), highest risk first;
    the rest of the 红 candidates move to 黄 (the next monthly visit) and are counted as the
    township's shortfall.
    """

    red_share: float = Field(0.01, gt=0, lt=1)
    yellow_share: float = Field(0.02, ge=0, lt=1)
    blue_share: float = Field(0.03, ge=0, lt=1)
    # home verifications a township completes within the verification deadline, per quarter:
    # ~800-860 clues a year per county (domain.md: Ningshan 859, Wen 800+) / 4 quarters / 8
    # townships (docs/warnings.md "Capacity") ≈ 25
    capacity_per_township: int = Field(25, gt=0)
    # the lowest level a rule hit gets (None: no warning, the hit becomes a task: tasks.routes)
    rule_floors: dict[str, Literal["红", "黄", "蓝"] | None] = Field(default_factory=lambda: {
        "R01_INCOME_BELOW_LINE": "红", "R02_INCOME_NEAR_LINE": "黄", "R03_RIGID_SPENDING": "红",
        "R04_UNSAFE_HOUSING": None, "R05_NO_SAFE_WATER": None, "R06_NO_MEDICAL_INSURANCE": None,
        "R07_OUT_OF_SCHOOL": None, "R08_NO_LABOUR_NO_SUPPORT": None, "R09_SEVERE_EVENT": "蓝"})

    @model_validator(mode="after")
    def _shares(self) -> LevelParams:
        if self.red_share + self.yellow_share + self.blue_share >= 1:
            raise ValueError("levels: red_share + yellow_share + blue_share must be below 1")
        return self


class TaskRoute(_Model):
    """Where a 保障缺口 rule hit goes: the department that closes the gap, its measure, the days
    it has (from the scoring date)."""

    gap: str  # 缺口, e.g. 住房安全
    department: str  # 责任部门, e.g. 住建
    measure: str  # 措施, e.g. 危房改造
    days: int = Field(gt=0)


class TaskParams(_Model):
    """保障缺口 tasks (fangpin/tasks.py): rule id → route. Every rule has a level floor
    (levels.rule_floors), a route here, or both; a hit is never dropped."""

    routes: dict[str, TaskRoute] = Field(default_factory=lambda: {
        "R04_UNSAFE_HOUSING": TaskRoute(gap="住房安全", department="住建", measure="危房改造", days=90),
        "R05_NO_SAFE_WATER": TaskRoute(gap="饮水安全", department="水利", measure="饮水安全工程", days=60),
        "R06_NO_MEDICAL_INSURANCE": TaskRoute(gap="基本医疗", department="医保", measure="参保及资助参保", days=30),
        "R07_OUT_OF_SCHOOL": TaskRoute(gap="义务教育", department="教育", measure="控辍保学（劝返复学）", days=30),
        "R08_NO_LABOUR_NO_SUPPORT": TaskRoute(gap="兜底保障", department="民政", measure="低保、特困供养兜底审核",
                                              days=30)})


class PromotionParams(_Model):
    max_auc_drop: float = Field(0.005, ge=0)
    max_recall_drop: float = Field(0.01, ge=0)  # recall at the rules' workload
    max_calibration_error: float = Field(0.02, ge=0)


class StepParams(_Model):
    """A step's deadline: ``days`` from the step's start, calendar days or working days (with 调休,
    fangpin.warnings.deadline)."""

    days: int = Field(gt=0)
    working_days: bool = False


class WarningParams(_Model):
    verification_days: int = Field(15, gt=0)  # 红: home verification within this many days
    monthly_visit_days: int = Field(31, gt=0)  # 黄: at the next monthly visit (domain.md: monthly visits)
    review_days: int = Field(183, gt=0)  # 蓝: at the half-yearly review (domain.md: levels reviewed every half year)
    working_days: bool = False  # national guidance: 15 calendar days
    max_reasons: int = Field(4, ge=1, le=4)
    store_url: str | None = None  # default: SQLite under the state dir
    excel_dir: Path = Path("data/warnings/excel")
    chunk_households: int = Field(50_000, gt=0)
    holiday_country: str = "CN"  # working-day calendar (python-holidays), incl. 调休 make-up days
    measures_table: Path | None = None  # default: models/measures.yaml shipped with the package
    max_measures: int = Field(4, ge=1)
    key_secret_env: str = "FANGPIN_KEY_SECRET"  # HMAC secret for API keys and audit hashing
    key_secret_file: str = "key_secret"  # fallback: <state_dir>/key_secret, created on first use
    store_wait_s: float = Field(5.0, gt=0)  # a store call waits at most this long for a lock or a connection
    store_connections: int = Field(8, ge=2)  # pooled connections per process (writers: 1 on SQLite, half on PostgreSQL)
    # the later steps of a warning (fangpin/clues.py, docs/warnings.md "Deadlines at every step")
    village_check: StepParams = StepParams(days=2)  # a self-application: village check (Anhui 一码申报: 2 days)
    decision: StepParams = StepParams(days=20, working_days=True)  # verified 纳入监测 → identified (≤ 20 working days)
    support_plan: StepParams = StepParams(days=10, working_days=True)  # identified in the export → support plan (Pinggui)
    due_soon_days: int = Field(7, ge=0)  # a step due within this many days is "due soon" (county view)
    digest_dir: Path = Path("data/warnings/digest")  # fangpin digest: weekly overdue workbooks per township


class ClueParams(_Model):
    """Clues from every channel (fangpin/clues.py). ``floors``: the guardrail for people — a clue of
    these channels is always a warning, at least of this level, whatever the score (as a rule hit
    has its floor). ``village_check_channels``: the verification of their warning is due within
    ``warnings.village_check``. A clue without a warning stays open for merging ``merge_days``."""

    floors: dict[str, Literal["红", "黄", "蓝"]] = Field(default_factory=lambda: {"农户自主申报": "红", "群众反映": "红"})
    village_check_channels: tuple[str, ...] = ("农户自主申报",)
    merge_days: int = Field(30, gt=0)
    max_text_chars: int = Field(500, gt=0)

    @model_validator(mode="after")
    def _known_channels(self) -> ClueParams:
        from fangpin.contract import CLUE_CHANNELS

        bad = sorted((set(self.floors) | set(self.village_check_channels)) - set(CLUE_CHANNELS))
        if bad:
            raise ValueError(f"unknown clue channel(s) {bad}; channels: {list(CLUE_CHANNELS)}")
        return self


class ServingParams(_Model):
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = Field(1000, gt=0)
    model_uri: str = "models:/return-risk@champion"
    batch_households: int = Field(256, gt=0)  # concurrent requests scored together, at most this many
    score_timeout_s: float = Field(30.0, gt=0)  # a request waits at most this long for its scores
    key_cache_seconds: float = Field(5.0, ge=0)  # a verified API key is trusted this long (0 = always look up)
    thresholds_refresh_s: float = Field(60.0, ge=0)  # the API re-reads the batch's level thresholds after this long
    max_body_bytes: int | None = Field(None, gt=0)  # request body limit; None: max_batch × 8 KiB
    max_form_bytes: int = Field(65_536, gt=0)  # body limit of the cadre page's forms
    auth_failures: int = Field(20, gt=0)  # failed API-key attempts per client address or key id per window, then 429
    auth_window_s: float = Field(60.0, gt=0)
    https: bool = False  # clients reach the service over HTTPS (here or at a TLS-terminating proxy): Secure cookie, HSTS

    @property
    def body_limit(self) -> int:
        """The request body limit in bytes (``max_body_bytes``, default 8 KiB per household of a
        full batch: a typical household is 1.5–3 KB of JSON)."""
        return self.max_body_bytes or self.max_batch * 8192


class DriftParams(_Model):
    psi_warn: float = 0.1
    psi_alarm: float = 0.25
    bins: int = 10
    eps: float = Field(1e-4, gt=0)  # floor of an empty bin's share in PSI
    # features in yuan that a new year's monitoring line moves (known shift, see pipelines/drift.py)
    line_features: tuple[str, ...] = ("income_per_capita", "income_margin", "household_net_income")


class FairnessParams(_Model):
    max_recall_gap: float = 0.10
    min_group_size: int = 30
    bootstrap: int = 200
    max_fpr_gap: float = Field(0.05, ge=0)  # false-positive rate gap between groups
    max_precision_gap: float = Field(0.15, ge=0)
    min_group_positives: int = Field(10, ge=1)  # recall gaps only between groups with this many positives
    ci_level: float = Field(0.95, gt=0, lt=1)
    seed: int = 11


class InProcessBelow(_Model):
    """Inputs smaller than these run in the calling process, without starting a cluster
    (fangpin.cluster; the cut-offs are measured in docs/benchmarks.md, "Execution layer")."""

    synth: int = Field(40_000, ge=0)  # households
    ingest: int = Field(50_000_000, ge=0)  # bytes of input files
    train: int = Field(550_000, ge=0)  # household-quarters
    score: int = Field(135_000, ge=0)  # households of the scored quarter


class ClusterParams(_Model):
    """Where tasks run (fangpin.cluster): a Dask scheduler, else this process for small inputs,
    else a LocalCluster of this machine. DASK_SCHEDULER_ADDRESS / --scheduler override ``scheduler``."""

    scheduler: str | None = None  # tcp://host:8786 of a running `dask scheduler`
    workers: int = Field(0, ge=0)  # LocalCluster worker processes; 0 = one per available core
    threads_per_worker: int = Field(1, ge=1)
    memory_limit: str = "auto"  # per LocalCluster worker ("auto": the machine's memory / workers)
    dashboard: str | None = None  # e.g. ":8787" (needs bokeh); None: any free port (the scheduler's HTTP server)
    in_process_below: InProcessBelow = InProcessBelow()


class Params(_Model):
    paths: PathsParams = PathsParams()
    synth: SynthParams = SynthParams()
    ids: IdsParams = IdsParams()
    lines: dict[int, float] = Field(default_factory=dict)  # year -> yuan per person per year
    ingest: IngestParams = IngestParams()
    labels: LabelParams = LabelParams()
    rules: RuleParams = RuleParams()
    model: ModelParams = ModelParams()
    levels: LevelParams = LevelParams()
    tasks: TaskParams = TaskParams()
    promotion: PromotionParams = PromotionParams()
    warnings: WarningParams = WarningParams()
    clues: ClueParams = ClueParams()
    serving: ServingParams = ServingParams()
    drift: DriftParams = DriftParams()
    fairness: FairnessParams = FairnessParams()
    cluster: ClusterParams = ClusterParams()

    @field_validator("lines")
    @classmethod
    def _positive_lines(cls, v: dict[int, float]) -> dict[int, float]:
        bad = {y: x for y, x in v.items() if x <= 0}
        if bad:
            raise ValueError(f"monitoring lines must be positive: {bad}")
        return v

    def line_for(self, year: int) -> float:
        """The configured monitoring line for a year; a missing year is an error, never a default."""
        return monitoring_line(self.lines, year)


def monitoring_line(lines, year: int) -> float:
    """The monitoring line (监测线) of ``year`` in ``lines`` (year → yuan): the one lookup every
    stage uses. A missing year is an error (:class:`MissingLineError`), never a default."""
    try:
        return float(lines[int(year)])
    except KeyError:
        raise MissingLineError(int(year), sorted(lines)) from None


class MissingLineError(UserError, KeyError):
    def __init__(self, year: int, known: list[int]):
        UserError.__init__(
            self,
            f"没有 {year} 年的监测线（已配置的年度：{known}），请在 params.yaml 的 lines 中补上该年度，"
            f"或在台账文件旁放置 监测线.csv。",
            f"no monitoring line (监测线) configured for {year}; known years: {known}. "
            f"Add it under `lines:` in params.yaml or ship 监测线.csv beside the ledger files.")
        self.args = (year,)
        self.year = year
        self.known = known

    def __str__(self) -> str:
        return UserError.__str__(self)


def params_path(path: str | os.PathLike | None = None) -> Path:
    if path is not None:
        return Path(path)
    env = os.environ.get("FANGPIN_PARAMS")
    return Path(env) if env else Path("params.yaml")


def load_params(path: str | os.PathLike | None = None) -> Params:
    """Read and validate params.yaml (see :func:`params_path`). No file at the default path →
    all defaults; a path given explicitly (argument or ``FANGPIN_PARAMS``) must exist.

    ``FANGPIN_STATE_DIR`` overrides ``paths.state_dir`` (local secrets and embedded stores), so a
    test run or a second deployment can keep its state elsewhere without editing the file.
    """
    p = params_path(path)
    explicit = path is not None or bool(os.environ.get("FANGPIN_PARAMS"))
    if explicit and not p.exists():
        raise ParamsError(f"找不到参数文件 {p}，请检查 --params 或 FANGPIN_PARAMS 给出的路径。",
                          f"The parameter file {p} does not exist: check the path given by --params or "
                          f"FANGPIN_PARAMS.")
    params = _load(p.resolve() if p.exists() else p)
    state = os.environ.get("FANGPIN_STATE_DIR")
    if state:
        params = params.model_copy(
            update={"paths": params.paths.model_copy(update={"state_dir": Path(state)})}
        )
    return params


@lru_cache(maxsize=8)
def _load(p: Path) -> Params:
    if not p.exists():
        return Params()
    raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    return Params.model_validate(raw)
