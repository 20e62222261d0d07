"""Sweep configs: the validated edge of ``tradectl sweep`` (no Ray here, so it is cheap to import).

A config file (YAML for ``.yaml``/``.yml``, TOML for ``.toml``) names the sweep and says what to run::

    name: sma-goog                 # letters, digits, . _ - (part of the sweep id)
    seed: 7                        # seeds random draws and optuna's TPE sampler (default 0)
    backtest:                      # a base BacktestRequest; paths are relative to this file
      strategy_type: sma_crossover
      data: ../data/goog.csv
      params: {size_pct: 50}       # fixed strategy parameters, overridden per run
    grid:                          # cartesian product, one run per point
      fast: [5, 10, 20]
      slow: [50, 100]

Instead of ``grid`` a ``backtest`` sweep may use ``random: {samples: N, params: SPACE}`` or
``optuna: {trials: N, metric: sharpe, direction: maximize, params: SPACE, batch_size: B}``, where
``SPACE`` maps a strategy parameter to ``{low, high, log, step}`` (any of them may be left out), to a
list of choices, or to ``null``/``{}``; a missing bound is taken from the strategy's JSON Schema
(``minimum``/``maximum``, exclusive bounds moved inwards by one integer step or one float ulp).
Booleans and enums default to all their values. A portfolio sweep lists portfolio configs instead::

    name: books
    portfolios:
      - portfolios/trend.yaml
      - {path: portfolios/carry.yaml, overrides: {cash: 50000}}

``rank_by: {metric, direction}`` (default ``sharpe``/``maximize``; optuna sweeps use their own
metric) picks ``best.json`` and orders the printed table.

Every error is a :class:`~engine.errors.ParameterError` naming the field (``grid.fastt``,
``random.params.fast.low``, ``backtest.data`` ...) and the rule it broke; nothing is run or stored.
Identity: ``sweep_id`` hashes the name and the validated config (with absolute paths), so the same
file run twice is the same sweep; ``run_key`` hashes a run's kind and parameters, so a rerun skips the
runs already stored as "ok".
"""

from __future__ import annotations

import hashlib
import itertools
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine.backtest.config import BacktestRequest
from engine.errors import EngineError, ParameterError
from engine.store.sweeps import SWEEP_FLOAT_METRICS, SWEEP_INT_METRICS, canonical_json
from engine.strategy.base import Strategy
from engine.strategy.registry import StrategyRegistry

#: Most runs one sweep may plan (grid points, samples, trials or portfolio entries).
MAX_RUNS = 100_000
#: Metrics a sweep can rank or optimise by (the typed metric columns of a runs table).
RANK_METRICS: tuple[str, ...] = (*SWEEP_FLOAT_METRICS, *SWEEP_INT_METRICS)
#: BacktestRequest fields holding file paths, resolved against the config file's folder.
PATH_FIELDS: tuple[str, ...] = ("data", "funding", "marks", "open_interest")

Scalar = bool | int | float | str | None


# ---------------------------------------------------------------------------------- the model


class RangeSpec(BaseModel):
    """A numeric range for random draws or optuna: bounds inclusive; ``log`` draws log-uniformly
    (needs ``low`` > 0); ``step`` quantises values to ``low + k × step``. Missing bounds come from the
    strategy's schema."""

    model_config = ConfigDict(extra="forbid")

    low: float | None = Field(default=None, allow_inf_nan=False)
    high: float | None = Field(default=None, allow_inf_nan=False)
    log: bool = False
    step: float | None = Field(default=None, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _consistent(self) -> RangeSpec:
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined")
        return self


ParamSpec = RangeSpec | list[Any] | None


def parse_space(section: str, value: Any) -> dict[str, ParamSpec]:
    """Validate a ``params`` space: a mapping of parameter → range mapping, list of choices or null
    (a plain list of names means null for each).

    Raises:
        ParameterError: naming ``<section>.params.<name>[.<key>]`` and the rule.
    """
    field = f"{section}.params"
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = dict.fromkeys(value)
    if not isinstance(value, Mapping):
        raise ParameterError(field, f"must map parameter names to ranges, choices or null, got {type(value).__name__}")
    if not value:
        raise ParameterError(field, "must name at least one parameter")
    space: dict[str, ParamSpec] = {}
    for name, spec in value.items():
        where = f"{field}.{name}"
        if spec is None:
            space[str(name)] = None
        elif isinstance(spec, list):
            if not spec:
                raise ParameterError(where, "must list at least one choice")
            space[str(name)] = list(spec)
        elif isinstance(spec, Mapping):
            try:
                space[str(name)] = RangeSpec.model_validate(dict(spec))
            except ValidationError as exc:
                inner = _config_error(exc)
                raise ParameterError(
                    f"{where}.{inner.field}" if inner.field != "config" else where, inner.rule
                ) from None
        else:
            raise ParameterError(
                where, f"must be a range {{low, high, log, step}}, a list of choices or null, got {spec!r}"
            )
    return space


class RandomSearch(BaseModel):
    """``samples`` independent draws from ``params`` (numpy's PCG64 seeded with the sweep's seed)."""

    model_config = ConfigDict(extra="forbid")

    samples: int = Field(ge=1, le=MAX_RUNS)
    params: dict[str, Any]

    @field_validator("params", mode="before")
    @classmethod
    def _space(cls, value: Any) -> Any:
        return parse_space("random", value)


class OptunaSearch(BaseModel):
    """``trials`` optuna trials (seeded TPESampler, ask/tell) optimising ``metric`` in ``direction``.

    Trials are asked in batches of ``batch_size`` (default: the number of workers) and told after
    each batch; a failed run, or one whose metric is undefined, is told as FAIL. The same seed and
    batch size give the same trials.
    """

    model_config = ConfigDict(extra="forbid")

    trials: int = Field(ge=1, le=MAX_RUNS)
    metric: str = "sharpe"
    direction: Literal["maximize", "minimize"] = "maximize"
    params: dict[str, Any]
    batch_size: int | None = Field(default=None, ge=1, le=10_000)

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        if value not in RANK_METRICS:
            raise ValueError(f"must be one of {', '.join(RANK_METRICS)}")
        return value

    @field_validator("params", mode="before")
    @classmethod
    def _space(cls, value: Any) -> Any:
        return parse_space("optuna", value)


class RankBy(BaseModel):
    """Which metric picks the best run (``best.json``) and orders the summary."""

    model_config = ConfigDict(extra="forbid")

    metric: str = "sharpe"
    direction: Literal["maximize", "minimize"] = "maximize"

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        if value not in RANK_METRICS:
            raise ValueError(f"must be one of {', '.join(RANK_METRICS)}")
        return value


class PortfolioEntry(BaseModel):
    """One portfolio run: a portfolio config file and optional overrides passed to it."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1)
    overrides: dict[str, Any] | None = None


class SweepConfig(BaseModel):
    """A sweep config file, validated (see the module docstring for the format)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    backtest: dict[str, Any] | None = None
    grid: dict[str, Annotated[list[Any], Field(min_length=1)]] | None = Field(default=None, min_length=1)
    random: RandomSearch | None = None
    optuna: OptunaSearch | None = None
    portfolios: list[PortfolioEntry] | None = Field(default=None, min_length=1, max_length=MAX_RUNS)
    rank_by: RankBy | None = None

    @field_validator("portfolios", mode="before")
    @classmethod
    def _portfolio_paths(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        entries = []
        for i, item in enumerate(value):
            if isinstance(item, str):
                item = {"path": item}
            elif not isinstance(item, Mapping):
                raise ParameterError(f"portfolios.{i}", f"must be a path or {{path, overrides}}, got {item!r}")
            entries.append(item)
        return entries

    @model_validator(mode="after")
    def _one_shape(self) -> SweepConfig:
        searches = [name for name in ("grid", "random", "optuna") if getattr(self, name) is not None]
        if self.portfolios is not None:
            if self.backtest is not None:
                raise ParameterError("portfolios", "cannot be combined with backtest (a sweep runs one or the other)")
            if searches:
                raise ParameterError(searches[0], "applies to a backtest sweep, not to portfolios")
            return self
        if self.backtest is None:
            raise ParameterError(
                "backtest", "a sweep needs either backtest (with grid, random or optuna) or portfolios"
            )
        if len(searches) != 1:
            which = ", ".join(searches) if searches else "none"
            raise ParameterError("grid", f"a backtest sweep needs exactly one of grid, random, optuna (got {which})")
        if self.optuna is not None and self.rank_by is not None:
            raise ParameterError("rank_by", "an optuna sweep ranks by optuna.metric and optuna.direction")
        return self

    @property
    def method(self) -> str:
        """ "grid", "random", "optuna" or "list" (portfolios)."""
        for name in ("grid", "random", "optuna"):
            if getattr(self, name) is not None:
                return name
        return "list"

    @property
    def kind(self) -> str:
        """ "backtest" or "portfolio"."""
        return "portfolio" if self.portfolios is not None else "backtest"

    @classmethod
    def parse(cls, raw: Any) -> SweepConfig:
        """Validate raw config values.

        Raises:
            ParameterError: naming the field(s) (dotted paths, e.g. ``random.params.fast.low``) and rule(s).
        """
        if not isinstance(raw, Mapping):
            raise ParameterError("config", f"must be a mapping of sections, got {type(raw).__name__}")
        try:
            return cls.model_validate(dict(raw))
        except ValidationError as exc:
            raise _config_error(exc) from None


def _config_error(exc: ValidationError) -> ParameterError:
    """One ParameterError naming every bad field (dotted path) and its rule."""
    fields: list[str] = []
    parts: list[str] = []
    for err in exc.errors():
        field = ".".join(str(x) for x in err["loc"]) or "config"
        rule = err["msg"]
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, ParameterError):  # raised by a validator: keep its own field and rule
            field, rule = cause.field, cause.rule
        elif err["type"] == "value_error":
            rule = rule.removeprefix("Value error, ")
        elif err["type"] == "extra_forbidden":
            rule = "unknown field"
        elif err["type"] == "missing":
            rule = "is required"
        if field in fields:
            continue
        fields.append(field)
        parts.append(rule)
    if len(fields) == 1:
        return ParameterError(fields[0], parts[0])
    return ParameterError(", ".join(fields), "; ".join(f"{f}: {r}" for f, r in zip(fields, parts, strict=True)))


# ---------------------------------------------------------------------------------- files


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a config file: YAML for ``.yaml``/``.yml``, TOML for ``.toml``.

    Raises:
        ParameterError: on field ``config`` when the file is missing, has another extension, does not
            parse, or is not a mapping at the top level.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".yaml", ".yml", ".toml"):
        raise ParameterError("config", f"{p}: unsupported extension '{p.suffix}' (use .yaml, .yml or .toml)")
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParameterError("config", f"{p}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ParameterError("config", f"{p}: cannot be read ({exc})") from None
    try:
        if suffix == ".toml":
            loaded: Any = tomllib.loads(text)
        else:
            import yaml

            loaded = yaml.safe_load(text)
    except Exception as exc:  # yaml.YAMLError / tomllib.TOMLDecodeError carry the line and column
        kind = "TOML" if suffix == ".toml" else "YAML"
        detail = " ".join(str(exc).split())
        raise ParameterError("config", f"{p}: invalid {kind}: {detail}") from None
    if not isinstance(loaded, dict):
        raise ParameterError("config", f"{p}: the top level must be a mapping, got {type(loaded).__name__}")
    return loaded


# ---------------------------------------------------------------------------------- parameter spaces


@dataclass(frozen=True)
class Dimension:
    """One searched parameter: integers or floats in [low, high] (optionally log-scaled or stepped),
    or a finite set of choices."""

    name: str
    kind: Literal["int", "float", "choice"]
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def draw(self, rng: np.random.Generator) -> Any:
        """One value drawn uniformly (log-uniformly with ``log``) from the dimension, as a Python scalar."""
        if self.kind == "choice":
            return self.choices[int(rng.integers(len(self.choices)))]
        if self.kind == "int":
            lo, hi = int(self.low), int(self.high)
            if self.log:
                value = math.floor(math.exp(rng.uniform(math.log(lo), math.log(hi + 1))))
                return min(max(value, lo), hi)
            step = int(self.step or 1)
            return lo + step * int(rng.integers((hi - lo) // step + 1))
        if self.log:
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        if self.step is not None:
            count = math.floor((self.high - self.low) / self.step + 1e-9)
            return float(self.low + self.step * int(rng.integers(count + 1)))
        return float(rng.uniform(self.low, self.high))


def _resolve_ref(schema: Mapping[str, Any], prop: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = prop.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        resolved = schema.get("$defs", {}).get(ref.removeprefix("#/$defs/"))
        if isinstance(resolved, Mapping):
            return {**resolved, **{k: v for k, v in prop.items() if k != "$ref"}}
    return prop


def _schema_bounds(prop: Mapping[str, Any], is_int: bool) -> tuple[float | None, float | None]:
    low: float | None = prop.get("minimum")
    high: float | None = prop.get("maximum")
    if low is None and prop.get("exclusiveMinimum") is not None:
        x = float(prop["exclusiveMinimum"])
        low = math.floor(x) + 1 if is_int else float(np.nextafter(x, math.inf))
    if high is None and prop.get("exclusiveMaximum") is not None:
        x = float(prop["exclusiveMaximum"])
        high = math.ceil(x) - 1 if is_int else float(np.nextafter(x, -math.inf))
    return low, high


def build_dimension(field: str, name: str, spec: RangeSpec | list[Any] | None, strategy: type[Strategy]) -> Dimension:
    """Turn one ``params`` entry into a :class:`Dimension`, filling missing bounds from the schema.

    Raises:
        ParameterError: naming ``field`` (e.g. ``random.params.fast.low``) for an unknown parameter, a
            bound outside the schema's, low > high, a non-positive log bound, or no bound at all.
    """
    schema = strategy.parameters_schema()
    props = schema.get("properties", {})
    if name not in props:
        raise ParameterError(field, f"unknown parameter of {strategy.type} (known: {', '.join(props)})")
    prop = _resolve_ref(schema, props[name])
    if isinstance(spec, list):
        return Dimension(name, "choice", choices=tuple(spec))
    ptype = prop.get("type")
    if spec is None or spec == RangeSpec():
        if "enum" in prop:
            return Dimension(name, "choice", choices=tuple(prop["enum"]))
        if ptype == "boolean":
            return Dimension(name, "choice", choices=(False, True))
    if ptype not in ("integer", "number"):
        raise ParameterError(field, f"is a {ptype or 'non-numeric'} parameter: give a list of choices")
    spec = spec or RangeSpec()
    is_int = ptype == "integer"
    schema_low, schema_high = _schema_bounds(prop, is_int)
    low = spec.low if spec.low is not None else schema_low
    high = spec.high if spec.high is not None else schema_high
    if low is None or high is None:
        missing = "low" if low is None else "high"
        raise ParameterError(f"{field}.{missing}", f"not given and the {strategy.type} schema has no bound for {name}")
    if schema_low is not None and low < schema_low:
        raise ParameterError(f"{field}.low", f"{low:g} is below the schema minimum {schema_low:g} of {name}")
    if schema_high is not None and high > schema_high:
        raise ParameterError(f"{field}.high", f"{high:g} is above the schema maximum {schema_high:g} of {name}")
    if low > high:
        raise ParameterError(f"{field}.low", f"must not exceed high ({low:g} > {high:g})")
    if spec.log and low <= 0:
        raise ParameterError(f"{field}.low", f"must be > 0 with log (got {low:g})")
    if is_int:
        for bound, value in (("low", low), ("high", high)):
            if value != int(value):
                raise ParameterError(f"{field}.{bound}", f"must be an integer for the integer parameter {name}")
        if spec.step is not None and spec.step != int(spec.step):
            raise ParameterError(f"{field}.step", f"must be an integer for the integer parameter {name}")
        return Dimension(name, "int", float(int(low)), float(int(high)), spec.log, spec.step)
    return Dimension(name, "float", float(low), float(high), spec.log, spec.step)


# ---------------------------------------------------------------------------------- runs


def run_key(kind: str, params: Mapping[str, Any]) -> str:
    """Stable id of a run within a sweep: SHA-256 (32 hex digits) of its kind and parameters."""
    return hashlib.sha256(canonical_json({"kind": kind, "params": dict(params)}).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class RunSpec:
    """One planned run.

    ``params`` is what the runs table stores: the strategy parameters of a backtest run (the base
    request's ``params`` overridden by the point), or ``{"portfolio": path, "overrides": {...}}``.
    """

    seq: int
    kind: str
    params: dict[str, Any]
    run_key: str

    @classmethod
    def make(cls, seq: int, kind: str, params: dict[str, Any]) -> RunSpec:
        """A spec with its ``run_key`` computed from ``kind`` and ``params``."""
        return cls(seq, kind, params, run_key(kind, params))


@dataclass
class Sweep:
    """A validated, resolved sweep: ready to plan and run.

    Attributes:
        config: the validated config.
        config_file: where it was read from (None when built in memory).
        base: the base BacktestRequest as JSON-able values with absolute paths (backtest sweeps).
        strategy: the strategy plugin class (backtest sweeps).
        dimensions: the searched parameters of random / optuna sweeps, in config order.
        portfolios: (absolute path, overrides) per portfolio run.
        normalized: the config as stored (JSON-able, paths absolute); ``sweep_id`` hashes it.
        sweep_id: 32 hex digits.
    """

    config: SweepConfig
    config_file: Path | None
    base: dict[str, Any] | None
    strategy: type[Strategy] | None
    dimensions: list[Dimension] = field(default_factory=list)
    portfolios: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    normalized: dict[str, Any] = field(default_factory=dict)
    sweep_id: str = ""

    @property
    def name(self) -> str:
        """The sweep's name."""
        return self.config.name

    @property
    def kind(self) -> str:
        """ "backtest" or "portfolio"."""
        return self.config.kind

    @property
    def method(self) -> str:
        """ "grid", "random", "optuna" or "list"."""
        return self.config.method

    @property
    def rank(self) -> RankBy:
        """Metric and direction that pick the best run."""
        if self.config.optuna is not None:
            return RankBy(metric=self.config.optuna.metric, direction=self.config.optuna.direction)
        return self.config.rank_by or RankBy()

    def planned_runs(self) -> int:
        """How many runs the plan has (for optuna: the number of trials)."""
        c = self.config
        if c.optuna is not None:
            return c.optuna.trials
        return len(self.plan())

    def plan(self) -> list[RunSpec]:
        """The runs of a grid, random or portfolio sweep in order (duplicates, by run_key, dropped).

        Raises:
            ParameterError: for an optuna sweep (its trials are asked while it runs).
        """
        c = self.config
        specs: list[RunSpec] = []
        if c.portfolios is not None:
            for path, overrides in self.portfolios:
                specs.append(RunSpec.make(len(specs), "portfolio", {"portfolio": path, "overrides": overrides}))
        elif c.grid is not None:
            fixed = dict((self.base or {}).get("params") or {})
            names = list(c.grid)
            for values in itertools.product(*(c.grid[n] for n in names)):
                specs.append(RunSpec.make(len(specs), "backtest", fixed | dict(zip(names, values, strict=True))))
        elif c.random is not None:
            fixed = dict((self.base or {}).get("params") or {})
            rng = np.random.default_rng(c.seed)
            for _ in range(c.random.samples):
                point = {d.name: d.draw(rng) for d in self.dimensions}
                specs.append(RunSpec.make(len(specs), "backtest", fixed | point))
        else:
            raise ParameterError("optuna", "optuna trials are asked while the sweep runs, not planned up front")
        unique: dict[str, RunSpec] = {}
        for spec in specs:
            unique.setdefault(spec.run_key, spec)
        return [RunSpec(i, s.kind, s.params, s.run_key) for i, s in enumerate(unique.values())]

    def request_for(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The raw BacktestRequest values of one backtest run (the base with ``params`` replaced)."""
        if self.base is None:
            raise ParameterError("backtest", "not a backtest sweep")
        return self.base | {"params": dict(params)}


def _resolve_path(value: Any, base_dir: Path) -> Any:
    if not isinstance(value, str) or not value:
        return value
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base_dir / p))


def resolve_sweep(
    config: SweepConfig,
    registry: StrategyRegistry,
    base_dir: str | Path = ".",
    config_file: str | Path | None = None,
) -> Sweep:
    """Check a parsed config against the strategy registry and the file system; compute ``sweep_id``.

    Relative paths (backtest data files, portfolio configs) are resolved against ``base_dir`` (the
    config file's folder).

    Raises:
        ParameterError: naming the field: an invalid base request (``backtest.<field>``), an unknown
            strategy (``backtest.strategy_type``) or parameter (``grid.<name>``), a bad range, too many
            runs, a portfolio config that does not exist (``portfolios.<i>``).
    """
    root = Path(base_dir).resolve()
    base: dict[str, Any] | None = None
    strategy: type[Strategy] | None = None
    dimensions: list[Dimension] = []
    portfolios: list[tuple[str, dict[str, Any]]] = []
    normalized = config.model_dump(mode="json", exclude_none=True)

    if config.backtest is not None:
        raw = dict(config.backtest)
        for name in PATH_FIELDS:
            if name in raw:
                raw[name] = _resolve_path(raw[name], root)
        try:
            request = BacktestRequest.parse(raw)
        except ParameterError as exc:
            raise ParameterError(f"backtest.{exc.field}", exc.rule) from None
        try:
            strategy = registry.get(request.strategy_type)
        except EngineError as exc:
            raise ParameterError("backtest.strategy_type", str(exc)) from None
        schema = strategy.parameters_schema()
        props = schema.get("properties", {})
        closed = schema.get("additionalProperties") is False
        for name in request.params:
            if closed and name not in props:
                raise ParameterError(
                    f"backtest.params.{name}", f"unknown parameter of {strategy.type} (known: {', '.join(props)})"
                )
        base = request.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
        base["strategy_type"] = request.strategy_type
        base["data"] = str(request.data)
        base["params"] = dict(raw.get("params") or {})
        normalized["backtest"] = base
        if config.grid is not None:
            points = 1
            for name, values in config.grid.items():
                if closed and name not in props:
                    raise ParameterError(
                        f"grid.{name}", f"unknown parameter of {strategy.type} (known: {', '.join(props)})"
                    )
                points *= len(values)
            if points > MAX_RUNS:
                raise ParameterError("grid", f"has {points} points, more than the limit of {MAX_RUNS} runs")
        search = config.random or config.optuna
        if search is not None:
            section = "random" if config.random is not None else "optuna"
            for name, spec in search.params.items():
                dimensions.append(build_dimension(f"{section}.params.{name}", name, spec, strategy))
            if config.optuna is not None:
                for d in dimensions:
                    bad = [c for c in d.choices if not isinstance(c, (bool, int, float, str, type(None)))]
                    if bad:
                        raise ParameterError(
                            f"optuna.params.{d.name}", f"choices must be numbers, strings, booleans or null: {bad[0]!r}"
                        )
    else:
        assert config.portfolios is not None
        entries = []
        for i, item in enumerate(config.portfolios):
            entry = item
            path = Path(_resolve_path(entry.path, root))
            if not path.is_file():
                raise ParameterError(f"portfolios.{i}", f"{path}: portfolio config file not found")
            portfolios.append((str(path), dict(entry.overrides or {})))
            entries.append({"path": str(path), "overrides": dict(entry.overrides or {})})
        normalized["portfolios"] = entries

    sweep = Sweep(
        config=config,
        config_file=Path(config_file).resolve() if config_file is not None else None,
        base=base,
        strategy=strategy,
        dimensions=dimensions,
        portfolios=portfolios,
        normalized=normalized,
    )
    sweep.sweep_id = hashlib.sha256(canonical_json({"name": config.name, "config": normalized}).encode()).hexdigest()[
        :32
    ]
    if config.optuna is None and len(sweep.plan()) > MAX_RUNS:  # pragma: no cover - bounded by the fields
        raise ParameterError(config.method, f"more than {MAX_RUNS} runs")
    return sweep


def load_sweep(path: str | Path, registry: StrategyRegistry) -> Sweep:
    """Read, validate and resolve a sweep config file (see :func:`read_config_file`, :func:`resolve_sweep`).

    Raises:
        ParameterError: naming the field and the rule; nothing has been run or stored.
    """
    p = Path(path)
    raw = read_config_file(p)
    config = SweepConfig.parse(raw)
    return resolve_sweep(config, registry, base_dir=p.resolve().parent, config_file=p)
