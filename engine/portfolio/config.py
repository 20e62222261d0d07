"""The portfolio backtest configuration file (YAML or TOML) and how it becomes a run.

Shape (paths are relative to the config file's folder; times ISO 8601, naive = UTC)::

    name: crypto-four
    capital: 100000              # quote currency
    start: 2025-08-01            # optional; earlier bars only warm up
    end: 2026-05-01              # optional, exclusive
    slippage_bps: 1
    venue: {taker_fee_bps: 4, maker_fee_bps: 2, lot_size: 0.0, tick_size: 0.0}
    instruments: {BTCUSDT: {lot_size: 0.001, tick_size: 0.1}}      # per-symbol overrides
    datasets:
      panel_1h: {bars: data/perp_1h.parquet, funding: data/funding.parquet, marks: data/mark_1h.parquet}
    risk: {max_risk_per_trade_pct: 2, max_leverage: 3, conflict_mode: reject}  # engine.risk.limits
    breakers: {halt_drawdown_pct: 25, pause_drawdown_pct: 15, resume_drawdown_pct: 10,
               snapshot_interval: 1h}
    strategies:
      - name: trend
        type: multi_tf_trend
        allocation: 30           # percent of capital; default: the type's seed share or an equal split
        dataset: panel_1h
        timeframe: 4h            # resampled from the dataset when coarser than its bars
        symbols: [BTCUSDT, ETHUSDT]   # default: every symbol of the dataset
        leverage: 3
        params: {risk_pct: 1.0}

Allocation defaults (seed 004, Phase 5.1): multi_tf_trend 30, mean_reversion_scalp 20,
funding_carry 20, cross_sectional_momentum 30; an instance of another type without an allocation
gets an equal share of what the explicit and seed allocations leave.

Every field is validated once here: unknown keys, bad numbers and missing files are rejected with
the field's dotted path and the rule (:class:`engine.errors.ParameterError`).
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine.errors import ParameterError
from engine.instruments import Instrument
from engine.portfolio.backtest import PortfolioBacktest, PortfolioResult, SleeveSpec
from engine.portfolio.manager import BreakerSettings
from engine.risk.limits import RiskLimits
from engine.strategy.base import params_error
from engine.strategy.registry import StrategyRegistry
from engine.timeframes import timeframe_ns, timeframe_str

#: seed 004 Phase 5.1: trend 30 %, mean reversion 20 %, funding carry 20 %, momentum 30 %
SEED_ALLOCATIONS = {
    "multi_tf_trend": 30.0,
    "mean_reversion_scalp": 20.0,
    "funding_carry": 20.0,
    "cross_sectional_momentum": 30.0,
}


def _to_ns(value: datetime | None) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp()) * 1_000_000_000 + value.microsecond * 1_000


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


#: the file fields of a dataset
DATASET_FILES = ("bars", "funding", "marks", "open_interest")
M = TypeVar("M", bound=BaseModel)


class Dataset(_Model):
    """Files of one dataset: bars (required), funding rates, mark prices, open interest."""

    bars: Path
    funding: Path | None = None
    marks: Path | None = None
    open_interest: Path | None = None


class Venue(_Model):
    """Default instrument settings (fees in basis points of notional, sizes in base/quote units)."""

    fee_bps: float = Field(default=0.0, ge=0.0, lt=1000.0, allow_inf_nan=False)
    maker_fee_bps: float | None = Field(default=None, ge=0.0, lt=1000.0, allow_inf_nan=False)
    taker_fee_bps: float | None = Field(default=None, ge=0.0, lt=1000.0, allow_inf_nan=False)
    lot_size: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    tick_size: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    min_qty: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    maintenance_margin: float = Field(default=0.005, ge=0.0, lt=1.0, allow_inf_nan=False)


class InstrumentOverride(_Model):
    """Per-symbol overrides of :class:`Venue` (None keeps the venue default)."""

    maker_fee_bps: float | None = Field(default=None, ge=0.0, lt=1000.0, allow_inf_nan=False)
    taker_fee_bps: float | None = Field(default=None, ge=0.0, lt=1000.0, allow_inf_nan=False)
    lot_size: float | None = Field(default=None, ge=0.0, allow_inf_nan=False)
    tick_size: float | None = Field(default=None, ge=0.0, allow_inf_nan=False)
    min_qty: float | None = Field(default=None, ge=0.0, allow_inf_nan=False)
    multiplier: float | None = Field(default=None, gt=0.0, allow_inf_nan=False)


class StrategyInstance(_Model):
    """One strategy instance of the portfolio."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    type: str = Field(min_length=1)
    dataset: str = Field(min_length=1)
    allocation: float | None = Field(default=None, gt=0.0, le=100.0, allow_inf_nan=False)
    timeframe: str | None = None
    symbols: list[str] | None = None
    market: Literal["spot", "perpetual"] | None = None
    leverage: float = Field(default=1.0, ge=1.0, le=125.0, allow_inf_nan=False)
    warmup: int = Field(default=0, ge=0)
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("timeframe")
    @classmethod
    def _timeframe(cls, value: str | None) -> str | None:
        return None if value is None else timeframe_str(timeframe_ns(value))

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        cleaned = [s.strip() for s in value if s.strip()]
        if not cleaned:
            raise ValueError("must name at least one symbol")
        if len(set(cleaned)) != len(cleaned):
            raise ValueError("must not repeat a symbol")
        return cleaned


class PortfolioConfig(_Model):
    """A validated portfolio backtest configuration (see the module docstring)."""

    name: str = Field(default="portfolio", min_length=1, max_length=128)
    capital: float = Field(default=100_000.0, gt=0.0, allow_inf_nan=False)
    start: datetime | None = None
    end: datetime | None = None
    slippage_bps: float = Field(default=0.0, ge=0.0, lt=1000.0, allow_inf_nan=False)
    venue: Venue = Field(default_factory=Venue)
    instruments: dict[str, InstrumentOverride] = Field(default_factory=dict)
    datasets: dict[str, Dataset]
    risk: RiskLimits = Field(default_factory=RiskLimits)
    breakers: BreakerSettings = Field(default_factory=BreakerSettings)
    strategies: list[StrategyInstance] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> PortfolioConfig:
        start, end = _to_ns(self.start), _to_ns(self.end)
        if start is not None and end is not None and start >= end:
            raise ParameterError("start", f"must be before end (got {self.start}, {self.end})")
        names = [s.name for s in self.strategies]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ParameterError("strategies.name", f"names must be unique, repeated: {', '.join(dup)}")
        for i, s in enumerate(self.strategies):
            if s.dataset not in self.datasets:
                raise ParameterError(
                    f"strategies.{i}.dataset",
                    f"unknown dataset {s.dataset!r} (defined: {', '.join(self.datasets) or 'none'})",
                )
            if s.market == "spot" and s.leverage != 1.0:
                raise ParameterError(f"strategies.{i}.leverage", "must be 1 for the spot market")
        total = sum(self.allocations().values())
        if total > 100.0 + 1e-9:
            raise ParameterError("strategies.allocation", f"allocations must sum to at most 100, got {total:g}")
        return self

    def allocations(self) -> dict[str, float]:
        """Instance name → allocation in percent, with the defaults of the module docstring applied."""
        out: dict[str, float] = {}
        rest = []
        for s in self.strategies:
            if s.allocation is not None:
                out[s.name] = s.allocation
            elif s.type in SEED_ALLOCATIONS:
                out[s.name] = SEED_ALLOCATIONS[s.type]
            else:
                rest.append(s.name)
        if rest:
            share = max(0.0, 100.0 - sum(out.values())) / len(rest)
            for name in rest:
                out[name] = share
        return out

    @property
    def start_ns(self) -> int | None:
        return _to_ns(self.start)

    @property
    def end_ns(self) -> int | None:
        return _to_ns(self.end)

    def instrument(self, symbol: str, instance: StrategyInstance, kind: Literal["spot", "perpetual"]) -> Instrument:
        """The instrument ``instance`` trades ``symbol`` with (venue defaults, overrides, its leverage)."""
        return make_instrument(self.venue, self.instruments, symbol, kind, instance.leverage)


def make_instrument(
    venue: Venue,
    overrides: dict[str, InstrumentOverride],
    symbol: str,
    kind: Literal["spot", "perpetual"],
    leverage: float,
) -> Instrument:
    """An instrument from the venue defaults and the symbol's overrides (fees from basis points)."""
    v = venue
    o = overrides.get(symbol, InstrumentOverride())
    maker = (
        o.maker_fee_bps
        if o.maker_fee_bps is not None
        else (v.maker_fee_bps if v.maker_fee_bps is not None else v.fee_bps)
    )
    taker = (
        o.taker_fee_bps
        if o.taker_fee_bps is not None
        else (v.taker_fee_bps if v.taker_fee_bps is not None else v.fee_bps)
    )
    return Instrument(
        symbol=symbol,
        kind=kind,
        tick_size=o.tick_size if o.tick_size is not None else v.tick_size,
        lot_size=o.lot_size if o.lot_size is not None else v.lot_size,
        min_qty=o.min_qty if o.min_qty is not None else v.min_qty,
        maker_fee=maker / 10_000.0,
        taker_fee=taker / 10_000.0,
        multiplier=o.multiplier if o.multiplier is not None else 1.0,
        leverage=leverage,
        maintenance_margin=v.maintenance_margin,
    )


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ParameterError("config", f"file not found: {path}")
    text = path.read_text()
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            raw: Any = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            raw = yaml.safe_load(text)
        else:
            raise ParameterError("config", f"{path}: must end in .yaml, .yml or .toml")
    except tomllib.TOMLDecodeError as exc:
        raise ParameterError("config", f"{path}: not valid TOML: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ParameterError("config", f"{path}: not valid YAML{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise ParameterError("config", f"{path}: must be a mapping at the top level")
    return raw


def absolute_paths(entry: Any, keys: tuple[str, ...], base: Path) -> None:
    """Make the relative path strings ``entry[key]`` of a raw config mapping absolute against ``base``
    (the config file's folder), in place; anything else is left for validation to judge."""
    if isinstance(entry, dict):
        for key in keys:
            value = entry.get(key)
            if isinstance(value, str) and not Path(value).is_absolute():
                entry[key] = str((base / value).resolve())


def require_files(files: Iterable[tuple[str, Path | None]]) -> None:
    """ParameterError naming the field of the first given path that is not a file."""
    for field, file in files:
        if file is not None and not Path(file).is_file():
            raise ParameterError(field, f"file not found: {file}")


def load_model(
    path: str | Path,
    model: type[M],
    overrides: dict[str, Any] | None,
    resolve: Callable[[dict[str, Any], Path], None],
) -> M:
    """Read a YAML/TOML config, merge ``overrides``, make its paths absolute with ``resolve`` and validate
    it as ``model``. Raises ParameterError naming the field and the rule."""
    path = Path(path)
    raw = _merge(_read(path), overrides or {})
    resolve(raw, path.resolve().parent)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise params_error(exc) from None


def _resolve(raw: dict[str, Any], base: Path) -> None:
    datasets = raw.get("datasets")
    if isinstance(datasets, dict):
        for entry in datasets.values():
            absolute_paths(entry, DATASET_FILES, base)


def _merge(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = dict(raw)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_portfolio_config(path: str | Path, overrides: dict[str, Any] | None = None) -> PortfolioConfig:
    """Read and validate a portfolio config file (``.yaml``/``.yml``/``.toml``).

    ``overrides`` are merged into the raw mapping before validation (dicts merge key by key;
    ``strategies`` is replaced as a whole).

    Raises:
        ParameterError: unreadable file, bad syntax, or a field breaking its rule (named by its path).
    """
    config = load_model(path, PortfolioConfig, overrides, _resolve)
    require_files(
        (f"datasets.{name}.{key}", getattr(ds, key)) for name, ds in config.datasets.items() for key in DATASET_FILES
    )
    return config


def build_backtest(config: PortfolioConfig, registry: StrategyRegistry) -> PortfolioBacktest:
    """Load every dataset the config names and build the :class:`PortfolioBacktest`.

    Raises:
        UnknownStrategyError, ParameterError, DataError.
    """
    from engine.backtest.runner import split_bars
    from engine.data import (
        describe,
        infer_timeframe_ns,
        load_bars,
        load_funding,
        load_marks,
        load_open_interest,
        resample,
    )

    end_ns = config.end_ns
    everything: set[str] = set()  # marker: every symbol of the dataset
    wanted: dict[str, set[str]] = {}
    for s in config.strategies:
        registry.get(s.type)  # unknown type fails before any data is read
        chosen = wanted.setdefault(s.dataset, set())
        if s.symbols is None:
            wanted[s.dataset] = everything
        elif chosen is not everything:
            chosen.update(s.symbols)
    loaded: dict[str, dict[str, Any]] = {}
    for name, symbols in wanted.items():
        ds = config.datasets[name]
        if symbols is not everything:
            known = {str(r["symbol"]) for r in describe(ds.bars)}
            for i, s in enumerate(config.strategies):
                absent = [x for x in s.symbols or () if s.dataset == name and x not in known]
                if absent:
                    raise ParameterError(
                        f"strategies.{i}.symbols", f"not in dataset {name!r} ({ds.bars}): {', '.join(absent)}"
                    )
        bars = load_bars(ds.bars, symbols=None if symbols is everything else sorted(symbols), end_ns=end_ns)
        if bars.num_rows < 2:
            raise ParameterError(f"datasets.{name}.bars", f"fewer than 2 bars in {ds.bars}")
        present = list(dict.fromkeys(bars.column("symbol").to_pylist()))

        def _covered(file: Path | None, present: list[str] = present) -> list[str]:
            if file is None:
                return []
            known = {str(r["symbol"]) for r in describe(file)}
            return [s for s in present if s in known]

        fcov, mcov, ocov = _covered(ds.funding), _covered(ds.marks), _covered(ds.open_interest)
        loaded[name] = {
            "bars": bars,
            "native": infer_timeframe_ns(bars),
            "funding": load_funding(ds.funding, symbols=fcov, end_ns=end_ns) if ds.funding and fcov else None,
            "marks": load_marks(ds.marks, symbols=mcov, end_ns=end_ns) if ds.marks and mcov else None,
            "open_interest": (
                load_open_interest(ds.open_interest, symbols=ocov, end_ns=end_ns) if ds.open_interest and ocov else None
            ),
            "resampled": {},
        }
    allocations = config.allocations()
    specs = []
    for i, s in enumerate(config.strategies):
        data = loaded[s.dataset]
        native = data["native"]
        timeframe = s.timeframe or timeframe_str(native)
        tf = timeframe_ns(timeframe)
        if tf < native or tf % native:
            raise ParameterError(
                f"strategies.{i}.timeframe",
                f"{timeframe!r} must be a whole multiple of the dataset's {timeframe_str(native)!r} bars",
            )
        cache = data["resampled"]
        if timeframe not in cache:
            table = data["bars"] if tf == native else resample(data["bars"], timeframe)
            cache[timeframe] = split_bars(table)
        arrays = cache[timeframe]
        traded = s.symbols if s.symbols is not None else list(arrays)
        missing = [sym for sym in traded if sym not in arrays]
        if missing:
            raise ParameterError(f"strategies.{i}.symbols", f"not in dataset {s.dataset!r}: {', '.join(missing)}")
        kind = s.market or ("perpetual" if data["funding"] is not None else "spot")
        cls = registry.get(s.type)
        try:
            params = cls.validate_params(s.params)
        except ParameterError as exc:
            raise ParameterError(f"strategies.{i}.params.{exc.field}", exc.rule) from None
        specs.append(
            SleeveSpec(
                name=s.name,
                strategy_cls=cls,
                params=params,
                bars={sym: arrays[sym] for sym in traded},
                timeframe=timeframe,
                instruments={sym: config.instrument(sym, s, kind) for sym in traded},
                allocation=allocations[s.name],
                funding=_only(data["funding"], traded),
                marks=_only(data["marks"], traded),
                open_interest=_only(data["open_interest"], traded),
                warmup=s.warmup,
                data_path=str(config.datasets[s.dataset].bars),
            )
        )
    return PortfolioBacktest(
        specs,
        capital=config.capital,
        risk_limits=config.risk,
        breakers=config.breakers,
        slippage_bps=config.slippage_bps,
        start_ns=config.start_ns,
        name=config.name,
    )


def _only(table: pa.Table | None, symbols: list[str]) -> pa.Table | None:
    if table is None:
        return None
    return table.filter(pc.is_in(table.column("symbol"), value_set=pa.array(symbols, pa.string())))


def run_portfolio_file(
    path: str | Path, overrides: dict[str, Any] | None = None, registry: StrategyRegistry | None = None
) -> PortfolioResult:
    """Load a portfolio config, its data, run the backtest and return the result.

    Raises:
        ParameterError, DataError, UnknownStrategyError, StrategyRuntimeError.
    """
    config = load_portfolio_config(path, overrides)
    registry = registry or StrategyRegistry().discover()
    result = build_backtest(config, registry).run()
    result.settings.update({"config": str(Path(path)), "config_values": config.model_dump(mode="json")})
    return result
