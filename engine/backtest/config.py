"""The validated request for one backtest run, and how it is turned into a result.

:class:`BacktestRequest` is the edge: the CLI (and later the gRPC service) builds one from user
input; every field is checked once here, with errors naming the field and the rule.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine.backtest.result import BacktestResult
from engine.backtest.runner import Backtest, BacktestSettings, split_bars
from engine.errors import ParameterError
from engine.instruments import Instrument
from engine.strategy.base import params_error
from engine.strategy.registry import StrategyRegistry
from engine.timeframes import timeframe_ns, timeframe_str


def _to_ns(value: datetime | None) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp()) * 1_000_000_000 + value.microsecond * 1_000


class BacktestRequest(BaseModel):
    """One backtest: strategy, data, selection, account and venue settings.

    Units: cash in quote currency; fees and slippage in basis points of traded notional; lot size
    in base units; tick size in quote currency; times are ISO 8601 (naive = UTC).
    ``market`` defaults to "perpetual" when a funding file is given, else "spot".
    """

    model_config = ConfigDict(extra="forbid")

    strategy_type: str = Field(min_length=1)
    data: Path
    params: dict[str, Any] = Field(default_factory=dict)
    symbols: list[str] | None = None
    timeframe: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    cash: float = Field(100_000.0, gt=0.0, allow_inf_nan=False)
    fee_bps: float = Field(0.0, ge=0.0, lt=1000.0, allow_inf_nan=False)
    maker_fee_bps: float | None = Field(None, ge=0.0, lt=1000.0, allow_inf_nan=False)
    taker_fee_bps: float | None = Field(None, ge=0.0, lt=1000.0, allow_inf_nan=False)
    slippage_bps: float = Field(0.0, ge=0.0, lt=1000.0, allow_inf_nan=False)
    lot_size: float = Field(0.0, ge=0.0, allow_inf_nan=False)
    tick_size: float = Field(0.0, ge=0.0, allow_inf_nan=False)
    market: Literal["spot", "perpetual"] | None = None
    leverage: float = Field(1.0, ge=1.0, le=125.0, allow_inf_nan=False)
    funding: Path | None = None
    marks: Path | None = None
    open_interest: Path | None = None
    warmup: int = Field(0, ge=0)

    @field_validator("timeframe")
    @classmethod
    def _timeframe(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return timeframe_str(timeframe_ns(value))

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

    @model_validator(mode="after")
    def _consistent(self) -> BacktestRequest:
        start, end = _to_ns(self.start), _to_ns(self.end)
        if start is not None and end is not None and start >= end:
            raise ParameterError("start", f"must be before end (got start {self.start}, end {self.end})")
        if self.market == "spot" and self.leverage != 1.0:
            raise ParameterError("leverage", "must be 1 for the spot market")
        return self

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> BacktestRequest:
        """Validate raw input. Raises ParameterError naming the field(s) and rule(s)."""
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise params_error(exc) from None

    @property
    def start_ns(self) -> int | None:
        return _to_ns(self.start)

    @property
    def end_ns(self) -> int | None:
        return _to_ns(self.end)

    @property
    def market_kind(self) -> Literal["spot", "perpetual"]:
        if self.market is not None:
            return self.market
        return "perpetual" if self.funding is not None else "spot"

    def instrument(self, symbol: str) -> Instrument:
        """The instrument every traded symbol gets from this request's venue settings."""
        maker = self.maker_fee_bps if self.maker_fee_bps is not None else self.fee_bps
        taker = self.taker_fee_bps if self.taker_fee_bps is not None else self.fee_bps
        return Instrument(
            symbol=symbol,
            kind=self.market_kind,
            tick_size=self.tick_size,
            lot_size=self.lot_size,
            maker_fee=maker / 10_000.0,
            taker_fee=taker / 10_000.0,
            leverage=self.leverage,
        )


def _symbols_in(path: Path) -> set[str]:
    from engine.data import describe

    return {str(row["symbol"]) for row in describe(path)}


def run_request(
    request: BacktestRequest,
    registry: StrategyRegistry,
    progress: Any = None,
) -> BacktestResult:
    """Load the data a request names, run the backtest and return its result.

    Raises:
        UnknownStrategyError, ParameterError, DataError, StrategyRuntimeError.
    """
    from engine.data import infer_timeframe_ns, load_bars, load_funding, load_marks, load_open_interest, resample

    strategy_cls = registry.get(request.strategy_type)
    params = strategy_cls.validate_params(request.params)
    bars = load_bars(request.data, symbols=request.symbols, end_ns=request.end_ns)
    if bars.num_rows < 2:
        raise ParameterError("end", f"fewer than 2 bars in {request.data} before {request.end}")
    native = infer_timeframe_ns(bars)
    timeframe = request.timeframe or timeframe_str(native)
    if timeframe_ns(timeframe) != native:
        bars = resample(bars, timeframe)
    start_ns = request.start_ns
    if start_ns is not None:
        import pyarrow.compute as pc

        last = pc.max(bars.column("ts").cast("int64")).as_py()
        if last is None or last < start_ns:
            raise ParameterError("start", f"{request.start} is after the last bar in {request.data}")
    symbols = list(dict.fromkeys(bars.column("symbol").to_pylist())) if request.symbols is None else request.symbols
    # funding and mark files may cover fewer symbols than the bars: the others get no funding rows
    # (and settle at the last close, when they have funding but no marks)
    funding = marks = None
    if request.funding:
        covered = [s for s in symbols if s in _symbols_in(request.funding)]
        funding = load_funding(request.funding, symbols=covered or None, end_ns=request.end_ns) if covered else None
    if request.marks:
        covered = [s for s in symbols if s in _symbols_in(request.marks)]
        marks = load_marks(request.marks, symbols=covered, end_ns=request.end_ns) if covered else None
    open_interest = None
    if request.open_interest:
        covered = [s for s in symbols if s in _symbols_in(request.open_interest)]
        if covered:
            open_interest = load_open_interest(request.open_interest, symbols=covered, end_ns=request.end_ns)
    arrays = split_bars(bars)
    settings = BacktestSettings(
        cash=request.cash,
        start_ns=start_ns,
        slippage_bps=request.slippage_bps,
        warmup=request.warmup,
        progress=progress,
        extra={
            "fee_bps": request.fee_bps,
            "maker_fee_bps": request.maker_fee_bps,
            "taker_fee_bps": request.taker_fee_bps,
            "lot_size": request.lot_size,
            "tick_size": request.tick_size,
            "market": request.market_kind,
            "leverage": request.leverage,
            "funding": str(request.funding) if request.funding else None,
            "marks": str(request.marks) if request.marks else None,
            "open_interest": str(request.open_interest) if request.open_interest else None,
            "start": request.start.isoformat() if request.start else None,
            "end": request.end.isoformat() if request.end else None,
        },
    )
    instruments = {s: request.instrument(s) for s in arrays}
    backtest = Backtest(
        strategy_cls,
        params,
        arrays,
        timeframe,
        instruments,
        settings,
        funding=funding,
        marks=marks,
        data_path=str(request.data),
        open_interest=open_interest,
    )
    return backtest.run()
