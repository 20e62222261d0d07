"""Acceptance: sma_crossover (10/30, all-in, lot 1, 0.1 % fee per side, cash 100,000) on GOOG daily
matches an independent pandas computation — closed trades and final equity to the cent — and is
deterministic (same trade hash twice)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from reconcile import assert_equity_reconciles

from engine.backtest.config import BacktestRequest, run_request
from engine.strategy.registry import StrategyRegistry

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
GOOG = DATA / "backtestingpy_GOOG_daily_2004_2013.csv"


def independent_sma_crossover(fast: int, slow: int, fee: float, cash: float) -> tuple[int, float]:
    """Plain-pandas reference: signals on closes, fills at the next open, all-in with the fee reserved."""
    df = pd.read_csv(GOOG, index_col=0, parse_dates=True)
    d = (df["Close"].rolling(fast).mean() - df["Close"].rolling(slow).mean()).to_numpy()
    opens, closes = df["Open"].to_numpy(), df["Close"].to_numpy()
    units, trades, pending = 0, 0, None
    for i in range(len(df)):
        if pending == "buy":
            units = math.floor(cash / (opens[i] * (1 + fee)))
            cash -= units * opens[i] * (1 + fee)
        elif pending == "sell":
            cash += units * opens[i] * (1 - fee)
            units, trades = 0, trades + 1
        pending = None
        if i > 0 and d[i] > 0 >= d[i - 1] and units == 0:
            pending = "buy"
        elif i > 0 and d[i] < 0 <= d[i - 1] and units > 0:
            pending = "sell"
    return trades, cash + units * closes[-1]


def run(**params: int) -> object:
    request = BacktestRequest.parse(
        {
            "strategy_type": "sma_crossover",
            "data": GOOG,
            "symbols": ["GOOG"],
            "params": params,
            "cash": 100_000,
            "fee_bps": 10,
            "lot_size": 1,
        }
    )
    return run_request(request, StrategyRegistry().discover())


def test_goog_matches_independent_computation_to_the_cent() -> None:
    result = run(fast=10, slow=30)
    trades, final_equity = independent_sma_crossover(10, 30, 0.001, 100_000.0)
    assert result.metrics["trades"] == trades
    assert trades > 10
    assert result.metrics["final_equity"] == pytest.approx(final_equity, abs=0.005)
    df = pd.read_csv(GOOG, index_col=0, parse_dates=True)
    ts = df.index.tz_localize("UTC").as_unit("ns").asi8
    assert_equity_reconciles(result, {"GOOG": (np.asarray(ts, dtype=np.int64), df["Close"].to_numpy())})


def test_same_inputs_same_trade_hash() -> None:
    a, b = run(fast=10, slow=30), run(fast=10, slow=30)
    assert a.trade_hash == b.trade_hash
    assert a.fills.equals(b.fills) and a.equity.equals(b.equity)
    assert run(fast=12, slow=30).trade_hash != a.trade_hash
