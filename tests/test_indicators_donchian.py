"""Donchian channel: vectorized == streaming bit for bit, and equal to TA-Lib MAX(high) / MIN(low)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import talib

from engine.errors import ParameterError
from engine.indicators.channels import Donchian, donchian
from engine.indicators.registry import get_indicator

PANEL = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "data"
    / "binance_usdm_perp_1h_32sym_2025-05-01_2026-05-07.parquet"
)


@pytest.mark.parametrize("period", [2, 5, 20, 55])
def test_donchian_matches_talib_and_streaming(period: int) -> None:
    df = pd.read_parquet(PANEL, filters=[("symbol", "==", "SOLUSDT")])
    high, low = df["high"].to_numpy(), df["low"].to_numpy()
    upper, lower = donchian(high, low, period)
    np.testing.assert_array_equal(upper, talib.MAX(high, period))
    np.testing.assert_array_equal(lower, talib.MIN(low, period))
    stream = Donchian(period)
    out = np.array([stream.update(h, lo) for h, lo in zip(high.tolist(), low.tolist(), strict=True)])
    np.testing.assert_array_equal(out[:, 0], upper)
    np.testing.assert_array_equal(out[:, 1], lower)
    spec = get_indicator("donchian")
    assert spec.lookback(period=period) == int(np.isnan(upper).sum())


def test_donchian_rejects_bad_period() -> None:
    with pytest.raises(ParameterError, match="period"):
        donchian(np.ones(3), np.ones(3), 0)
