"""The result of one backtest run: Arrow tables (fills, closed trades, equity curve) and metrics.

Units: prices in quote currency, quantities in base units, money in quote currency, timestamps as
Arrow ``timestamp[ns, UTC]``. Sides are +1 (BUY / long) and -1 (SELL / short).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

TS = pa.timestamp("ns", tz="UTC")

#: One row per fill, in execution order. ``realized_pnl`` is the gross P&L this fill realized
#: (closing part only, before fees); ``liquidity`` is "maker" or "taker".
FILLS_SCHEMA = pa.schema(
    [
        ("fill_id", pa.int64()),
        ("order_id", pa.int64()),
        ("ts", TS),
        ("symbol", pa.string()),
        ("side", pa.int8()),
        ("qty", pa.float64()),
        ("price", pa.float64()),
        ("fee", pa.float64()),
        ("liquidity", pa.string()),
        ("realized_pnl", pa.float64()),
        ("tag", pa.string()),
    ]
)

#: One row per closed trade (flat → position → flat; a reversal closes one trade and opens the next).
#: ``qty`` is the largest absolute position held; prices are quantity-weighted averages;
#: ``net_pnl = gross_pnl - fees + funding`` (``funding`` is signed: received > 0, paid < 0).
TRADES_SCHEMA = pa.schema(
    [
        ("trade_id", pa.int64()),
        ("symbol", pa.string()),
        ("side", pa.int8()),
        ("qty", pa.float64()),
        ("entry_ts", TS),
        ("exit_ts", TS),
        ("entry_price", pa.float64()),
        ("exit_price", pa.float64()),
        ("gross_pnl", pa.float64()),
        ("fees", pa.float64()),
        ("funding", pa.float64()),
        ("net_pnl", pa.float64()),
        ("bars_held", pa.int64()),
    ]
)

#: One row per bar of the run's timeline (after warm-up), valued at the bar's close.
#: ``position_value`` is Σ over positions of qty × (mark − reference) × multiplier, where the
#: reference is 0 for cash-settled spot/equity positions and the average entry price for perpetuals
#: (margin accounting), so ``equity = cash + position_value`` always. ``gross_exposure`` is
#: Σ |qty| × mark × multiplier.
EQUITY_SCHEMA = pa.schema(
    [
        ("ts", TS),
        ("cash", pa.float64()),
        ("position_value", pa.float64()),
        ("equity", pa.float64()),
        ("gross_exposure", pa.float64()),
    ]
)

#: One row per funding settlement on an open perpetual position. ``payment`` is signed cash flow to
#: the account (received > 0): payment = −qty × mark_price × multiplier × rate.
FUNDING_SCHEMA = pa.schema(
    [
        ("ts", TS),
        ("symbol", pa.string()),
        ("qty", pa.float64()),
        ("mark_price", pa.float64()),
        ("rate", pa.float64()),
        ("payment", pa.float64()),
    ]
)


@dataclass
class BacktestResult:
    """Everything one backtest produced.

    Attributes:
        strategy_type: the plugin's ``type``.
        params: validated strategy parameters (JSON-able).
        symbols: symbols traded, in run order.
        timeframe: base timeframe, e.g. "1h".
        start_ns, end_ns: first and last bar open time of the equity curve (ns UTC).
        data_path: where the bars came from.
        initial_cash: starting cash in quote currency.
        metrics: see :func:`engine.backtest.metrics.compute_metrics`.
        fills, trades, equity: Arrow tables with ``FILLS_SCHEMA``, ``TRADES_SCHEMA``, ``EQUITY_SCHEMA``.
        trade_hash: SHA-256 hex of the canonical fill list; equal inputs give equal hashes.
        settings: run settings (fees, slippage, lot/tick size, leverage...) as JSON-able values.
        funding: Arrow table with ``FUNDING_SCHEMA`` (empty when nothing was settled).
    """

    strategy_type: str
    params: dict[str, Any]
    symbols: list[str]
    timeframe: str
    start_ns: int
    end_ns: int
    data_path: str
    initial_cash: float
    metrics: dict[str, Any]
    fills: pa.Table
    trades: pa.Table
    equity: pa.Table
    trade_hash: str
    settings: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    funding: pa.Table | None = None
