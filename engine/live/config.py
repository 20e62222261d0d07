"""The paper-trading session configuration of ``tradectl run`` (YAML or TOML).

Shape (paths relative to the config file's folder; times ISO 8601, naive = UTC)::

    name: paper-perp-1m
    start: 2026-01-05            # replay from here (earlier data is not read)
    end: 2026-01-07              # optional, exclusive
    dataset: {bars: data/perp_1m.parquet, funding: data/funding.parquet, marks: null}
                                 # or {trades: data/ticks.parquet}: bars of feed.bar_timeframe from ticks
    feed: {speed: max, batch_rows: 4096, window_ms: 5, shard_size: 1, bar_timeframe: 1m}
    slippage_bps: 1
    venue: {taker_fee_bps: 4, maker_fee_bps: 2}
    instruments: {DOGEUSDT: {lot_size: 1}}
    checkpoint_every_s: 30
    accounts:
      - id: desk-a
        capital: 100000
        timezone: UTC
        risk: {max_leverage: 3}          # engine.risk.limits
        breakers: {snapshot_interval: 5m}  # engine.portfolio.manager.BreakerSettings
        bots:
          - name: doge-ema
            type: ema_crossover
            params: {fast: 20, slow: 80, size_pct: 50}
            allocation: 25               # percent of the account's capital
            symbols: [DOGEUSDT]
            timeframe: 1m                # bars built by the multiplexer from the dataset's bars
            leverage: 2

Strategies of legs entered by hand (real-time M2M, no bot) go under an account's ``strategies``::

    accounts:
      - id: nse-desk
        timezone: Asia/Kolkata          # daily M2M rows close at local midnight
        rate: 0.10                      # risk-free rate of option model marks
        strategies:
          - name: nifty-condor
            stop_loss: 5000
            build: {kind: iron_condor, chain: data/nse_chain.parquet, underlying: NIFTY,
                    expiry: 2024-05-09, snapshot: S3, lots: 1, short_offset: 300, wing_width: 200}
          - name: perp-pair
            legs: [{symbol: DOGEUSDT, side: 1, qty: 20000, entry_price: 0.14}]
    extra_feeds:                        # bar files of other markets/periods, each for its symbols
      - {bars: data/perp_1m.parquet, symbols: [DOGEUSDT], start: 2026-01-05, end: 2026-01-07}

``dataset.volume: false`` replays bars without a volume column (an index).

Each bot runs one strategy instance of the same name (``instance_id`` = ``bot_id`` =
``<account>/<name>``, stable across restarts so a restarted session resumes its bots). ``feed.speed``
is ``max`` (as fast as possible), or a factor of real time (1 = real time, 60 = a minute per second).
``feed.shard_size`` is the number of symbols per market-data multiplexer (1 = one per symbol).

Every field is validated once here: unknown keys, bad numbers, missing files, unknown strategy types
and parameters are rejected with the field's dotted path and the rule
(:class:`engine.errors.ParameterError`).
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from engine.errors import ParameterError
from engine.instruments import Instrument
from engine.live.bot import BotSpec, ErrorPolicy
from engine.portfolio.config import (
    InstrumentOverride,
    Venue,
    _Model,
    _to_ns,
    absolute_paths,
    load_model,
    make_instrument,
    require_files,
)
from engine.portfolio.manager import BreakerSettings
from engine.risk.limits import RiskLimits
from engine.strategy.registry import StrategyRegistry
from engine.timeframes import timeframe_ns, timeframe_str

_NAME = r"^[A-Za-z0-9_.:-]+$"


class LiveDataset(_Model):
    """The replayed files: ``bars`` (OHLCV) or ``trades`` (ticks; the multiplexers build bars of
    ``feed.bar_timeframe`` from them), plus optional funding rates and mark prices."""

    bars: Path | None = None
    trades: Path | None = None
    funding: Path | None = None
    marks: Path | None = None
    volume: bool = True  # false: the bars have no volume column (an index such as NIFTY 50); volume reads 0

    @model_validator(mode="after")
    def _one_source(self) -> LiveDataset:
        if self.bars is not None and self.trades is not None:
            raise ParameterError("dataset", "give one of bars and trades, not both")
        return self


class FeedSettings(_Model):
    """Where market data comes from and how it is batched.

    ``source: replay`` (default) replays ``dataset`` at ``speed`` (``"max"`` or a factor of real
    time) in feed batches of ``batch_rows``; ``source: live`` streams trades from ``exchange``
    ("binanceusdm", "binance", "bybit") over ccxt.pro websockets (``symbol_map``: symbol → ccxt
    symbol, default ``<BASE>/USDT:USDT`` for ``<BASE>USDT`` perpetuals), or plays a recorded live
    session back offline (``playback``: a recording, :mod:`engine.feeds.recorded`); bars of
    ``bar_timeframe`` are built from the trades. ``window_ms``: the multiplexers' batching window
    (wall time); ``shard_size``: symbols per multiplexer.
    """

    source: Literal["replay", "live"] = "replay"
    exchange: Literal["binanceusdm", "binance", "bybit"] = "binanceusdm"
    symbol_map: dict[str, str] = Field(default_factory=dict)
    playback: Path | None = None

    speed: float | Literal["max"] = "max"
    batch_rows: int = Field(default=4096, ge=1, le=1_000_000)
    window_ms: float = Field(default=5.0, ge=0.0, le=60_000.0, allow_inf_nan=False)
    shard_size: int = Field(default=1, ge=1, le=10_000)
    bar_timeframe: str = "1m"

    @field_validator("bar_timeframe")
    @classmethod
    def _bar_tf(cls, value: str) -> str:
        return timeframe_str(timeframe_ns(value))

    @field_validator("speed")
    @classmethod
    def _speed(cls, value: float | str) -> float | str:
        if value != "max" and not (isinstance(value, int | float) and 0 < value <= 1e9):
            raise ValueError("must be 'max' or a factor of real time > 0")
        return value

    def ccxt_symbol(self, symbol: str) -> str:
        """The exchange's unified symbol of ``symbol`` (see the class docstring)."""
        if symbol in self.symbol_map:
            return self.symbol_map[symbol]
        if symbol.endswith("USDT"):
            base = symbol[:-4]
            return f"{base}/USDT:USDT" if self.exchange != "binance" else f"{base}/USDT"
        raise ParameterError("feed.symbol_map", f"give the exchange's symbol of {symbol!r}")

    @property
    def speed_factor(self) -> float | None:
        """None = as fast as possible."""
        return None if self.speed == "max" else float(self.speed)


class LegConfig(_Model):
    """A leg entered by hand (:class:`engine.m2m.LegSpec`): side +1 buy / −1 sell, qty in units, entry
    price in quote currency per unit, multiplier in quote currency per price point per unit."""

    symbol: str = Field(min_length=1)
    side: Literal[1, -1]
    qty: float = Field(gt=0.0, allow_inf_nan=False)
    entry_price: float = Field(ge=0.0, allow_inf_nan=False)
    exchange: str = ""
    segment: Literal["spot", "perp", "future", "option", "index"] = "perp"
    lot_size: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    multiplier: float = Field(default=1.0, gt=0.0, allow_inf_nan=False)
    notes: str = ""


class OptionBuild(_Model):
    """Legs built from an NSE option-chain snapshot (:mod:`engine.m2m.options`), entered at its LTPs:
    ``iron_condor`` (sell K±short_offset, buy K±(short_offset + wing_width)) or ``short_straddle``
    (sell the ATM call and put), K the strike nearest ``spot`` (default: the underlying's last close
    before the session start in ``dataset.bars``). Option legs have no price stream here: they are
    marked by Black-Scholes from the underlying's LTP and the snapshot's implied volatility."""

    kind: Literal["iron_condor", "short_straddle"]
    chain: Path
    underlying: str = "NIFTY"
    underlying_symbol: str | None = None  # the index's symbol in dataset.bars (default: "NIFTY 50" for NIFTY)
    expiry: date
    snapshot: str = Field(min_length=1)
    lots: int = Field(default=1, ge=1)
    short_offset: float | None = Field(default=None, gt=0.0)
    wing_width: float | None = Field(default=None, gt=0.0)
    spot: float | None = Field(default=None, gt=0.0)

    @model_validator(mode="after")
    def _condor(self) -> OptionBuild:
        if self.kind == "iron_condor" and (self.short_offset is None or self.wing_width is None):
            raise ParameterError("build.short_offset", "an iron condor needs short_offset and wing_width")
        return self


class StrategyConfig(_Model):
    """A strategy of legs entered by hand (no bot): its legs, or legs built from an option chain."""

    name: str = Field(min_length=1, max_length=100, pattern=_NAME)
    tags: list[str] = Field(default_factory=list)
    target_profit: float | None = Field(default=None, gt=0.0, allow_inf_nan=False)
    stop_loss: float | None = Field(default=None, gt=0.0, allow_inf_nan=False)
    legs: list[LegConfig] = Field(default_factory=list)
    build: OptionBuild | None = None


class ExtraFeed(_Model):
    """Another replayed bar file for ``symbols`` (another market or period) with its own window."""

    bars: Path
    symbols: list[str] = Field(min_length=1)
    start: datetime | None = None
    end: datetime | None = None
    volume: bool = True


class BotConfig(_Model):
    """One bot and the strategy instance it runs."""

    name: str = Field(min_length=1, max_length=64, pattern=_NAME)
    type: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    allocation: float = Field(gt=0.0, le=100.0, allow_inf_nan=False)
    symbols: list[str] = Field(min_length=1)
    timeframe: str | None = None
    market: Literal["spot", "perpetual"] = "perpetual"
    leverage: float = Field(default=1.0, ge=1.0, le=125.0, allow_inf_nan=False)
    warmup: int = Field(default=0, ge=0)
    max_consecutive_errors: int = Field(default=3, ge=1)
    callback_timeout_s: float = Field(default=5.0, gt=0.0, allow_inf_nan=False)

    @field_validator("timeframe")
    @classmethod
    def _timeframe(cls, value: str | None) -> str | None:
        return None if value is None else timeframe_str(timeframe_ns(value))

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, value: list[str]) -> list[str]:
        cleaned = [s.strip() for s in value if s.strip()]
        if len(set(cleaned)) != len(cleaned) or not cleaned:
            raise ValueError("must name at least one symbol, without repeats")
        return cleaned


class AccountConfig(_Model):
    """A trading account: its capital, risk limits, breakers and bots."""

    id: str = Field(min_length=1, max_length=64, pattern=_NAME)
    name: str | None = None
    capital: float = Field(default=100_000.0, gt=0.0, allow_inf_nan=False)
    base_currency: str = "USDT"
    timezone: str = "UTC"  # IANA zone the account's days close in (M2M daily rows)
    rate: float = Field(default=0.0, allow_inf_nan=False)  # risk-free rate (fraction/year) of option model marks
    risk: RiskLimits = Field(default_factory=RiskLimits)
    breakers: BreakerSettings = Field(default_factory=BreakerSettings)
    bots: list[BotConfig] = Field(default_factory=list)
    strategies: list[StrategyConfig] = Field(default_factory=list)  # legs entered by hand (M2M)

    @model_validator(mode="after")
    def _unique(self) -> AccountConfig:
        names = [b.name for b in self.bots]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ParameterError(f"accounts.{self.id}.bots.name", f"names must be unique, repeated: {', '.join(dup)}")
        total = sum(b.allocation for b in self.bots)
        if total > 100.0 + 1e-9:
            raise ParameterError(
                f"accounts.{self.id}.bots.allocation", f"allocations must sum to at most 100, got {total:g}"
            )
        return self

    def allocations(self) -> dict[str, float]:
        """Bot (instance) name → percent of the account's capital."""
        return {b.name: b.allocation for b in self.bots}


class RunConfig(_Model):
    """A validated ``tradectl run`` configuration (see the module docstring)."""

    name: str = Field(default="paper", min_length=1, max_length=128)
    start: datetime | None = None
    end: datetime | None = None
    dataset: LiveDataset = Field(default_factory=LiveDataset)
    feed: FeedSettings = Field(default_factory=FeedSettings)
    slippage_bps: float = Field(default=0.0, ge=0.0, lt=1000.0, allow_inf_nan=False)
    venue: Venue = Field(default_factory=Venue)
    instruments: dict[str, InstrumentOverride] = Field(default_factory=dict)
    checkpoint_every_s: float = Field(default=30.0, gt=0.0, allow_inf_nan=False)
    accounts: list[AccountConfig] = Field(min_length=1)
    extra_feeds: list[ExtraFeed] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        if self.feed.source == "replay" and self.dataset.bars is None and self.dataset.trades is None:
            raise ParameterError("dataset", "a replay needs dataset.bars or dataset.trades")
        start, end = _to_ns(self.start), _to_ns(self.end)
        if start is not None and end is not None and start >= end:
            raise ParameterError("start", f"must be before end (got {self.start}, {self.end})")
        ids = [a.id for a in self.accounts]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ParameterError("accounts.id", f"ids must be unique, repeated: {', '.join(dup)}")
        return self

    @property
    def start_ns(self) -> int | None:
        return _to_ns(self.start)

    @property
    def end_ns(self) -> int | None:
        return _to_ns(self.end)

    def symbols(self) -> list[str]:
        """Every symbol any bot trades, sorted."""
        return sorted({s for a in self.accounts for b in a.bots for s in b.symbols})

    def instrument(self, symbol: str, bot: BotConfig) -> Instrument:
        """The instrument ``bot`` trades ``symbol`` with (venue defaults, overrides, its leverage)."""
        return make_instrument(self.venue, self.instruments, symbol, bot.market, bot.leverage)

    def bot_specs(self, registry: StrategyRegistry, base_timeframe: str) -> list[BotSpec]:
        """Every bot as a :class:`BotSpec` (parameters validated against the plugin's schema).

        Raises:
            ParameterError: an unknown strategy type, bad parameters, or a bot timeframe finer than
                (or not a whole multiple of) the dataset's bars.
        """
        base_ns = timeframe_ns(base_timeframe)
        out = []
        for account in self.accounts:
            for i, bot in enumerate(account.bots):
                where = f"accounts.{account.id}.bots.{i}"
                try:
                    cls = registry.get(bot.type)
                except KeyError as exc:
                    raise ParameterError(f"{where}.type", str(exc)) from None
                try:
                    cls.validate_params(bot.params)
                except ParameterError as exc:
                    raise ParameterError(f"{where}.params.{exc.field}", exc.rule) from None
                tf = bot.timeframe or base_timeframe
                tf_ns = timeframe_ns(tf)
                if tf_ns < base_ns or tf_ns % base_ns:
                    raise ParameterError(
                        f"{where}.timeframe",
                        f"must be a whole multiple of the dataset's bars ({base_timeframe}), got {tf}",
                    )
                out.append(
                    BotSpec(
                        bot_id=f"{account.id}/{bot.name}",
                        account_id=account.id,
                        name=bot.name,
                        strategy_type=bot.type,
                        params=dict(bot.params),
                        symbols=tuple(sorted(bot.symbols)),
                        timeframe=tf,
                        instruments={s: self.instrument(s, bot) for s in bot.symbols},
                        capital=account.capital * bot.allocation / 100.0,
                        slippage_bps=self.slippage_bps,
                        warmup=bot.warmup,
                        policy=ErrorPolicy(bot.max_consecutive_errors, bot.callback_timeout_s),
                    )
                )
        return out


_FILES = ("bars", "trades", "funding", "marks")


def _resolve(raw: dict[str, Any], base: Path) -> None:
    absolute_paths(raw.get("dataset"), _FILES, base)
    absolute_paths(raw.get("feed"), ("playback",), base)
    for extra in raw.get("extra_feeds") or []:
        absolute_paths(extra, ("bars",), base)
    for account in raw.get("accounts") or []:
        strategies = account.get("strategies") if isinstance(account, dict) else None
        for strategy in strategies if isinstance(strategies, list) else []:
            if isinstance(strategy, dict):
                absolute_paths(strategy.get("build"), ("chain",), base)


def load_run_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read and validate a run config file (``.yaml``/``.yml``/``.toml``).

    Raises:
        ParameterError: unreadable file, bad syntax, or a field breaking its rule (named by its path).
    """
    config = load_model(path, RunConfig, overrides, _resolve)
    require_files(
        [(f"dataset.{k}", getattr(config.dataset, k)) for k in _FILES]
        + [("feed.playback", config.feed.playback)]
        + [(f"extra_feeds.{i}.bars", f.bars) for i, f in enumerate(config.extra_feeds)]
        + [
            (f"accounts.{a.id}.strategies.{s.name}.build.chain", s.build.chain)
            for a in config.accounts
            for s in a.strategies
            if s.build is not None
        ]
    )
    return config
